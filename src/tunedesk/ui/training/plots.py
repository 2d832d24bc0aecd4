"""Live training plots (pyqtgraph): loss per step, learning rate, validation loss and metrics per epoch.

pyqtgraph is imported when the plots are built (after the window is visible), never at import time.
Step curves use peak downsampling and clip-to-view and are fed views of the curve buffers with
``skipFiniteCheck`` so a redraw of a 100,000-step run costs about what a 100-step run costs.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QVBoxLayout, QWidget

from tunedesk.ui.training.curves import TrainingCurves

# Colour-blind-safe (Okabe-Ito) series colours; readable on light and dark backgrounds.
COLORS = {
    "loss_raw": (86, 180, 233, 110),
    "loss_ema": (0, 114, 178),
    "lr": (0, 158, 115),
    "val_loss": (213, 94, 0),
    "train_loss": (0, 114, 178),
    "val_accuracy": (0, 158, 115),
    "val_macro_f1": (204, 121, 167),
}
EXTRA_COLORS = [(230, 159, 0), (86, 180, 233), (240, 228, 66), (120, 120, 120)]
METRIC_TITLES = {
    "val_accuracy": "accuracy",
    "val_macro_f1": "macro-F1",
    "val_loss": "validation",
    "train_loss": "training",
}


def _pg():
    import pyqtgraph as pg

    return pg


class LivePlots(QWidget):
    """Four plots over one ``TrainingCurves``; ``redraw()`` is cheap when nothing changed."""

    def __init__(self, curves: TrainingCurves, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.curves = curves
        self._drawn_steps = -1
        self._drawn_epochs = -1
        self._metric_items: dict[str, Any] = {}
        self._right_items: dict[str, Any] = {}  # metrics on the right axis (perplexity), in ``_right_vb``
        self._right_vb: Any = None
        self.redraws = 0
        pg = _pg()
        pal = self.palette()
        bg = pal.color(QPalette.ColorRole.Base)
        fg = pal.color(QPalette.ColorRole.Text)
        self._fg = fg
        self.view = _timed_view_class()()
        self.view.setBackground(bg)
        self.view.ci.setContentsMargins(4, 4, 4, 4)
        self.view.ci.setSpacing(6)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)

        self.loss_plot = self._plot(0, 0, "Training loss", "step")
        self.lr_plot = self._plot(0, 1, "Learning rate", "step")
        self.val_loss_plot = self._plot(1, 0, "Loss per epoch", "epoch")
        self.metric_plot = self._plot(1, 1, "Validation metrics", "epoch")
        for p in (self.loss_plot, self.lr_plot):
            p.setDownsampling(auto=True, mode="peak")
            p.setClipToView(True)
        for p in (self.loss_plot, self.lr_plot, self.val_loss_plot, self.metric_plot):
            p.disableAutoRange()  # ranges are set by _sticky_*: axes repaint only when a range moves
        self._ranges: dict[tuple[int, str], tuple[float, float]] = {}
        self.metric_plot.setYRange(0, 1.02, padding=0)
        self.lr_plot.getAxis("left").enableAutoSIPrefix(False)
        self.lr_plot.getAxis("left").setStyle(tickTextWidth=48)

        self.loss_legend = self.loss_plot.addLegend(offset=(-8, 8), labelTextColor=fg, brush=self._legend_brush())
        self.raw_curve = self.loss_plot.plot(pen=pg.mkPen(COLORS["loss_raw"], width=1), name="loss")
        self.ema_curve = self.loss_plot.plot(pen=pg.mkPen(COLORS["loss_ema"], width=2), name="smoothed")
        self.lr_curve = self.lr_plot.plot(pen=pg.mkPen(COLORS["lr"], width=2))
        self.val_legend = self.val_loss_plot.addLegend(offset=(-8, 8), labelTextColor=fg, brush=self._legend_brush())
        self.metric_legend = self.metric_plot.addLegend(offset=(-8, -8), labelTextColor=fg, brush=self._legend_brush())
        self.val_curves: dict[str, Any] = {}
        for name in ("train_loss", "val_loss"):
            self.val_curves[name] = self.val_loss_plot.plot(
                pen=pg.mkPen(COLORS[name], width=2),
                symbol="o",
                symbolSize=7,
                symbolBrush=COLORS[name],
                symbolPen=None,
                name=METRIC_TITLES[name],
            )
        self.best_marker = pg.InfiniteLine(
            angle=90, movable=False, pen=pg.mkPen(QColor(120, 120, 120), width=1, style=_dash())
        )
        self.best_marker.setVisible(False)
        self.metric_plot.addItem(self.best_marker)

    def _right_view(self, title: str):
        """A second value axis on the right of the metrics plot, for metrics that are not shares."""
        if self._right_vb is None:
            pg = _pg()
            plot = self.metric_plot
            vb = pg.ViewBox()
            vb.setMouseEnabled(x=False, y=False)
            vb.disableAutoRange()
            plot.scene().addItem(vb)
            axis = plot.getAxis("right")
            axis.linkToView(vb)
            axis.setPen(pg.mkPen(self._fg))
            axis.setTextPen(pg.mkPen(self._fg))
            vb.setXLink(plot)

            def follow() -> None:
                vb.setGeometry(plot.getViewBox().sceneBoundingRect())

            plot.getViewBox().sigResized.connect(follow)
            follow()
            self._right_vb = vb
        self.metric_plot.showAxis("right")
        self.metric_plot.setLabel("right", title, color=self._fg.name())
        return self._right_vb

    def _legend_brush(self) -> QColor:
        c = QColor(self.palette().color(QPalette.ColorRole.Base))
        c.setAlpha(200)
        return c

    def _plot(self, row: int, col: int, title: str, xlabel: str):
        pg = _pg()
        plot = self.view.addPlot(row=row, col=col)
        fg = self._fg.name()
        plot.setTitle(title, color=fg, size="10pt")
        plot.setLabel("bottom", xlabel, color=fg)
        plot.showGrid(x=True, y=True, alpha=0.15)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        for axis in ("left", "bottom"):
            ax = plot.getAxis(axis)
            ax.setPen(pg.mkPen(self._fg))
            ax.setTextPen(pg.mkPen(self._fg))
        plot.getViewBox().setMouseEnabled(x=True, y=False)
        return plot

    @property
    def last_paint_s(self) -> float:
        return float(getattr(self.view, "last_paint_s", 0.0))

    def redraw(self, force: bool = False) -> bool:
        """Push changed buffers to the curves; True when something was redrawn."""
        c = self.curves
        changed = False
        if force or c.step_version != self._drawn_steps:
            x = c.steps.view()
            self.raw_curve.setData(x, c.loss.view(), skipFiniteCheck=True)
            self.ema_curve.setData(x, c.ema.view(), skipFiniteCheck=True)
            self.lr_curve.setData(x, c.lr.view(), skipFiniteCheck=True)
            if len(x):
                last = float(x[-1])
                for plot in (self.loss_plot, self.lr_plot):
                    self._sticky_x(plot, last)
                self._sticky_y(self.loss_plot, c.loss.view(), c.ema.view())
                self._sticky_y(self.lr_plot, c.lr.view(), floor=0.0)
            self._drawn_steps = c.step_version
            changed = True
        if force or c.epoch_version != self._drawn_epochs:
            self._draw_epochs()
            self._drawn_epochs = c.epoch_version
            changed = True
        if changed:
            self.redraws += 1
        return changed

    def _draw_epochs(self) -> None:
        pg = _pg()
        c = self.curves
        ys = []
        for name, curve in self.val_curves.items():
            x, y = c.epoch_series(name)
            curve.setData(x, y)
            ys.append(y)
        if any(len(y) for y in ys):
            self._sticky_y(self.val_loss_plot, *ys)
        names = [n for n in c.metric_names() if n.startswith("val_") and n != "val_loss"]
        extra = iter(EXTRA_COLORS[sum(n not in COLORS for n in self._metric_items) :])  # next unused
        for name in names:
            if name not in self._metric_items:
                color = COLORS.get(name) or next(extra, (120, 120, 120))
                title = METRIC_TITLES.get(name, name.removeprefix("val_").replace("_", " "))
                x, y = c.epoch_series(name)
                style = dict(pen=pg.mkPen(color, width=2), symbol="o", symbolSize=7, symbolBrush=color, symbolPen=None)
                if len(y) and float(_np().nanmax(y)) > 1.0:  # not a share (perplexity): its own axis, right
                    item = pg.PlotDataItem(**style)
                    self._right_view(title).addItem(item)
                    self.metric_legend.addItem(item, f"{title} (right axis)")
                    self._right_items[name] = item
                else:
                    item = self.metric_plot.plot(name=title, **style)
                self._metric_items[name] = item
        right = []
        for name, item in self._metric_items.items():
            x, y = c.epoch_series(name)
            item.setData(x, y)
            if name in self._right_items:
                right.append(y)
        if right:
            self._sticky_y(self._right_vb, *right)
        best = [e["epoch"] for e in c.epochs if e.get("is_best")]
        self.best_marker.setVisible(bool(best))
        if best:
            self.best_marker.setValue(best[-1])
        n = max(max((e["epoch"] for e in c.epochs), default=1), c.total_epochs or 1)
        major = max(1, math.ceil(n / 8))  # whole epochs only, at most ~8 labels
        for plot in (self.val_loss_plot, self.metric_plot):
            plot.setXRange(0.8, max(n, 2) + 0.2, padding=0)
            plot.getAxis("bottom").setTickSpacing(major, major)

    # ---- ranges that move only when the data leaves them (axis pictures stay cached) ------------------

    def _set_range(self, plot, axis: str, lo: float, hi: float) -> None:
        key = (id(plot), axis)
        if self._ranges.get(key) == (lo, hi):
            return
        self._ranges[key] = (lo, hi)
        if axis == "x":
            plot.setXRange(lo, hi, padding=0)
        else:
            plot.setYRange(lo, hi, padding=0)

    def _sticky_x(self, plot, last: float) -> None:
        """0 .. the run's last step when known (the axis never moves during a run), else a round
        number ahead of the data (moves only when the data reaches it)."""
        total = self.curves.total_steps
        if total and last <= total:
            hi = float(total)
        else:
            cur = self._ranges.get((id(plot), "x"))
            if cur is not None and last <= cur[1] <= 4 * max(last, 10):
                return
            hi = _nice_ceil(max(last * 1.25, 10.0))
        self._set_range(plot, "x", 0.0, hi)

    def _sticky_y(self, plot, *series, floor: float | None = None) -> None:
        """Grow to fit the data with some headroom; shrink only when the data uses under half the range."""
        np = _np()
        los, his = [], []
        for y in series:
            if len(y):
                finite = y[np.isfinite(y)]
                if len(finite):
                    los.append(float(finite.min()))
                    his.append(float(finite.max()))
        if not los:
            return
        lo, hi = min(los), max(his)
        cur = self._ranges.get((id(plot), "y"))
        if cur is not None and cur[0] <= lo and hi <= cur[1] and (hi - lo) >= 0.5 * (cur[1] - cur[0]):
            return
        span = hi - lo or abs(hi) * 0.1 or 1.0
        # Headroom where the data is heading (losses fall): the range, and the axis, move rarely.
        below = 0.25 if cur is not None and lo < cur[0] else 0.08
        above = 0.25 if cur is not None and hi > cur[1] else 0.08
        new_lo, new_hi = lo - below * span, hi + above * span
        if floor is not None:
            new_lo = max(new_lo, floor) if lo >= floor else new_lo
        self._set_range(plot, "y", new_lo, new_hi)

    def clear(self) -> None:
        self._ranges.clear()
        self._drawn_steps = self._drawn_epochs = -1
        for name in list(self._metric_items):
            item = self._metric_items.pop(name)
            if self._right_items.pop(name, None) is not None:
                self._right_vb.removeItem(item)
            else:
                self.metric_plot.removeItem(item)
        self.metric_plot.hideAxis("right")
        self.metric_legend.clear()
        self.metric_plot.setYRange(0, 1.02, padding=0)
        self.redraw(force=True)


def _np():
    import numpy

    return numpy


def _nice_ceil(value: float) -> float:
    """The next 1, 2 or 5 x 10^k at or above ``value``."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1, 2, 5, 10):
        if m * 10**exp >= value:
            return float(m * 10**exp)
    return float(10 ** (exp + 1))


_TIMED_VIEW: Any = None


def _timed_view_class():
    """A GraphicsLayoutWidget that remembers how long its last paint took (the panel paces redraws by it)."""
    global _TIMED_VIEW
    if _TIMED_VIEW is None:
        import time

        pg = _pg()

        base: Any = pg.GraphicsLayoutWidget

        class TimedLayoutWidget(base):
            last_paint_s = 0.0

            def paintEvent(self, ev):
                t = time.thread_time()  # CPU time: waiting for the interpreter lock is not a cost to pace by
                try:
                    return super().paintEvent(ev)
                finally:
                    self.last_paint_s = time.thread_time() - t

        _TIMED_VIEW = TimedLayoutWidget
    return _TIMED_VIEW


def _dash():
    from PySide6.QtCore import Qt

    return Qt.PenStyle.DashLine
