"""The boxes around the items table: classes, cleaning flags, split and versions.

Each box only shows values and emits requests; the panel does the work (engine calls, undo stack).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from tunedesk.engine.datasets.flags import FlagInfo, flags_for_kind

if TYPE_CHECKING:
    from tunedesk.engine.datasets import VersionInfo


def _role(label: QLabel, role: str) -> QLabel:
    label.setProperty("role", role)
    label.style().unpolish(label)
    label.style().polish(label)
    return label


class ClassesBox(QGroupBox):
    """Classes with their counts per split; add, rename, merge, delete."""

    addRequested = Signal()
    renameRequested = Signal(str)
    mergeRequested = Signal(list)
    deleteRequested = Signal(str)
    filterRequested = Signal(str)  # a class was double-clicked: show its items

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Classes", parent)
        self.model = QStandardItemModel(0, 4, self)
        self.model.setHorizontalHeaderLabels(["Class", "Train", "Val", "All"])
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.setShowGrid(False)
        self.view.setAlternatingRowColors(True)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in (1, 2, 3):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.view.doubleClicked.connect(self._double_clicked)
        self.view.setToolTip("Double-click a class to show its items; select several to merge them")
        buttons = QHBoxLayout()
        buttons.setSpacing(4)
        self.add_button = self._button("Add", "Add an empty class", self.addRequested.emit)
        self.rename_button = self._button(
            "Rename",
            "Rename the selected class",
            lambda: self._with_selection(lambda n: self.renameRequested.emit(n[0])),
        )
        self.merge_button = self._button(
            "Merge", "Merge the selected classes into one", lambda: self._with_selection(self.mergeRequested.emit)
        )
        self.delete_button = self._button(
            "Delete",
            "Delete the selected class",
            lambda: self._with_selection(lambda n: self.deleteRequested.emit(n[0])),
        )
        for b in (self.add_button, self.rename_button, self.merge_button, self.delete_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addLayout(buttons)
        self.view.selectionModel().selectionChanged.connect(self._update_buttons)
        self._update_buttons()

    def _button(self, text: str, tip: str, slot) -> QToolButton:
        b = QToolButton()
        b.setText(text)
        b.setToolTip(tip)
        b.setAutoRaise(False)
        b.clicked.connect(slot)
        return b

    def selected(self) -> list[str]:
        rows = sorted({self.proxy.mapToSource(i).row() for i in self.view.selectionModel().selectedRows()})
        names = [self.model.item(r, 0).data(Qt.ItemDataRole.UserRole + 1) for r in rows]
        return [n for n in names if n]

    def _with_selection(self, fn) -> None:
        names = self.selected()
        if names:
            fn(names)

    def _update_buttons(self) -> None:
        n = len(self.selected())
        self.rename_button.setEnabled(n == 1)
        self.delete_button.setEnabled(n == 1)
        self.merge_button.setEnabled(n >= 2)

    def _double_clicked(self, index) -> None:
        name = self.model.item(self.proxy.mapToSource(index).row(), 0).data(Qt.ItemDataRole.UserRole + 1)
        self.filterRequested.emit(name if name is not None else "")

    def set_counts(self, counts: dict[str, dict[str, int]], labelled: bool = True) -> None:
        selected = set(self.selected())
        self.model.removeRows(0, self.model.rowCount())
        for name, c in counts.items():
            total = c["train"] + c["val"] + c[""]
            title = QStandardItem(name or "(no label)")
            title.setData(name.casefold() if name else "\uffff", Qt.ItemDataRole.UserRole)
            title.setData(name if name else None, Qt.ItemDataRole.UserRole + 1)
            cells = [title]
            for n in (c["train"], c["val"], total):
                cell = QStandardItem(f"{n:,}")
                cell.setData(n, Qt.ItemDataRole.UserRole)
                cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                cells.append(cell)
            if total < 2 and name:
                for cell in cells:
                    cell.setToolTip("fewer than 2 examples: this class cannot be validated")
            self.model.appendRow(cells)
        for r in range(self.model.rowCount()):
            if self.model.item(r, 0).data(Qt.ItemDataRole.UserRole + 1) in selected:
                self.view.selectRow(self.proxy.mapFromSource(self.model.index(r, 0)).row())
        self.setEnabled(labelled)
        self._update_buttons()


class CleaningBox(QGroupBox):
    """Each flag that applies to the data set: how many items carry it, and a button to select them."""

    selectRequested = Signal(int)  # flag bit: select every flagged item
    selectExtrasRequested = Signal(int)  # flag bit: select all but the first of each duplicate group

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Cleaning", parent)
        self.grid = QGridLayout(self)
        self.grid.setHorizontalSpacing(8)
        self.grid.setVerticalSpacing(2)
        self.grid.setColumnStretch(1, 1)
        self.rows: dict[int, tuple[QLabel, QLabel, QToolButton, QToolButton | None]] = {}
        self.status = _role(QLabel("Import a data set to check it."), "hint")
        self.status.setWordWrap(True)
        self.grid.addWidget(self.status, 0, 0, 1, 4)
        self.kind = ""

    def set_kind(self, kind: str) -> None:
        if kind == self.kind:
            return
        self.kind = kind
        for widgets in self.rows.values():
            for w in widgets:
                if w is not None:
                    self.grid.removeWidget(w)
                    w.hide()
                    w.setParent(None)
                    w.deleteLater()
        self.rows = {}
        for r, info in enumerate(flags_for_kind(kind), start=1):
            self._add_row(r, info)

    def _add_row(self, row: int, info: FlagInfo) -> None:
        count = QLabel("0")
        count.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        count.setMinimumWidth(36)
        title = QLabel(info.title)
        title.setToolTip(f"{info.title}: {info.description}")
        select = QToolButton()
        select.setText("Select")
        select.setToolTip(f"Show and select every item flagged: {info.title.lower()}")
        select.clicked.connect(lambda _=False, b=info.bit: self.selectRequested.emit(b))
        extras = None
        if info.duplicate_group:
            extras = QToolButton()
            extras.setText("Extras")
            extras.setToolTip("Select every copy but the first of each group: delete them to keep one of each")
            extras.clicked.connect(lambda _=False, b=info.bit: self.selectExtrasRequested.emit(b))
        self.grid.addWidget(count, row, 0)
        self.grid.addWidget(title, row, 1)
        self.grid.addWidget(select, row, 2)
        if extras is not None:
            self.grid.addWidget(extras, row, 3)
        self.rows[info.bit] = (count, title, select, extras)

    def set_counts(self, counts_by_bit: dict[int, int], total: int, status: str = "") -> None:
        flagged_any = False
        for bit, (count, _title, select, extras) in self.rows.items():
            n = counts_by_bit.get(bit, 0)
            count.setText(f"{n:,}")
            _role(count, "warning" if n else "hint")
            font = count.font()
            font.setBold(bool(n))
            count.setFont(font)
            select.setEnabled(n > 0)
            if extras is not None:
                extras.setEnabled(n > 0)
            flagged_any = flagged_any or n > 0
        self.status.setText(status or (f"{total:,} items checked" + ("" if flagged_any else ": nothing flagged")))


class SplitBox(QGroupBox):
    splitRequested = Signal(str, float, int)  # method, validation fraction, seed

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Split", parent)
        self.method = QComboBox()
        self.method.addItem("Stratified", "stratified")
        self.method.addItem("Random", "random")
        self.method.setToolTip("Stratified keeps each class's share the same in train and validation")
        self.val = QDoubleSpinBox()
        self.val.setRange(1, 90)
        self.val.setDecimals(0)
        self.val.setSuffix(" % val")
        self.val.setValue(20)
        self.val.setToolTip("Share of the data kept for validation")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(42)
        self.seed.setPrefix("seed ")
        self.seed.setMaximumWidth(110)
        self.val.setMaximumWidth(90)
        self.seed.setToolTip("The same seed gives the same split")
        self.button = QPushButton("Split")
        self.button.setToolTip("Assign every labelled item to train or validation; copies stay on one side")
        self.button.clicked.connect(
            lambda: self.splitRequested.emit(self.method.currentData(), self.val.value() / 100.0, self.seed.value())
        )
        self.summary = _role(QLabel("Not split yet"), "hint")
        self.summary.setWordWrap(True)
        row = QHBoxLayout()
        row.setSpacing(6)
        for w in (self.method, self.val, self.seed):
            row.addWidget(w)
        row.addStretch(1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.button, 0, Qt.AlignmentFlag.AlignBottom)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(bottom)

    def set_state(self, settings: dict, train: int, val: int, unassigned: int, labelled: bool) -> None:
        if settings:
            method = settings.get("method", "")
            self.method.setCurrentIndex(max(0, self.method.findData(method)))
            self.val.setValue(round(float(settings.get("val_fraction", 0.2)) * 100))
            self.seed.setValue(int(settings.get("seed", 42)))
        if train or val:
            text = f"{train:,} train · {val:,} validation"
            if settings:
                text = f"{settings.get('method', '')} split, seed {settings.get('seed', '')}: " + text
            if unassigned:
                text += f" · {unassigned:,} not assigned"
        else:
            text = "Not split yet: training would split at random"
        self.summary.setText(text)
        if not labelled:  # nothing to stratify by
            self.method.setCurrentIndex(max(0, self.method.findData("random")))
        self.method.setEnabled(labelled)


class VersionBox(QGroupBox):
    saveRequested = Signal()
    useRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Version", parent)
        self.label = QLabel("No version saved yet")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.save_button = QPushButton("Save version")
        self.save_button.setToolTip("Freeze the items, labels and split as they are now (an immutable version)")
        self.use_button = QPushButton("Use for training")
        self.use_button.setToolTip("Train on this data set's latest version (saved first if anything changed)")
        self.use_button.setDefault(True)
        self.save_button.clicked.connect(self.saveRequested.emit)
        self.use_button.clicked.connect(self.useRequested.emit)
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.use_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addLayout(row)

    def set_version(self, version: VersionInfo | None, changed: bool) -> None:
        if version is None:
            self.label.setText("No version saved yet: <b>Save version</b> freezes the data for training")
            return
        when = version.created_at[:16].replace("T", " ")
        text = (
            f"Latest: <b>{version.id}</b> · {version.item_count:,} items · {when} · "
            f"<code>{version.content_hash[:8]}</code>"
        )
        self.label.setToolTip(f"version {version.id}, saved {when} UTC\ncontent hash {version.content_hash}")
        if changed:
            text += "<br><span style='color:#b07000'>Edited since: save a new version to train on the edits</span>"
        self.label.setText(text)
