"""Editors for language-model runs: the LoRA part of a freeze plan (with the four presets), one
module's adapter settings, and the run's sample prompts / gradient checkpointing.

They edit engine objects (``FreezeSpec``, ``HyperParams``) and emit copies; the host (layer tree,
training panel) stores them in AppState. ``tunedesk.engine.lm.lora`` (torch) is imported only when a
model is given for the parameter summary.
"""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from tunedesk.engine.config import LAST_ATTENTION, FreezeSpec, HyperParams, LoraRule, LoraSpec

LORA_LAYER_CHOICES = [
    ("none", "Only where chosen (below, or in the tree)"),
    ("attention", "Attention projections"),
    ("all_linear", "All linear layers"),
]


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


def _spins(rank: int, alpha: float, dropout: float) -> tuple[QSpinBox, QDoubleSpinBox, QDoubleSpinBox]:
    r = QSpinBox()
    r.setRange(1, 4096)
    r.setValue(rank)
    r.setToolTip("Rank of the low-rank update: 8 or 16 suits most tone and domain adaptation")
    a = QDoubleSpinBox()
    a.setRange(0.01, 8192.0)
    a.setDecimals(2)
    a.setValue(alpha)
    a.setToolTip("Scale of the update (alpha / rank); twice the rank is a common choice")
    d = QDoubleSpinBox()
    d.setRange(0.0, 0.95)
    d.setSingleStep(0.05)
    d.setDecimals(2)
    d.setValue(dropout)
    d.setToolTip("Dropout on the adapter's input during training")
    return r, a, d


