"""The learning-rate finder dialog: runs the range test in the background and plots loss against rate."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from tunedesk.ui.background import BackgroundTask, run_in_background
from tunedesk.ui.worker import find_learning_rate


class LRFinderDialog(QDialog):
    """Shows the range test live; "Use this value" emits ``chosen(lr, explanation)``."""

    chosen = Signal(float, str)

    def __init__(self, config: Any, parent: QWidget | None = None, num_steps: int = 100) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        self.setWindowTitle("Find a learning rate")
        self.resize(640, 480)
        self.result: Any = None
        self.error: tuple[str, str] | None = None
        self._lrs: list[float] = []
        self._losses: list[float] = []
        layout = QVBoxLayout(self)
        intro = QLabel(
            "TuneDesk trains a copy of the model for a few steps while raising the learning rate "
            "from 1e-7 to 1. The loss falls fastest at a good rate and shoots up when the rate is "
            "too high. Your model and data are left exactly as they were."
        )
        intro.setWordWrap(True)
        intro.setProperty("role", "hint")
        layout.addWidget(intro)
        self.progress = QProgressBar()
        self.progress.setRange(0, num_steps)
        self.progress.setFormat("preparing…")
        layout.addWidget(self.progress)
        pal = self.palette()
        fg = pal.color(QPalette.ColorRole.Text)
        self.plot = pg.PlotWidget(background=pal.color(QPalette.ColorRole.Base))
        self.plot.setLogMode(x=True, y=False)
        self.plot.setLabel("bottom", "learning rate", color=fg.name())
        self.plot.setLabel("left", "loss", color=fg.name())
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setMenuEnabled(False)
        for axis in ("left", "bottom"):
            self.plot.getAxis(axis).setTextPen(pg.mkPen(fg))
            self.plot.getAxis(axis).setPen(pg.mkPen(fg))
        self.raw = self.plot.plot(pen=pg.mkPen((86, 180, 233, 120), width=1))
        self.smooth = self.plot.plot(pen=pg.mkPen((0, 114, 178), width=2))
        self.marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((213, 94, 0), width=2))
        self.marker.setVisible(False)
        self.plot.addItem(self.marker)
        layout.addWidget(self.plot, 1)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.message)
        self.buttons = QDialogButtonBox()
        self.use_button = QPushButton("Use this value")
        self.use_button.setEnabled(False)
        self.buttons.addButton(self.use_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.cancel_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.use_button.clicked.connect(self._use)
        self.cancel_button.clicked.connect(self.reject)
        layout.addWidget(self.buttons)

        self.finished_running = False
        self.task = run_in_background(
            lambda ctx: find_learning_rate(ctx, config, num_steps),
            name="finding a learning rate",
            on_progress=self._progress,
            on_result=self._found,
            on_error=self._failed,
            on_finished=self._done,
            parent=self,
        )
        _BACKGROUND.append(self.task)
        self.task.finished.connect(lambda task=self.task: _BACKGROUND.remove(task) if task in _BACKGROUND else None)

    def _progress(self, what: str, *values: Any) -> None:
        if what == "message":
            self.progress.setFormat(values[0] + "…")
        else:
            self._step(*values)

    def _step(self, step: int, total: int, lr: float, loss: float) -> None:
        self._lrs.append(lr)
        self._losses.append(loss)
        self.progress.setValue(step)
        self.progress.setFormat(f"step {step} of {total} — learning rate {lr:.1e}")
        if step % 5 == 0 or step == total:
            self.raw.setData(self._lrs, self._losses)

    def _found(self, result: Any) -> None:
        self.result = result
        self.raw.setData(result.lrs, result.losses)
        self.smooth.setData(result.lrs, result.smoothed)
        import math

        self.marker.setValue(math.log10(result.suggestion))
        self.marker.setVisible(True)
        self.progress.setValue(self.progress.maximum())
        self.progress.setFormat("done" + (" — stopped when the loss blew up" if result.diverged else ""))
        self.message.setText(f"Suggested learning rate: <b>{result.suggestion:.2g}</b> — {result.explanation}.")
        self.use_button.setEnabled(True)
        self.use_button.setDefault(True)

    def _failed(self, message: str, hint: str) -> None:
        self.error = (message, hint)
        self.progress.setFormat("failed")
        self.message.setText(f'<span style="color:#c62828">{message}</span>' + (f"<br>{hint}" if hint else ""))

    def _done(self) -> None:
        self.finished_running = True
        self.cancel_button.setText("Close")

    def _use(self) -> None:
        if self.result is not None:
            self.chosen.emit(float(self.result.suggestion), self.result.explanation)
        self.accept()

    def stop(self, wait: bool = True) -> None:
        """Cancel the test (if running). ``wait``: block until its thread ended; otherwise the thread
        finishes in the background (preparing a big model cannot be interrupted); the app waits for
        it on quit (see ``wait_for_background``)."""
        self.task.cancel()
        if wait:
            self.task.wait(60000)

    def done(self, code: int) -> None:  # accept / reject / close: the dialog closes at once
        self.stop(wait=False)
        super().done(code)


_BACKGROUND: list[BackgroundTask] = []  # range tests still running (cancelled ones finish on their own)


def wait_for_background(timeout_ms: int = 60000) -> bool:
    """Wait for range tests still running (before the app exits); True when none is left."""
    return all(task.wait(timeout_ms) for task in list(_BACKGROUND))
