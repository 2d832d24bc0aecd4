"""The running view's numbers: progress per epoch and overall, ETA, speed, memory, and the log pane."""

from __future__ import annotations

import html
import math
import time
from collections import deque
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

DASH = "—"


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return DASH
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_rate(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value) or value <= 0:
        return DASH
    if value >= 100:
        return f"{value:,.0f} {unit}"
    if value >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def format_mb(mb: float | None) -> str:
    if mb is None:
        return DASH
    return f"{mb / 1024:.2f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


class Stat(QFrame):
    """A small caption over a value."""

    def __init__(self, caption: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        v = QVBoxLayout(self)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(0)
        self.caption = QLabel(caption)
        self.caption.setProperty("role", "hint")
        self.value = QLabel(DASH)
        font = QFont(self.value.font())
        font.setPointSizeF(font.pointSizeF() * 1.15)
        font.setBold(True)
        self.value.setFont(font)
        self.value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        v.addWidget(self.caption)
        v.addWidget(self.value)
        # A steady width: changing numbers must not re-layout the panel (and resize the plots).
        self.setMinimumWidth(
            max(self.caption.sizeHint().width(), self.value.fontMetrics().horizontalAdvance("0:00:00 ")) + 8
        )

    def set(self, text: str) -> None:
        if self.value.text() != text:
            self.value.setText(text)


class RunMonitor(QWidget):
    """Progress bars and live numbers, updated from engine events and the step buffer."""

    BARS_EVERY_S = 0.5
    NUMBERS_EVERY_S = 0.25

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        bars = QGridLayout()
        bars.setHorizontalSpacing(8)
        bars.setVerticalSpacing(4)
        self.epoch_label = QLabel("Epoch")
        self.epoch_bar = QProgressBar()
        self.overall_label = QLabel("Overall")
        self.overall_bar = QProgressBar()
        for bar in (self.epoch_bar, self.overall_bar):
            bar.setRange(0, 1000)
            bar.setValue(0)
            bar.setTextVisible(True)
            bar.setFormat("")
            bar.setFixedHeight(18)
        bars.addWidget(self.epoch_label, 0, 0)
        bars.addWidget(self.epoch_bar, 0, 1)
        bars.addWidget(self.overall_label, 1, 0)
        bars.addWidget(self.overall_bar, 1, 1)
        bars.setColumnStretch(1, 1)
        layout.addLayout(bars)
        stats = QHBoxLayout()
        stats.setSpacing(18)
        self.stats: dict[str, Stat] = {}
        for key, caption in (
            ("elapsed", "Elapsed"),
            ("eta", "Time left"),
            ("steps", "Steps/s"),
            ("samples", "Samples/s"),
            ("loss", "Loss (smoothed)"),
            ("lr", "Learning rate"),
            ("memory", "GPU memory (peak)"),
            ("util", "GPU busy"),
        ):
            stat = Stat(caption)
            self.stats[key] = stat
            stats.addWidget(stat)
        stats.addStretch(1)
        layout.addLayout(stats)
        self.stats["util"].hide()
        self.reset()

    def reset(self) -> None:
        self.total_steps = 0
        self.steps_per_epoch = 0
        self.epochs = 0
        self.start_step = 0
        self.step = 0
        self.epoch = 0
        self.device = ""
        self._points: deque[tuple[float, int]] = deque(maxlen=30)  # (elapsed, step) for the rate
        self._started_wall: float | None = None
        self._elapsed_offset = 0.0
        self._bars_at = 0.0
        self._numbers_at = 0.0
        self.last_step: Any = None
        self.epoch_bar.setValue(0)
        self.overall_bar.setValue(0)
        self.epoch_bar.setFormat("")
        self.overall_bar.setFormat("")
        for stat in self.stats.values():
            stat.set(DASH)
        self.stats["util"].hide()

    def started(self, ev: Any) -> None:
        self.total_steps = max(int(ev.total_steps), 1)
        self.steps_per_epoch = max(int(ev.steps_per_epoch), 1)
        self.epochs = int(ev.epochs)
        self.start_step = self.step = int(ev.start_step)
        self.epoch = min(self.step // self.steps_per_epoch, max(self.epochs - 1, 0))
        self.device = ev.device
        self._points.clear()
        self._started_wall = time.monotonic()
        self.stats["lr"].set(f"{ev.learning_rate:.2g}")
        if not ev.device.startswith("cuda"):
            self.stats["memory"].set(DASH)
        self._update_bars()

    def update_steps(self, events: list[Any], smoothed_loss: float | None = None) -> None:
        """The newest step events (drained from the buffer)."""
        if not events:
            return
        for ev in events[-30:]:
            self._points.append((float(ev.elapsed), int(ev.step)))
        ev = events[-1]
        self.last_step = ev
        self.step = int(ev.step)
        self.epoch = int(ev.epoch)
        now = time.monotonic()
        if now - self._numbers_at < self.NUMBERS_EVERY_S:
            return  # numbers that change 10 times a second cannot be read anyway
        self._numbers_at = now
        rate = self.steps_per_second()
        self.stats["steps"].set(format_rate(rate, ""))
        self.stats["samples"].set(format_rate(ev.samples_per_second, ""))
        loss = smoothed_loss if smoothed_loss is not None and math.isfinite(smoothed_loss) else ev.loss
        self.stats["loss"].set(f"{loss:.4f}" if math.isfinite(loss) else "NaN")
        self.stats["lr"].set(f"{ev.learning_rate:.2g}")
        if ev.gpu_memory_mb is not None:
            self.stats["memory"].set(f"{format_mb(ev.gpu_memory_mb)} ({format_mb(ev.gpu_peak_memory_mb)})")
        else:
            self.stats["memory"].set(DASH)
        remaining = self.total_steps - self.step
        self.stats["eta"].set(format_duration(remaining / rate) if rate else DASH)
        self._elapsed_offset = float(ev.elapsed)
        if now - self._bars_at >= self.BARS_EVERY_S:  # QProgressBar.setValue repaints synchronously
            self._update_bars()

    def steps_per_second(self) -> float | None:
        if len(self._points) < 2:
            return None
        (t0, s0), (t1, s1) = self._points[0], self._points[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None

    def epoch_ended(self, ev: Any) -> None:
        self.epoch = int(ev.epoch)  # 1-based, so the bar of the next epoch starts empty
        self._update_bars()

    def tick(self, running: bool) -> None:
        """Once a second: the elapsed clock (which moves between logged steps too) and the bars."""
        if self._started_wall is not None and running:
            self.stats["elapsed"].set(format_duration(time.monotonic() - self._started_wall))
            self._update_bars()

    def set_gpu_utilisation(self, percent: int | None) -> None:
        stat = self.stats["util"]
        if percent is None:
            stat.hide()
        else:
            stat.show()
            stat.set(f"{percent} %")

    def finished(self, ev: Any) -> None:
        if ev.status == "completed":
            self.step = self.total_steps
            self.epoch = self.epochs
            self.stats["eta"].set("done")
        else:
            self.stats["eta"].set(DASH)
        if ev.samples_per_second:
            self.stats["samples"].set(format_rate(ev.samples_per_second, ""))
        if self._started_wall is not None:
            self.stats["elapsed"].set(format_duration(time.monotonic() - self._started_wall))
        self._started_wall = None
        self._update_bars()

    def _update_bars(self) -> None:
        self._bars_at = time.monotonic()
        if not self.total_steps:
            return
        spe = self.steps_per_epoch
        epochs = max(self.epochs, 1)
        epoch = min(self.epoch, epochs - 1) if self.step < self.total_steps else epochs - 1
        in_epoch = self.step - epoch * spe
        in_epoch = max(0, min(in_epoch, spe))
        self.epoch_bar.setValue(int(1000 * in_epoch / spe))
        self.epoch_bar.setFormat(f"epoch {epoch + 1} of {epochs}: step {in_epoch} of {spe}")
        self.overall_bar.setValue(int(1000 * self.step / self.total_steps))
        self.overall_bar.setFormat(
            f"step {self.step} of {self.total_steps} ({100 * self.step / self.total_steps:.0f} %)"
        )


class LogPane(QPlainTextEdit):
    """The run's events and warnings, newest last; bounded so a long run cannot grow it forever."""

    COLORS = {"warning": "#b26a00", "error": "#c62828", "ok": "#2e7d32"}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.setPlaceholderText("The run's events and warnings appear here.")

    def add(self, message: str, level: str = "info") -> None:
        stamp = time.strftime("%H:%M:%S")
        text = html.escape(message).replace("\n", "<br>")
        color = self.COLORS.get(level)
        prefix = {"warning": "warning: ", "error": "error: "}.get(level, "")
        body = f'<span style="color:{color}">{prefix}{text}</span>' if color else text
        self.appendHtml(f'<span style="color:gray">{stamp}</span>&nbsp; {body}')

    def lines(self) -> list[str]:
        return self.toPlainText().splitlines()
