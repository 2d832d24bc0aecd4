"""The run detail's tabs: curves, per-class metrics + confusion matrix, freeze map, configuration, log, files.

Each tab has ``show_run(run, store)`` and reads what it needs from the GUI thread's RunStore (small,
indexed queries; step curves are downsampled to 2,000 points).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QDir, Qt, QUrl
from PySide6.QtGui import QColor, QDesktopServices, QFontDatabase, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileSystemModel,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from tunedesk.engine.store import RunStore, history
from tunedesk.engine.store.compare import format_value
from tunedesk.ui.runs import format as fmt
from tunedesk.ui.runs import plots

if TYPE_CHECKING:
    from tunedesk.ui.layer_tree import FreezeTreeWidget

log = logging.getLogger("tunedesk.ui.runs")

TRAIN_COLOUR = "#2e8b57"
FROZEN_COLOUR = "#7d8896"


def hint_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setProperty("role", "hint")
    label.setWordWrap(True)
    return label


def _read_only_table() -> QTableView:
    view = QTableView()
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    view.verticalHeader().setVisible(False)
    view.verticalHeader().setDefaultSectionSize(24)
    view.setAlternatingRowColors(True)
    return view


def _item(
    text: Any, *, align_right: bool = False, colour: str | None = None, tooltip: str | None = None
) -> QStandardItem:
    item = QStandardItem("" if text is None else str(text))
    item.setEditable(False)
    if align_right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    if colour:
        item.setForeground(QColor(colour))
    if tooltip:
        item.setToolTip(tooltip)
    return item


# ---- curves ------------------------------------------------------------------------------------------


class CurvesTab(QWidget):
    """Training loss by step (with validation loss at each evaluation) and validation scores by epoch."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(4, 4, 4, 4)
        self.loss_plot: Any = None  # pyqtgraph PlotWidgets, made on first use
        self.score_plot: Any = None
        self.empty = hint_label("This run logged no steps yet.")
        self._layout.addWidget(self.empty)

    def _ensure_plots(self) -> None:
        if self.loss_plot is None:
            self.empty.hide()
            self.loss_plot = plots.make_plot("Loss", "step", "")
            self.score_plot = plots.make_plot("Validation", "epoch", "")
            plots.add_legend(self.loss_plot)
            plots.add_legend(self.score_plot, offset=(-10, -10))  # scores rise: the legend sits below them
            self._layout.addWidget(self.loss_plot, 3)
            self._layout.addWidget(self.score_plot, 2)

    def show_run(self, run: dict[str, Any], store: RunStore) -> None:
        steps = store.step_metrics(run["id"], max_points=2000)
        epochs = store.epoch_metrics(run["id"])
        if not steps and not epochs:
            self.empty.show()
            if self.loss_plot is not None:
                self.loss_plot.hide()
                self.score_plot.hide()
            return
        self._ensure_plots()
        self.loss_plot.show()
        self.score_plot.show()
        self.loss_plot.clear()
        self.score_plot.clear()
        xs = [r["step"] for r in steps if r.get("loss") is not None]
        ys = [r["loss"] for r in steps if r.get("loss") is not None]
        plots.plot_series(self.loss_plot, xs, ys, plots.series_colour(0), "training loss")
        val = [(e["step"], e["metrics"].get("val_loss")) for e in epochs if e["metrics"].get("val_loss") is not None]
        if val:
            plots.plot_series(
                self.loss_plot,
                [v[0] for v in val],
                [v[1] for v in val],
                plots.series_colour(1),
                "validation loss",
                symbols=True,
            )
        shares = ("val_accuracy", "val_macro_f1")  # classification: scores in [0, 1]
        keys = [k for k in shares if any(e["metrics"].get(k) is not None for e in epochs)]
        if not keys:  # other tasks (language models: perplexity)
            keys = [k for k in ("val_perplexity",) if any(e["metrics"].get(k) is not None for e in epochs)]
        for i, key in enumerate(keys):
            points = [(e["epoch"], e["metrics"].get(key)) for e in epochs if e["metrics"].get(key) is not None]
            plots.plot_series(
                self.score_plot,
                [p[0] for p in points],
                [p[1] for p in points],
                plots.series_colour(2 + i),
                fmt.metric_label(key).removeprefix("validation "),
                symbols=True,
            )
        view = self.score_plot.getPlotItem().getViewBox()
        if keys and keys[0] in shares:
            view.setYRange(0, 1.02, padding=0)
        else:
            view.enableAutoRange()
        plots.whole_number_ticks(self.score_plot, max((e["epoch"] for e in epochs), default=None))


