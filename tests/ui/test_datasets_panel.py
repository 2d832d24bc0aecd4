"""The Datasets panel: import (with progress and cancel), edit a label in place, undo/redo, class
operations, flag selection, split, save a version, use it for training, thumbnails, import dialog."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QInputDialog

from tests.fixtures.data import make_texts
from tunedesk.engine.datasets import DatasetStore, ImportSpec
from tunedesk.engine.datasets import flags as F

WAIT = 60_000


@pytest.fixture
def state(home, qtbot):
    from tunedesk.ui.state import AppState

    return AppState(home)


@pytest.fixture
def panel(state, qtbot):
    from tunedesk.ui.datasets.panel import DatasetsPanel

    p = DatasetsPanel(state)
    qtbot.addWidget(p)
    p.resize(1280, 800)
    p.show()
    qtbot.waitUntil(lambda: p.controller.store is not None, timeout=WAIT)
    yield p
    p.stop_and_wait()


@pytest.fixture
def messy_csv(tmp_path) -> Path:
    rows = make_texts(n_per_class=6)
    rows += [
        (rows[0][0], rows[0][1]),
        (rows[1][0], "billing" if rows[1][1] != "billing" else "account"),
        (rows[2][0].upper() + "!!", rows[2][1]),
    ]
    path = tmp_path / "messy.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def idle(panel) -> bool:
    return (
        panel.controller.task_job is None
        and panel.controller.flags_job is None
        and not panel.controller.flags_timer.isActive()
    )


def imported(panel, qtbot, spec: ImportSpec) -> None:
    job = panel.controller.start_import(spec)
    assert job is not None
    qtbot.waitUntil(
        lambda: idle(panel) and panel.controller.info is not None and panel.model.rowCount() > 0, timeout=WAIT
    )


def label_index(panel, row: int):
    return panel.model.index(row, panel.model.columns.index("Label"))


def test_import_edit_in_place_undo_redo(panel, qtbot, text_csv, state):
    imported(panel, qtbot, ImportSpec("text_table", str(text_csv)))
    assert panel.model.rowCount() == 96 and panel.controller.info.name == "tickets"
    assert "96 items" in panel.count_label.text()
    assert panel.classes_box.model.rowCount() == 4
    first_id = panel.model.id_at(0)
    old = panel.model.item_at(0).label
    new = "billing" if old != "billing" else "account"
    assert panel.model.setData(label_index(panel, 0), new)  # what the in-place editor does
    assert panel.model.data(label_index(panel, 0)) == new
    assert panel.controller.store.item(first_id).label == new
    assert panel.controller.undo_stack.count() == 1 and panel.undo_action.isEnabled()
    panel.undo_action.trigger()  # Ctrl+Z
    assert panel.controller.store.item(first_id).label == old and panel.model.data(label_index(panel, 0)) == old
    panel.redo_action.trigger()  # Ctrl+Shift+Z
    assert panel.controller.store.item(first_id).label == new
    assert [s.toString() for s in panel.redo_action.shortcuts()][0] == "Ctrl+Shift+Z"
    # a label typed in place that is a new class name creates the class
    panel.model.setData(label_index(panel, 1), "urgent")
    assert "urgent" in panel.model.classes
    panel.undo_action.trigger()
    assert "urgent" not in panel.controller.store.classes(panel.controller.info.id)


def test_relabel_selection_delete_and_class_operations(panel, qtbot, text_csv, monkeypatch):
    imported(panel, qtbot, ImportSpec("text_table", str(text_csv)))
    ds = panel.controller.info.id
    panel.select_ids([panel.model.id_at(r) for r in (0, 1, 2)])
    ids = panel.selected_ids()
    assert len(ids) == 3 and panel.relabel_button.isEnabled()
    panel.relabel_selection("shipping")
    assert {panel.controller.store.item(i).label for i in ids} == {"shipping"}
    panel.select_ids(ids[:2])
    panel.delete_selection()
    assert panel.model.rowCount() == 94 and panel.controller.store.count_items(ds) == 94
    panel.undo_action.trigger()
    assert panel.model.rowCount() == 96
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("payments", True))
    panel.rename_class("billing")
    assert "payments" in panel.controller.store.classes(ds) and "billing" not in panel.controller.store.classes(ds)
    monkeypatch.setattr(QInputDialog, "getItem", lambda *a, **k: ("logistics", True))
    panel.merge_classes(["shipping", "account"])
    assert panel.controller.store.classes(ds) == ["logistics", "payments", "technical"]
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("technical", True))
    panel.rename_class("payments")  # onto an existing class: refused with a hint, nothing changes
    assert panel.message.isVisible() and "merge" in panel.message.text()
    for _ in range(2):
        panel.undo_action.trigger()
    assert panel.controller.store.classes(ds) == ["account", "billing", "shipping", "technical"]


def test_flags_select_extra_copies_split_and_version(panel, qtbot, messy_csv, state):
    imported(panel, qtbot, ImportSpec("text_table", str(messy_csv)))
    counts = {bit: int(row[0].text()) for bit, row in panel.cleaning_box.rows.items()}
    assert counts[F.EXACT_DUPLICATE] == 4 and counts[F.LABEL_CONFLICT] == 2 and counts[F.NEAR_DUPLICATE] == 2
    panel.select_flagged(F.EXACT_DUPLICATE)
    assert panel.model.rowCount() == 4 and len(panel.selected_ids()) == 4
    panel.select_extra_copies(F.EXACT_DUPLICATE)
    extras = panel.selected_ids()
    assert len(extras) == 2
    panel.delete_selection()  # "remove the flagged duplicates": one of each stays
    qtbot.waitUntil(lambda: idle(panel), timeout=WAIT)
    assert {bit: int(row[0].text()) for bit, row in panel.cleaning_box.rows.items()}[F.EXACT_DUPLICATE] == 0
    assert panel.model.total == 25
    # split: stratified 25 %, stored per item, shown per class, copies on one side
    panel.split_box.val.setValue(25)
    panel.split_box.seed.setValue(3)
    panel.split_box.button.click()
    qtbot.waitUntil(lambda: idle(panel) and panel.controller.undo_stack.count() == 2, timeout=WAIT)
    counts = panel.controller.store.class_counts(panel.controller.info.id)
    assert sum(c["val"] for c in counts.values()) >= 4 and all(c[""] == 0 for c in counts.values())
    assert "validation" in panel.split_box.summary.text()
    assert panel.chart.totals()["val"] == sum(c["val"] for c in counts.values())
    # save a version and use it for training
    with qtbot.waitSignal(state.datasetSelected, timeout=WAIT) as signal:
        panel.version_box.use_button.click()
    spec = signal.args[0]
    assert spec.kind == "dataset_version" and spec.dataset_version == f"ds{panel.controller.info.id}-v1"
    assert panel.sets_model.item(0).rowCount() == 1  # the version is listed under its data set
    version = panel.controller.store.get_version(spec.dataset_version)
    assert version.item_count == 25 and version.split["settings"]["val_fraction"] == 0.25
    # edits after saving show in the version box; saving again makes v2
    panel.flag_filter.setCurrentIndex(0)  # all items again (the duplicates filter is empty now)
    assert panel.model.rowCount() == 25
    panel.select_ids([panel.model.id_at(0)])
    panel.relabel_selection("account" if panel.model.item_at(0).label != "account" else "billing")
    qtbot.waitUntil(lambda: idle(panel) and "Edited since" in panel.version_box.label.text(), timeout=WAIT)
    panel.version_box.save_button.click()
    qtbot.waitUntil(lambda: idle(panel) and "v2" in panel.version_box.label.text(), timeout=WAIT)


def test_filters_search_and_sort(panel, qtbot, text_csv):
    imported(panel, qtbot, ImportSpec("text_table", str(text_csv)))
    panel.label_filter.setCurrentIndex(panel.label_filter.findData("billing"))
    assert panel.model.rowCount() == 24 and "24 of 96" in panel.count_label.text()
    panel.search.setText("REFUND")
    qtbot.waitUntil(lambda: panel.model.filters.get("search") == "REFUND", timeout=WAIT)
    assert 0 < panel.model.rowCount() < 24
    assert all("refund" in panel.model.item_at(r).text for r in range(panel.model.rowCount()))
    panel.search.clear()
    panel.label_filter.setCurrentIndex(0)
    qtbot.waitUntil(lambda: panel.model.rowCount() == 96, timeout=WAIT)
    panel.model.sort(1, Qt.SortOrder.AscendingOrder)
    labels = [panel.model.item_at(r).label for r in range(96)]
    assert labels == sorted(labels)


def test_cancel_import_keeps_the_database_as_it_was(panel, qtbot, tmp_path, text_csv):
    imported(panel, qtbot, ImportSpec("text_table", str(text_csv)))
    big = tmp_path / "big.csv"
    with big.open("w", encoding="utf-8") as fh:
        fh.write("text,label\n")
        for i in range(60_000):
            fh.write(f"ticket number {i} about something,label{i % 3}\n")
    job = panel.controller.start_import(ImportSpec("text_table", str(big)))
    assert panel.progress_row.isVisible()
    qtbot.waitUntil(lambda: panel.progress.maximum() > 0 or panel.controller.task_job is None, timeout=WAIT)
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: panel.controller.task_job is None, timeout=WAIT)
    assert job is not None and "cancelled" in panel.message.text()
    with DatasetStore(panel.state.database) as store:
        assert [d.name for d in store.list_datasets()] == ["tickets"]
        assert store.conn.execute("SELECT COUNT(*) FROM dataset_items").fetchone()[0] == 96


def test_bad_file_shows_message_and_hint(panel, qtbot, tmp_path):
    path = tmp_path / "header_only.csv"
    path.write_text("text,label\n", encoding="utf-8")
    panel.controller.start_import(ImportSpec("text_table", str(path)))
    qtbot.waitUntil(lambda: panel.controller.task_job is None, timeout=WAIT)
    assert "header but no data rows" in panel.message.text() and "Hint" in panel.message.text()


def test_image_data_set_shows_thumbnails(panel, qtbot, image_folder):
    imported(panel, qtbot, ImportSpec("image_folder", str(image_folder)))
    assert panel.model.columns[0] == "Image" and panel.model.rowCount() == 24
    index = panel.model.index(0, 0)
    panel.model.data(index, Qt.ItemDataRole.DecorationRole)  # asks the loader thread
    item = panel.model.item_at(0)
    qtbot.waitUntil(lambda: panel.thumbs.get(item.content_hash, item.path)[0], timeout=WAIT)
    image = panel.model.data(index, Qt.ItemDataRole.DecorationRole)
    assert not image.isNull() and image.width() == 40  # 40 px images are not blown up to 64
    assert any((panel.state.home / "cache" / "thumbnails").rglob("*.png"))


def test_import_dialog_previews_and_builds_the_spec(qtbot, tmp_path):
    from tunedesk.ui.datasets.import_dialog import ImportDialog

    path = tmp_path / "reviews.csv"
    path.write_bytes("id;comment;stars\n1;très bon café;good\n2;pas terrible;bad\n".encode("cp1252"))
    dialog = ImportDialog(path=str(path))
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.preview is not None, timeout=WAIT)
    assert dialog.preview.columns == ["id", "comment", "stars"]
    assert dialog.text_column.currentData() == "comment" and dialog.label_column.currentData() == "stars"
    assert dialog.encoding.currentText() == "cp1252" and dialog.import_button.isEnabled()
    assert dialog.table_model.item(0, 1).text() == "très bon café"
    spec = dialog.spec()
    assert (spec.kind, spec.text_column, spec.label_column, spec.encoding) == (
        "text_table",
        "comment",
        "stars",
        "cp1252",
    )
    dialog.label_column.setCurrentIndex(dialog.label_column.findData("comment"))
    assert not dialog.import_button.isEnabled()  # text and label must differ
    dialog.reject()


def test_an_image_version_sets_the_train_area_to_image_classification(qtbot, home, image_folder):
    from tunedesk.engine.config import DataSpec
    from tunedesk.engine.datasets import DatasetStore, ImportSpec, run_import
    from tunedesk.engine.paths import database_path
    from tunedesk.ui.state import AppState
    from tunedesk.ui.training.panel import TrainingPanel

    with DatasetStore(database_path(home)) as store:
        result = run_import(store, ImportSpec(kind="image_folder", path=str(image_folder)))
        version = store.save_version(result.dataset_id)
    panel = TrainingPanel(AppState(home))
    qtbot.addWidget(panel)
    panel.form.set_data_spec(DataSpec(kind="dataset_version", dataset_version=version.id))
    assert panel.form.task_combo.currentData() == "image_classification"
    panel.shutdown()


def test_chat_conversations_read_as_turns_without_a_label_column(panel, qtbot, tmp_path):
    path = tmp_path / "pirate.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": "where is my parcel"},
                {"role": "assistant", "content": "arr, it sails"},
            ]
        },
        {"prompt": "i lost my password", "response": "arr, a new one be sent"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    imported(panel, qtbot, ImportSpec("chat_jsonl", str(path)))
    m = panel.model
    assert m.columns == ("Text", "Split", "Flags")  # nothing to label in a conversation
    shown = [m.data(m.index(r, 0)) for r in range(2)]
    assert shown[0] == "user: where is my parcel  \u00b7  assistant: arr, it sails"
    assert shown[1].startswith("user: i lost my password") and "{" not in shown[1]
    assert m.data(m.index(0, 0), Qt.ItemDataRole.ToolTipRole) == "user: where is my parcel\nassistant: arr, it sails"
    assert not panel.classes_box.isVisibleTo(panel) and not panel.relabel_button.isVisibleTo(panel)
    assert panel.balance_box.title() == "Training / validation"
    assert panel.split_box.method.currentData() == "random"  # nothing to stratify by
