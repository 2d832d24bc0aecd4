"""Editing (each op undone and redone exactly), splitting and immutable versions."""

from __future__ import annotations

import sqlite3

import pytest

from tunedesk.engine.datasets import DatasetStore, ImportSpec, assign_splits, plan_split, run_import, split_dataset
from tunedesk.engine.datasets import edits as E
from tunedesk.engine.errors import DataError
from tunedesk.engine.paths import database_path


@pytest.fixture
def store(tmp_path):
    s = DatasetStore(database_path(tmp_path / "home"))
    yield s
    s.close()


@pytest.fixture
def ds(store, text_csv):
    return run_import(store, ImportSpec("text_table", str(text_csv))).dataset_id


def snapshot(store, ds):
    items = [(i.id, i.position, i.label, i.split, i.text) for i in store.iter_items(ds)]
    return items, store.classes(ds), store.get_dataset(ds).item_count


def roundtrip(store, ds, edit):
    """Apply, undo, redo: each state is exactly the one before."""
    before = snapshot(store, ds)
    undo = E.apply_edit(store, ds, edit)
    after = snapshot(store, ds)
    assert after != before
    redo = E.apply_edit(store, ds, undo)
    assert snapshot(store, ds) == before
    E.apply_edit(store, ds, redo)
    assert snapshot(store, ds) == after
    assert undo.text == edit.text
    return after


def test_relabel_and_new_label_becomes_a_class(store, ds):
    ids = store.item_ids(ds)[:3]
    items, classes, _ = roundtrip(store, ds, E.relabel(ids, "urgent"))
    assert [i[2] for i in items[:3]] == ["urgent"] * 3
    assert classes == ["account", "billing", "shipping", "technical", "urgent"]
    roundtrip(store, ds, E.relabel(ids[:1], ""))  # unlabel


def test_class_operations(store, ds):
    roundtrip(store, ds, E.add_class("refunds"))
    with pytest.raises(DataError, match="already exists"):
        E.apply_edit(store, ds, E.add_class("billing"))
    _, classes, _ = roundtrip(store, ds, E.rename_class("billing", "payments"))
    assert "payments" in classes and "billing" not in classes
    with pytest.raises(DataError) as err:
        E.apply_edit(store, ds, E.rename_class("account", "technical"))
    assert "merge" in err.value.hint
    n_before = len(store.ids_of_label(ds, "account")) + len(store.ids_of_label(ds, "shipping"))
    _, classes, _ = roundtrip(store, ds, E.merge_classes(["account", "shipping"], "logistics"))
    assert classes == ["logistics", "payments", "technical", "refunds"]  # the merge takes the first one's place
    assert len(store.ids_of_label(ds, "logistics")) == n_before
    items, classes, count = roundtrip(store, ds, E.delete_class("technical"))
    assert "technical" not in classes and count == 96 and sum(1 for i in items if i[2] == "") == 24
    items, classes, count = roundtrip(store, ds, E.delete_class("payments", delete_items=True))
    assert count == 72 and "payments" not in classes
    with pytest.raises(DataError, match="no class"):
        E.apply_edit(store, ds, E.delete_class("nope"))
    with pytest.raises(DataError, match="cannot be empty"):
        E.add_class("  ")


def test_delete_items_restores_same_ids_and_positions(store, ds):
    ids = store.item_ids(ds)
    items, _, count = roundtrip(store, ds, E.delete_items(ids[10:20] + ids[-1:]))
    assert count == 85
    # a new item after a delete never takes a deleted id (AUTOINCREMENT), so undo cannot collide
    undo = E.apply_edit(store, ds, E.delete_items(ids[-2:]))  # the highest id left
    store.insert_items(ds, [(999, "billing", "", 0, "h", "n", None, None, None, None, None, None, "new")])
    assert max(store.item_ids(ds)) > max(ids)
    E.apply_edit(store, ds, undo)
    assert ids[-2] in store.item_ids(ds) and store.item(ids[-2]).position == 95


def test_failed_edit_changes_nothing(store, ds):
    before = snapshot(store, ds)
    bad = E.batch([E.relabel(store.item_ids(ds)[:5], "zzz"), E.rename_class("billing", "account")], "two steps")
    with pytest.raises(DataError):
        E.apply_edit(store, ds, bad)
    assert snapshot(store, ds) == before


