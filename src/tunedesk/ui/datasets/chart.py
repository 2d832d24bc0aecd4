"""Class balance per split: one horizontal stacked bar per class (train, validation, not assigned).

pyqtgraph is imported when the chart is first drawn, not when the app starts.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

COLOURS = {"train": (52, 120, 198), "val": (230, 140, 30), "": (150, 150, 150)}
NAMES = {"train": "train", "val": "validation", "": "not assigned"}


class BalanceChart(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot: Any = None  # a pyqtgraph PlotWidget, made on first use
        self.pg: Any = None
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self.empty = QLabel("No classes yet")
        self.empty.setProperty("role", "hint")
        self._layout.addWidget(self.empty)
        self.legend = QLabel("")
        self.legend.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.legend.setProperty("role", "hint")
        self._layout.addWidget(self.legend)
        self.counts: dict[str, dict[str, int]] = {}

    def _ensure_plot(self) -> None:
        if self.plot is not None:
            return
        import pyqtgraph as pg

        self.pg = pg
        self.plot = pg.PlotWidget(background=None)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(x=True, y=False, alpha=0.25)
        self.plot.getPlotItem().setContentsMargins(0, 4, 8, 0)
        self._layout.insertWidget(0, self.plot, 1)

    def set_counts(self, counts: dict[str, dict[str, int]]) -> None:
        """label -> {"train": n, "val": n, "": n}; classes listed top to bottom in the given order."""
        self.counts = counts
        if not counts:
            self.empty.show()
            self.legend.setText("")
            if self.plot is not None:
                self.plot.hide()
            return
        self._ensure_plot()
        self.empty.hide()
        self.plot.show()
        pg, plot = self.pg, self.plot
        plot.clear()
        shown: list[str] = []
        labels = list(counts)
        n = len(labels)
        ys = [n - 1 - i for i in range(n)]  # first class on top
        left = [0.0] * n
        for split in ("train", "val", ""):
            widths = [float(counts[lab][split]) for lab in labels]
            if not any(widths) and (
                split != "train" or shown or any(counts[lab][s] for lab in labels for s in ("val", ""))
            ):
                continue  # nothing in this split (an empty chart still shows the train colour)
            bar = pg.BarGraphItem(
                x0=left, y=ys, height=0.62, width=widths, brush=pg.mkBrush(*COLOURS[split]), pen=pg.mkPen(None)
            )
            plot.addItem(bar)
            shown.append(split)
            left = [a + b for a, b in zip(left, widths)]
        axis = plot.getAxis("left")
        axis.setTicks([[(y, _short(lab or "(no label)")) for y, lab in zip(ys, labels)]])
        axis.setWidth(min(140, 10 + 7 * max(len(_short(lab or "(no label)")) for lab in labels)))
        top = max(left) if left else 1.0
        plot.setXRange(0, top * 1.05 or 1, padding=0)
        plot.setYRange(-0.6, n - 0.4, padding=0)
        self.legend.setText(
            "&nbsp;&nbsp;&nbsp;".join(f"<span style='color:rgb{COLOURS[s]}'>&#9632;</span> {NAMES[s]}" for s in shown)
        )
        self.legend.setTextFormat(Qt.TextFormat.RichText)

    def totals(self) -> dict[str, int]:
        return {s: sum(c[s] for c in self.counts.values()) for s in ("train", "val", "")}


def _short(text: str, limit: int = 18) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
