"""The runs table: a QAbstractTableModel over store pages, fetched lazily as the view scrolls.

Opening 10,000 runs reads one count and one page of 200 light rows; the view asks for more pages
through ``canFetchMore``/``fetchMore``. Sorting and filtering re-query SQLite (indexed) instead of
sorting in Python. Name and tags are edited in place and written through the GUI thread's RunStore
(no training run ever writes those fields).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QIcon, QPainter, QPixmap

from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.store import RunStore, history
from tunedesk.ui.runs import format as fmt

Index = QModelIndex | QPersistentModelIndex

# (title, sort key, tooltip)
COLUMNS = [
    ("#", "id", "run id (as in `tunedesk runs show ID`)"),
    ("Started", "created_at", "when the run started (local time)"),
    ("Name", "name", "double-click to rename"),
    ("Model", "model_name", "the pre-trained model it started from"),
    ("Data", "dataset_name", "data set (and saved version)"),
    ("Trains", "trainable_share", "share of parameters that train, and the freeze plan"),
    ("LR", "learning_rate", "learning rate used"),
    ("Ep.", "epochs", "epochs"),
    ("Batch", "batch_size", "batch size"),
    ("Best", "best_metric", "best validation metric"),
    ("Duration", "duration_s", "training time"),
    ("Status", "status", "completed, stopped, interrupted, failed, running or queued"),
    ("Tags", "tags", "double-click to edit (comma separated)"),
]
COL = {title: i for i, (title, _, _) in enumerate(COLUMNS)}
EDITABLE = {COL["Name"], COL["Tags"]}
RIGHT_ALIGNED = {COL["#"], COL["LR"], COL["Ep."], COL["Batch"], COL["Best"], COL["Duration"]}
RunIdRole = Qt.ItemDataRole.UserRole + 1
RowRole = Qt.ItemDataRole.UserRole + 2

_status_icons: dict[str, QIcon] = {}


def status_icon(status: str) -> QIcon:
    """A small filled dot in the status colour (cached)."""
    icon = _status_icons.get(status)
    if icon is None:
        pix = QPixmap(12, 12)
        pix.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pix)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setBrush(QColor(fmt.STATUS_COLOURS.get(status, "#7d8896")))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.drawEllipse(2, 2, 8, 8)
        painter.end()
        icon = _status_icons[status] = QIcon(pix)
    return icon


class RunsTableModel(QAbstractTableModel):
    """Rows are ``history.page`` dicts; ``total`` counts the runs matching the filter."""

    edited = Signal(int)  # run id whose name/tags changed
    editFailed = Signal(str, str)  # message, hint
    countChanged = Signal(int)

    def __init__(self, store: Callable[[], RunStore], page_size: int = history.PAGE_SIZE, parent=None) -> None:
        super().__init__(parent)
        self._store = store
        self.page_size = page_size
        self.filter = history.RunFilter()
        self.sort_key = "created_at"
        self.descending = True
        self.rows: list[dict[str, Any]] = []
        self.total = 0
        self._bold = QFont()
        self._bold.setBold(True)

    # ---- loading -----------------------------------------------------------------------------

    def reload(self, keep_loaded: bool = False) -> None:
        """Re-query from the first page (``keep_loaded``: as many rows as are loaded now, for refreshes)."""
        store = self._store()
        want = max(self.page_size, len(self.rows)) if keep_loaded else self.page_size
        self.beginResetModel()
        self.total = history.count(store, self.filter)
        self.rows = history.page(store, self.filter, sort=self.sort_key, descending=self.descending, limit=want)
        self.endResetModel()
        self.countChanged.emit(self.total)

    def set_filter(self, flt: history.RunFilter) -> None:
        self.filter = flt
        self.reload()

    def canFetchMore(self, parent: Index = QModelIndex()) -> bool:
        return not parent.isValid() and len(self.rows) < self.total

    def fetchMore(self, parent: Index = QModelIndex()) -> None:
        if parent.isValid():
            return
        more = history.page(
            self._store(),
            self.filter,
            sort=self.sort_key,
            descending=self.descending,
            limit=self.page_size,
            offset=len(self.rows),
        )
        if not more:
            self.total = len(self.rows)
            return
        self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows) + len(more) - 1)
        self.rows.extend(more)
        self.endInsertRows()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.sort_key = COLUMNS[column][1]
        self.descending = order == Qt.SortOrder.DescendingOrder
        self.reload()

    def row_of(self, run_id: int) -> int:
        for i, row in enumerate(self.rows):
            if row["id"] == run_id:
                return i
        return -1

    # ---- Qt model API ------------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section][2]
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() in EDITABLE:
            base |= Qt.ItemFlag.ItemIsEditable
        return base

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        row = self.rows[index.row()]
        col = index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return self._text(row, col, edit=role == Qt.ItemDataRole.EditRole)
        if role == RunIdRole:
            return row["id"]
        if role == RowRole:
            return row
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row, col)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in RIGHT_ALIGNED:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if col == COL["Status"]:
            if role == Qt.ItemDataRole.ForegroundRole:
                return QBrush(QColor(fmt.STATUS_COLOURS.get(row["status"], "#7d8896")))
            if role == Qt.ItemDataRole.DecorationRole:
                return status_icon(row["status"])
            if role == Qt.ItemDataRole.FontRole:
                return self._bold
        return None

    def _text(self, row: dict[str, Any], col: int, edit: bool = False) -> str:
        if col == COL["#"]:
            return str(row["id"])
        if col == COL["Started"]:
            return fmt.local_time(row.get("started_at") or row.get("created_at"))
        if col == COL["Name"]:
            return row.get("name") or ""
        if col == COL["Model"]:
            return fmt.short_model(row.get("model_name"))
        if col == COL["Data"]:
            return fmt.dataset_text(row)
        if col == COL["Trains"]:
            return row.get("freeze_summary") or history.share_text(row.get("trainable_params"), row.get("total_params"))
        if col == COL["LR"]:
            return fmt.lr_text(row.get("learning_rate"))
        if col == COL["Ep."]:
            return "" if row.get("epochs") is None else str(row["epochs"])
        if col == COL["Batch"]:
            return "" if row.get("batch_size") is None else str(row["batch_size"])
        if col == COL["Best"]:
            return fmt.best_text(row)
        if col == COL["Duration"]:
            return fmt.duration(row.get("duration_s"))
        if col == COL["Status"]:
            return row.get("status") or ""
        if col == COL["Tags"]:
            return ", ".join(row.get("tags") or [])
        return ""

    def _tooltip(self, row: dict[str, Any], col: int) -> str | None:
        if col == COL["Model"]:
            return row.get("model_name")
        if col == COL["Status"] and row.get("error"):
            hint = row.get("error_hint")
            return row["error"] + (f"\nhint: {hint}" if hint else "")
        if col == COL["Trains"] and row.get("total_params"):
            return f"{row.get('trainable_params', 0):,} of {row['total_params']:,} parameters train"
        if col == COL["Name"] and row.get("notes"):
            return row["notes"]
        if col == COL["Started"]:
            return fmt.local_time(row.get("started_at") or row.get("created_at"), seconds=True)
        return None

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.EditRole or index.column() not in EDITABLE:
            return False
        row = self.rows[index.row()]
        try:
            store = self._store()
            if index.column() == COL["Name"]:
                name = str(value).strip()
                if not name or name == row.get("name"):
                    return False
                store.rename(row["id"], name)
                row["name"] = name
            else:
                tags = [t.strip() for t in str(value).split(",") if t.strip()]
                store.set_tags(row["id"], tags)
                row["tags"] = store.get_run(row["id"])["tags"]
        except TuneDeskError as exc:
            self.editFailed.emit(exc.message, exc.hint)
            return False
        self.dataChanged.emit(index, index)
        self.edited.emit(row["id"])
        return True

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Refresh one row's fields after an edit elsewhere (the detail pane)."""
        i = self.row_of(run_id)
        if i >= 0:
            self.rows[i].update(fields)
            self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))