class LoraSettingsWidget(QWidget):
    """Edits ``FreezeSpec.lora`` and applies the LoRA presets to a whole FreezeSpec.

    ``set_spec(freeze_spec)`` shows a plan; every edit emits ``specChanged(FreezeSpec)`` (a copy).
    ``set_model(model, head_paths)`` (a meta-device model is enough) adds a live summary of the
    adapters: how many layers, how many parameters.
    """

    specChanged = Signal(object)  # FreezeSpec

    def __init__(self, spec: FreezeSpec | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._spec = copy.deepcopy(spec) if spec is not None else FreezeSpec(preset="none")
        self._model: Any = None
        self._heads: list[str] = []
        self._quiet = False

        presets = QGroupBox("Presets")
        self.attention_button = QPushButton("LoRA on attention")
        self.attention_button.setToolTip("Freeze everything; adapters on the attention projections (q, k, v, o)")
        self.linear_button = QPushButton("LoRA on all linear layers")
        self.linear_button.setToolTip("Freeze everything; adapters on every linear layer (attention and MLP)")
        self.last_attention_button = QPushButton("LoRA on attention of the last N blocks")
        self.last_attention_button.setToolTip(
            "Freeze everything; adapters on the attention projections of the last "
            "N blocks only (tone and style: fewer adapters, less memory)"
        )
        self.last_n_button = QPushButton("Last N blocks fully, LoRA elsewhere")
        self.last_n_button.setToolTip(
            "Train the last N blocks (and the final norm) fully; adapters on every other linear layer"
        )
        self.last_n = QSpinBox()
        self.last_n.setRange(1, 256)
        self.last_n.setValue(2)
        self.last_n.setPrefix("N = ")
        self.last_n.setToolTip("The number of blocks the two 'last N blocks' presets use")
        p = QVBoxLayout(presets)
        p.addWidget(self.attention_button)
        p.addWidget(self.linear_button)
        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.last_attention_button, 0, 0)
        grid.addWidget(self.last_n_button, 1, 0)
        grid.addWidget(self.last_n, 0, 1, 2, 1)
        grid.setColumnStretch(0, 1)
        p.addLayout(grid)

        settings = QGroupBox("Adapters")
        self.layers = QComboBox()
        for key, label in LORA_LAYER_CHOICES:
            self.layers.addItem(label, key)
        self.layers.setToolTip(
            "Which linear layers get an adapter (only those the freeze plan leaves frozen); "
            "per-module choices in the layer tree come on top"
        )
        self.rank, self.alpha, self.dropout = _spins(8, 16.0, 0.05)
        form = QFormLayout(settings)
        form.addRow("Layers", self.layers)
        form.addRow("Rank", self.rank)
        form.addRow("Alpha", self.alpha)
        form.addRow("Dropout", self.dropout)
        self.rules_label = QLabel()
        self.rules_label.setProperty("role", "hint")
        form.addRow(self.rules_label)
        self.base_4bit = QCheckBox("Base in 4-bit (QLoRA)")
        self.base_4bit.setToolTip(
            "Hold the frozen base in 4 bits (NF4, double quantisation, bitsandbytes) with the adapters on top: "
            "about a quarter of the weights' memory. Needs a CUDA GPU and the bitsandbytes package."
        )
        self.base_note = QLabel()
        self.base_note.setWordWrap(True)
        self.base_note.setProperty("role", "hint")
        form.addRow(self.base_4bit)
        form.addRow(self.base_note)
        self._base_reason: tuple[str, str] | None = None  # why a 4-bit base cannot run here

        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setProperty("role", "hint")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(presets)
        layout.addWidget(settings)
        layout.addWidget(self.summary)
        layout.addStretch(1)

        self.attention_button.clicked.connect(lambda: self.apply_preset("lora_attention"))
        self.linear_button.clicked.connect(lambda: self.apply_preset("lora_all_linear"))
        self.last_n_button.clicked.connect(lambda: self.apply_preset("last_n_full"))
        self.last_attention_button.clicked.connect(lambda: self.apply_preset("lora_attention_last_n"))
        self.layers.currentIndexChanged.connect(self._edited)
        self.base_4bit.toggled.connect(self._edited)
        for w in (self.rank, self.alpha, self.dropout):
            w.valueChanged.connect(self._edited)
        self._show()

    # -- public ---------------------------------------------------------------------------------
    def spec(self) -> FreezeSpec:
        return copy.deepcopy(self._spec)

    def set_spec(self, spec: FreezeSpec) -> None:
        """Show a plan (e.g. after the layer tree changed it); emits nothing."""
        self._spec = copy.deepcopy(spec)
        self._show()

    def set_model(self, model: Any, head_paths: list[str] | tuple[str, ...] = ()) -> None:
        """The model the plan applies to (meta device is fine), for the adapter summary; None clears it.
        Also checks (once torch is loaded anyway) whether a 4-bit base can run on this machine."""
        self._model, self._heads = model, list(head_paths)
        if model is not None:
            from tunedesk.engine.lm import quant

            self.set_quantisation_available(quant.unavailable_reason(4))
        self._update_summary()

    def set_quantisation_available(self, reason: tuple[str, str] | None) -> None:
        """None: a 4-bit base can run here; else (message, hint) shown beside the disabled choice."""
        self._base_reason = reason
        self._show()

    def apply_preset(self, name: str) -> None:
        """``lora_attention``, ``lora_attention_last_n``, ``lora_all_linear`` or ``last_n_full`` (as
        ``tunedesk.engine.lm.lora.preset_spec``, built here without importing torch)."""
        bits = self._spec.lora.base_bits
        if name == "lora_attention_last_n":
            self._spec = FreezeSpec(
                preset="none",
                lora=LoraSpec(
                    preset="none",
                    rank=self.rank.value(),
                    alpha=self.alpha.value(),
                    dropout=self.dropout.value(),
                    rules=[LoraRule(f"{LAST_ATTENTION}{self.last_n.value()}")],
                    base_bits=bits,
                ),
            )
            self._show()
            self.specChanged.emit(self.spec())
            return
        lo = LoraSpec(
            preset="attention" if name == "lora_attention" else "all_linear",
            rank=self.rank.value(),
            alpha=self.alpha.value(),
            dropout=self.dropout.value(),
            base_bits=bits,
        )
        if name == "last_n_full":
            self._spec = FreezeSpec(preset="last_n_blocks", last_n=self.last_n.value(), lora=lo)
        elif name in ("lora_attention", "lora_all_linear"):
            self._spec = FreezeSpec(preset="none", lora=lo)
        else:
            raise ValueError(f"unknown LoRA preset {name!r}")
        self._show()
        self.specChanged.emit(self.spec())

    # -- internals ----------------------------------------------------------------------------------
    def _show(self) -> None:
        self._quiet = True
        try:
            lo = self._spec.lora
            self.layers.setCurrentIndex(max(0, self.layers.findData(lo.preset)))
            self.rank.setValue(int(lo.rank))
            self.alpha.setValue(float(lo.alpha))
            self.dropout.setValue(float(lo.dropout))
            if self._spec.preset == "last_n_blocks":
                self.last_n.setValue(max(1, int(self._spec.last_n)))
            scoped = [r for r in lo.rules if r.lora and r.pattern.startswith(LAST_ATTENTION)]
            for rule in scoped:
                try:
                    self.last_n.setValue(max(1, int(rule.pattern[len(LAST_ATTENTION) :])))
                except ValueError:
                    pass
            n = len(lo.rules) - len(scoped)
            texts = [f"attention of the last {self.last_n.value()} blocks"] if scoped else []
            texts += [f"{n} per-module choice{'s' if n != 1 else ''} from the layer tree"] if n else []
            also = "Adapters also on: " if lo.preset != "none" else "Adapters on: "
            self.rules_label.setText(
                also + "; ".join(texts) if texts else "Per-module choices: right-click a module in the layer tree"
            )
            quantised = lo.base_bits is not None
            self.base_4bit.setChecked(quantised)
            self.base_4bit.setText("Base in 8-bit (LLM.int8)" if lo.base_bits == 8 else "Base in 4-bit (QLoRA)")
            # unavailable here: disabled with the reason, but a plan that has it can still switch it off
            self.base_4bit.setEnabled(self._base_reason is None or quantised)
        finally:
            self._quiet = False
        self._update_summary()

    def _edited(self, *args: Any) -> None:
        if self._quiet:
            return
        old_bits = self._spec.lora.base_bits
        self._spec.lora = LoraSpec(
            preset=self.layers.currentData(),
            rank=self.rank.value(),
            alpha=self.alpha.value(),
            dropout=self.dropout.value(),
            rules=list(self._spec.lora.rules),
            base_bits=(old_bits or 4) if self.base_4bit.isChecked() else None,
        )
        self.base_4bit.setEnabled(self._base_reason is None or self.base_4bit.isChecked())
        self._update_summary()
        self.specChanged.emit(self.spec())

    def _base_text(self, targets: dict[str, Any], plan: Any) -> str:
        """The 4-bit base's saving, live: the frozen linear layers' bytes in 16 and in 4 bits."""
        from tunedesk.engine.lm import lora, quant

        shapes = lora.quantised_shapes(self._model, plan)
        if not shapes or not targets:
            return self._reason_text()
        bits = self._spec.lora.base_bits or 4
        half = sum(a * b for a, b in shapes) * 2
        small = quant.quantised_bytes(shapes, bits)
        gib = 2**30
        if self._spec.lora.base_bits is not None:
            text = (
                f"Base in {bits}-bit: the frozen linear layers take {small / gib:.1f} GiB instead of "
                f"{half / gib:.1f} GiB in bf16 (saves {(half - small) / gib:.1f} GiB). "
                "Merged exports load the base in bf16 and add the adapters."
            )
        else:
            text = f"A 4-bit base would save about {(half - small) / gib:.1f} GiB of weights."
        return f"{text} {self._reason_text()}".strip()

    def _reason_text(self) -> str:
        if self._base_reason is None:
            return ""
        return f"Not available here: {self._base_reason[0]} (hover for the fix)."

    def _update_summary(self) -> None:
        if self._base_reason is not None:
            self.base_4bit.setToolTip(f"{self._base_reason[0]}: {self._base_reason[1]}")
        self.base_note.setText(self._reason_text())
        if self._model is None:
            self.summary.setText(
                "Adapters go only on layers the freeze plan leaves frozen; a trained layer keeps training fully."
            )
            return
        from tunedesk.engine import freezing
        from tunedesk.engine.errors import TuneDeskError
        from tunedesk.engine.lm import lora

        try:
            plan = freezing.resolve(self._model, self._spec, self._heads)
            targets = lora.resolve_targets(self._model, self._spec.lora, plan)
            extra = lora.adapter_params(self._model, targets)
        except TuneDeskError as exc:
            self.summary.setText(exc.message)
            return
        total = plan.total_params
        if not targets:
            self.summary.setText(
                f"No adapters: {_count(plan.trainable_params)} of {_count(total)} parameters train fully."
            )
            return
        self.summary.setText(
            f"LoRA on {len(targets)} layer{'s' if len(targets) != 1 else ''}: "
            f"{_count(extra)} adapter parameters ({100 * extra / max(total, 1):.2f}% of {_count(total)}); "
            f"{_count(plan.trainable_params)} parameters train fully."
        )
        self.base_note.setText(self._base_text(targets, plan))


