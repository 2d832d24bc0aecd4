"""The Runs area: browse the history (search, filters, sort, edit), see one run, compare several, act.

Selecting one run shows its detail; selecting two or more compares them. Heavy work (exports, model
layouts for freeze maps) runs in worker threads; everything else is a quick indexed query through this
thread's RunStore. Runs left "running" by a crash are marked interrupted when the panel opens.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QItemSelectionModel, QSettings, Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.store import history
from tunedesk.ui.background import TaskGroup
from tunedesk.ui.resources import icon
from tunedesk.ui.runs.controller import RunsController
from tunedesk.ui.runs.table import COL, COLUMNS, RunIdRole, RunsTableModel

if TYPE_CHECKING:  # built on first use
    from tunedesk.ui.runs.compare_view import CompareView
    from tunedesk.ui.runs.detail import RunDetail

log = logging.getLogger("tunedesk.ui.runs")

COLUMN_WIDTHS = {
    "#": 40,
    "Started": 116,
    "Name": 180,
    "Model": 130,
    "Data": 140,
    "Trains": 172,
    "LR": 50,
    "Ep.": 34,
    "Batch": 46,
    "Best": 76,
    "Duration": 82,
    "Status": 104,
    "Tags": 100,
}
POLL_MS = 3000  # refresh while a listed run is training


class RunsPanel(QWidget):
    def __init__(self, state: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.controller = RunsController(state, self._error)
        self.calls = TaskGroup(self)
        self._detail: RunDetail | None = None
        self._compare: CompareView | None = None

        # ---- header: title, search, filters ----
        self.title = QLabel("Runs")
        self.title.setProperty("role", "title")
        self.count_label = QLabel()
        self.count_label.setProperty("role", "hint")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search name, model, data, tags, notes or #id")
        self.search.setClearButtonEnabled(True)
        self.search.addAction(icon("search.svg"), QLineEdit.ActionPosition.LeadingPosition)
        self.search.setMinimumWidth(150)
        self._search_timer = QTimer(self, singleShot=True, interval=200)
        self._search_timer.timeout.connect(self.apply_filter)
        self.search.textChanged.connect(lambda _t: self._search_timer.start())
        self.status_filter = self._combo("All statuses")
        self.model_filter = self._combo("All models")
        self.dataset_filter = self._combo("All data sets")
        self.tag_filter = self._combo("All tags")
        for status in history.RUN_STATUSES:
            self.status_filter.addItem(status, status)
        self.compare_button = QPushButton("Compare")
        self.compare_button.setIcon(icon("compare.svg"))
        self.compare_button.setToolTip("Select two or more runs (Ctrl/Shift-click) to compare them")
        self.compare_button.setEnabled(False)
        self.compare_button.clicked.connect(self._show_selection)
        self.refresh_button = QPushButton()
        self.refresh_button.setIcon(icon("refresh.svg"))
        self.refresh_button.setToolTip("Reload the history")
        self.refresh_button.clicked.connect(self.refresh)
        head = QHBoxLayout()
        head.addWidget(self.title)
        head.addWidget(self.count_label, 0, Qt.AlignmentFlag.AlignBottom)
        head.addStretch(1)
        head.addWidget(self.compare_button)
        head.addWidget(self.refresh_button)
        filters = QHBoxLayout()
        filters.addWidget(self.search, 2)
        for combo in (self.status_filter, self.model_filter, self.dataset_filter, self.tag_filter):
            filters.addWidget(combo, 1)

        # ---- the table ----
        self.table_model = RunsTableModel(self.controller.store, parent=self)
        self.table_model.countChanged.connect(self._count_changed)
        self.table_model.editFailed.connect(self._error)
        self.table_model.edited.connect(self._row_edited)
        self._last_selected: list[int] = []
        self.view = QTableView()
        self.view.setModel(self.table_model)
        # After setModel: the selection model clears itself on reset first, then we select again.
        self.table_model.modelReset.connect(self._model_reset)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.view.setAlternatingRowColors(True)
        self.view.setWordWrap(False)
        self.view.setShowGrid(False)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(24)
        self.view.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        header = self.view.horizontalHeader()
        header.setHighlightSections(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(COL["Name"], QHeaderView.ResizeMode.Stretch)  # the rest keep their width
        header.setStretchLastSection(False)
        for title, width in COLUMN_WIDTHS.items():
            self.view.setColumnWidth(COL[title], width)
        header.setSortIndicator(COL["Started"], Qt.SortOrder.DescendingOrder)

        # ---- below: nothing / one run / a comparison ----
        self.placeholder = QLabel(
            "Select a run to see its details. Select two or more (Ctrl- or Shift-click) to compare them."
        )
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setProperty("role", "hint")
        self.placeholder.setWordWrap(True)
        self.lower_stack = QStackedWidget()
        self.lower_stack.addWidget(self.placeholder)
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.split.addWidget(self.view)
        self.split.addWidget(self.lower_stack)
        self.split.setStretchFactor(0, 2)
        self.split.setStretchFactor(1, 3)
        self.split.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 6)
        layout.addLayout(head)
        layout.addLayout(filters)
        layout.addWidget(self.split, 1)

        app = QApplication.instance()
        if app is not None:  # exports and model layouts finish before the app's objects go away
            app.aboutToQuit.connect(self.calls.wait_all)
        self._poll = QTimer(self, interval=POLL_MS)
        self._poll.timeout.connect(self._poll_running)
        self.state.runsChanged.connect(self.refresh)
        self._restore_settings()

        # ---- first load: crashed runs become interrupted (shown with a resume button), then one count
        # and one page. A history that cannot be opened is explained in place, not in a dialog at start.
        self.view.selectionModel().selectionChanged.connect(self._selection_changed)
        try:
            self._fill_choices(self.controller.open_history())
            self.view.setSortingEnabled(True)  # sorts (= loads) by the indicator set above
        except TuneDeskError as exc:
            self.placeholder.setText(
                f"The run history cannot be read: {exc.message}" + (f"\nHint: {exc.hint}" if exc.hint else "")
            )
            self.placeholder.setProperty("role", "error")
            return
        self._poll.start()

    # ---- plumbing ---------------------------------------------------------------------------------

    def _combo(self, everything: str) -> QComboBox:
        combo = QComboBox()
        combo.addItem(everything, None)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(6)
        combo.currentIndexChanged.connect(lambda _i: self.apply_filter())
        return combo

    @property
    def detail(self) -> RunDetail:
        detail = self._detail
        if detail is None:
            from tunedesk.ui.runs.detail import RunDetail

            detail = self._detail = RunDetail(self.controller.store, self.calls, home=self.state.home)
            detail.cloneRequested.connect(self.clone_run)
            detail.resumeRequested.connect(self.resume_run)
            detail.exportRequested.connect(self.export_run)
            detail.deleteRequested.connect(self.delete_run)
            detail.edited.connect(lambda rid, fields: self.table_model.update_run(rid, **fields))
            detail.failed.connect(self._error)
            self.lower_stack.addWidget(detail)
        return detail

    @property
    def compare_view(self) -> CompareView:
        view = self._compare
        if view is None:
            from tunedesk.ui.runs.compare_view import CompareView

            view = self._compare = CompareView(self.controller.store, self.calls)
            self.lower_stack.addWidget(view)
        return view

    def _fill_choices(self, choices: history.FilterChoices) -> None:
        for combo, values in (
            (self.model_filter, choices.models),
            (self.dataset_filter, choices.datasets),
            (self.tag_filter, choices.tags),
        ):
            current = combo.currentData()
            combo.blockSignals(True)
            while combo.count() > 1:
                combo.removeItem(1)
            from tunedesk.ui.runs.format import short_model

            for value in values:
                combo.addItem(short_model(value) if combo is self.model_filter else value, value)
                if combo is self.model_filter:
                    combo.setItemData(combo.count() - 1, value, Qt.ItemDataRole.ToolTipRole)
            index = combo.findData(current) if current is not None else 0
            combo.setCurrentIndex(max(0, index))
            combo.blockSignals(False)

    def current_filter(self) -> history.RunFilter:
        return history.RunFilter(
            search=self.search.text().strip(),
            status=self.status_filter.currentData(),
            model=self.model_filter.currentData(),
            dataset=self.dataset_filter.currentData(),
            tag=self.tag_filter.currentData(),
        )

    # ---- loading ----------------------------------------------------------------------------------

    def apply_filter(self) -> None:
        selected = self.selected_ids()
        try:
            self.table_model.set_filter(self.current_filter())
        except TuneDeskError as exc:
            self._error(exc.message, exc.hint)
        self._reselect(selected)

    def refresh(self, reshow: bool = True) -> None:
        """Reload rows (as many as were loaded), filter menus, and (``reshow``) the run or comparison shown."""
        selected = self.selected_ids()
        try:
            self._fill_choices(self.controller.open_history())
            self.table_model.reload(keep_loaded=True)
        except TuneDeskError as exc:
            self._error(exc.message, exc.hint)
            return
        self._reselect(selected)
        if reshow:
            self._show_selection()

    def _poll_running(self) -> None:
        """While a listed run trains: its row (status, best, duration) and, if shown, its detail."""
        if not self.isVisible():
            return
        live = {r["id"] for r in self.table_model.rows[:200] if r.get("status") in ("running", "queued")}
        if not live:
            return
        self.refresh(reshow=False)
        detail = self._detail
        shown = detail.run if detail is not None and self.lower_stack.currentWidget() is detail else None
        if detail is not None and shown is not None and shown["id"] in live:
            detail.refresh()

    def _count_changed(self, total: int) -> None:
        everything = self.current_filter() == history.RunFilter()
        self.count_label.setText(f"{total:,} run{'s' if total != 1 else ''}" + ("" if everything else " match"))

    def _reselect(self, run_ids: list[int]) -> None:
        sel = self.view.selectionModel()
        sel.blockSignals(True)
        sel.clearSelection()
        for rid in run_ids:
            row = self.table_model.row_of(rid)
            if row >= 0:
                sel.select(
                    self.table_model.index(row, 0),
                    QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows,
                )
        sel.blockSignals(False)
        self.view.viewport().update()

    # ---- selection --------------------------------------------------------------------------------

    def selected_ids(self) -> list[int]:
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()})
        return [self.table_model.index(r, 0).data(RunIdRole) for r in rows]

    def select_runs(self, run_ids: list[int]) -> None:
        """Select runs by id (loading more pages if needed) and show them."""
        for rid in run_ids:
            while self.table_model.row_of(rid) < 0 and self.table_model.canFetchMore():
                self.table_model.fetchMore()
        self._reselect(run_ids)
        rows = [self.table_model.row_of(r) for r in run_ids if self.table_model.row_of(r) >= 0]
        if rows:
            self.view.scrollTo(self.table_model.index(rows[0], 0))
        self._show_selection()

    def _selection_changed(self, *_: Any) -> None:
        self._show_selection()

    def _model_reset(self) -> None:
        """Sorting or reloading resets the model (and silently the selection): select the same runs again."""
        self._reselect(self._last_selected)

    def _show_selection(self) -> None:
        ids = self._last_selected = self.selected_ids()
        self.compare_button.setEnabled(len(ids) >= 2)
        self.compare_button.setText(f"Compare {len(ids)}" if len(ids) >= 2 else "Compare")
        if not ids:
            self.lower_stack.setCurrentWidget(self.placeholder)
        elif len(ids) == 1:
            self.detail.show_run(ids[0])
            self.lower_stack.setCurrentWidget(self.detail)
        else:
            self.compare_view.compare(sorted(ids))  # oldest first, like the order they were trained
            self.lower_stack.setCurrentWidget(self.compare_view)

    def _row_edited(self, run_id: int) -> None:
        if self._detail is not None and self._detail.run is not None and self._detail.run["id"] == run_id:
            self._detail.refresh()
        try:
            self._fill_choices(self.controller.filter_choices())
        except TuneDeskError as exc:
            self._error(exc.message, exc.hint)

    # ---- actions ----------------------------------------------------------------------------------

    def clone_run(self, run_id: int) -> None:
        self.controller.clone_run(run_id)

    def resume_run(self, run_id: int) -> None:
        self.controller.resume_run(run_id)

    def export_run(self, run_id: int) -> None:
        from tunedesk.ui.runs.dialogs import ExportDialog, show_export_result

        run = self.controller.run(run_id)
        if run is None:
            return
        dialog = ExportDialog(run, self.state.home, self)
        if dialog.exec() and dialog.result_info:
            self.controller.exported(run_id, dialog.result_info["path"])
            show_export_result(self, dialog.result_info)

    def delete_run(self, run_id: int, confirm: bool = True) -> bool:
        run = self.controller.run(run_id)
        if run is None:
            return False
        if confirm:
            folder = run.get("output_dir") or "(no folder)"
            answer = QMessageBox.question(
                self,
                "Delete run?",
                f"Delete run #{run_id} “{run.get('name') or ''}”, its metrics and its files?\n\n{folder}\n\n"
                "This cannot be undone.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                QMessageBox.StandardButton.Cancel,
            )
            if answer != QMessageBox.StandardButton.Yes:
                return False
        return self.controller.delete_run(run_id)

    def _error(self, message: str, hint: str = "") -> None:
        QMessageBox.warning(self, "Runs", message + (f"\n\nHint: {hint}" if hint else ""))

    # ---- window hooks -----------------------------------------------------------------------------

    def _restore_settings(self) -> None:
        settings = QSettings("TuneDesk", "TuneDesk")
        state = settings.value("runs/splitter")
        if state is not None:
            self.split.restoreState(state)
        else:
            self.split.setSizes([250, 560])
        columns = settings.value("runs/columns")
        if columns is not None:
            self.view.horizontalHeader().restoreState(columns)

    def save_settings(self, settings: QSettings) -> None:
        settings.setValue("runs/splitter", self.split.saveState())
        settings.setValue("runs/columns", self.view.horizontalHeader().saveState())

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Stop this panel's threads (the window is closing); False when one is still busy."""
        done = self.calls.wait_all(timeout_ms)
        if self._detail is not None:
            done = self._detail.shutdown(timeout_ms) and done
        return done

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)


__all__ = ["RunsPanel", "COLUMNS"]
