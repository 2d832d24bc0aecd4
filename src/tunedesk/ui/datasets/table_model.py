"""The items table: a virtual QAbstractTableModel over a stored data set.

The model holds only the ids of the rows that pass the filter (100k ints); row contents are read
from SQLite a page at a time when the view paints them, and kept in a small page cache. Filtering
and sorting are SQL queries (``DatasetStore.item_ids``). Editing a label does not write anything
here: the model emits ``labelEdited`` and the panel pushes an undoable command.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QPainter, QPixmap

from tunedesk.engine.datasets import flags as F

if TYPE_CHECKING:
    from tunedesk.engine.datasets import DatasetInfo, DatasetStore, Item
    from tunedesk.ui.datasets.thumbs import ThumbnailService

PAGE = 200
MAX_PAGES = 40
TEXT_LIMIT = 400  # characters read per text for the table (the tooltip shows this much too)
WARN = QColor("#b07000")
SPLIT_NAMES = {"train": "train", "val": "validation", "": "—"}
SHORT_FLAG = {
    F.EXACT_DUPLICATE: "duplicate",
    F.LABEL_CONFLICT: "conflict",
    F.NEAR_DUPLICATE: "near duplicate",
    F.LEAKAGE: "leakage",
    F.EMPTY_TEXT: "empty",
    F.OVERLONG_TEXT: "overlong",
    F.UNREADABLE_IMAGE: "unreadable",
    F.TRUNCATED_IMAGE: "truncated",
    F.TINY_IMAGE: "tiny",
    F.MISSING_FILE: "missing",
    F.RARE_CLASS: "rare class",
    F.UNLABELLED: "no label",
}


def flag_text(bits: int) -> str:
    return ", ".join(name for bit, name in SHORT_FLAG.items() if bits & bit)


def _placeholder(size: int, broken: bool = False) -> QPixmap:
    pm = QPixmap(size, size)
    pm.fill(QColor(0, 0, 0, 0))
    p = QPainter(pm)
    p.setPen(QColor("#b07000") if broken else QColor(150, 150, 150, 120))
    p.setBrush(QColor(150, 150, 150, 40))
    p.drawRoundedRect(2, 2, size - 4, size - 4, 6, 6)
    if broken:
        p.drawLine(size // 3, size // 3, 2 * size // 3, 2 * size // 3)
        p.drawLine(2 * size // 3, size // 3, size // 3, 2 * size // 3)
    p.end()
    return pm


def chat_lines(text: str) -> list[str]:
    """A stored conversation ({"messages": [...]}) as "role: content" lines (the raw text if it is not one)."""
    try:
        messages = json.loads(text)["messages"]
        return [f"{m['role']}: {m['content']}" for m in messages]
    except (TypeError, ValueError, KeyError):
        return [text]


class ItemsModel(QAbstractTableModel):
    labelEdited = Signal(int, str)  # item id, new label (the panel makes it an undoable edit)

    TEXT_COLUMNS = ("Text", "Label", "Split", "Flags")
    IMAGE_COLUMNS = ("Image", "Label", "Split", "Flags", "Size")
    LM_COLUMNS = ("Text", "Split", "Flags")  # corpora and chats: no labels

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.store: DatasetStore | None = None
        self.info: DatasetInfo | None = None
        self.ids: list[int] = []
        self.total = 0
        self.classes: list[str] = []
        self.filters: dict[str, Any] = {}
        self.order = ("position", False)
        self._pages: OrderedDict[int, list[Item | None]] = OrderedDict()
        self._row_of: dict[int, int] | None = None
        self.thumbs: ThumbnailService | None = None  # for image data sets
        self._placeholder = _placeholder(64)
        self._broken = _placeholder(64, broken=True)

    # ---- loading ------------------------------------------------------------------------------
    @property
    def is_image(self) -> bool:
        return self.info is not None and self.info.kind == "image"

    @property
    def columns(self) -> tuple[str, ...]:
        if self.is_image:
            return self.IMAGE_COLUMNS
        return (
            self.LM_COLUMNS
            if self.info is not None and self.info.kind in ("text_corpus", "chat")
            else self.TEXT_COLUMNS
        )

    @property
    def is_chat(self) -> bool:
        return self.info is not None and self.info.kind == "chat"

    def set_dataset(self, store: DatasetStore | None, info: DatasetInfo | None) -> None:
        self.beginResetModel()
        self.store, self.info = store, info
        self.filters = {}
        self.order = ("position", False)
        self._load_ids()
        self.endResetModel()

    def set_filters(self, **filters: Any) -> None:
        self.beginResetModel()
        self.filters = {k: v for k, v in filters.items() if v not in (None, "", 0)}
        if filters.get("label") == "":
            self.filters["label"] = ""  # unlabelled is a real filter value
        if filters.get("split") == "":
            self.filters["split"] = ""
        self._load_ids()
        self.endResetModel()

    def reload(self) -> None:
        """Query the ids again (items deleted or restored, flags changed under a flag filter)."""
        self.beginResetModel()
        self._load_ids()
        self.endResetModel()

    def _load_ids(self) -> None:
        self._pages.clear()
        self._row_of = None
        if self.store is None or self.info is None:
            self.ids, self.total, self.classes = [], 0, []
            return
        order, desc = self.order
        self.ids = self.store.item_ids(self.info.id, order=order, descending=desc, **self.filters)
        self.total = self.store.count_items(self.info.id) if self.filters else len(self.ids)
        self.classes = self.store.classes(self.info.id)

    def refresh_items(self, ids: set[int] | None) -> None:
        """Read these items again (None: all pages); rows keep their place."""
        if self.info is not None and self.store is not None:
            self.classes = self.store.classes(self.info.id)
        if ids is None:
            self._pages.clear()
            if self.ids:
                self.dataChanged.emit(self.index(0, 0), self.index(len(self.ids) - 1, len(self.columns) - 1))
            return
        rows = sorted(r for i in ids if (r := self.row_of(i)) is not None)
        for page in {r // PAGE for r in rows}:
            self._pages.pop(page, None)
        for r in rows:
            self.dataChanged.emit(self.index(r, 0), self.index(r, len(self.columns) - 1))

    def row_of(self, item_id: int) -> int | None:
        if self._row_of is None:
            self._row_of = {i: r for r, i in enumerate(self.ids)}
        return self._row_of.get(item_id)

    def item_at(self, row: int) -> Item | None:
        if not 0 <= row < len(self.ids) or self.store is None:
            return None
        page_no = row // PAGE
        page = self._pages.get(page_no)
        if page is None:
            ids = self.ids[page_no * PAGE : (page_no + 1) * PAGE]
            found = {it.id: it for it in self.store.items(ids, text_limit=TEXT_LIMIT)}
            page = [found.get(i) for i in ids]
            self._pages[page_no] = page
            while len(self._pages) > MAX_PAGES:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(page_no)
        return page[row - page_no * PAGE]

    def id_at(self, row: int) -> int | None:
        return self.ids[row] if 0 <= row < len(self.ids) else None

    # ---- Qt model API -----------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.ids)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self.columns[section] if section < len(self.columns) else None
        return str(section + 1)

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        base = super().flags(index)
        if (
            index.isValid()
            and self.columns[index.column()] == "Label"
            and self.info is not None
            and self.info.kind in ("text", "image")
        ):
            return base | Qt.ItemFlag.ItemIsEditable
        return base

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        item = self.item_at(index.row())
        if item is None:
            return None
        column = self.columns[index.column()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            if column == "Text":
                text = item.text or ""
                if role == Qt.ItemDataRole.EditRole:
                    return text
                if self.is_chat:
                    return "  \u00b7  ".join(" ".join(line.split()) for line in chat_lines(text))
                return " ".join(text.split()) or "(empty text)"
            if column == "Image":
                return os.path.basename(item.path or "")
            if column == "Label":
                return item.label if (item.label or role == Qt.ItemDataRole.EditRole) else "(no label)"
            if column == "Split":
                return SPLIT_NAMES.get(item.split, item.split)
            if column == "Flags":
                return flag_text(item.flags)
            if column == "Size":
                return f"{item.width}×{item.height}" if item.width else ""
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == "Text":
                if self.is_chat:
                    return "\n".join(chat_lines(item.text or ""))[:TEXT_LIMIT]
                return (item.text or "")[:TEXT_LIMIT]
            if column == "Image":
                return item.path
            if column == "Flags" and item.flags:
                return "\n".join(F.flag_names(item.flags))
        if role == Qt.ItemDataRole.ForegroundRole and (
            column == "Flags"
            or (column == "Label" and not item.label)
            or (column == "Text" and not (item.text or "").strip())
        ):
            return QBrush(WARN)
        if role == Qt.ItemDataRole.DecorationRole and column == "Image" and self.thumbs is not None:
            if item.flags & (F.MISSING_FILE | F.UNREADABLE_IMAGE | F.TRUNCATED_IMAGE):
                return self._broken
            known, image = self.thumbs.get(item.content_hash, item.path or "")
            if not known:
                return self._placeholder
            return image if image is not None else self._broken
        if role == Qt.ItemDataRole.SizeHintRole and self.is_image and column == "Image":
            return QSize(64 + 160, 68)
        if role == Qt.ItemDataRole.UserRole:
            return item.id
        return None

    def setData(
        self, index: QModelIndex | QPersistentModelIndex, value: Any, role: int = Qt.ItemDataRole.EditRole
    ) -> bool:
        if role != Qt.ItemDataRole.EditRole or not index.isValid() or self.columns[index.column()] != "Label":
            return False
        item = self.item_at(index.row())
        new = str(value).strip()
        if item is None or new == item.label:
            return False
        self.labelEdited.emit(item.id, new)
        return True

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        key = {"Text": "text", "Image": "text", "Label": "label", "Split": "split", "Flags": "flags"}.get(
            self.columns[column] if column < len(self.columns) else "", "position"
        )
        self.order = (key, order == Qt.SortOrder.DescendingOrder)
        self.reload()

    # ---- thumbnails ----------------------------------------------------------------------------
    def thumbnail_ready(self, content_hash: str) -> None:
        """Repaint the loaded rows showing this image."""
        for page_no, page in self._pages.items():
            for k, item in enumerate(page):
                if item is not None and item.content_hash == content_hash:
                    idx = self.index(page_no * PAGE + k, 0)
                    self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])
