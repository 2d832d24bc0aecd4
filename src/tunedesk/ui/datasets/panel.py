"""The Datasets area: import, label, clean, split and version the user's data.

Layout: data sets and their classes on the left, the items table in the middle, cleaning flags,
class balance, split and versions on the right. Every change to the data is an engine ``Edit``
pushed on a QUndoStack (Ctrl+Z / Ctrl+Shift+Z): applying an edit returns its inverse, which is all
an undo needs. Slow work (import, duplicate search, split planning, saving a version, checking
image files) runs in ``jobs.Job`` threads, each with its own ``DatasetStore``; the GUI thread keeps
one store for reading pages of the table and applying small edits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QKeySequence, QStandardItem, QStandardItemModel, QUndoStack
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QToolButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from tunedesk.engine.datasets.flags import flags_for_kind
from tunedesk.engine.errors import TuneDeskError
from tunedesk.ui.datasets.actions import PanelActions, open_store
from tunedesk.ui.datasets.chart import BalanceChart
from tunedesk.ui.datasets.commands import LabelDelegate
from tunedesk.ui.datasets.side import ClassesBox, CleaningBox, SplitBox, VersionBox
from tunedesk.ui.datasets.table_model import ItemsModel

if TYPE_CHECKING:  # the engine's data set code (sqlite-utils, Pillow) loads after the window shows
    from tunedesk.engine.datasets import DatasetInfo, DatasetStore, VersionInfo
    from tunedesk.ui.datasets.jobs import Job


KIND_NAMES = {
    "text": "labelled texts",
    "image": "labelled images",
    "text_corpus": "text corpus",
    "chat": "chat conversations",
}
DATASET_ROLE = Qt.ItemDataRole.UserRole + 1
VERSION_ROLE = Qt.ItemDataRole.UserRole + 2


def _role(label: QLabel, role: str) -> QLabel:
    label.setProperty("role", role)
    label.style().unpolish(label)
    label.style().polish(label)
    return label


class DatasetsPanel(PanelActions, QWidget):
    def __init__(self, state: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.store: DatasetStore | None = None
        self.info: DatasetInfo | None = None
        self.versions: list[VersionInfo] = []
        self.undo_stack = QUndoStack(self)
        self.jobs: set[Job] = set()
        self.task_job: Job | None = None  # the one job with a progress bar (import, split, version, files)
        self.flags_job: Job | None = None
        self._edits = 0  # edits applied; a flag refresh that started before the last edit runs again
        self.extra_copies: list[int] = []
        self.content_hash: str | None = None  # of the data set as it is now (from the last flag check)
        self.thumbs = None
        self._flags_timer = QTimer(self, singleShot=True, interval=400)
        self._flags_timer.timeout.connect(self.refresh_flags)
        self._build()
        QTimer.singleShot(0, self._open_store)

    # ---- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        title = _role(QLabel("Data sets"), "title")
        self.import_button = QPushButton("Import…")
        self.import_button.setToolTip("Import labelled texts, images, a text corpus or chat conversations")
        self.import_button.clicked.connect(self.open_import_dialog)
        head = QHBoxLayout()
        head.addWidget(title)
        head.addStretch(1)
        head.addWidget(self.import_button)
        self.sets_model = QStandardItemModel(self)
        self.sets_view = QTreeView()
        self.sets_view.setModel(self.sets_model)
        self.sets_view.setHeaderHidden(True)
        self.sets_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.sets_view.selectionModel().currentChanged.connect(self._set_chosen)
        self.delete_set_button = QToolButton()
        self.delete_set_button.setText("Delete data set…")
        self.delete_set_button.clicked.connect(self.delete_dataset)
        self.classes_box = ClassesBox()
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(8, 8, 4, 8)
        lv.addLayout(head)
        lv.addWidget(self.sets_view, 2)
        lv.addWidget(self.delete_set_button, 0, Qt.AlignmentFlag.AlignRight)
        lv.addWidget(self.classes_box, 3)

        self.name_label = _role(QLabel("No data set"), "title")
        self.info_label = _role(QLabel("Import a file or folder to start."), "hint")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search texts and file names…")
        self.search.setClearButtonEnabled(True)
        self._search_timer = QTimer(self, singleShot=True, interval=250)
        self._search_timer.timeout.connect(self.apply_filters)
        self.search.textChanged.connect(lambda: self._search_timer.start())
        self.label_filter = QComboBox()
        self.split_filter = QComboBox()
        for text, value in (("All splits", None), ("Train", "train"), ("Validation", "val"), ("Not assigned", "")):
            self.split_filter.addItem(text, value)
        self.flag_filter = QComboBox()
        for combo, chars in ((self.label_filter, 10), (self.split_filter, 9), (self.flag_filter, 13)):
            combo.currentIndexChanged.connect(self.apply_filters)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(chars)
            combo.view().setMinimumWidth(220)  # the open list shows whole names
        filters = QHBoxLayout()
        filters.addWidget(self.search, 1)
        filters.addWidget(self.label_filter)
        filters.addWidget(self.split_filter)
        filters.addWidget(self.flag_filter)

        self.model = ItemsModel(self)
        self.model.labelEdited.connect(self._label_edited)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setItemDelegateForColumn(1, LabelDelegate(self.table))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.SelectedClicked
        )
        self.table.setWordWrap(False)
        self.table.setAlternatingRowColors(True)
        self.table.setSortingEnabled(False)
        self.table.horizontalHeader().setSectionsClickable(True)
        self.table.horizontalHeader().sectionClicked.connect(self._sort_clicked)
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.count_label = _role(QLabel(""), "hint")

        self.relabel_combo = QComboBox()
        self.relabel_combo.setEditable(True)
        self.relabel_combo.setMinimumWidth(110)
        self.relabel_combo.lineEdit().setPlaceholderText("class")
        self.relabel_button = QPushButton("Relabel")
        self.relabel_button.setToolTip("Give the selected items the class on the left (a new name makes a new class)")
        self.relabel_button.clicked.connect(lambda: self.relabel_selection(self.relabel_combo.currentText()))
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete the selected items (Del); Ctrl+Z brings them back")
        self.delete_button.clicked.connect(self.delete_selection)
        self.undo_action = QAction("Undo", self)
        self.undo_action.setShortcuts([QKeySequence("Ctrl+Z")])
        self.undo_action.triggered.connect(self.undo_stack.undo)
        self.redo_action = QAction("Redo", self)
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.redo_action.triggered.connect(self.undo_stack.redo)
        self.undo_stack.canUndoChanged.connect(self.undo_action.setEnabled)
        self.undo_stack.canRedoChanged.connect(self.redo_action.setEnabled)
        self.undo_stack.undoTextChanged.connect(lambda t: self.undo_action.setToolTip(f"Undo {t} (Ctrl+Z)"))
        self.undo_stack.redoTextChanged.connect(lambda t: self.redo_action.setToolTip(f"Redo {t} (Ctrl+Shift+Z)"))
        self.undo_action.setEnabled(False)
        self.redo_action.setEnabled(False)
        delete_action = QAction("Delete selected items", self)
        delete_action.setShortcut(QKeySequence.StandardKey.Delete)
        delete_action.triggered.connect(self.delete_selection)
        for action in (self.undo_action, self.redo_action):
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(action)
        delete_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.table.addAction(delete_action)
        undo_button, redo_button = QToolButton(), QToolButton()
        undo_button.setDefaultAction(self.undo_action)
        redo_button.setDefaultAction(self.redo_action)
        actions = QHBoxLayout()
        actions.addWidget(self.relabel_combo)
        actions.addWidget(self.relabel_button)
        actions.addWidget(self.delete_button)
        actions.addStretch(1)
        actions.addWidget(self.count_label)
        actions.addWidget(undo_button)
        actions.addWidget(redo_button)

        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress_label = _role(QLabel(""), "hint")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_task)
        self.progress_row = QWidget()
        pr = QHBoxLayout(self.progress_row)
        pr.setContentsMargins(0, 0, 0, 0)
        pr.addWidget(self.progress_label, 1)
        pr.addWidget(self.progress, 1)
        pr.addWidget(self.cancel_button)
        self.progress_row.hide()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()

        center = QWidget()
        cv = QVBoxLayout(center)
        cv.setContentsMargins(4, 8, 4, 8)
        cv.addWidget(self.name_label)
        cv.addWidget(self.info_label)
        cv.addLayout(filters)
        cv.addWidget(self.table, 1)
        cv.addLayout(actions)
        cv.addWidget(self.progress_row)
        cv.addWidget(self.message)

        self.cleaning_box = CleaningBox()
        self.cleaning_box.selectRequested.connect(self.select_flagged)
        self.cleaning_box.selectExtrasRequested.connect(self.select_extra_copies)
        self.chart = BalanceChart()
        self.chart.setMinimumHeight(170)
        balance = self.balance_box = QGroupBox("Class balance")
        QVBoxLayout(balance).addWidget(self.chart)
        self.split_box = SplitBox()
        self.split_box.splitRequested.connect(self.split)
        self.version_box = VersionBox()
        self.version_box.saveRequested.connect(self.save_version)
        self.version_box.useRequested.connect(self.use_for_training)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(4, 8, 8, 8)
        rv.addWidget(self.cleaning_box)
        rv.addWidget(balance, 1)
        rv.addWidget(self.split_box)
        rv.addWidget(self.version_box)

        self.classes_box.addRequested.connect(self.add_class)
        self.classes_box.renameRequested.connect(self.rename_class)
        self.classes_box.mergeRequested.connect(self.merge_classes)
        self.classes_box.deleteRequested.connect(self.delete_class)
        self.classes_box.filterRequested.connect(self._filter_label)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(center)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([220, 700, 340])
        splitter.setChildrenCollapsible(False)
        self.splitter = splitter
        saved = QSettings("TuneDesk", "TuneDesk").value("datasets/splitter")
        if saved is not None:
            splitter.restoreState(saved)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        self._set_enabled(False)

    def _set_enabled(self, on: bool) -> None:
        for w in (
            self.search,
            self.label_filter,
            self.split_filter,
            self.flag_filter,
            self.table,
            self.relabel_combo,
            self.relabel_button,
            self.delete_button,
            self.split_box,
            self.version_box,
            self.classes_box,
            self.delete_set_button,
        ):
            w.setEnabled(on)
        if on:
            self._selection_changed()

    # ---- messages ------------------------------------------------------------------------------
    def show_message(self, text: str, role: str = "hint") -> None:
        self.message.setText(text)
        _role(self.message, role)
        self.message.setVisible(bool(text))

    def show_error(self, message: str, hint: str = "") -> None:
        self.show_message(message + (f"<br><i>Hint: {hint}</i>" if hint else ""), "error")

    # ---- store and data set list -----------------------------------------------------------------
    def _open_store(self) -> None:
        if self.store is not None:
            return
        try:
            self.store = open_store(self.state.database)
            self.store.cleanup_interrupted_imports()
        except TuneDeskError as exc:
            self.show_error(exc.message, exc.hint)
            self.import_button.setEnabled(False)
            return
        self.refresh_datasets()

    def refresh_datasets(self, select: int | None = None) -> None:
        if self.store is None:
            return
        current = select if select is not None else (self.info.id if self.info else None)
        self.sets_model.clear()
        chosen_index = None
        datasets = self.store.list_datasets()
        versions_by_set: dict[int, list[VersionInfo]] = {}
        for v in self.store.list_versions():
            if v.dataset_id is not None:
                versions_by_set.setdefault(v.dataset_id, []).append(v)
        for info in datasets:
            item = QStandardItem(f"{info.name}  ·  {info.item_count:,}")
            item.setToolTip(f"{KIND_NAMES.get(info.kind, info.kind)} · {info.item_count:,} items\n{info.source}")
            item.setData(info.id, DATASET_ROLE)
            for v in sorted(versions_by_set.get(info.id, []), key=lambda v: -v.number):
                child = QStandardItem(f"{v.id}  ·  {v.item_count:,} items")
                child.setToolTip(
                    f"saved {v.created_at[:19].replace('T', ' ')} UTC\nhash {v.content_hash}"
                    + (f"\n{v.note}" if v.note else "")
                )
                child.setData(info.id, DATASET_ROLE)
                child.setData(v.id, VERSION_ROLE)
                item.appendRow(child)
            self.sets_model.appendRow(item)
            if info.id == current:
                chosen_index = item.index()
        if chosen_index is None and datasets:
            chosen_index = self.sets_model.index(0, 0)
        if chosen_index is not None:
            self.sets_view.setCurrentIndex(chosen_index)
            self.sets_view.expand(chosen_index)
        else:
            self.load_dataset(None)

    def _set_chosen(self, current, _previous=None) -> None:
        ds = current.data(DATASET_ROLE) if current.isValid() else None
        if ds is None:
            return
        if self.info is None or self.info.id != ds:
            self.load_dataset(ds)

    def selected_version(self) -> str | None:
        index = self.sets_view.currentIndex()
        return index.data(VERSION_ROLE) if index.isValid() else None

    def load_dataset(self, dataset_id: int | None) -> None:
        self.undo_stack.clear()
        self.extra_copies = []
        self.content_hash = None
        if dataset_id is None or self.store is None:
            self.info = None
            self.model.set_dataset(None, None)
            self.name_label.setText("No data set")
            self.info_label.setText("Import a file or folder to start: Import…")
            self.cleaning_box.set_counts({}, 0, "Import a data set to check it.")
            self.chart.set_counts({})
            self._set_enabled(False)
            return
        try:
            self.info = self.store.get_dataset(dataset_id)
        except TuneDeskError as exc:
            self.show_error(exc.message, exc.hint)
            return
        info = self.info
        self.versions = self.store.list_versions(info.id)
        if info.kind == "image" and self.thumbs is None:
            from tunedesk.engine.datasets import thumbnail_dir
            from tunedesk.ui.datasets.thumbs import ThumbnailService

            self.thumbs = ThumbnailService(thumbnail_dir(self.state.home), parent=self)
            self.thumbs.ready.connect(self.model.thumbnail_ready)
        self.model.thumbs = self.thumbs if info.kind == "image" else None
        self.table.verticalHeader().setDefaultSectionSize(68 if info.kind == "image" else 24)
        self.cleaning_box.set_kind(info.kind)
        self._fill_flag_filter(info.kind)
        self.model.set_dataset(self.store, info)
        self._reset_filters()
        self._configure_columns()
        self.name_label.setText(info.name)
        self._set_enabled(True)
        self.update_side()
        self.refresh_flags()
        if info.kind == "image":
            self._check_files()

    def _configure_columns(self) -> None:
        header = self.table.horizontalHeader()
        n = self.model.columnCount()
        for c in range(n):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        widths = {"Label": 110, "Split": 78, "Flags": 118, "Size": 70}
        for c, name in enumerate(self.model.columns):
            if name in widths:
                self.table.setColumnWidth(c, widths[name])

    def _fill_flag_filter(self, kind: str) -> None:
        self.flag_filter.blockSignals(True)
        self.flag_filter.clear()
        self.flag_filter.addItem("Any flags", 0)
        self.flag_filter.addItem("Flagged (any)", sum(f.bit for f in flags_for_kind(kind)))
        for f in flags_for_kind(kind):
            self.flag_filter.addItem(f.title, f.bit)
        self.flag_filter.blockSignals(False)

    def _fill_label_filter(self) -> None:
        current = self.label_filter.currentData()
        self.label_filter.blockSignals(True)
        self.label_filter.clear()
        self.label_filter.addItem("All labels", None)
        self.label_filter.addItem("Not labelled", "")
        for c in self.model.classes:
            self.label_filter.addItem(c, c)
        index = self.label_filter.findData(current)
        self.label_filter.setCurrentIndex(index if index >= 0 and current is not None else 0)
        self.label_filter.blockSignals(False)
        text = self.relabel_combo.currentText()
        self.relabel_combo.clear()
        self.relabel_combo.addItems(self.model.classes)
        self.relabel_combo.setCurrentText(text)

    def _reset_filters(self) -> None:
        for w in (self.search, self.label_filter, self.split_filter, self.flag_filter):
            w.blockSignals(True)
        self.search.clear()
        self.split_filter.setCurrentIndex(0)
        self.flag_filter.setCurrentIndex(0)
        self._fill_label_filter()
        self.label_filter.setCurrentIndex(0)
        for w in (self.search, self.label_filter, self.split_filter, self.flag_filter):
            w.blockSignals(False)
        self._update_count()

    @Slot()
    def apply_filters(self) -> None:
        if self.info is None:
            return
        self.model.set_filters(
            label=self.label_filter.currentData(),
            split=self.split_filter.currentData(),
            flags=self.flag_filter.currentData() or 0,
            search=self.search.text(),
        )
        self._update_count()

    def _filter_label(self, label: str) -> None:
        index = self.label_filter.findData(label)
        if index >= 0:
            self.label_filter.setCurrentIndex(index)

    def _sort_clicked(self, column: int) -> None:
        key, desc = self.model.order
        name = self.model.columns[column]
        wanted = {"Text": "text", "Image": "text", "Label": "label", "Split": "split", "Flags": "flags"}.get(name)
        if wanted is None:
            return
        order = Qt.SortOrder.DescendingOrder if key == wanted and not desc else Qt.SortOrder.AscendingOrder
        self.model.sort(column, order)
        self.table.horizontalHeader().setSortIndicatorShown(True)
        self.table.horizontalHeader().setSortIndicator(column, order)

    def _update_count(self) -> None:
        shown, total = len(self.model.ids), self.model.total
        selected = len(self.table.selectionModel().selectedRows()) if self.model.ids else 0
        text = f"{shown:,} of {total:,} items" if shown != total else f"{total:,} items"
        if selected:
            text += f" · {selected:,} selected"
        self.count_label.setText(text)

    def _selection_changed(self, *_: object) -> None:
        n = len(self.table.selectionModel().selectedRows())
        labelled = self.info is not None and self.info.kind in ("text", "image")
        self.relabel_button.setEnabled(n > 0 and labelled)
        self.relabel_combo.setEnabled(labelled)
        self.delete_button.setEnabled(n > 0)
        self._update_count()

    # ---- side boxes ----------------------------------------------------------------------------
    def update_side(self) -> None:
        if self.info is None or self.store is None:
            return
        info = self.info = self.store.get_dataset(self.info.id)
        counts = self.store.class_counts(info.id)
        labelled = info.kind in ("text", "image")
        if labelled:
            self.classes_box.set_counts(counts)
            self.chart.set_counts(counts)
        else:
            self.classes_box.set_counts({}, labelled=False)
            self.chart.set_counts(
                {"(all items)": {s: sum(c[s] for c in counts.values()) for s in ("train", "val", "")}}
            )
        for widget in (self.classes_box, self.label_filter, self.relabel_combo, self.relabel_button):
            widget.setVisible(labelled)  # a corpus or a chat has no classes to edit
        self.balance_box.setTitle("Class balance" if labelled else "Training / validation")
        totals = {s: sum(c[s] for c in counts.values()) for s in ("train", "val", "")}
        self.split_box.set_state(info.split, totals["train"], totals["val"], totals[""], labelled)
        self._update_version_box()
        classes = len([c for c in counts if c])
        self.info_label.setText(
            f"{KIND_NAMES.get(info.kind, info.kind)} · {info.item_count:,} items"
            + (f" · {classes} classes" if labelled else "")
            + f" · from {info.source}"
        )
        self._fill_label_filter()
        self._update_count()

    def _update_version_box(self) -> None:
        latest = self.versions[0] if self.versions else None
        changed = latest is not None and self.content_hash is not None and self.content_hash != latest.content_hash
        self.version_box.set_version(latest, changed)

    def save_settings(self, settings: QSettings) -> None:
        """Called by the window as it closes: remember the layout, and stop the worker threads."""
        settings.setValue("datasets/splitter", self.splitter.saveState())
        if self.info is not None:
            settings.setValue("datasets/current", self.info.id)
        self.stop_and_wait()

    def closeEvent(self, event) -> None:
        self.stop_and_wait()
        super().closeEvent(event)
