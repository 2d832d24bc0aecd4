"""Editing a data set as reversible operations (the UI's undo/redo rests on these).

An ``Edit`` is a plain value: an operation name and its arguments. ``apply_edit(store, dataset_id,
edit)`` performs it in one transaction and returns the ``Edit`` that undoes it; applying that one
returns an edit that redoes the first. So an undo command needs to keep only the edit it will
apply next::

    undo = apply_edit(store, ds, relabel([4, 5], "billing"))   # do
    redo = apply_edit(store, ds, undo)                          # undo
    undo = apply_edit(store, ds, redo)                          # redo

Constructors: ``relabel``, ``set_labels``, ``add_class``, ``rename_class``, ``merge_classes``,
``delete_class``, ``delete_items``, ``set_splits``. Cleaning flags are not updated here (they depend
on the whole data set): call ``cleaning.refresh_flags`` after a burst of edits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunedesk.engine.datasets.store import SPLITS, DatasetStore, chunks
from tunedesk.engine.errors import DataError

MAX_CLASS_NAME = 200


@dataclass(frozen=True)
class Edit:
    op: str
    args: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""  # what the undo menu shows, e.g. "relabel 3 items as billing"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def check_class_name(name: str) -> str:
    """The cleaned class name, or DataError naming what is wrong with it."""
    if not isinstance(name, str):
        raise DataError(f"a class name must be text (got {name!r})", "type a name")
    clean = name.strip()
    if not clean:
        raise DataError("a class name cannot be empty", "type a name, e.g. billing")
    if any(c in clean for c in "\r\n\t"):
        raise DataError(f"class name {clean!r} contains a line break or tab", "use a single line of text")
    if len(clean) > MAX_CLASS_NAME:
        raise DataError(f"class name is {len(clean)} characters long", f"use at most {MAX_CLASS_NAME}")
    return clean


# ---- constructors ------------------------------------------------------------------------------


def set_labels(labels: Mapping[int, str], text: str = "") -> Edit:
    """Give each item id its label (``""`` makes it unlabelled). New labels become classes."""
    return Edit("set_labels", {"labels": dict(labels)}, text or f"relabel {_plural(len(labels), 'item')}")


def relabel(ids: Iterable[int], label: str) -> Edit:
    ids = list(dict.fromkeys(ids))
    label = check_class_name(label) if label != "" else ""
    shown = f"as {label}" if label else "as not labelled"
    return set_labels({i: label for i in ids}, f"relabel {_plural(len(ids), 'item')} {shown}")


def add_class(name: str) -> Edit:
    name = check_class_name(name)
    return Edit("add_class", {"name": name}, f"add class {name}")


def rename_class(old: str, new: str) -> Edit:
    new = check_class_name(new)
    return Edit("rename_class", {"old": old, "new": new}, f"rename class {old} to {new}")


def merge_classes(sources: Sequence[str], target: str) -> Edit:
    target = check_class_name(target)
    return Edit(
        "merge_classes", {"sources": list(sources), "target": target}, f"merge {', '.join(sources)} into {target}"
    )


def delete_class(name: str, delete_items: bool = False) -> Edit:
    """Remove a class; its items are deleted too, or (default) kept without a label."""
    return Edit(
        "delete_class",
        {"name": name, "delete_items": bool(delete_items)},
        f"delete class {name}" + (" and its items" if delete_items else ""),
    )


def delete_items(ids: Iterable[int]) -> Edit:
    ids = list(dict.fromkeys(ids))
    return Edit("delete_items", {"ids": ids}, f"delete {_plural(len(ids), 'item')}")


def set_splits(splits: Mapping[int, str], settings: Mapping[str, Any] | None = None, text: str = "") -> Edit:
    """Assign items to "train", "val" or "" (not assigned); ``settings`` records how (method, ratio, seed)."""
    return Edit(
        "set_splits",
        {"splits": dict(splits), "settings": dict(settings) if settings is not None else None},
        text or f"split {_plural(len(splits), 'item')}",
    )


def batch(edits: Sequence[Edit], text: str) -> Edit:
    return Edit("batch", {"edits": list(edits)}, text)


# ---- applying ----------------------------------------------------------------------------------


def apply_edit(store: DatasetStore, dataset_id: int, edit: Edit) -> Edit:
    """Perform ``edit`` in one transaction and return its inverse (same ``text``). Nothing is
    changed when it raises (DataError for a user mistake such as renaming onto an existing class)."""
    with store.write():
        store.get_dataset(dataset_id)
        inverse = _apply(store, dataset_id, edit)
        store.touch(dataset_id)
        if edit.op in ("delete_items", "restore_items", "batch", "delete_class"):
            store._update_count(dataset_id)
    return inverse


def _apply(store: DatasetStore, ds: int, edit: Edit) -> Edit:
    handler = _OPS.get(edit.op)
    if handler is None:
        raise ValueError(f"unknown edit operation {edit.op!r}")
    return handler(store, ds, edit.text, **edit.args)


def _current(store: DatasetStore, ds: int, column: str, ids: Sequence[int]) -> dict[int, str]:
    """id -> current value of ``column`` for those ids that are items of data set ``ds``."""
    if len(ids) > 20_000:  # one scan beats many "IN (...)" lookups
        wanted = set(ids)
        return {
            i: v
            for i, v in store.conn.execute(f"SELECT id, {column} FROM dataset_items WHERE dataset_id = ?", (ds,))
            if i in wanted
        }
    out: dict[int, str] = {}
    for part in chunks(ids):
        # "+dataset_id": look the ids up by primary key, not through the (dataset_id, ...) indexes
        out.update(
            store.conn.execute(
                f"SELECT id, {column} FROM dataset_items WHERE id IN ({', '.join('?' * len(part))}) AND +dataset_id = ?",
                [*part, ds],
            ).fetchall()
        )
    return out


def _set_labels(store: DatasetStore, ds: int, text: str, labels: Mapping[int, str]) -> Edit:
    conn = store.conn
    ids = list(labels)
    old = _current(store, ds, "label", ids)
    classes = store.classes(ds)
    known = set(classes)
    new_classes = [lab for lab in dict.fromkeys(labels.values()) if lab and lab not in known]
    for lab in new_classes:
        check_class_name(lab)
    conn.executemany(
        "UPDATE dataset_items SET label = ? WHERE id = ?",
        [(labels[i], i) for i in ids if i in old and old[i] != labels[i]],
    )
    undo = set_labels(old, text)
    if new_classes:
        store.replace_classes(ds, classes + new_classes)
        return batch([undo, Edit("set_classes", {"names": classes}, text)], text)
    return undo


def _set_classes(store: DatasetStore, ds: int, text: str, names: Sequence[str]) -> Edit:
    old = store.classes(ds)
    store.replace_classes(ds, list(names))
    return Edit("set_classes", {"names": old}, text)


def _add_class(store: DatasetStore, ds: int, text: str, name: str) -> Edit:
    classes = store.classes(ds)
    if name in classes:
        raise DataError(f"class {name!r} already exists", "pick another name")
    store.replace_classes(ds, classes + [name])
    return Edit("set_classes", {"names": classes}, text)


def _require_class(store: DatasetStore, ds: int, name: str) -> list[str]:
    classes = store.classes(ds)
    if name not in classes:
        raise DataError(
            f"there is no class {name!r}", "pick one of: " + ", ".join(classes) if classes else "add a class first"
        )
    return classes


def _rename_class(store: DatasetStore, ds: int, text: str, old: str, new: str) -> Edit:
    classes = _require_class(store, ds, old)
    if new == old:
        return Edit("rename_class", {"old": new, "new": old}, text)
    if new in classes:
        raise DataError(f"class {new!r} already exists", f"to put the items of {old!r} into {new!r}, merge the classes")
    store.conn.execute("UPDATE dataset_items SET label = ? WHERE dataset_id = ? AND label = ?", (new, ds, old))
    store.replace_classes(ds, [new if c == old else c for c in classes])
    return Edit("rename_class", {"old": new, "new": old}, text)


def _merge_classes(store: DatasetStore, ds: int, text: str, sources: Sequence[str], target: str) -> Edit:
    classes = store.classes(ds)
    missing = [s for s in sources if s not in classes]
    if missing:
        raise DataError(f"there is no class {missing[0]!r}", "pick classes from the class list")
    moving = [s for s in sources if s != target]
    if not moving:
        raise DataError("nothing to merge", "select at least one class other than the target")
    old_labels: dict[int, str] = {}
    for s in moving:
        old_labels.update((i, s) for i in store.ids_of_label(ds, s))
    store.conn.executemany("UPDATE dataset_items SET label = ? WHERE id = ?", [(target, i) for i in old_labels])
    merged = [c for c in classes if c not in moving]
    if target not in merged:
        first = min(classes.index(s) for s in moving)
        merged.insert(min(first, len(merged)), target)
    store.replace_classes(ds, merged)
    return batch([Edit("set_classes", {"names": classes}, text), set_labels(old_labels, text)], text)


def _delete_class(store: DatasetStore, ds: int, text: str, name: str, delete_items: bool) -> Edit:
    classes = _require_class(store, ds, name)
    ids = store.ids_of_label(ds, name)
    inverses = []
    if ids:
        inner = Edit("delete_items", {"ids": ids}, text) if delete_items else set_labels({i: "" for i in ids}, text)
        inverses.append(_apply(store, ds, inner))
    store.replace_classes(ds, [c for c in classes if c != name])
    inverses.append(Edit("set_classes", {"names": classes}, text))
    return batch(list(reversed(inverses)), text)


def _delete_items(store: DatasetStore, ds: int, text: str, ids: Sequence[int]) -> Edit:
    rows = [r for r in store.raw_rows(ids) if r[1] == ds]
    for part in chunks([r[0] for r in rows]):
        store.conn.execute(f"DELETE FROM dataset_items WHERE id IN ({', '.join('?' * len(part))})", list(part))
    return Edit("restore_items", {"rows": rows}, text)


def _restore_items(store: DatasetStore, ds: int, text: str, rows: Sequence[tuple]) -> Edit:
    store.restore_rows(rows)
    return Edit("delete_items", {"ids": [r[0] for r in rows]}, text)


def _set_splits(
    store: DatasetStore, ds: int, text: str, splits: Mapping[int, str], settings: Mapping[str, Any] | None
) -> Edit:
    bad = {s for s in splits.values() if s not in SPLITS and s != ""}
    if bad:
        raise DataError(f"unknown split {sorted(bad)[0]!r}", "use train or val")
    conn = store.conn
    ids = list(splits)
    old = _current(store, ds, "split", ids)
    conn.executemany(
        "UPDATE dataset_items SET split = ? WHERE id = ?",
        [(splits[i], i) for i in ids if i in old and old[i] != splits[i]],
    )
    old_settings = None
    if settings is not None:
        old_settings = store.get_dataset(ds).split
        store.set_split_settings(ds, dict(settings))
    return set_splits(old, old_settings, text)


def _batch(store: DatasetStore, ds: int, text: str, edits: Sequence[Edit]) -> Edit:
    inverses = [_apply(store, ds, e) for e in edits]
    return batch(list(reversed(inverses)), text)


_OPS: dict[str, Callable[..., Edit]] = {
    "set_labels": _set_labels,
    "set_classes": _set_classes,
    "add_class": _add_class,
    "rename_class": _rename_class,
    "merge_classes": _merge_classes,
    "delete_class": _delete_class,
    "delete_items": _delete_items,
    "restore_items": _restore_items,
    "set_splits": _set_splits,
    "batch": _batch,
}


def affected_ids(edit: Edit) -> set[int] | None:
    """Item ids whose row an edit changes, or None when it may change many (class renames, deletes):
    lets a view refresh only what changed."""
    if edit.op == "set_labels":
        return set(edit.args["labels"])
    if edit.op == "set_splits":
        return set(edit.args["splits"])
    if edit.op in ("set_classes", "add_class"):
        return set()
    if edit.op == "batch":
        out: set[int] = set()
        for e in edit.args["edits"]:
            sub = affected_ids(e)
            if sub is None:
                return None
            out |= sub
        return out
    return None