class ModuleLoraDialog(QDialog):
    """Rank, alpha and dropout for one module's adapter (the layer tree's "LoRA adapter..." action)."""

    def __init__(
        self, path: str, rank: int = 8, alpha: float = 16.0, dropout: float = 0.05, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("LoRA adapter")
        self.rank, self.alpha, self.dropout = _spins(rank, alpha, dropout)
        info = QLabel(f"Adapters on every linear layer under <b>{path}</b>; its own weights stay frozen.")
        info.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Rank", self.rank)
        form.addRow("Alpha", self.alpha)
        form.addRow("Dropout", self.dropout)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(info)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def values(self) -> tuple[int, float, float]:
        return self.rank.value(), self.alpha.value(), self.dropout.value()

    @staticmethod
    def ask(
        parent: QWidget | None, path: str, rank: int = 8, alpha: float = 16.0, dropout: float = 0.05
    ) -> tuple[int, float, float] | None:
        dialog = ModuleLoraDialog(path, rank, alpha, dropout, parent)
        return dialog.values() if dialog.exec() == QDialog.DialogCode.Accepted else None


KERNEL_LABELS = (("auto", "Auto (where measured faster)"), ("on", "On"), ("off", "Off"))


class LmRunSettingsWidget(QWidget):
    """The language-model fields of HyperParams: sample prompts (one per line), reply length, gradient
    checkpointing, packing, the chunked loss and fused kernels. ``set_hparams`` shows them;
    ``apply_to(hparams)`` writes them; edits emit ``changed``."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.prompts = QPlainTextEdit()
        self.prompts.setPlaceholderText("One prompt per line, e.g.\nWhere is my parcel?\nCan I get a refund?")
        self.prompts.setToolTip(
            "After each evaluation the model answers these; empty: the first questions of the validation data"
        )
        self.prompts.setMaximumHeight(90)
        self.max_new = QSpinBox()
        self.max_new.setRange(1, 2048)
        self.max_new.setValue(48)
        self.max_new.setSuffix(" tokens")
        self.checkpointing = QCheckBox("Gradient checkpointing")
        self.checkpointing.setToolTip(
            "Recompute activations in the backward pass: much less memory for long sequences, about a third slower"
        )
        self.packing = QCheckBox("Pack short conversations")
        self.packing.setToolTip(
            "Chat data: several conversations share one row of max_length tokens (none sees another), so "
            "batches hold text instead of padding"
        )
        self.fused_loss = QComboBox()
        self.fused_loss.setToolTip(
            "Compute the loss a few hundred tokens at a time: the logits over the whole vocabulary are never "
            "held at once (much less memory for large vocabularies)"
        )
        self.fused_kernels = QComboBox()
        self.fused_kernels.setToolTip(
            "Fused RMSNorm, SwiGLU and RoPE from liger-kernel (CUDA GPU, `pip install liger-kernel`)"
        )
        for combo in (self.fused_loss, self.fused_kernels):
            for key, label in KERNEL_LABELS:
                combo.addItem(label, key)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Sample prompts", self.prompts)
        form.addRow("Sample length", self.max_new)
        form.addRow(self.checkpointing)
        form.addRow(self.packing)
        form.addRow("Chunked loss", self.fused_loss)
        form.addRow("Fused kernels", self.fused_kernels)
        self.prompts.textChanged.connect(self.changed)
        self.max_new.valueChanged.connect(self.changed)
        self.checkpointing.toggled.connect(self.changed)
        self.packing.toggled.connect(self.changed)
        self.fused_loss.currentIndexChanged.connect(self.changed)
        self.fused_kernels.currentIndexChanged.connect(self.changed)

    def set_hparams(self, h: HyperParams) -> None:
        self.blockSignals(True)
        try:
            self.prompts.setPlainText("\n".join(h.prompts))
            self.max_new.setValue(h.sample_max_new_tokens)
            self.checkpointing.setChecked(h.gradient_checkpointing)
            self.packing.setChecked(h.packing)
            self.fused_loss.setCurrentIndex(max(0, self.fused_loss.findData(h.fused_loss)))
            self.fused_kernels.setCurrentIndex(max(0, self.fused_kernels.findData(h.fused_kernels)))
        finally:
            self.blockSignals(False)

    def prompt_list(self) -> list[str]:
        return [line.strip() for line in self.prompts.toPlainText().splitlines() if line.strip()]  # >16: refused

    def apply_to(self, h: HyperParams) -> HyperParams:
        h.prompts = self.prompt_list()
        h.sample_max_new_tokens = self.max_new.value()
        h.gradient_checkpointing = self.checkpointing.isChecked()
        h.packing = self.packing.isChecked()
        h.fused_loss = self.fused_loss.currentData()
        h.fused_kernels = self.fused_kernels.currentData()
        return h
