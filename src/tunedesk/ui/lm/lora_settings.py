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
        """The model the plan applies to (meta device is fine), for the adapter summary; None clears it."""
        self._model, self._heads = model, list(head_paths)
        self._update_summary()

    def apply_preset(self, name: str) -> None:
        """``lora_attention``, ``lora_attention_last_n``, ``lora_all_linear`` or ``last_n_full`` (as
        ``tunedesk.engine.lm.lora.preset_spec``, built here without importing torch)."""
        if name == "lora_attention_last_n":
            self._spec = FreezeSpec(
                preset="none",
                lora=LoraSpec(
                    preset="none",
                    rank=self.rank.value(),
                    alpha=self.alpha.value(),
                    dropout=self.dropout.value(),
                    rules=[LoraRule(f"{LAST_ATTENTION}{self.last_n.value()}")],
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
        finally:
            self._quiet = False
        self._update_summary()

    def _edited(self, *args: Any) -> None:
        if self._quiet:
            return
        self._spec.lora = LoraSpec(
            preset=self.layers.currentData(),
            rank=self.rank.value(),
            alpha=self.alpha.value(),
            dropout=self.dropout.value(),
            rules=list(self._spec.lora.rules),
        )
        self._update_summary()
        self.specChanged.emit(self.spec())

    def _update_summary(self) -> None:
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


class LmRunSettingsWidget(QWidget):
    """The language-model fields of HyperParams: sample prompts (one per line), reply length, gradient
    checkpointing. ``set_hparams`` shows them; ``apply_to(hparams)`` writes them; edits emit ``changed``."""

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
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Sample prompts", self.prompts)
        form.addRow("Sample length", self.max_new)
        form.addRow(self.checkpointing)
        self.prompts.textChanged.connect(self.changed)
        self.max_new.valueChanged.connect(self.changed)
        self.checkpointing.toggled.connect(self.changed)

    def set_hparams(self, h: HyperParams) -> None:
        self.blockSignals(True)
        try:
            self.prompts.setPlainText("\n".join(h.prompts))
            self.max_new.setValue(h.sample_max_new_tokens)
            self.checkpointing.setChecked(h.gradient_checkpointing)
        finally:
            self.blockSignals(False)

    def prompt_list(self) -> list[str]:
        return [line.strip() for line in self.prompts.toPlainText().splitlines() if line.strip()]  # >16: refused

    def apply_to(self, h: HyperParams) -> HyperParams:
        h.prompts = self.prompt_list()
        h.sample_max_new_tokens = self.max_new.value()
        h.gradient_checkpointing = self.checkpointing.isChecked()
        return h
