"""Sample replies per evaluation: one row per evaluation, one column per prompt, so the change of
tone reads top to bottom. Fed live by SampleGenerated events, or from a run's stored samples."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, QTimer, Slot
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QTableView, QVBoxLayout, QWidget

Index = QModelIndex | QPersistentModelIndex


def _elide(text: str, width: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "\u2026"


class SampleTableModel(QAbstractTableModel):
    """Rows: evaluations (epoch, step) in arrival order; columns: prompts in first-seen order."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.prompts: list[str] = []
        self.rows: list[tuple[int, int]] = []  # (epoch, step)
        self.texts: dict[tuple[int, int], dict[str, str]] = {}

    # -- data in ------------------------------------------------------------------------------
    def add(self, step: int, epoch: int, prompt: str, text: str) -> None:
        key = (int(epoch), int(step))
        if prompt not in self.prompts:
            col = len(self.prompts)
            self.beginInsertColumns(QModelIndex(), col, col)
            self.prompts.append(prompt)
            self.endInsertColumns()
        if key not in self.texts:
            row = len(self.rows)
            self.beginInsertRows(QModelIndex(), row, row)
            self.rows.append(key)
            self.texts[key] = {}
            self.endInsertRows()
        self.texts[key][prompt] = text
        r, c = self.rows.index(key), self.prompts.index(prompt)
        self.dataChanged.emit(self.index(r, c), self.index(r, c))

    def clear(self) -> None:
        self.beginResetModel()
        self.prompts, self.rows, self.texts = [], [], {}
        self.endResetModel()

    def text(self, row: int, column: int) -> str | None:
        return self.texts[self.rows[row]].get(self.prompts[column])

    # -- Qt -------------------------------------------------------------------------------------
    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.prompts)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        text = self.text(index.row(), index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            return text if text is not None else ""
        if role == Qt.ItemDataRole.ToolTipRole and text:
            return f"<p>{html.escape(self.prompts[index.column()])}</p><p><b>{html.escape(text)}</b></p>"
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal:
            if section >= len(self.prompts):
                return None
            if role == Qt.ItemDataRole.DisplayRole:
                return "\u201c" + _elide(self.prompts[section]) + "\u201d"
            if role == Qt.ItemDataRole.ToolTipRole:
                return self.prompts[section]
            return None
        if section >= len(self.rows):
            return None
        epoch, step = self.rows[section]
        if role == Qt.ItemDataRole.DisplayRole:
            return "Before training" if epoch == 0 and step == 0 else f"Epoch {epoch} \u00b7 step {step}"
        if role == Qt.ItemDataRole.ToolTipRole:
            return (
                "The pre-trained model's replies, before any training"
                if epoch == 0 and step == 0
                else f"Replies after epoch {epoch} (step {step})"
            )
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        return None


class SampleGenerationsView(QWidget):
    """The run's sample replies, epoch by epoch.

    Feed it with ``add_event(event)`` (SampleGenerated events, any other event is ignored) in the GUI
    thread, e.g. from the training worker's queued event signal, or show a finished run with
    ``load_run(home, run_id)`` / ``load_samples(rows)``.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = SampleTableModel(self)
        title = QLabel("Sample replies")
        title.setProperty("role", "title")
        self.hint = QLabel(
            "After each evaluation the model answers your prompts (greedy decoding, so epochs compare): "
            "read down a column to follow the change of tone."
        )
        self.hint.setProperty("role", "hint")
        self.hint.setWordWrap(True)
        self.empty = QLabel(
            "No samples yet: they appear after the first evaluation. Set prompts in the run settings "
            "(without any, TuneDesk asks the first questions of the validation data)."
        )
        self.empty.setProperty("role", "hint")
        self.empty.setWordWrap(True)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setWordWrap(True)
        self.table.setAlternatingRowColors(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setDefaultAlignment(Qt.AlignmentFlag.AlignLeft)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        mono = QFont(self.table.font())
        self.table.setFont(mono)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(title)
        layout.addWidget(self.hint)
        layout.addWidget(self.empty)
        layout.addWidget(self.table, 1)
        self._resize = QTimer(self, singleShot=True, interval=50)
        self._resize.timeout.connect(self._fit_rows)
        self.model.rowsInserted.connect(self._changed)
        self.model.dataChanged.connect(self._changed)
        self.model.modelReset.connect(self._changed)
        self._changed()

    # -- input ----------------------------------------------------------------------------------
    @Slot(object)
    def add_event(self, event: Any) -> None:
        """A training event; only SampleGenerated ones are shown."""
        if getattr(event, "kind", type(event).__name__) != "SampleGenerated":
            return
        self.add_sample(event.step, event.epoch, event.prompt, event.text)

    def add_sample(self, step: int, epoch: int, prompt: str, text: str) -> None:
        self.model.add(step, epoch, prompt, text)

    def load_samples(self, rows: list[dict[str, Any]]) -> None:
        """Rows as ``RunStore.samples`` returns them (step, epoch, prompt, text)."""
        self.model.clear()
        for r in rows:
            self.model.add(r["step"], r["epoch"], r["prompt"], r["text"])

    def load_run(self, home: str | Path, run_id: int) -> None:
        """Show a run's stored samples (reads the history in this thread: a few small rows)."""
        from tunedesk.engine.paths import database_path
        from tunedesk.engine.store import RunStore

        store = RunStore(database_path(Path(home)))
        try:
            self.load_samples(store.samples(run_id))
        finally:
            store.close()

    def clear(self) -> None:
        self.model.clear()

    # -- layout ---------------------------------------------------------------------------------
    def _changed(self, *args: Any) -> None:
        has = self.model.rowCount() > 0
        self.empty.setVisible(not has)
        self.table.setVisible(has)
        self._resize.start()

    def _fit_rows(self) -> None:
        self.table.resizeRowsToContents()
        if self.model.rowCount():
            self.table.scrollToBottom()

    def resizeEvent(self, event: Any) -> None:  # rows re-wrap when the columns change width
        super().resizeEvent(event)
        self._resize.start()
