"""Undo commands and the in-place label editor of the items table."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QUndoCommand
from PySide6.QtWidgets import QComboBox, QStyledItemDelegate

if TYPE_CHECKING:
    from tunedesk.engine.datasets import Edit


class EditCommand(QUndoCommand):
    """One undoable edit. Constructed after the edit was applied (so a refused edit never reaches
    the stack); ``redo`` and ``undo`` each apply the edit they hold and keep the inverse."""

    def __init__(self, apply: Callable[[Edit], Edit], inverse: Edit) -> None:
        super().__init__(inverse.text)
        self._apply = apply
        self._next = inverse
        self._first = True

    def redo(self) -> None:
        if self._first:
            self._first = False
            return
        self._next = self._apply(self._next)

    def undo(self) -> None:
        self._next = self._apply(self._next)


class LabelDelegate(QStyledItemDelegate):
    """Edit a label in place with the class names offered (a new name makes a new class)."""

    def createEditor(self, parent, option, index):
        combo = QComboBox(parent)
        combo.setEditable(True)
        combo.addItems(index.model().classes)
        return combo

    def setEditorData(self, editor, index):
        editor.setCurrentText(index.data(Qt.ItemDataRole.EditRole) or "")
        editor.lineEdit().selectAll()

    def setModelData(self, editor, model, index):
        model.setData(index, editor.currentText(), Qt.ItemDataRole.EditRole)
