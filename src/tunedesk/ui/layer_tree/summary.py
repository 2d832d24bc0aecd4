"""The live summary beside the layer tree: what trains, the plan in words, and whether it fits in memory."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from tunedesk.engine.config import FreezeSpec
from tunedesk.engine.shares import percent
from tunedesk.ui.layer_tree.fmt import bytes_text, count_text

OK_COLOUR = "#2e8b57"
PRECISIONS = (("auto", "Auto"), ("bf16", "bf16 mixed"), ("fp16", "fp16 mixed"), ("fp32", "fp32"))
PARTS = (
    ("weights", "Weights"),
    ("optimizer", "AdamW state"),
    ("peak", "Activations or gradients"),
    ("working", "Working memory"),
    ("overhead", "CUDA context"),
)
PART_TIPS = {
    "weights": "Every parameter in the dtype it is stored in, plus the bf16/fp16 copy autocast keeps of trainable ones",
    "optimizer": "AdamW keeps two moments per trainable parameter",
    "peak": "Backward frees each layer's stored activations as it writes that layer's gradients, so the larger "
    "of the two counts",
    "working": "What one layer needs while it runs, frozen layers included",
    "overhead": "The CUDA driver and kernels (about 1 GiB on a GPU)",
}


def _set_role(label: QLabel, role: str) -> None:
    if label.property("role") != role:
        label.setProperty("role", role)
        label.style().unpolish(label)
        label.style().polish(label)


def rule_text(spec: FreezeSpec) -> str:
    """The plan's rules in words, in the order they apply."""
    words = {"@embeddings": "embeddings", "@norms": "normalisation layers", "@head": "the new head"}
    parts = []
    for rule in spec.rules:
        what = words.get(
            rule.pattern,
            rule.pattern if not rule.pattern.startswith("@block:") else f"block {rule.pattern.split(':', 1)[1]}",
        )
        parts.append(f"{'train' if rule.train else 'freeze'} {what}")
    return ", then ".join(parts)


def cache_text(cache: Any, examples: int = 10_000) -> str:
    """'Feature cache: 1.2 GiB, epochs ~4.7x faster ...' for a ``feature_cache.CacheEstimate`` (or '')."""
    if cache is None:
        return ""
    from tunedesk.engine.run.feature_cache import MAX_SPEEDUP

    faster = f"≥{MAX_SPEEDUP:.0f}x" if cache.speedup >= MAX_SPEEDUP else f"~{cache.speedup:.1f}x"
    return (
        f"Feature cache: {bytes_text(cache.nbytes(examples))} per {examples:,} examples, epochs {faster} faster "
        f"(everything before {cache.boundary} runs once)"
    )