# ---- classes ----------------------------------------------------------------------------------------


class ClassesTab(QWidget):
    """Per-class precision / recall / F1 and the confusion matrix of a chosen evaluation (best first)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.epochs: list[dict[str, Any]] = []
        self.picker = QComboBox()
        self.picker.currentIndexChanged.connect(self._show_epoch)
        self.per_class = QStandardItemModel(0, 5, self)
        self.per_class_view = _read_only_table()
        self.per_class_view.setModel(self.per_class)
        self.confusion = QStandardItemModel(0, 0, self)
        self.confusion_view = _read_only_table()
        self.confusion_view.setModel(self.confusion)
        self.confusion_view.verticalHeader().setVisible(True)
        self.confusion_view.setAlternatingRowColors(False)
        self.empty = hint_label("No evaluation yet: per-class metrics appear after the first epoch.")
        top = QHBoxLayout()
        top.addWidget(QLabel("Evaluation:"))
        top.addWidget(self.picker)
        top.addStretch(1)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(QLabel("Per class"))
        lv.addWidget(self.per_class_view)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addWidget(QLabel("Confusion matrix (rows: true class, columns: predicted)"))
        rv.addWidget(self.confusion_view)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.empty)
        layout.addWidget(split, 1)
        self.split = split

    def show_run(self, run: dict[str, Any], store: RunStore) -> None:
        self.epochs = [e for e in store.epoch_metrics(run["id"]) if e.get("confusion")]
        self.picker.blockSignals(True)
        self.picker.clear()
        best = next((i for i in range(len(self.epochs) - 1, -1, -1) if self.epochs[i]["is_best"]), len(self.epochs) - 1)
        for i, e in enumerate(self.epochs):
            self.picker.addItem(f"epoch {e['epoch']}" + ("  (best)" if e["is_best"] else ""), i)
        self.picker.blockSignals(False)
        has = bool(self.epochs)
        if not has:
            evaluated = bool(store.epoch_metrics(run["id"]))
            self.empty.setText(
                "This task has no classes, so there are no per-class metrics."
                if evaluated
                else "No evaluation yet: per-class metrics appear after the first epoch."
            )
        self.empty.setVisible(not has)
        self.split.setVisible(has)
        self.picker.setEnabled(has)
        if has:
            self.picker.setCurrentIndex(best)
            self._show_epoch(best)

    def _show_epoch(self, i: int) -> None:
        if not 0 <= i < len(self.epochs):
            return
        e = self.epochs[i]
        labels = e.get("label_names") or [str(k) for k in range(len(e["confusion"]))]
        self.per_class.clear()
        self.per_class.setHorizontalHeaderLabels(["class", "precision", "recall", "F1", "support"])
        for name in labels:
            m = (e.get("per_class") or {}).get(name, {})
            self.per_class.appendRow(
                [_item(name)]
                + [_item(f"{m[k]:.3f}" if k in m else "", align_right=True) for k in ("precision", "recall", "f1")]
                + [_item(m.get("support", ""), align_right=True)]
            )
        self.per_class_view.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        cm = e["confusion"]
        self.confusion.clear()
        self.confusion.setRowCount(len(cm))
        self.confusion.setColumnCount(len(cm))
        self.confusion.setHorizontalHeaderLabels(labels)
        self.confusion.setVerticalHeaderLabels(labels)
        peak = max((v for row in cm for v in row), default=0) or 1
        for r, row in enumerate(cm):
            total = sum(row) or 1
            for c, v in enumerate(row):
                item = _item(
                    v,
                    align_right=True,
                    tooltip=f"true {labels[r]}, predicted {labels[c]}: {v} ({100 * v / total:.0f}% of {labels[r]})",
                )
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                strength = v / peak
                colour = QColor("#2e8b57" if r == c else "#d9423f")
                colour.setAlphaF(0.12 + 0.6 * strength if v else 0.0)
                item.setBackground(colour)
                self.confusion.setItem(r, c, item)
        header = self.confusion_view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)


# ---- freeze map ---------------------------------------------------------------------------------------


class FreezeMapView(QWidget):
    """Which modules trained: the layer tree engineer's read-only FreezeTreeWidget when it is available,
    else a tree of module paths with trainable / total parameters."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.rules = hint_label()
        self.model = QStandardItemModel(0, 3, self)
        self.view = QTreeView()
        self.view.setModel(self.model)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAlternatingRowColors(True)
        self.view.setUniformRowHeights(True)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.view)
        self.tree_widget: FreezeTreeWidget | None = None  # read-only, made on first use
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.summary)
        layout.addWidget(self.rules)
        layout.addWidget(self.stack, 1)
        self.run_id: int | None = None
        self.exact = False

    def show_run(self, run: dict[str, Any], layout: tuple[list[str], dict[str, int]] | None = None) -> None:
        self.run_id = run["id"]
        trainable = list(run.get("trainable_names") or [])
        share = history.share_text(run.get("trainable_params"), run.get("total_params"))
        self.summary.setText(
            f"<b>{run.get('freeze_summary') or share}</b> &nbsp;·&nbsp; "
            f"{run.get('trainable_params') or 0:,} of {run.get('total_params') or 0:,} parameters train"
        )
        freeze = history.run_config(run).get("freeze") or {}
        self.rules.setText(_plan_text(freeze))
        self.exact = layout is not None
        if layout is not None:
            names, sizes = layout
        else:
            names, sizes = trainable, {}
        self._fill(names, set(trainable), sizes)
        self.stack.setCurrentWidget(self.view)

    def show_tree(self, tree: Any, spec: Any) -> bool:
        """Show the run's model (a ModelTree built on the meta device) in the layer tree, read-only, with
        its freeze plan; False (the module list stays) when the layer tree cannot show it."""
        try:
            widget = self.tree_widget
            if widget is None:
                from tunedesk.ui.layer_tree import FreezeTreeWidget

                widget = self.tree_widget = FreezeTreeWidget(read_only=True)
                self.stack.addWidget(widget)
            widget.set_model(tree, spec)
        except Exception:
            log.exception("the layer tree could not show run %s", self.run_id)
            return False
        self.stack.setCurrentWidget(widget)
        return True

    def _fill(self, names: list[str], trainable: set[str], sizes: dict[str, int]) -> None:
        self.model.clear()
        self.model.setHorizontalHeaderLabels(["module", "trains", "parameters"])
        known = bool(sizes)
        # Aggregate per module path: [total, trainable] parameter counts (tensor counts without sizes).
        totals: dict[str, list[int]] = {}
        for name in names:
            n = sizes.get(name, 1)
            t = n if name in trainable else 0
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                row = totals.setdefault(".".join(parts[:i]), [0, 0])
                row[0] += n
                row[1] += t
        items: dict[str, QStandardItem] = {}
        root = self.model.invisibleRootItem()
        for path, (total, train) in totals.items():
            parent_path, _, leaf = path.rpartition(".")
            parent = items.get(parent_path, root) if parent_path else root
            if train == total:
                state, colour = "trains", TRAIN_COLOUR
            elif train == 0:
                state, colour = "frozen", FROZEN_COLOUR
            else:
                state, colour = f"partly ({100 * train / total:.0f}%)", TRAIN_COLOUR
            count = f"{fmt.count_text(train)} / {fmt.count_text(total)}" if known else f"{train} / {total} tensors"
            name_item = _item(leaf, colour=colour if train else FROZEN_COLOUR, tooltip=path)
            parent.appendRow([name_item, _item(state, colour=colour), _item(count, align_right=True)])
            items[path] = name_item
        self.view.expandToDepth(1 if known else 2)
        header = self.view.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(False)


