"""Rows of a settings form, each with an error label under its editor, addressed by config field.

``FieldRows`` builds the group boxes and rows of the run setup form and maps a ``ConfigError.field``
(e.g. ``hparams.learning_rate``) back to the row it concerns, so the engine's message appears right
beside the value that caused it; errors no row owns go to one general label.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QGroupBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from tunedesk.ui.training.setup_helpers import make_label


class FieldRows:
    def __init__(self) -> None:
        self.errors: dict[str, QLabel] = {}  # field -> its error label
        self.widgets: dict[str, QWidget] = {}  # field -> the editor focused on an error
        self.general_error = make_label("", "error")
        self.general_error.hide()

    @staticmethod
    def group(title: str) -> tuple[QGroupBox, QFormLayout]:
        box = QGroupBox(title)
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(6)
        return box, form

    def row(self, form: QFormLayout, label: str, field: str, *widgets: QWidget, tip: str = "") -> QWidget:
        """A form row: the editor(s) with an error label right under them (hidden until needed)."""
        holder = QWidget()
        v = QVBoxLayout(holder)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(2)
        h = QHBoxLayout()
        h.setContentsMargins(0, 0, 0, 0)
        h.setSpacing(6)
        for w in widgets:
            h.addWidget(w)
            if tip:
                w.setToolTip(tip)
        v.addLayout(h)
        error = make_label("", "error")
        error.hide()
        v.addWidget(error)
        self.errors[field] = error
        self.widgets[field] = widgets[0]
        form.addRow(label, holder)
        return holder

    def alias(self, field: str, shown_at: str) -> None:
        """Errors of ``field`` show in the row of ``shown_at``."""
        self.errors[field] = self.errors[shown_at]

    def field_label(self, field: str) -> QLabel | None:
        """The error label for a ConfigError field (the longest known prefix), or None."""
        best = None
        for key, label in self.errors.items():
            matches = field == key or field.startswith(key + ".") or field.startswith(key + "[")
            if matches and (best is None or len(key) > len(best[0])):
                best = (key, label)
        if best is None and field == "data":
            best = ("data.path", self.errors["data.path"])
        return best[1] if best else None

    def show_error(self, field: str, message: str, hint: str = "") -> QLabel:
        label = self.field_label(field or "") or self.general_error
        label.setText(message + (f" — {hint}" if hint else ""))
        label.show()
        widget = self.widgets.get(next((k for k, v in self.errors.items() if v is label), ""), None)
        if widget is not None:
            widget.setFocus()
        return label

    def clear_error(self, field: str) -> None:
        label = self.errors.get(field)
        if label is not None:
            label.hide()
            label.clear()

    def clear_errors(self) -> None:
        for label in [*self.errors.values(), self.general_error]:
            label.hide()
            label.clear()

    def visible_errors(self) -> dict[str, str]:
        """{field: message} of the errors on show (tests, screenshots)."""
        out = {k: v.text() for k, v in self.errors.items() if v.text()}
        if self.general_error.text():
            out[""] = self.general_error.text()
        return out
