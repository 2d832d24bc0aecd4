"""Layers area (being built: replaced by its owner)."""

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget


class LayerTreePanel(QWidget):
    def __init__(self, state, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        QVBoxLayout(self).addWidget(QLabel("Layers"))