def _plan_text(freeze: dict[str, Any]) -> str:
    preset = freeze.get("preset", "all")
    text = {
        "all": "plan: train everything",
        "none": "plan: freeze everything",
        "head_only": "plan: head only",
        "last_n_blocks": f"plan: last {freeze.get('last_n', 2)} blocks + head",
    }.get(preset, f"plan: {preset}")
    rules = freeze.get("rules") or []
    if rules:
        text += ", then " + format_value(rules)
    if freeze.get("lr_multipliers"):
        text += " · learning-rate multipliers " + ", ".join(f"{k} ×{v:g}" for k, v in freeze["lr_multipliers"].items())
    return text


# ---- configuration, log, files --------------------------------------------------------------------------


class ConfigView(QTreeView):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model_ = QStandardItemModel(0, 2, self)
        self.setModel(self.model_)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setUniformRowHeights(True)

    def show_run(self, run: dict[str, Any]) -> None:
        self.model_.clear()
        self.model_.setHorizontalHeaderLabels(["setting", "value"])
        config = history.run_config(run)
        res = history.resolved(run).to_dict()
        effective = {
            k: res[k]
            for k in (
                "learning_rate",
                "head_learning_rate",
                "lr_explanation",
                "architecture",
                "family",
                "pretrained",
                "label_names",
                "head_paths",
            )
            if res[k] is not None
        }
        if effective:
            config = {**config, "resolved by TuneDesk": effective}
        self._add(self.model_.invisibleRootItem(), config)
        self.expandAll()
        self.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)

    def _add(self, parent: QStandardItem, value: dict[str, Any]) -> None:
        for key, item in value.items():
            if isinstance(item, dict) and item:
                node = _item(key)
                parent.appendRow([node, _item("")])
                self._add(node, item)
            else:
                text = format_value(item) if not isinstance(item, str) else item
                parent.appendRow([_item(key), _item(text, tooltip=text if len(text) > 60 else None)])