# ---- split -------------------------------------------------------------------------------------


def test_assign_splits_keeps_groups_together_and_is_seeded():
    labels = ["a"] * 10 + ["b"] * 10
    groups = [[0, 1, 2], [10, 11]]
    s1 = assign_splits(labels, groups, "stratified", 0.3, seed=5)
    assert s1 == assign_splits(labels, groups, "stratified", 0.3, seed=5)
    assert len({s1[0], s1[1], s1[2]}) == 1 and s1[10] == s1[11]
    for cls in ("a", "b"):
        assert 2 <= sum(1 for lab, s in zip(labels, s1) if lab == cls and s == "val") <= 4
    r = assign_splits(labels, groups, "random", 0.25, seed=1)
    assert r.count("val") == 5 and len({r[0], r[1], r[2]}) == 1
    assert assign_splits(["a", "", "a"], [], "random", 0.5, 0)[1] == ""  # unlabelled: not assigned
    with pytest.raises(DataError, match="between 0 and 1"):
        assign_splits(labels, [], "random", 1.5, 0)


def test_split_dataset_stores_split_per_class_and_is_undoable(store, ds):
    ids = store.item_ids(ds)
    first = store.item(ids[0])
    store.insert_items(
        ds,
        [
            (
                500,
                first.label,
                "",
                0,
                first.content_hash,
                first.near_hash,
                None,
                None,
                None,
                None,
                None,
                None,
                first.text,
            )
        ],
    )  # a copy of item 0
    undo = split_dataset(store, ds, "stratified", 0.25, seed=3)
    counts = store.class_counts(ds)
    assert all(c["val"] == 6 and c[""] == 0 for label, c in counts.items() if label != first.label)
    copy_id = store.item_ids(ds)[-1]
    assert store.item(copy_id).split == store.item(ids[0]).split  # duplicates on one side
    assert store.get_dataset(ds).split == {"method": "stratified", "val_fraction": 0.25, "seed": 3}
    again = plan_split(store, ds, "stratified", 0.25, seed=3)
    assert all(store.item(i).split == s for i, s in list(again.args["splits"].items())[:20])
    E.apply_edit(store, ds, undo)
    assert all(c["train"] == 0 and c["val"] == 0 for c in store.class_counts(ds).values())
    assert store.get_dataset(ds).split == {}


# ---- versions ----------------------------------------------------------------------------------


def test_versions_are_immutable_snapshots(store, ds):
    split_dataset(store, ds, "stratified", 0.2, seed=1)
    v1 = store.save_version(ds, "first")
    assert v1.id == f"ds{ds}-v1" and v1.item_count == 96 and len(v1.content_hash) == 32 and not v1.reused
    assert v1.classes == ["account", "billing", "shipping", "technical"]
    assert v1.split["settings"]["seed"] == 1 and sum(c["val"] for c in v1.split["counts"].values()) == 20
    assert store.save_version(ds).reused  # nothing changed: no new version
    rows_v1 = store.version_rows(v1.id)
    E.apply_edit(store, ds, E.relabel(store.item_ids(ds)[:2], "account"))
    E.apply_edit(store, ds, E.delete_items(store.item_ids(ds)[-3:]))
    v2 = store.save_version(ds)
    assert v2.id == f"ds{ds}-v2" and v2.item_count == 93 and v2.content_hash != v1.content_hash
    assert store.version_rows(v1.id) == rows_v1  # the old version did not move
    assert store.get_version(v1.content_hash[:10]).id == v1.id
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        store.conn.execute("UPDATE dataset_version_items SET label = 'x' WHERE version_id = ?", (v1.id,))
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        store.conn.execute("UPDATE dataset_versions SET content_hash = 'x' WHERE id = ?", (v1.id,))
    store.delete_dataset(ds)  # versions outlive their data set: past runs stay reproducible
    assert store.get_version(v1.id).dataset_id is None and len(store.version_rows(v2.id)) == 93
    with pytest.raises(DataError) as err:
        store.get_version("ds99-v9")
    assert v2.id in err.value.hint


def test_empty_dataset_has_no_version(store):
    ds = store.create_dataset("empty", "text")
    with pytest.raises(DataError, match="has no items"):
        store.save_version(ds)
