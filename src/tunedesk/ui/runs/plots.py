"""pyqtgraph plots for run curves, imported only when a curve is first shown (keeps the panel fast to open)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QWidget

# Distinguishable on light and dark backgrounds (Tableau 10, reordered).
SERIES_COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
]


def series_colour(i: int) -> str:
    return SERIES_COLOURS[i % len(SERIES_COLOURS)]


def make_plot(title: str = "", x_label: str = "", y_label: str = "", parent: QWidget | None = None):
    """A PlotWidget styled from the application palette, with downsampling and clipping on."""
    import pyqtgraph as pg

    palette = QApplication.palette()
    background = palette.color(QPalette.ColorRole.Base)
    text = palette.color(QPalette.ColorRole.Text)
    grid = QColor(palette.color(QPalette.ColorRole.Mid))
    widget = pg.PlotWidget(parent=parent, background=background)
    item = widget.getPlotItem()
    item.showGrid(x=True, y=True, alpha=0.18)
    item.setDownsampling(auto=True, mode="peak")
    item.setClipToView(True)
    for side in ("left", "bottom"):
        axis = item.getAxis(side)
        axis.setPen(pg.mkPen(grid))
        axis.setTextPen(pg.mkPen(text))
    if title:
        item.setTitle(title, color=text.name(), size="10pt")
    if x_label:
        item.setLabel("bottom", x_label, color=text.name())
    if y_label:
        item.setLabel("left", y_label, color=text.name())
    widget.setMenuEnabled(False)
    widget.setMinimumHeight(140)
    return widget


def add_legend(widget, offset: tuple[int, int] = (-10, 10)):
    """A legend inside the plot; ``offset`` from the top-left (positive) or bottom-right (negative)."""
    import pyqtgraph as pg

    text = QApplication.palette().color(QPalette.ColorRole.Text)
    base = QColor(QApplication.palette().color(QPalette.ColorRole.Base))
    base.setAlpha(210)
    legend = widget.getPlotItem().addLegend(
        offset=offset,
        labelTextColor=text,
        brush=pg.mkBrush(base),
        pen=pg.mkPen(QApplication.palette().color(QPalette.ColorRole.Mid)),
    )
    return legend


def plot_series(
    widget,
    xs: Sequence[float],
    ys: Sequence[float],
    colour: str,
    name: str | None = None,
    symbols: bool = False,
    width: float = 2.0,
):
    import pyqtgraph as pg

    pen = pg.mkPen(QColor(colour), width=width)
    kwargs = {}
    if symbols:
        kwargs = dict(symbol="o", symbolSize=6, symbolBrush=QColor(colour), symbolPen=pg.mkPen(QColor(colour)))
    return widget.plot(list(xs), list(ys), pen=pen, name=name, **kwargs)


def whole_number_ticks(widget, last: float | None) -> None:
    """Epoch axes: a tick at every whole epoch (1, 2, 3) instead of 1.0, 1.5, 2.0; automatic past 30."""
    axis = widget.getPlotItem().getAxis("bottom")
    if last is None or last > 30:
        axis.setTicks(None)
        return
    axis.setTicks([[(float(i), str(i)) for i in range(0, int(last) + 2)]])