class LogView(QPlainTextEdit):
    MAX_LINES = 5000

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)

    def show_run(self, run: dict[str, Any], store: RunStore) -> None:
        lines = []
        for row in store.logs(run["id"], limit=self.MAX_LINES):
            lines.append(f"{fmt.local_time(row['ts'], seconds=True)}  {row['level']:<7} {row['message']}")
        if run.get("error"):
            lines.append(
                f"{'':19}  {'result':<7} {run['status']}: {run['error']}"
                + (f" (hint: {run['error_hint']})" if run.get("error_hint") else "")
            )
        self.setPlainText("\n".join(lines) if lines else "(no log lines)")


class FilesView(QWidget):
    """The run's folder on disk, browsable, with "Open folder"."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path_label = QLabel()
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("Open folder")
        self.open_button.clicked.connect(self.open_folder)
        self.fs = QFileSystemModel(self)
        self.fs.setFilter(QDir.Filter.AllEntries | QDir.Filter.NoDotAndDotDot)
        self.view = QTreeView()
        self.view.setModel(self.fs)
        self.view.setColumnHidden(2, True)
        self.missing = hint_label()
        top = QHBoxLayout()
        top.addWidget(self.path_label, 1)
        top.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.missing)
        layout.addWidget(self.view, 1)
        self.folder: Path | None = None

    def show_run(self, run: dict[str, Any]) -> None:
        out = run.get("output_dir") or ""
        self.folder = Path(out) if out else None
        exists = bool(self.folder and self.folder.is_dir())
        self.path_label.setText(out or "(no folder)")
        self.open_button.setEnabled(exists)
        self.view.setVisible(exists)
        self.missing.setVisible(not exists)
        self.missing.setText("" if exists else "The run's folder is not on disk (it was moved or deleted).")
        if exists:
            root = self.fs.setRootPath(str(self.folder))
            self.view.setRootIndex(root)
            self.view.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)

    def open_folder(self) -> None:
        if self.folder and self.folder.is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.folder)))
