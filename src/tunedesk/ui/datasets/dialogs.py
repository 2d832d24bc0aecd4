"""Questions the Datasets area asks the user (class names, confirmations); each returns the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QItemSelection, QItemSelectionModel
from PySide6.QtWidgets import QInputDialog, QMessageBox, QTableView, QWidget

if TYPE_CHECKING:
    from tunedesk.engine.datasets import DatasetInfo


def ask_new_class(parent: QWidget) -> str | None:
    name, ok = QInputDialog.getText(parent, "Add class", "Name of the new class:")
    return name if ok and name.strip() else None


def ask_rename(parent: QWidget, old: str) -> str | None:
    name, ok = QInputDialog.getText(parent, "Rename class", f"New name for {old!r}:", text=old)
    return name if ok and name.strip() and name.strip() != old else None


def ask_merge_target(parent: QWidget, names: list[str]) -> str | None:
    target, ok = QInputDialog.getItem(parent, "Merge classes", f"Merge {', '.join(names)} into:", names, 0, True)
    return target if ok and target.strip() else None


def ask_delete_class(parent: QWidget, name: str, size: int) -> bool | None:
    """None: cancelled; False: keep the items, unlabelled; True: delete them too."""
    box = QMessageBox(
        QMessageBox.Icon.Question, "Delete class", f"Delete the class {name!r}? It has {size:,} items.", parent=parent
    )
    keep = box.addButton("Keep items, unlabelled", QMessageBox.ButtonRole.AcceptRole)
    drop = box.addButton("Delete its items too", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    clicked = box.clickedButton()
    return None if clicked not in (keep, drop) else clicked is drop


def confirm_delete_dataset(parent: QWidget, info: DatasetInfo) -> bool:
    answer = QMessageBox.question(
        parent,
        "Delete data set",
        f"Delete {info.name!r} and its {info.item_count:,} items?\n"
        "Saved versions stay, so past runs can still be reproduced. Image files are not touched.",
    )
    return answer == QMessageBox.StandardButton.Yes


def select_rows(table: QTableView, rows: list[int]) -> None:
    """Select whole rows of a table, as few ranges as the rows allow."""
    model = table.model()
    selection = QItemSelection()
    last = model.columnCount() - 1
    start = prev = None
    for r in sorted(rows) + [None]:
        if start is not None and prev is not None and (r is None or r != prev + 1):
            selection.select(model.index(start, 0), model.index(prev, last))
            start = None
        if r is not None and start is None:
            start = r
        prev = r
    table.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
