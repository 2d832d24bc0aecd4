"""The runs panel over a generated history: paging, sort, search and filters, edits, detail, compare,
clone / resume / delete, and the history queries behind it. No training here (fast); the engine
parts (export, resume, compare) have their own tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from tests.fixtures.runs import HEAD, make_run
from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.store import RunStore, history
from tunedesk.ui.runs.table import COL, RunIdRole


@pytest.fixture
def db(home) -> Path:
    from tunedesk.engine.paths import database_path

    return database_path(home)


@pytest.fixture
def store(db):
    s = RunStore(db)
    yield s
    s.close()


@pytest.fixture
def state(home, qtbot):
    from tunedesk.ui.state import AppState

    return AppState(home)


@pytest.fixture
def panel(state, qtbot, monkeypatch):
    from PySide6.QtCore import QSettings

    monkeypatch.setattr(
        "tunedesk.ui.runs.panel.QSettings", lambda *a: QSettings(str(state.home / "ui.ini"), QSettings.Format.IniFormat)
    )

    def make():
        from tunedesk.ui.runs.panel import RunsPanel

        p = RunsPanel(state)
        qtbot.addWidget(p)
        p.resize(1200, 800)
        p.show()
        return p

    return make


def select(panel, *run_ids: int) -> None:
    panel.select_runs(list(run_ids))


# ---- history queries (engine, no Qt) ---------------------------------------------------------------


def test_page_count_filters_and_sort(store):
    a = make_run(store, name="alpha", lr=1e-4, tags=["keep"], best=0.9)
    b = make_run(store, name="beta", status="failed", lr=5e-4, best=None, dataset="reviews.csv")
    c = make_run(store, name="gamma", status="stopped", model="/models/other", epochs=7, best=0.7)
    rows = history.page(store)
    assert [r["id"] for r in rows] == [c, b, a]  # newest first
    assert rows[0]["epochs"] == 7 and rows[1]["learning_rate"] == 5e-4 and rows[2]["batch_size"] == 16
    assert rows[2]["tags"] == ["keep"]
    assert [r["id"] for r in history.page(store, sort="best_metric", descending=True)] == [a, c, b]  # NULL last
    assert [r["id"] for r in history.page(store, sort="best_metric", descending=False)] == [c, a, b]
    assert [r["id"] for r in history.page(store, sort="learning_rate")] == [b, c, a]
    assert [r["id"] for r in history.page(store, sort="name", descending=False)] == [a, b, c]
    assert history.count(store, history.RunFilter(status="failed")) == 1
    assert [r["id"] for r in history.page(store, history.RunFilter(tag="keep"))] == [a]
    assert [r["id"] for r in history.page(store, history.RunFilter(model="/models/other"))] == [c]
    assert [r["id"] for r in history.page(store, history.RunFilter(dataset="reviews.csv"))] == [b]
    assert [r["id"] for r in history.page(store, history.RunFilter(search="gam"))] == [c]
    assert [r["id"] for r in history.page(store, history.RunFilter(search=f"#{b}"))] == [b]
    assert [r["id"] for r in history.page(store, limit=1, offset=1)] == [b]
    choices = history.filter_choices(store)
    assert choices.models == ["/models/other", "/models/tiny-bert"]
    assert choices.datasets == ["reviews.csv", "tickets.csv"] and choices.tags == ["keep"]
    with pytest.raises(ValueError):
        history.page(store, sort="config_json")


def test_clone_config_drops_the_output_folder_and_resolved_values(store, tmp_path):
    rid = make_run(store, name="x", output_dir=str(tmp_path / "mine"))
    config = history.clone_config(store.get_run(rid))
    assert config.output_dir is None and config.hparams.learning_rate == 1e-4
    assert config.freeze.preset == "last_n_blocks"


def test_can_resume(store, tmp_path):
    rid = make_run(store, name="x", status="stopped")
    run = store.get_run(rid)
    assert history.can_resume(run, {}) == (False, "the run stopped before its first checkpoint")
    (tmp_path / "last").mkdir()
    assert history.can_resume(run, {"last": {"path": str(tmp_path / "last"), "step": 8}})[0]
    assert not history.can_resume(store.get_run(make_run(store, name="y")), {"last": {"path": str(tmp_path)}})[0]


def test_delete_removes_only_tunedesk_files_in_a_chosen_folder(store, home, tmp_path):
    from tunedesk.engine.paths import runs_dir

    managed = runs_dir(home) / "run-00001"
    (managed / "best").mkdir(parents=True)
    a = make_run(store, name="managed", output_dir=str(managed))
    chosen = tmp_path / "my-folder"
    (chosen / "last").mkdir(parents=True)
    (chosen / "config.json").write_text("{}")
    (chosen / "my-notes.txt").write_text("keep me")
    b = make_run(store, name="chosen", output_dir=str(chosen))
    history.delete_run(store, a, home)
    history.delete_run(store, b, home)
    assert not managed.exists()
    assert sorted(p.name for p in chosen.iterdir()) == ["my-notes.txt"]
    assert store.count_runs() == 0
    running = make_run(store, name="live", status="running")
    with pytest.raises(TuneDeskError, match="training right now"):
        history.delete_run(store, running, home)


# ---- the panel ---------------------------------------------------------------------------------------


def test_table_pages_lazily(store, panel):
    for i in range(450):
        store.db.execute(
            "INSERT INTO runs (name, status, created_at, model_name, dataset_name, config_json) "
            "VALUES (?, 'completed', ?, 'm', 'd', '{}')",
            [f"run {i}", f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}"],
        )
    store.db.conn.commit()
    p = panel()
    model = p.table_model
    assert model.total == 450 and model.rowCount() == 200
    assert p.count_label.text() == "450 runs"
    assert model.index(0, COL["Name"]).data() == "run 449"
    while model.canFetchMore():
        model.fetchMore()
    assert model.rowCount() == 450 and model.index(449, COL["Name"]).data() == "run 0"


def test_columns_sort_search_and_filters(store, panel, qtbot):
    a = make_run(store, name="alpha", lr=1e-4, tags=["keep"], best=0.912)
    b = make_run(store, name="beta", status="failed", best=None, dataset="reviews.csv")
    c = make_run(store, name="gamma", status="interrupted", model="/models/other", best=0.7)
    p = panel()
    m = p.table_model
    row = m.row_of(a)
    assert m.index(row, COL["Best"]).data() == "0.912 acc"
    assert m.index(row, COL["Trains"]).data() == "12% - last 1 block + head"
    assert m.index(row, COL["LR"]).data() == "1e-4"
    assert m.index(row, COL["Model"]).data() == "tiny-bert"
    assert m.index(row, COL["Tags"]).data() == "keep"
    assert m.index(m.row_of(b), COL["Status"]).data() == "failed"
    assert m.index(m.row_of(b), COL["Status"]).data(Qt.ItemDataRole.ForegroundRole).color().name() == "#d9423f"

    select(p, b)
    p.view.sortByColumn(COL["Name"], Qt.SortOrder.AscendingOrder)
    assert [m.index(r, COL["Name"]).data() for r in range(3)] == ["alpha", "beta", "gamma"]
    assert p.selected_ids() == [b]  # sorting keeps the selection
    p.view.clearSelection()
    p.search.setText("gam")
    qtbot.waitUntil(lambda: m.rowCount() == 1)
    assert m.index(0, 0).data(RunIdRole) == c and p.count_label.text() == "1 run match"
    p.search.clear()
    qtbot.waitUntil(lambda: m.rowCount() == 3)
    p.status_filter.setCurrentIndex(p.status_filter.findData("failed"))
    assert [m.index(r, 0).data(RunIdRole) for r in range(m.rowCount())] == [b]
    p.status_filter.setCurrentIndex(0)
    p.model_filter.setCurrentIndex(p.model_filter.findData("/models/other"))
    assert m.rowCount() == 1 and p.model_filter.currentText() == "other"
    p.model_filter.setCurrentIndex(0)
    p.dataset_filter.setCurrentIndex(p.dataset_filter.findData("reviews.csv"))
    assert m.rowCount() == 1
    p.dataset_filter.setCurrentIndex(0)
    p.tag_filter.setCurrentIndex(p.tag_filter.findData("keep"))
    assert [m.index(r, 0).data(RunIdRole) for r in range(m.rowCount())] == [a]


def test_name_and_tags_edit_in_place(store, panel, db):
    a = make_run(store, name="alpha")
    p = panel()
    m = p.table_model
    assert m.setData(m.index(0, COL["Name"]), "  better name ")
    assert m.setData(m.index(0, COL["Tags"]), "best, keep, best")
    assert not m.setData(m.index(0, COL["Name"]), "   ")  # an empty name is refused
    check = RunStore(db)
    run = check.get_run(a)
    check.close()
    assert run["name"] == "better name" and run["tags"] == ["best", "keep"]
    assert p.tag_filter.findData("keep") > 0  # the tag menu learnt the new tags


def test_detail_shows_one_run_and_saves_notes(store, panel, db, qtbot):
    a = make_run(store, name="alpha: the last two blocks at 2e-4", tags=["keep"])
    p = panel()
    select(p, a)
    d = p.detail
    assert p.lower_stack.currentWidget() is d
    assert d.title.text() == f"#{a}  alpha: the last two blocks at 2e-4"
    qtbot.waitUntil(lambda: d.title.width() >= d.title.sizeHint().width())  # on screen, not squeezed away
    assert "tiny-bert" in d.overview.facts["model"].text()
    assert d.overview.facts["best"].text() == "0.800 acc"
    for i, _title in enumerate(d.TABS):  # every tab fills without error
        d.tabs.setCurrentIndex(i)
    assert d.classes.per_class.rowCount() == 2 and d.classes.confusion.rowCount() == 2
    assert "epoch 3  (best)" in [d.classes.picker.itemText(i) for i in range(d.classes.picker.count())]
    assert "run alpha: the last two blocks at 2e-4 started" in d.log_view.toPlainText()
    assert d.curves.loss_plot is not None
    assert d.config.model_.rowCount() > 3
    assert d.freeze.model.rowCount() >= 1  # trainable names grouped by module until the model loads
    d.tabs.setCurrentIndex(0)
    d.overview.notes.setPlainText("lower lr next time")
    d.overview.tags.setText("keep, paper")
    d.overview.save.click()
    check = RunStore(db)
    run = check.get_run(a)
    check.close()
    assert run["notes"] == "lower lr next time" and run["tags"] == ["keep", "paper"]
    assert p.table_model.index(0, COL["Tags"]).data() == "keep, paper"


def test_selecting_two_runs_compares_them(store, panel, qtbot):
    a = make_run(store, name="head only", lr=1e-4, trainable=HEAD, summary="1% - head only")
    b = make_run(store, name="last block", lr=3e-4)
    p = panel()
    select(p, a, b)
    view = p.compare_view
    assert p.lower_stack.currentWidget() is view
    assert p.compare_button.text() == "Compare 2"
    keys = [view.config_model.item(r, 0).text() for r in range(view.config_model.rowCount())]
    assert keys == ["hparams.learning_rate", "effective.learning_rate"]
    assert view.config_model.item(0, 1).text() == "0.0001" and view.config_model.item(0, 2).text() == "0.0003"
    rows = [[view.freeze_model.item(r, c).text() for c in range(3)] for r in range(view.freeze_model.rowCount())]
    assert rows == [
        ["bert.encoder.layer.1.attention.self.query", "frozen", "trains"],
        ["bert.encoder.layer.1.output.dense", "frozen", "trains"],
    ]  # names only: no model here
    metrics = [view.metric_combo.itemData(i) for i in range(view.metric_combo.count())]
    assert metrics[:1] == ["loss"] and "val_accuracy" in metrics
    assert view.metric_combo.currentData() == "val_accuracy"
    view.metric_combo.setCurrentIndex(metrics.index("loss"))
    view.axis.setCurrentIndex(1)  # by epoch
    assert len(view.plot.getPlotItem().listDataItems()) == 2


def test_clone_resume_and_delete(store, panel, state, qtbot, monkeypatch, home):
    from tunedesk.engine.paths import runs_dir

    folder = runs_dir(home) / "run-00001"
    (folder / "last").mkdir(parents=True)
    a = make_run(store, name="stopped one", status="stopped", output_dir=str(folder))
    store.set_checkpoint(a, "last", str(folder / "last"), 8, 2)
    p = panel()
    select(p, a)
    d = p.detail
    assert d.resume_button.isVisible() and d.resume_button.isEnabled()
    assert not d.export_button.isEnabled()  # no best checkpoint
    with qtbot.waitSignal(state.configRequested) as cloned, qtbot.waitSignal(state.showPanel) as shown:
        d.clone_button.click()
    assert cloned.args[0].hparams.learning_rate == 1e-4 and shown.args == ["train"]
    with qtbot.waitSignal(state.resumeRequested) as resumed:
        d.resume_button.click()
    assert resumed.args == [a]

    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kw: QMessageBox.StandardButton.Cancel)
    d.delete_button.click()
    assert p.table_model.rowCount() == 1 and folder.exists()
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kw: QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(state.runsChanged):
        d.delete_button.click()
    assert p.table_model.rowCount() == 0 and not folder.exists()
    assert p.lower_stack.currentWidget() is p.placeholder


def test_crashed_runs_show_as_interrupted_with_resume(store, panel, db):
    a = make_run(store, name="crashed", status="running")
    store.db.execute("UPDATE runs SET pid = 999999999 WHERE id = ?", [a])  # a process that is gone
    store.db.conn.commit()
    p = panel()
    assert p.table_model.index(0, COL["Status"]).data() == "interrupted"
    select(p, a)
    assert p.detail.resume_button.isVisible()


def test_refresh_on_runs_changed_keeps_the_selection(store, panel, state, qtbot):
    a = make_run(store, name="first")
    p = panel()
    select(p, a)
    b = make_run(store, name="second")
    state.runsChanged.emit()
    assert p.table_model.rowCount() == 2 and p.table_model.index(0, 0).data(RunIdRole) == b
    assert p.selected_ids() == [a]


def test_opens_fast_on_a_big_history(db, panel, qtbot):
    """Smoke check only (timings are in benchmarks/runs_panel_scale.py): 3,000 runs open with one page."""
    import sqlite3

    RunStore(db).close()
    conn = sqlite3.connect(db)
    conn.executemany(
        "INSERT INTO runs (name, status, created_at, model_name, dataset_name, config_json) VALUES "
        "(?, 'completed', ?, 'm', 'd', ?)",
        [
            (
                f"r{i}",
                f"2025-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}",
                json.dumps({"hparams": {"epochs": 3, "batch_size": 8, "learning_rate": 1e-4}}),
            )
            for i in range(3000)
        ],
    )
    conn.commit()
    conn.close()
    p = panel()
    assert p.table_model.total == 3000 and p.table_model.rowCount() == 200


def test_an_unreadable_history_is_explained_in_place(db, panel):
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    p = panel()  # no dialog, no exception: the panel says what is wrong
    assert "cannot be read" in p.placeholder.text() and "Hint:" in p.placeholder.text()
    assert p.table_model.rowCount() == 0


def test_export_dialog_shows_errors_inline_and_returns_the_result(store, panel, qtbot, monkeypatch, tmp_path):
    from tunedesk.engine import export
    from tunedesk.ui.runs.dialogs import ExportDialog, default_export_folder

    a = make_run(store, name="to export")
    p = panel()
    run = store.get_run(a)
    dialog = ExportDialog(run, p.state.home, p)
    qtbot.addWidget(dialog)
    assert Path(dialog.folder.text()) == default_export_folder(p.state.home, run)
    assert [dialog.format.itemData(i) for i in range(dialog.format.count())] == ["hf", "onnx", "tensorboard"]

    dialog.start()  # the fake run has no best checkpoint: the engine's message shows in the dialog
    qtbot.waitUntil(lambda: not dialog.error.isHidden(), timeout=60000)
    assert "no best checkpoint" in dialog.error.text() and "Hint:" in dialog.error.text()
    assert dialog.export_button.isEnabled()

    calls = []

    def fake_export(run_id, directory, fmt="auto", home=None):
        calls.append((run_id, str(directory), fmt))
        return {"path": str(directory), "format": fmt, "files": ["config.json"], "run_id": run_id, "label_names": []}

    monkeypatch.setattr(export, "export_run", fake_export)
    dialog.folder.setText(str(tmp_path / "out"))
    dialog.format.setCurrentIndex(1)
    with qtbot.waitSignal(dialog.accepted, timeout=60000):
        dialog.start()
    assert calls == [(a, str(tmp_path / "out"), "onnx")]
    assert dialog.result_info["format"] == "onnx"


def test_a_live_run_cannot_be_deleted_and_a_reused_pid_does_not_keep_one_live(store, panel, monkeypatch, home):
    from tunedesk.engine.paths import runs_dir
    from tunedesk.engine.store.connection import this_process

    folder = runs_dir(home) / "run-00001"
    (folder / "last").mkdir(parents=True)
    live = make_run(store, name="training now", status="running", output_dir=str(folder))
    p = panel()
    select(p, live)
    assert not p.detail.delete_button.isEnabled() and "Stop the run first" in p.detail.delete_button.toolTip()
    warned = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _parent, _title, text: warned.append(text))
    assert not p.delete_run(live, confirm=False)  # e.g. the table's stale view asked anyway
    assert warned and "training right now" in warned[0] and "Hint: stop it first" in warned[0]
    assert store.get_run(live)["status"] == "running" and folder.exists()

    # the same pid, but a process that started later: the trainer is gone, the run is interrupted
    store.update_run(live, owner_started=this_process()[1] - 3600)
    p2 = panel()
    assert p2.table_model.index(0, COL["Status"]).data() == "interrupted"
    select(p2, live)
    assert p2.detail.delete_button.isEnabled() and p2.detail.resume_button.isVisible()
