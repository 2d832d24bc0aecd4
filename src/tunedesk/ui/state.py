"""The app's shared state: engine objects that the panels render, plus signals when they change.

Widgets never hold the truth: the chosen model entry, freeze plan, data set and run configuration
live here (as engine objects), and every panel redraws from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal


class AppState(QObject):
    modelSelected = Signal(object)  # tunedesk.engine.catalog.ModelEntry
    freezeChanged = Signal(object)  # tunedesk.engine.config.FreezeSpec
    datasetSelected = Signal(object)  # tunedesk.engine.config.DataSpec
    configRequested = Signal(object)  # a RunConfig to load into the training panel (clone / resume setup)
    runsChanged = Signal()  # the history changed (a run started, finished, was deleted)
    runFinished = Signal(int)  # run id
    resumeRequested = Signal(int)  # run id of a stopped/interrupted run to continue (training panel resumes it)
    showPanel = Signal(str)  # "models" | "layers" | "datasets" | "train" | "runs"
    statusMessage = Signal(str)
    engineReady = Signal()  # torch and transformers are imported (after the window showed)

    def __init__(self, home: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.home = Path(home)
        self.model: Any = None
        self.freeze: Any = None
        self.data: Any = None
        self.running = False  # a training run is in progress (the window asks before closing)

    def select_model(self, entry: Any) -> None:
        self.model = entry
        self.modelSelected.emit(entry)

    def set_freeze(self, spec: Any) -> None:
        self.freeze = spec
        self.freezeChanged.emit(spec)

    def select_data(self, spec: Any) -> None:
        self.data = spec
        self.datasetSelected.emit(spec)

    @property
    def database(self) -> Path:
        from tunedesk.engine.paths import database_path

        return database_path(self.home)
