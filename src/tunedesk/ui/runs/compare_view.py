"""Two or more runs side by side: overlaid curves (metric and axis picked), the settings that differ,
and the freeze-map difference (which modules train in one run and not in another)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QStandardItemModel
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QHeaderView, QLabel, QSizePolicy, QSplitter, QVBoxLayout, QWidget

from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.store import RunStore, compare
from tunedesk.ui.background import TaskGroup
from tunedesk.ui.runs import format as fmt
from tunedesk.ui.runs import plots
from tunedesk.ui.runs.tabs import FROZEN_COLOUR, TRAIN_COLOUR, _item, _read_only_table, hint_label

MAX_RUNS = 10


class CompareView(QWidget):
    def __init__(self, store: Callable[[], RunStore], calls: TaskGroup, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self._calls = calls
        self.run_ids: list[int] = []
        self.runs: list[dict[str, Any]] = []
        self.freeze_diff: list[compare.FreezeDifference] = []
        self.config_diff: list[compare.ConfigDifference] = []
        self.exact_layout = False
        self._generation = 0

        self.title = QLabel()
        self.title.setProperty("role", "title")
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        self.metric_combo = QComboBox()
        self.metric_combo.setMinimumContentsLength(18)
        self.axis = QComboBox()
        self.axis.addItem("by step", "step")
        self.axis.addItem("by epoch", "epoch")
        self.metric_combo.currentIndexChanged.connect(self._plot)
        self.axis.currentIndexChanged.connect(self._plot)
        controls = QHBoxLayout()
        controls.addWidget(self.title)
        controls.addStretch(1)
        controls.addWidget(QLabel("Metric"))
        controls.addWidget(self.metric_combo)
        controls.addWidget(self.axis)

        self.plot_holder = QVBoxLayout()
        self.plot_holder.setContentsMargins(0, 0, 0, 0)
        self.plot: Any = None  # a pyqtgraph PlotWidget, made on first use
        plot_box = QWidget()
        plot_box.setLayout(self.plot_holder)

        self.config_model = QStandardItemModel(self)
        self.config_view = _read_only_table()
        self.config_view.setModel(self.config_model)
        self.config_view.setWordWrap(False)
        self.config_label = QLabel("Settings that differ")
        self.freeze_model = QStandardItemModel(self)
        self.freeze_view = _read_only_table()
        self.freeze_view.setModel(self.freeze_model)
        self.freeze_label = QLabel("Freeze map: what trains differently")
        self.freeze_hint = hint_label()
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.config_label)
        lv.addWidget(self.config_view)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addWidget(self.freeze_label)
        rv.addWidget(self.freeze_view)
        rv.addWidget(self.freeze_hint)
        tables = QSplitter()
        tables.addWidget(left)
        tables.addWidget(right)
        tables.setStretchFactor(0, 1)
        tables.setStretchFactor(1, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(plot_box)
        split.addWidget(tables)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.addLayout(controls)
        layout.addWidget(self.legend)
        layout.addWidget(split, 1)

    # ---- comparing ---------------------------------------------------------------------------

    def compare(self, run_ids: list[int]) -> None:
        store = self._store()
        self._generation += 1
        self.run_ids = list(run_ids)[:MAX_RUNS]
        try:
            self.runs = [store.get_run(rid) for rid in self.run_ids]
        except TuneDeskError:
            self.runs = []
            return
        more = len(run_ids) - len(self.run_ids)
        self.title.setText(f"Comparing {len(self.runs)} runs" + (f" (first {MAX_RUNS})" if more > 0 else ""))
        self.legend.setText(
            "&nbsp;&nbsp;&nbsp;".join(
                f"<span style='color:{plots.series_colour(i)}; font-size:14pt'>■</span> "
                f"<b>#{r['id']}</b> {_escape(r.get('name') or '')} "
                f"<span style='color:gray'>({_escape(r.get('freeze_summary') or '')}, best {fmt.best_text(r) or '—'})</span>"
                for i, r in enumerate(self.runs)
            )
        )
        current = self.metric_combo.currentData()
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        names = compare.available_metrics(store, self.run_ids)
        for name in names:
            self.metric_combo.addItem(fmt.metric_label(name), name)
        pick = (
            current
            if current in names
            else ("val_accuracy" if "val_accuracy" in names else (names[0] if names else None))
        )
        if pick is not None:
            self.metric_combo.setCurrentIndex(names.index(pick))
        self.metric_combo.blockSignals(False)
        self._plot()
        self.config_diff = compare.config_differences(self.runs)
        self._fill_config()
        # Names-only freeze diff now; the exact one (every parameter of the model) from a worker thread.
        self.exact_layout = False
        self.freeze_diff = compare.freeze_differences([r.get("trainable_names") or [] for r in self.runs])
        self._fill_freeze()
        same_model = len({r.get("model_path") or r.get("model_name") for r in self.runs}) == 1
        if same_model and self.runs:
            generation, first = self._generation, self.runs[0]
            self._calls.start(
                lambda _ctx: _parameter_layout(first),
                name="reading the model layout",
                on_result=lambda layout: self._layout_ready(generation, layout),
            )

    def _layout_ready(self, generation: int, layout: Any) -> None:
        if generation != self._generation or layout is None:
            return
        names, sizes = layout
        self.freeze_diff = compare.freeze_differences([r.get("trainable_names") or [] for r in self.runs], names, sizes)
        self.exact_layout = True
        self._fill_freeze()

    # ---- curves ------------------------------------------------------------------------------

    def _ensure_plot(self):
        if self.plot is None:
            self.plot = plots.make_plot()  # the coloured run list above the plot is its legend
            self.plot_holder.addWidget(self.plot)
        return self.plot

    def _plot(self) -> None:
        metric = self.metric_combo.currentData()
        plot = self._ensure_plot()
        plot.clear()
        if not metric or not self.run_ids:
            return
        axis = self.axis.currentData()
        curves = compare.curves(self._store(), self.run_ids, metric, axis)
        symbols = metric not in compare.STEP_METRICS
        for i, (curve, run) in enumerate(zip(curves, self.runs)):
            if curve.xs:
                plots.plot_series(
                    plot,
                    curve.xs,
                    curve.ys,
                    plots.series_colour(i),
                    f"#{run['id']} {run.get('name') or ''}"[:40],
                    symbols=symbols,
                )
        item = plot.getPlotItem()
        last = max((max(c.xs) for c in curves if c.xs), default=None)
        plots.whole_number_ticks(plot, last if axis == "epoch" else 10**9)
        item.setLabel("bottom", axis)
        item.setLabel("left", fmt.metric_label(metric))
        item.enableAutoRange()

    # ---- tables ------------------------------------------------------------------------------

    def _run_headers(self) -> list[str]:
        return [f"#{r['id']} {(r.get('name') or '')[:24]}" for r in self.runs]

    def _colour_headers(self, model: QStandardItemModel, first: int) -> None:
        for i in range(len(self.runs)):
            header = model.horizontalHeaderItem(first + i)
            if header is not None:
                header.setForeground(QColor(plots.series_colour(i)))

    def _fill_config(self) -> None:
        m = self.config_model
        m.clear()
        m.setHorizontalHeaderLabels(["setting"] + self._run_headers())
        self._colour_headers(m, 1)
        for diff in self.config_diff:
            cells = [_item(compare.format_value(v), tooltip=compare.format_value(v)) for v in diff.values]
            m.appendRow([_item(diff.key)] + cells)
        n = len(self.config_diff)
        self.config_label.setText(
            f"Settings that differ ({n})" if n else "Settings that differ: none — same configuration"
        )
        header = self.config_view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.config_view.resizeColumnsToContents()
        for col in range(m.columnCount()):
            self.config_view.setColumnWidth(col, min(self.config_view.columnWidth(col), 260))
        header.setStretchLastSection(True)

    def _fill_freeze(self) -> None:
        m = self.freeze_model
        m.clear()
        m.setHorizontalHeaderLabels(["module"] + self._run_headers() + ["parameters"])
        self._colour_headers(m, 1)
        for diff in self.freeze_diff:
            cells = [
                _item("trains" if t else "frozen", colour=TRAIN_COLOUR if t else FROZEN_COLOUR) for t in diff.trains
            ]
            size = fmt.count_text(diff.params) if diff.params is not None else f"{diff.names} tensors"
            m.appendRow(
                [_item(diff.path or "(whole model)", tooltip=diff.path)] + cells + [_item(size, align_right=True)]
            )
        n = len(self.freeze_diff)
        self.freeze_label.setText(
            f"Freeze map: what trains differently ({n} module{'s' if n != 1 else ''})"
            if n
            else "Freeze map: the same parameters train in every run"
        )
        self.freeze_hint.setText(
            ""
            if self.exact_layout or not n
            else "From the runs' trainable parameters; the model's full layout refines this when it loads."
        )
        self.freeze_hint.setVisible(bool(self.freeze_hint.text()))
        header = self.freeze_view.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, m.columnCount()):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _parameter_layout(run: dict[str, Any]) -> Any:
    from tunedesk.engine.run.rebuild import parameter_layout  # imports torch: only in the worker thread

    return parameter_layout(run)
