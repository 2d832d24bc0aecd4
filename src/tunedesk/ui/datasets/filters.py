"""The filter row above the items table: search text, label, split and cleaning flag."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLineEdit, QWidget

from tunedesk.engine.datasets.flags import flags_for_kind


class FilterBar(QWidget):
    """``changed`` when a filter changes (the search text after a short pause while typing)."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search texts and file names…")
        self.search.setClearButtonEnabled(True)
        self._search_timer = QTimer(self, singleShot=True, interval=250)
        self._search_timer.timeout.connect(self.changed)
        self.search.textChanged.connect(lambda: self._search_timer.start())
        self.label_filter = QComboBox()
        self.split_filter = QComboBox()
        for text, value in (("All splits", None), ("Train", "train"), ("Validation", "val"), ("Not assigned", "")):
            self.split_filter.addItem(text, value)
        self.flag_filter = QComboBox()
        for combo, chars in ((self.label_filter, 10), (self.split_filter, 9), (self.flag_filter, 13)):
            combo.currentIndexChanged.connect(self.changed)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(chars)
            combo.view().setMinimumWidth(220)  # the open list shows whole names
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.search, 1)
        row.addWidget(self.label_filter)
        row.addWidget(self.split_filter)
        row.addWidget(self.flag_filter)
        self._widgets = (self.search, self.label_filter, self.split_filter, self.flag_filter)

    def values(self) -> dict[str, Any]:
        """The filters as ``ItemsModel.set_filters`` takes them."""
        return {
            "label": self.label_filter.currentData(),
            "split": self.split_filter.currentData(),
            "flags": self.flag_filter.currentData() or 0,
            "search": self.search.text(),
        }

    def set_kind(self, kind: str) -> None:
        """The flags a data set of this kind can carry."""
        self.flag_filter.blockSignals(True)
        self.flag_filter.clear()
        self.flag_filter.addItem("Any flags", 0)
        self.flag_filter.addItem("Flagged (any)", sum(f.bit for f in flags_for_kind(kind)))
        for f in flags_for_kind(kind):
            self.flag_filter.addItem(f.title, f.bit)
        self.flag_filter.blockSignals(False)

    def set_classes(self, classes: list[str]) -> None:
        """The label choices; the chosen one stays when it still exists."""
        current = self.label_filter.currentData()
        self.label_filter.blockSignals(True)
        self.label_filter.clear()
        self.label_filter.addItem("All labels", None)
        self.label_filter.addItem("Not labelled", "")
        for c in classes:
            self.label_filter.addItem(c, c)
        index = self.label_filter.findData(current)
        self.label_filter.setCurrentIndex(index if index >= 0 and current is not None else 0)
        self.label_filter.blockSignals(False)

    def reset(self, classes: list[str]) -> None:
        """Everything shown again, without a ``changed`` per widget."""
        for w in self._widgets:
            w.blockSignals(True)
        self.search.clear()
        self.split_filter.setCurrentIndex(0)
        self.flag_filter.setCurrentIndex(0)
        self.set_classes(classes)
        self.label_filter.setCurrentIndex(0)
        for w in self._widgets:
            w.blockSignals(False)

    def show_only_flag(self, bit: int) -> None:
        """Only the items carrying this flag (every other filter cleared)."""
        self.label_filter.setCurrentIndex(0)
        self.split_filter.setCurrentIndex(0)
        self.search.clear()
        self.flag_filter.setCurrentIndex(self.flag_filter.findData(bit))

    def show_label(self, label: str) -> None:
        index = self.label_filter.findData(label)
        if index >= 0:
            self.label_filter.setCurrentIndex(index)
