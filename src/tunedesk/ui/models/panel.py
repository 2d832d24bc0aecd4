"""Models area: every pre-trained model on this machine, filled as the background scan finds them.

A table (sortable, searchable, filtered by task) next to the selected model's details and model card.
"Use this model" hands the entry to the app state (layer tree, training panel); entries that cannot
be trained are refused with a sentence saying why, and broken entries stay listed with their problem.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from tunedesk.engine.errors import TuneDeskError
from tunedesk.ui.models.details import DetailsPane
from tunedesk.ui.models.format import refusal, task_label
from tunedesk.ui.models.scanner import COUNTING, LISTING, ModelScanner, describe
from tunedesk.ui.models.table import ALL_TASKS, COL, ENTRY_ROLE, PROBLEMS, TRAINABLE, ModelFilterProxy, ModelTableModel
from tunedesk.ui.resources import icon
from tunedesk.ui.state import AppState

if TYPE_CHECKING:
    from tunedesk.engine.catalog import ModelEntry

WEIGHT_FILTER = "Weight files (*.safetensors *.bin *.pth *.pt *.ckpt);;All files (*)"
COLUMN_WIDTHS = {
    "name": 240,
    "source": 80,
    "task": 130,
    "architecture": 150,
    "parameters": 78,
    "size": 72,
    "format": 82,
    "weights": 62,
}
COLUMN_CAPS = {"name": 340, "source": 110, "task": 170, "architecture": 230}  # fitted once to the first scan


class ModelsPanel(QWidget):
    """The model browser. Hooks the window calls: menu_actions, restore_settings, save_settings, shutdown."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.settings: QSettings | None = None
        self._wanted_id: str | None = None  # reselect this when the scan reports it
        self._wanted_path: Path | None = None  # or the first entry under this path (just added)
        self._scan_started = 0.0
        self._failed = False
        self._selecting = False  # True while the panel itself moves the selection
        self._columns_fitted = False  # widths fitted to the first scan (or restored from settings)

        self.model = ModelTableModel(self)
        self.proxy = ModelFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.scanner = ModelScanner(state.home, self)
        self.scanner.entries.connect(self._on_entries)
        self.scanner.passFinished.connect(self._on_pass_finished)
        self.scanner.failed.connect(self._on_failed)
        self.scanner.finished.connect(self._update_status)

        self._build_actions()
        self._build_ui()
        # Start once the event loop runs and the window has painted (the scan competes for the CPU).
        QTimer.singleShot(50, self.rescan)

    # ---- construction ----------------------------------------------------------------------------

    def _build_actions(self) -> None:
        self.add_folder_action = QAction(icon("folder.svg"), "Add model folder…", self)
        self.add_folder_action.setShortcut(QKeySequence("Ctrl+O"))
        self.add_folder_action.setStatusTip("Remember a folder holding one or more models and scan it")
        self.add_folder_action.triggered.connect(self.add_folder)
        self.add_file_action = QAction("Add weights file…", self)
        self.add_file_action.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.add_file_action.setStatusTip("Remember a single weights file (.safetensors, .bin, .pth) and scan it")
        self.add_file_action.triggered.connect(self.add_file)
        self.rescan_action = QAction(icon("refresh.svg"), "Rescan models", self)
        self.rescan_action.setShortcut(QKeySequence("F5"))
        self.rescan_action.setStatusTip("Look for models again (caches, packages, your folders)")
        self.rescan_action.triggered.connect(self.rescan)
        self.find_action = QAction(icon("search.svg"), "Find model…", self)
        self.find_action.setShortcut(QKeySequence("Ctrl+F"))
        self.find_action.setStatusTip("Search the model list")
        self.find_action.triggered.connect(self.focus_search)

    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 4)

        bar = QHBoxLayout()
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search name, architecture, task…  (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.addAction(icon("search.svg"), QLineEdit.ActionPosition.LeadingPosition)
        self.search.textChanged.connect(self.proxy.set_search)
        self.search.setMinimumWidth(220)
        self.task_combo = QComboBox()
        self.task_combo.setToolTip("Show only models for one task")
        self.task_combo.addItem("All tasks", ALL_TASKS)
        self.task_combo.addItem("Trainable now", TRAINABLE)
        self.task_combo.addItem("With problems", PROBLEMS)
        self.task_combo.insertSeparator(self.task_combo.count())
        self.task_combo.currentIndexChanged.connect(self._on_task_changed)
        self.task_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        bar.addWidget(self.search, 2)
        bar.addWidget(self.task_combo)
        bar.addStretch(1)
        for action, text in (
            (self.add_folder_action, "Add folder…"),
            (self.add_file_action, "Add weights file…"),
            (self.rescan_action, "Rescan"),
        ):
            button = QPushButton(action.icon(), text)
            button.setToolTip(
                f"{action.statusTip()} ({action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})"
            )
            button.clicked.connect(action.trigger)
            bar.addWidget(button)
        layout.addLayout(bar)

        self.status = QLabel("Looking for models…")
        self.status.setProperty("role", "hint")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(COL["name"], Qt.SortOrder.AscendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAlternatingRowColors(True)
        self.view.setWordWrap(False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(self.view.fontMetrics().height() + 8)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.setHighlightSections(False)
        for key, width in COLUMN_WIDTHS.items():
            self.view.setColumnWidth(COL[key], width)
        self.view.selectionModel().currentRowChanged.connect(self._on_current_changed)
        self.view.activated.connect(self._on_activated)

        self.details = DetailsPane()
        self.details.useRequested.connect(self.use_model)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.view)
        self.splitter.addWidget(self.details)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setSizes([860, 420])
        layout.addWidget(self.splitter, 1)

    # ---- window hooks ----------------------------------------------------------------------------

    def menu_actions(self) -> dict[str, list[QAction]]:
        """Actions for the window's menus (and their window-wide shortcuts)."""
        return {"File": [self.add_folder_action, self.add_file_action], "View": [self.find_action, self.rescan_action]}

    def restore_settings(self, settings: QSettings) -> None:
        self.settings = settings
        selected = settings.value("models/selected")
        if selected and self.current_entry() is None:
            self._wanted_id = str(selected)
            self._select_wanted()
        task = settings.value("models/task")
        if task:
            self.set_task_filter(str(task))
        for key, restore in (
            ("models/splitter", self.splitter.restoreState),
            ("models/header", self.view.horizontalHeader().restoreState),
        ):
            value = settings.value(key)
            if value is not None and restore(value) and key == "models/header":
                self._columns_fitted = True

    def save_settings(self, settings: QSettings) -> None:
        entry = self.current_entry()
        if entry is not None:
            settings.setValue("models/selected", entry.id)
        settings.setValue("models/task", self.task_combo.currentData() or "")
        settings.setValue("models/splitter", self.splitter.saveState())
        settings.setValue("models/header", self.view.horizontalHeader().saveState())

    def shutdown(self, timeout_ms: int = 3000) -> bool:
        """Stop scanning; False when a scan thread is still busy (the app then exits without waiting)."""
        return self.scanner.shutdown(timeout_ms)

    # ---- user actions ----------------------------------------------------------------------------

    def rescan(self) -> None:
        self._scan_started = time.monotonic()
        self._failed = False
        self.status.setText("Looking for models…")
        self.scanner.start()

    def focus_search(self) -> None:
        self.state.showPanel.emit("models")
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    def set_task_filter(self, key: str) -> None:
        i = self.task_combo.findData(key)
        if i < 0:
            self._add_task_item(key)
            i = self.task_combo.findData(key)
        self.task_combo.setCurrentIndex(i)

    def _start_dir(self) -> str:
        if self.settings is not None and self.settings.value("models/last_dir"):
            return str(self.settings.value("models/last_dir"))
        return str(Path.home())

    def add_folder(self) -> None:
        self.state.showPanel.emit("models")
        path = QFileDialog.getExistingDirectory(self, "Add a model folder", self._start_dir())
        if path:
            self.add_path(path)

    def add_file(self) -> None:
        self.state.showPanel.emit("models")
        path, _ = QFileDialog.getOpenFileName(self, "Add a weights file", self._start_dir(), WEIGHT_FILTER)
        if path:
            self.add_path(path)

    def add_path(self, path: str | os.PathLike[str]) -> None:
        """Remember a folder or weights file (catalog.add_user_path), rescan, and select what it holds."""
        from tunedesk.engine import catalog

        try:
            stored = catalog.add_user_path(path, self.state.home)
        except TuneDeskError as exc:
            self._show_error(exc.message, exc.hint)
            return
        except OSError as exc:
            self._show_error(
                f"cannot remember {path}: {exc.strerror or exc}", "check that TuneDesk's data folder is writable"
            )
            return
        if self.settings is not None:
            self.settings.setValue("models/last_dir", str(stored if stored.is_dir() else stored.parent))
        self._wanted_path = stored
        self._wanted_id = None
        self.state.statusMessage.emit(f"Added {stored}: scanning it…")
        self.rescan()

    def use_model(self, entry: ModelEntry | None = None) -> bool:
        """Send the entry to the layer tree and training panel, or say (inline) why it cannot be used."""
        entry = entry or self.current_entry()
        if entry is None:
            self.details.show_message("Select a model in the list first.")
            return False
        reason = refusal(entry)
        if reason:
            self.details.show_message(reason)
            return False
        self.details.clear_message()
        self.state.select_model(entry)
        self.state.statusMessage.emit(f"Using {entry.name}")
        self.state.showPanel.emit("layers")
        return True

    # ---- selection -------------------------------------------------------------------------------

    def current_entry(self) -> ModelEntry | None:
        index = self.view.currentIndex()
        if not index.isValid():
            return None
        return index.siblingAtColumn(0).data(ENTRY_ROLE)

    def select_id(self, entry_id: str) -> bool:
        row = self.model.row_of(entry_id)
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            return False  # filtered out
        self._selecting = True
        try:
            self.view.selectionModel().setCurrentIndex(
                index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
            )
        finally:
            self._selecting = False
        self.view.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)
        return True

    def _select_wanted(self) -> None:
        if self._wanted_path is not None:
            wanted = str(self._wanted_path)
            for e in self.model.entries():
                if e.path == wanted or e.path.startswith(wanted.rstrip(os.sep) + os.sep):
                    self._wanted_path = None
                    self.select_id(e.id)
                    return
        elif self._wanted_id is not None and self.select_id(self._wanted_id):
            self._wanted_id = None

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        entry = current.siblingAtColumn(0).data(ENTRY_ROLE) if current.isValid() else None
        if entry is not None and not self._selecting:
            self._wanted_id = None  # the user chose: do not jump back to the remembered model
            self._wanted_path = None
        self.details.show_entry(entry)

    def _on_activated(self, index: QModelIndex) -> None:
        entry = index.siblingAtColumn(0).data(ENTRY_ROLE)
        if entry is not None:
            self.use_model(entry)

    def _on_task_changed(self, _index: int) -> None:
        self.proxy.set_task(self.task_combo.currentData() or ALL_TASKS)

    def _add_task_item(self, task: str) -> None:
        """Insert a task in the combo, alphabetically after the fixed choices."""
        first = self.task_combo.findData(PROBLEMS) + 2  # after the separator
        pos = first
        while pos < self.task_combo.count() and str(self.task_combo.itemData(pos)) < task:
            pos += 1
        self.task_combo.insertItem(pos, task_label(task) if not task.startswith("@") else task, task)

    # ---- scan results ----------------------------------------------------------------------------

    def _on_entries(self, number: int, entries: list[ModelEntry]) -> None:
        current = self.current_entry()
        self.model.merge(entries, replace=(number == COUNTING))
        for task in sorted({e.task for e in entries if e.task}):
            if self.task_combo.findData(task) < 0:
                self._add_task_item(task)
        if self._wanted_id is not None or self._wanted_path is not None:
            self._select_wanted()
        elif current is not None and any(e.id == current.id for e in entries) and number == COUNTING:
            self.details.show_entry(self.current_entry())  # now with its parameter count
        what = "Counting parameters" if number == COUNTING else "Scanning"
        self.status.setText(f"{what}… {self.model.rowCount()} models so far")
        self._set_status_role("hint")

    def _on_pass_finished(self, number: int, ids: list[str]) -> None:
        self.model.keep_only(set(ids))
        if not self._columns_fitted and self.model.rowCount():
            self._fit_columns()
        if number == LISTING and self.scanner.is_running():
            self.status.setText(f"{describe(self.model.entries())} · counting parameters…")
        if self._wanted_id is not None or self._wanted_path is not None:
            self._select_wanted()
        if self.current_entry() is not None:
            self.details.show_entry(self.current_entry())

    def _fit_columns(self) -> None:
        """Column widths from the first scan's texts, capped (QTableView's own fitting takes seconds on
        thousands of rows: it asks every row for a size hint)."""
        self._columns_fitted = True
        fm = self.view.fontMetrics()
        header = self.view.horizontalHeader()
        sample = self.model.entries()
        sample = sample[:: max(1, len(sample) // 200)]  # a sample is plenty for widths
        pad = 2 * self.view.style().pixelMetric(self.view.style().PixelMetric.PM_FocusFrameHMargin) + 16
        for key in COLUMN_CAPS:  # the free-text columns; numbers and marks keep their default widths
            col = COL[key]
            title = fm.horizontalAdvance(str(self.model.headerData(col, Qt.Orientation.Horizontal))) + 24
            texts = {ModelTableModel.display(e, key) for e in sample}
            widest = max((fm.horizontalAdvance(t) for t in texts), default=0) + pad
            if key == "name":
                widest += self.view.iconSize().width() if not self.view.iconSize().isEmpty() else 20
            width = max(title, widest)
            header.resizeSection(col, min(width, COLUMN_CAPS.get(key, width)))

    def _on_failed(self, message: str, hint: str) -> None:
        self._show_error(message, hint)

    def _update_status(self) -> None:
        if self.scanner.is_running() or self._failed:
            return
        took = time.monotonic() - self._scan_started
        text = describe(self.model.entries())
        if self.model.rowCount() == 0:
            text = (
                "No models found. Add a model folder (Ctrl+O), or copy a Hugging Face cache "
                "(~/.cache/huggingface/hub) from a connected machine."
            )
        self.status.setText(f"{text} · scanned in {took:.1f} s")
        self._set_status_role("hint")

    def _show_error(self, message: str, hint: str) -> None:
        self._failed = True
        self.status.setText(f"{message}" + (f" — {hint}" if hint else ""))
        self._set_status_role("error")

    def _set_status_role(self, role: str) -> None:
        if self.status.property("role") != role:
            self.status.setProperty("role", role)
            self.status.style().unpolish(self.status)
            self.status.style().polish(self.status)
