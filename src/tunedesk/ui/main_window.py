"""The main window: a sidebar of areas, each a panel, and a status bar. No logic of its own."""

from __future__ import annotations

import importlib
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (QLabel, QListWidget, QListWidgetItem, QMainWindow, QMessageBox, QSplitter,
                               QStackedWidget, QWidget)

from tunedesk.ui.state import AppState

# (key, title, module, class, shortcut)
PANELS = [
    ("models", "Models", "tunedesk.ui.models_panel", "ModelsPanel", "Ctrl+1"),
    ("layers", "Layers", "tunedesk.ui.layer_tree", "LayerTreePanel", "Ctrl+2"),
    ("datasets", "Datasets", "tunedesk.ui.datasets_panel", "DatasetsPanel", "Ctrl+3"),
    ("train", "Train", "tunedesk.ui.training_panel", "TrainingPanel", "Ctrl+4"),
    ("runs", "Runs", "tunedesk.ui.runs_panel", "RunsPanel", "Ctrl+5"),
]


class MainWindow(QMainWindow):
    def __init__(self, home: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("TuneDesk")
        self.state = AppState(home, self)
        self.settings = QSettings("TuneDesk", "TuneDesk")
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFixedWidth(150)
        self.stack = QStackedWidget()
        self.panels: dict[str, QWidget] = {}
        for key, title, module, cls, shortcut in PANELS:
            panel = self._make_panel(module, cls, title)
            self.panels[key] = panel
            self.stack.addWidget(panel)
            item = QListWidgetItem(title)
            from tunedesk.ui.app import resource

            icon_path = resource("icons", f"{'freeze' if key == 'layers' else key}.svg")
            if icon_path.is_file():
                item.setIcon(QIcon(str(icon_path)))
            item.setData(Qt.ItemDataRole.UserRole, key)
            self.sidebar.addItem(item)
            action = QAction(f"Show {title}", self)
            action.setShortcut(QKeySequence(shortcut))
            action.triggered.connect(lambda _=False, k=key: self.show_panel(k))
            self.addAction(action)
        self.sidebar.currentRowChanged.connect(self.stack.setCurrentIndex)
        splitter = QSplitter()
        splitter.addWidget(self.sidebar)
        splitter.addWidget(self.stack)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        self.setCentralWidget(splitter)

        self.device_label = QLabel("device: detecting…")
        self.home_label = QLabel(f"data: {home}")
        self.home_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.statusBar().addPermanentWidget(self.device_label)
        self.statusBar().addPermanentWidget(self.home_label)
        self.state.showPanel.connect(self.show_panel)
        self.state.statusMessage.connect(lambda msg: self.statusBar().showMessage(msg, 8000))

        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        self.addAction(quit_action)
        self._restore()

    def _make_panel(self, module: str, cls: str, title: str) -> QWidget:
        mod = importlib.import_module(module)
        return getattr(mod, cls)(self.state)

    def show_panel(self, key: str) -> None:
        keys = [p[0] for p in PANELS]
        if key in keys:
            self.sidebar.setCurrentRow(keys.index(key))

    def load_engine(self) -> None:
        """Import torch (slow) after the window is visible, then tell the panels."""
        from tunedesk.engine.devices import describe_devices

        self.device_label.setText(describe_devices())
        self.state.engineReady.emit()

    def _restore(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        self.show_panel(str(self.settings.value("window/panel", "models")))

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if self.state.running:
            answer = QMessageBox.question(self, "Stop the run?",
                                          "A run is training. Stop it (a resumable checkpoint is saved) and quit?")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            panel = self.panels.get("train")
            if panel is not None and hasattr(panel, "stop_and_wait"):
                panel.stop_and_wait()
        self.settings.setValue("window/geometry", self.saveGeometry())
        row = self.sidebar.currentRow()
        if row >= 0:
            self.settings.setValue("window/panel", PANELS[row][0])
        for panel in self.panels.values():
            if hasattr(panel, "save_settings"):
                panel.save_settings(self.settings)
        super().closeEvent(event)