class Bar(QWidget):
    """A filled bar with centred text. Unlike QProgressBar it never repaints synchronously, which
    cost ~40 ms per value change under a style sheet (the whole panel repainted)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._fraction = 0.0
        self._text = ""
        self._colour: QColor | None = None
        self.setFixedHeight(18)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set(self, fraction: float, text: str, colour: str | None = None) -> None:
        self._fraction = max(0.0, min(1.0, fraction))
        self._text = text
        self._colour = QColor(colour) if colour else None
        self.update()

    def text(self) -> str:
        return self._text

    def sizeHint(self) -> QSize:
        return QSize(200, 18)

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        p.setPen(pal.color(QPalette.ColorRole.Mid))
        p.setBrush(pal.color(QPalette.ColorRole.Base))
        p.drawRoundedRect(rect, 3, 3)
        if self._fraction > 0:
            fill = QRectF(rect.left(), rect.top(), max(3.0, rect.width() * self._fraction), rect.height())
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(self._colour or pal.color(QPalette.ColorRole.Highlight))
            p.drawRoundedRect(fill, 3, 3)
        p.setPen(pal.color(QPalette.ColorRole.Text))
        p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self._text)
        p.end()


class SummaryPanel(QWidget):
    """Counts, the plan and the memory estimate; the estimate's inputs live here too."""

    inputsChanged = Signal()

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setMinimumWidth(300)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(10)

        trains = QGroupBox("What trains")
        tl = QVBoxLayout(trains)
        self.count_label = QLabel("—")
        font = self.count_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.35)
        font.setBold(True)
        self.count_label.setFont(font)
        self.of_label = QLabel("")
        self.of_label.setProperty("role", "hint")
        self.share_bar = Bar()
        self.plan_label = QLabel("")
        self.plan_label.setWordWrap(True)
        self.rules_label = QLabel("")
        self.rules_label.setWordWrap(True)
        self.rules_label.setProperty("role", "hint")
        self.rules_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for w in (self.count_label, self.of_label, self.share_bar, self.plan_label, self.rules_label):
            tl.addWidget(w)
        layout.addWidget(trains)

        memory = QGroupBox("Training memory (estimate)")
        ml = QVBoxLayout(memory)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.device = QComboBox()
        self.device.setToolTip("The device the run will use; its free memory is the budget")
        self.device.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.device.setMinimumContentsLength(18)
        self.precision = QComboBox()
        for key, label in PRECISIONS:
            self.precision.addItem(label, key)
        self.precision.setToolTip(
            "Auto: bf16 mixed precision on a GPU and on a CPU with native bf16 (AVX-512 BF16 or AMX), fp32 on other "
            "CPUs (as the run decides; on such a CPU an image model's run may keep fp32 where it times faster, "
            "which the estimate does not know in advance)"
        )
        self.batch = QSpinBox()
        self.batch.setRange(1, 4096)
        self.batch.setValue(16)
        self.seq = QSpinBox()
        self.seq.setRange(8, 131072)
        self.seq.setSingleStep(64)
        self.seq.setValue(128)
        self.seq.setSuffix(" tokens")
        self.image = QSpinBox()
        self.image.setRange(16, 4096)
        self.image.setSingleStep(32)
        self.image.setValue(224)
        self.image.setSuffix(" px")
        form.addRow("Device", self.device)
        form.addRow("Precision", self.precision)
        form.addRow("Batch size", self.batch)
        form.addRow("Sequence length", self.seq)
        form.addRow("Image size", self.image)
        self.checkpointing = QCheckBox("Gradient checkpointing")
        self.checkpointing.setToolTip(
            "Language models: recompute activations in the backward pass (much less memory "
            "for long sequences, about a third slower). Switch it on for the run in the "
            "Train area, under Language model."
        )
        form.addRow("", self.checkpointing)
        form.setRowVisible(self.checkpointing, False)
        self._form = form
        ml.addLayout(form)
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(2)
        self.part_labels: dict[str, QLabel] = {}
        for row, (key, title) in enumerate(PARTS + (("total", "Total"),)):
            name = QLabel(title)
            value = QLabel("—")
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if key == "total":
                bold = value.font()
                bold.setBold(True)
                value.setFont(bold)
                name.setFont(bold)
            grid.addWidget(name, row, 0)
            grid.addWidget(value, row, 1)
            name.setToolTip(PART_TIPS.get(key, "Peak memory of one training step"))
            self.part_labels[key] = value
            if key != "total":
                name.setProperty("role", "hint")
        ml.addLayout(grid)
        self.mem_bar = Bar()
        ml.addWidget(self.mem_bar)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        ml.addWidget(self.verdict)
        self.cache_label = QLabel("")
        self.cache_label.setWordWrap(True)
        self.cache_label.setToolTip(
            "The frozen layers see the same input every epoch, so a run computes their output once and "
            "trains the rest from it (Train area: Options, feature cache; training images only with "
            "augmentation off). Size for 10,000 examples; the speed-up counts computation only."
        )
        self.cache_label.hide()
        ml.addWidget(self.cache_label)
        layout.addWidget(memory)
        self.legend = QLabel(self._legend_html())
        self.legend.setProperty("role", "hint")
        self.legend.setWordWrap(True)
        layout.addWidget(self.legend)
        layout.addStretch(1)

        for spin in (self.batch, self.seq, self.image):
            spin.valueChanged.connect(self.inputsChanged)
        self.precision.currentIndexChanged.connect(self.inputsChanged)
        self.checkpointing.toggled.connect(self.inputsChanged)
        self.device.currentIndexChanged.connect(self.inputsChanged)
        self.set_task("text_classification")

    @staticmethod
    def _legend_html() -> str:
        from tunedesk.ui.resources import resource

        def img(name: str) -> str:
            path = resource("icons", f"{name}.svg")
            return (
                f"<img src='{path.as_uri()}' width='14' height='14' style='vertical-align: middle'>"
                if path.is_file()
                else ""
            )

        return (
            "<b>Reading the tree</b><br>"
            "A ticked box trains, an empty box is frozen, a filled box is partly trained. "
            f"{img('freeze')} frozen module &nbsp; {img('new')} new task head (starts from random weights).<br>"
            "Click a box to train or freeze a module and everything inside it; Space does it for all "
            "selected rows. Double-click the LR × column to give a module its own learning-rate multiplier; "
            "right-click a module for more (LoRA adapters, for language models)."
        )

    # ---- inputs ---------------------------------------------------------------------------------

    def set_devices(self, devices: list[tuple[str, str]], current: str | None = None) -> None:
        self.device.blockSignals(True)
        self.device.clear()
        for key, label in devices:
            self.device.addItem(label, key)
            self.device.setItemData(self.device.count() - 1, label, Qt.ItemDataRole.ToolTipRole)
        if current is not None and self.device.findData(current) >= 0:
            self.device.setCurrentIndex(self.device.findData(current))
        self.device.blockSignals(False)

    def set_task(self, task: str) -> None:
        image = task == "image_classification"
        self._form.setRowVisible(self.seq, not image)
        self._form.setRowVisible(self.image, image)
        self._form.setRowVisible(self.checkpointing, task == "causal_lm")
        self._causal = task == "causal_lm"

    def inputs(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch.value(),
            "precision": self.precision.currentData() or "auto",
            "sequence_length": self.seq.value(),
            "image_size": self.image.value(),
            "device": self.device.currentData() or "cpu",
            "gradient_checkpointing": bool(self._causal and self.checkpointing.isChecked()),
        }

    def device_text(self) -> str:
        key = self.device.currentData() or "cpu"
        if key.startswith("cuda"):
            return f"GPU {key.split(':', 1)[1] if ':' in key else '0'}"
        return {"cpu": "this computer (RAM)", "mps": "the Apple GPU"}.get(key, key)

    # ---- output ---------------------------------------------------------------------------------

    def clear(self) -> None:
        self.count_label.setText("—")
        self.of_label.setText("")
        self.plan_label.setText("")
        self.rules_label.setText("")
        self.share_bar.set(0, "")
        for label in self.part_labels.values():
            label.setText("—")
        self.verdict.setText("")
        self.mem_bar.set(0, "")

    def show_summary(self, summary: Any, spec: FreezeSpec) -> None:
        """Render a ``structure.PlanSummary``."""
        self.count_label.setText(f"{count_text(summary.trainable)} trainable")
        self.of_label.setText(f"of {count_text(summary.total)} parameters ({summary.trainable:,} of {summary.total:,})")
        self.share_bar.set(summary.share, percent(summary.trainable, summary.total))
        plan = summary.description.split(" - ", 1)[-1]
        self.plan_label.setText(f"Plan: {plan}")
        rules = rule_text(spec)
        extra = []
        if rules:
            extra.append(f"Edits: {rules}")
        if spec.lr_multipliers:
            extra.append("LR multipliers: " + ", ".join(f"{k} ×{v:g}" for k, v in spec.lr_multipliers.items()))
        self.rules_label.setText("<br>".join(extra))
        if self.rules_label.isHidden() == bool(extra):  # setVisible re-lays out the panel: only on a change
            self.rules_label.setVisible(bool(extra))
        mem = summary.memory
        parts = mem.to_dict()
        parts["peak"] = mem.peak_of_both
        for key, _ in PARTS:
            self.part_labels[key].setText(bytes_text(parts[key]) if parts[key] else "—")
        self.part_labels["peak"].setToolTip(
            f"activations {bytes_text(mem.activations)}, gradients "
            f"{bytes_text(mem.gradients)}: {PART_TIPS['peak'].lower()}"
        )
        self.part_labels["total"].setText(bytes_text(mem.total))
        self._verdict(mem.total, summary.available, parts)
        self.cache_label.setText(cache_text(getattr(summary, "cache", None)))
        if self.cache_label.isHidden() == bool(self.cache_label.text()):
            self.cache_label.setVisible(bool(self.cache_label.text()))

    def _verdict(self, need: int, available: int | None, parts: dict[str, int]) -> None:
        """Fits / tight / won't fit, in words and colour (rich text: no style sheet change per click)."""
        where = self.device_text()
        if not available:
            self.mem_bar.set(0, "free memory unknown")
            _set_role(self.verdict, "hint")
            self.verdict.setText(f"TuneDesk cannot tell how much memory {where} has free.")
            return
        ratio = need / available
        bar_text = f"{bytes_text(need)} of {bytes_text(available)} free"
        if ratio > 1:
            if parts["activations"] > parts["gradients"] + parts["optimizer"]:
                fix = "Lower the batch size or the sequence length, or freeze more of the early layers."
                if self._causal and not self.checkpointing.isChecked():
                    fix = (
                        "Tick “Gradient checkpointing” above (for the run: Train area, Language model), "
                        "lower the batch size or the sequence length, or freeze more layers."
                    )
            else:
                fix = "Freeze more layers (e.g. “Last N blocks”), or use bf16 mixed precision."
            _set_role(self.verdict, "error")
            self.verdict.setText(
                f"<b>Won’t fit: needs about {bytes_text(need)}, but {where} has {bytes_text(available)} free.</b> {fix}"
            )
            self.mem_bar.set(ratio, bar_text, "#d9423f")
        elif ratio > 0.85:
            _set_role(self.verdict, "warning")
            self.verdict.setText(
                f"Tight: about {bytes_text(need)} of the {bytes_text(available)} free on {where}. "
                "Other programs using memory could make it fail."
            )
            self.mem_bar.set(ratio, bar_text, "#b07000")
        else:
            _set_role(self.verdict, "")
            self.verdict.setText(
                f"<span style='color: {OK_COLOUR}'>Fits: about {bytes_text(need)} of the "
                f"{bytes_text(available)} free on {where}.</span>"
            )
            self.mem_bar.set(ratio, bar_text, OK_COLOUR)
