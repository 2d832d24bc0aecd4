"""The Datasets area: import, label, clean, split and version the user's data.

Layout: data sets and their classes on the left, the items table in the middle, cleaning flags,
class balance, split and versions on the right. The panel draws and asks the user (dialogs);
``DatasetsController`` (controller.py) holds the data set shown, the edits and their undo stack,
and runs the slow work in the background.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QModelIndex, QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QToolButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from tunedesk.ui.datasets import dialogs
from tunedesk.ui.datasets.chart import BalanceChart
from tunedesk.ui.datasets.commands import LabelDelegate
from tunedesk.ui.datasets.controller import DatasetsController
from tunedesk.ui.datasets.filters import FilterBar
from tunedesk.ui.datasets.side import ClassesBox, CleaningBox, SplitBox, VersionBox
from tunedesk.ui.datasets.table_model import ItemsModel

if TYPE_CHECKING:  # the engine's data set code (sqlite-utils, Pillow) loads after the window shows
    from tunedesk.engine.datasets import DatasetInfo, DatasetStore, VersionInfo
    from tunedesk.ui.datasets.thumbs import ThumbnailService


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


class DatasetsPanel(QWidget):
    """``DatasetsPanel(state)``; its state is ``self.controller``."""

    def __init__(self, state: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.thumbs: ThumbnailService | None = None
        self.controller = DatasetsController(state, self, parent=self)
        self._build()
        QTimer.singleShot(0, self.controller.open_store)

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
        self.filters = FilterBar()
        self.filters.changed.connect(self.apply_filters)
        self.search, self.label_filter = self.filters.search, self.filters.label_filter
        self.split_filter, self.flag_filter = self.filters.split_filter, self.filters.flag_filter

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
        line = self.relabel_combo.lineEdit()
        if line is not None:
            line.setPlaceholderText("class")
        self.relabel_button = QPushButton("Relabel")
        self.relabel_button.setToolTip("Give the selected items the class on the left (a new name makes a new class)")
        self.relabel_button.clicked.connect(lambda: self.relabel_selection(self.relabel_combo.currentText()))
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete the selected items (Del); Ctrl+Z brings them back")
        self.delete_button.clicked.connect(self.delete_selection)
        self.undo_action = QAction("Undo", self)
        self.undo_action.setShortcuts([QKeySequence("Ctrl+Z")])
        undo_stack = self.controller.undo_stack
        self.undo_action.triggered.connect(undo_stack.undo)
        self.redo_action = QAction("Redo", self)
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.redo_action.triggered.connect(undo_stack.redo)
        undo_stack.canUndoChanged.connect(self.undo_action.setEnabled)
        undo_stack.canRedoChanged.connect(self.redo_action.setEnabled)
        undo_stack.undoTextChanged.connect(lambda t: self.undo_action.setToolTip(f"Undo {t} (Ctrl+Z)"))
        undo_stack.redoTextChanged.connect(lambda t: self.redo_action.setToolTip(f"Redo {t} (Ctrl+Shift+Z)"))
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
        self.cancel_button.clicked.connect(self.controller.cancel_task)
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
        cv.addWidget(self.filters)
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
        self.split_box.splitRequested.connect(self.controller.split)
        self.version_box = VersionBox()
        self.version_box.saveRequested.connect(lambda: self.controller.save_version())
        self.version_box.useRequested.connect(lambda: self.controller.use_for_training(self.selected_version()))
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
            self.filters,
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

    # ---- drawing (DatasetsView: the controller calls these) -------------------------------------------
    def set_import_enabled(self, on: bool) -> None:
        self.import_button.setEnabled(on)

    def show_datasets(
        self, datasets: list[DatasetInfo], versions: dict[int, list[VersionInfo]], current: int | None
    ) -> bool:
        """Fill the list of data sets and their versions; select ``current`` (else the first).
        False when there is nothing to select."""
        self.sets_model.clear()
        chosen_index = None
        for info in datasets:
            item = QStandardItem(f"{info.name}  ·  {info.item_count:,}")
            item.setToolTip(f"{KIND_NAMES.get(info.kind, info.kind)} · {info.item_count:,} items\n{info.source}")
            item.setData(info.id, DATASET_ROLE)
            for v in sorted(versions.get(info.id, []), key=lambda v: -v.number):
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
        if chosen_index is None:
            return False
        self.sets_view.setCurrentIndex(chosen_index)
        self.sets_view.expand(chosen_index)
        return True

    def _set_chosen(self, current: QModelIndex, _previous: QModelIndex | None = None) -> None:
        self.controller.choose(current.data(DATASET_ROLE) if current.isValid() else None)

    def selected_version(self) -> str | None:
        index = self.sets_view.currentIndex()
        return index.data(VERSION_ROLE) if index.isValid() else None

    def show_dataset(self, info: DatasetInfo | None, store: DatasetStore | None) -> None:
        """Show a data set's items (None: the empty state)."""
        if info is None or store is None:
            self.model.set_dataset(None, None)
            self.name_label.setText("No data set")
            self.info_label.setText("Import a file or folder to start: Import…")
            self.cleaning_box.set_counts({}, 0, "Import a data set to check it.")
            self.chart.set_counts({})
            self._set_enabled(False)
            return
        if info.kind == "image" and self.thumbs is None:
            from tunedesk.engine.datasets import thumbnail_dir
            from tunedesk.ui.datasets.thumbs import ThumbnailService

            self.thumbs = ThumbnailService(thumbnail_dir(self.state.home), parent=self)
            self.thumbs.ready.connect(self.model.thumbnail_ready)
        self.model.thumbs = self.thumbs if info.kind == "image" else None
        self.table.verticalHeader().setDefaultSectionSize(68 if info.kind == "image" else 24)
        self.cleaning_box.set_kind(info.kind)
        self.filters.set_kind(info.kind)
        self.model.set_dataset(store, info)
        self._reset_filters()
        self._configure_columns()
        self.name_label.setText(info.name)
        self._set_enabled(True)

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

    def _fill_label_filter(self) -> None:
        self.filters.set_classes(self.model.classes)
        text = self.relabel_combo.currentText()
        self.relabel_combo.clear()
        self.relabel_combo.addItems(self.model.classes)
        self.relabel_combo.setCurrentText(text)

    def _reset_filters(self) -> None:
        self.filters.reset(self.model.classes)
        self._fill_label_filter()
        self._update_count()

    @Slot()
    def apply_filters(self) -> None:
        if self.controller.info is None:
            return
        self.model.set_filters(**self.filters.values())
        self._update_count()

    def _filter_label(self, label: str) -> None:
        self.filters.show_label(label)

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
        info = self.controller.info
        labelled = info is not None and info.kind in ("text", "image")
        self.relabel_button.setEnabled(n > 0 and labelled)
        self.relabel_combo.setEnabled(labelled)
        self.delete_button.setEnabled(n > 0)
        self._update_count()

    # ---- side boxes ----------------------------------------------------------------------------
    def show_side(self, info: DatasetInfo, counts: dict[str, dict[str, int]]) -> None:
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
        classes = len([c for c in counts if c])
        self.info_label.setText(
            f"{KIND_NAMES.get(info.kind, info.kind)} · {info.item_count:,} items"
            + (f" · {classes} classes" if labelled else "")
            + f" · from {info.source}"
        )
        self._fill_label_filter()
        self._update_count()

    def show_version(self, latest: VersionInfo | None, changed: bool) -> None:
        self.version_box.set_version(latest, changed)

    def show_flags(self, counts_by_bit: dict[int, int], total: int) -> None:
        self.cleaning_box.set_counts(counts_by_bit, total)

    def show_flags_status(self, text: str) -> None:
        self.cleaning_box.status.setText(text)

    def items_changed(self, ids: list[int] | None) -> None:
        """Items were edited (None: any of them, or the set of items changed)."""
        if ids is None or self.model.filters:
            self.model.reload()
        else:
            self.model.refresh_items(set(ids))

    def flags_changed(self) -> None:
        self.model.refresh_items(None)
        if self.model.filters.get("flags"):
            self.model.reload()
            self._update_count()

    def show_task(self, name: str | None) -> None:
        """The progress row of the one long job (None: hide it)."""
        self.progress_row.setVisible(name is not None)
        if name is not None:
            self.progress_label.setText(name)
            self.progress.setRange(0, 0)

    def show_task_progress(self, done: int, total: int, message: str) -> None:
        if total > 0:
            self.progress.setRange(0, 1000)
            self.progress.setValue(min(1000, int(1000 * done / total)))
        else:
            self.progress.setRange(0, 0)
        self.progress_label.setText(message)

    # ---- the user's actions: ask what is missing, then hand it to the controller ---------------------
    def selected_ids(self) -> list[int]:
        rows = sorted(i.row() for i in self.table.selectionModel().selectedRows())
        return [i for r in rows if (i := self.model.id_at(r)) is not None]

    def select_ids(self, ids: list[int]) -> None:
        dialogs.select_rows(self.table, [r for i in ids if (r := self.model.row_of(i)) is not None])
        self._update_count()

    def select_flagged(self, bit: int) -> None:
        """Show the items carrying this flag and select them all."""
        self.filters.blockSignals(True)
        self.filters.show_only_flag(bit)
        self.filters.blockSignals(False)
        self.apply_filters()
        self.table.selectAll()
        self.table.setFocus()

    def select_extra_copies(self, bit: int) -> None:
        """Show the duplicate items and select all but the first of each group."""
        self.select_flagged(bit)
        self.select_ids(self.controller.extra_copies)

    def _label_edited(self, item_id: int, label: str) -> None:
        self.controller.relabel([item_id], label)

    def relabel_selection(self, label: str) -> None:
        self.controller.relabel(self.selected_ids(), label)

    def delete_selection(self) -> None:
        self.controller.delete_items(self.selected_ids())

    def add_class(self) -> None:
        if (name := dialogs.ask_new_class(self)) is not None:
            self.controller.add_class(name)

    def rename_class(self, old: str) -> None:
        if (name := dialogs.ask_rename(self, old)) is not None:
            self.controller.rename_class(old, name)

    def merge_classes(self, names: list[str]) -> None:
        if (target := dialogs.ask_merge_target(self, names)) is not None:
            self.controller.merge_classes(names, target)

    def delete_class(self, name: str) -> None:
        delete_items = dialogs.ask_delete_class(self, name, self.controller.class_size(name))
        if delete_items is not None:
            self.controller.delete_class(name, delete_items)

    def delete_dataset(self) -> None:
        info = self.controller.info
        if info is not None and dialogs.confirm_delete_dataset(self, info):
            self.controller.delete_dataset()

    def open_import_dialog(self) -> None:
        from tunedesk.ui.datasets.import_dialog import ImportDialog

        dialog = ImportDialog(self)
        if dialog.exec():
            self.controller.start_import(dialog.spec())

    # ---- window hooks ----------------------------------------------------------------------------
    def save_settings(self, settings: QSettings) -> None:
        """Called by the window as it closes: remember the layout, and stop the worker threads."""
        settings.setValue("datasets/splitter", self.splitter.saveState())
        if self.controller.info is not None:
            settings.setValue("datasets/current", self.controller.info.id)
        self.stop_and_wait()

    def stop_and_wait(self) -> None:
        """Cancel and wait for the background work (the window is closing)."""
        self.controller.stop_and_wait()
        if self.thumbs is not None:
            self.thumbs.stop()
            self.thumbs = None
            self.model.thumbs = None

    def closeEvent(self, event: QCloseEvent) -> None:
        self.stop_and_wait()
        super().closeEvent(event)
