"""The model list as a Qt table model over catalog ``ModelEntry`` rows, plus its sort/search/task filter.

Rows arrive in batches from the background scan: new ids are appended, known ids are replaced in
place (the second, parameter-counting pass), so the view keeps its selection while the list fills.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor, QIcon

from tunedesk.ui.models.format import TRAINABLE_TASKS, human_bytes, human_count, source_label, task_label

if TYPE_CHECKING:
    from tunedesk.engine.catalog import ModelEntry

COLUMNS = ("name", "source", "task", "architecture", "parameters", "size", "format", "weights", "problem")
HEADERS = ("Name", "Source", "Task", "Architecture", "Parameters", "Size", "Format", "Weights", "Problem")
COL = {key: i for i, key in enumerate(COLUMNS)}

ENTRY_ROLE = Qt.ItemDataRole.UserRole + 1  # the ModelEntry itself
SORT_ROLE = Qt.ItemDataRole.UserRole + 2  # raw value to sort by (ints for counts and sizes)

# Task filter keys besides plain task names.
ALL_TASKS = ""
TRAINABLE = "@trainable"
PROBLEMS = "@problems"
UNKNOWN_TASK = "@unknown"

PROBLEM_COLOUR = QColor("#d9423f")  # the style sheet's error red: readable on light and dark bases

_Index = QModelIndex | QPersistentModelIndex
_DISPLAY = int(Qt.ItemDataRole.DisplayRole)
_SORT = int(SORT_ROLE)
_ENTRY = int(ENTRY_ROLE)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
_DECORATION = int(Qt.ItemDataRole.DecorationRole)
_FOREGROUND = int(Qt.ItemDataRole.ForegroundRole)
_ALIGNMENT = int(Qt.ItemDataRole.TextAlignmentRole)
_OTHER_ROLES = frozenset((_ENTRY, _TOOLTIP, _DECORATION, _FOREGROUND, _ALIGNMENT))
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_CENTRE = int(Qt.AlignmentFlag.AlignCenter)


class ModelTableModel(QAbstractTableModel):
    """Catalog entries, one row each, in discovery order (the proxy sorts)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[ModelEntry] = []
        self._text: list[tuple[str, ...]] = []  # display texts per row (same order as _rows)
        self._sort: list[tuple[Any, ...]] = []  # sort keys per row
        self._row_of: dict[str, int] = {}
        self._warning_icon: QIcon | None = None

    # ---- reading ---------------------------------------------------------------------------------

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def index(self, row: int, column: int, parent: _Index = QModelIndex()) -> QModelIndex:
        # Qt's own index() asks rowCount() and columnCount() first: two more calls into Python per cell.
        if 0 <= row < len(self._rows) and 0 <= column < len(COLUMNS) and not parent.isValid():
            return self.createIndex(row, column)
        return QModelIndex()

    def entry(self, row: int) -> ModelEntry:
        return self._rows[row]

    def entries(self) -> list[ModelEntry]:
        return list(self._rows)

    def row_of(self, entry_id: str) -> int | None:
        return self._row_of.get(entry_id)

    def tasks(self) -> set[str]:
        return {e.task for e in self._rows if e.task}

    def headerData(
        self,
        section: int,
        orientation: Qt.Orientation,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return {
                "parameters": "exact count from the config (built on the meta device, weights not loaded)",
                "size": "size on disk of the weight files a loader would read",
                "weights": "✓: all weight files present and intact",
            }.get(COLUMNS[section])
        return None

    def data(self, index: _Index, role: int = _DISPLAY) -> Any:
        # Called thousands of times per repaint: the texts and sort keys are computed once per entry.
        row = index.row()
        if row < 0:
            return None
        if role == _DISPLAY:
            return self._text[row][index.column()]
        if role == _SORT:
            return self._sort[row][index.column()]
        if role not in _OTHER_ROLES:
            return None
        e = self._rows[row]
        col = COLUMNS[index.column()]
        if role == _ENTRY:
            return e
        if role == _TOOLTIP:
            if e.problem and col in ("name", "problem", "weights"):
                return e.problem
            return e.path if col == "name" else None
        if role == _DECORATION:
            return self._warning() if col == "name" and e.problem else None
        if role == _FOREGROUND:
            if col == "problem" or (col == "weights" and not e.weights_present):
                return PROBLEM_COLOUR
            return None
        if col in ("parameters", "size"):  # _ALIGNMENT
            return _RIGHT
        if col == "weights":
            return _CENTRE
        return None

    @staticmethod
    def display(e: ModelEntry, col: str) -> str:
        if col == "name":
            return e.name
        if col == "source":
            return source_label(e.source)
        if col == "task":
            return task_label(e.task)
        if col == "architecture":
            return e.architecture or ""
        if col == "parameters":
            return human_count(e.parameters)
        if col == "size":
            return human_bytes(e.size_bytes)
        if col == "format":
            return e.weight_format or ""
        if col == "weights":
            return "✓" if e.weights_present else "✗"
        return e.problem or ""

    @staticmethod
    def _sort_value(e: ModelEntry, col: str) -> Any:
        if col == "parameters":
            return e.parameters if e.parameters is not None else -1
        if col == "size":
            return e.size_bytes
        if col == "weights":
            return int(e.weights_present)
        return ModelTableModel.display(e, col).lower()

    def _set(self, row: int, e: ModelEntry) -> None:
        self._rows[row] = e
        self._text[row] = tuple(self.display(e, col) for col in COLUMNS)
        self._sort[row] = tuple(self._sort_value(e, col) for col in COLUMNS)

    def _warning(self) -> QIcon:
        if self._warning_icon is None:
            from tunedesk.ui.resources import icon

            self._warning_icon = icon("warning.svg")
        return self._warning_icon

    # ---- writing ---------------------------------------------------------------------------------

    def merge(self, entries: list[ModelEntry], replace: bool = True) -> None:
        """Append new ids, replace known ones in place (one signal per batch, not per row).

        ``replace=False`` keeps known rows as they are: a quick listing must not blank the parameter
        counts a previous full scan found.
        """
        new: list[ModelEntry] = []
        rows: list[int] = []
        cols: set[int] = set()
        for e in entries:
            row = self._row_of.get(e.id)
            if row is None:
                new.append(e)
            elif replace:
                before = self._text[row]
                self._set(row, e)
                after = self._text[row]
                diff = [c for c in range(len(COLUMNS)) if before[c] != after[c]]
                if diff:
                    rows.append(row)
                    cols.update(diff)
        if rows:
            # Only the columns that changed (usually parameters): a proxy sorted by another column
            # then has nothing to re-sort.
            self.dataChanged.emit(self.index(min(rows), min(cols)), self.index(max(rows), max(cols)))
        if new:
            first = len(self._rows)
            # a batch never repeats an id (scan() de-duplicates), but be safe about it
            unique: dict[str, ModelEntry] = {}
            for e in new:
                unique[e.id] = e
            self.beginInsertRows(QModelIndex(), first, first + len(unique) - 1)
            for i, e in enumerate(unique.values()):
                self._rows.append(e)
                self._text.append(())
                self._sort.append(())
                self._set(first + i, e)
                self._row_of[e.id] = first + i
            self.endInsertRows()

    def keep_only(self, ids: set[str]) -> None:
        """Drop rows whose id the last full scan did not report (deleted or moved models)."""
        gone = [i for i, e in enumerate(self._rows) if e.id not in ids]
        if not gone:
            return
        for row in reversed(gone):
            self.beginRemoveRows(QModelIndex(), row, row)
            del self._rows[row]
            del self._text[row]
            del self._sort[row]
            self.endRemoveRows()
        self._row_of = {e.id: i for i, e in enumerate(self._rows)}

    def clear(self) -> None:
        self.beginResetModel()
        self._rows = []
        self._text = []
        self._sort = []
        self._row_of = {}
        self.endResetModel()


class ModelFilterProxy(QSortFilterProxyModel):
    """Sort by raw values; show rows matching every search word and the chosen task filter."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._words: list[str] = []
        self._task = ALL_TASKS
        self.setSortRole(SORT_ROLE)
        self.setSortCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)

    def set_search(self, text: str) -> None:
        self._refilter(lambda: setattr(self, "_words", text.lower().split()))

    def set_task(self, key: str) -> None:
        self._refilter(lambda: setattr(self, "_task", key or ALL_TASKS))

    def _refilter(self, change: Callable[[], None]) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.9; invalidateFilter() is deprecated there
            self.beginFilterChange()
            change()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            change()
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:
        model = self.sourceModel()
        if not isinstance(model, ModelTableModel):
            return True
        e = model.entry(source_row)
        task = self._task
        if task == TRAINABLE:
            if not (e.usable and e.task in TRAINABLE_TASKS):
                return False
        elif task == PROBLEMS:
            if e.usable:
                return False
        elif task == UNKNOWN_TASK:
            if e.task:
                return False
        elif task and e.task != task:
            return False
        if self._words:
            hay = " ".join(
                filter(None, (e.name, e.architecture, e.model_type, task_label(e.task), source_label(e.source), e.id))
            ).lower()
            return all(w in hay for w in self._words)
        return True
