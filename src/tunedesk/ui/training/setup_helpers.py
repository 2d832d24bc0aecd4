"""Helpers of the run setup form: parsing, naming, file peeking, labels, and its small widgets (a device combo)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QLabel, QSpinBox, QWidget

from tunedesk.engine.config import LAST_ATTENTION, DataSpec, FreezeSpec, ModelSpec, RunConfig
from tunedesk.engine.defaults import suggested_head_learning_rate, suggested_learning_rate
from tunedesk.engine.errors import ConfigError, TuneDeskError

TASK_LABELS = {
    "text_classification": "Text classification",
    "image_classification": "Image classification",
    "causal_lm": "Language model (text generation)",
}
PRECISION_LABELS = {
    "auto": "Automatic (bf16 where fast, else fp32)",
    "bf16": "bf16",
    "fp16": "fp16 (GPU only)",
    "fp32": "fp32",
}
TENSORBOARD_LABELS = {
    "auto": "Write event files when TensorBoard is installed",
    "on": "Write event files",
    "off": "Off",
}


class FieldError(ConfigError):
    """A value the form cannot even parse (``abc`` for a learning rate)."""


def set_role(widget: QWidget, role: str) -> None:
    """Apply an app.qss role (hint / error / warning / title) and re-polish."""
    widget.setProperty("role", role)
    widget.style().unpolish(widget)
    widget.style().polish(widget)


def make_label(text: str = "", role: str = "hint") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    set_role(label, role)
    return label


def freeze_text(spec: FreezeSpec | None) -> str:
    """The plan in words before it is resolved against the model (percentages come after preparing)."""
    spec = spec or FreezeSpec()
    what = {
        "all": "Train everything (full fine-tuning)",
        "none": "Train nothing",
        "head_only": "Train the new head only",
        "last_n_blocks": f"Train the last {spec.last_n} block{'s' if spec.last_n != 1 else ''} + head",
    }.get(spec.preset, spec.preset)
    if spec.rules:
        what += f", {len(spec.rules)} custom rule{'s' if len(spec.rules) != 1 else ''}"
    if spec.lr_multipliers:
        what += ", per-layer learning rates"
    lora = lora_text(spec)
    if lora:
        what = ("Base frozen" if spec.preset == "none" and not spec.rules else what) + f" + {lora}"
    return what


def lora_text(spec: FreezeSpec) -> str:
    """The plan's LoRA adapters in words ("" when it has none)."""
    lo = spec.lora
    if not lo.active:
        return ""
    parts = {"attention": ["attention projections"], "all_linear": ["all linear layers"]}.get(lo.preset, [])
    scoped = [r.pattern[len(LAST_ATTENTION) :] for r in lo.rules if r.lora and r.pattern.startswith(LAST_ATTENTION)]
    parts += [f"the attention of the last {n} block{'s' if n != '1' else ''}" for n in scoped]
    others = len(lo.rules) - len(scoped)
    if others:
        parts.append(f"{others} module choice{'s' if others != 1 else ''}")
    where = " and ".join(parts) if spec.preset != "last_n_blocks" or lo.preset == "none" else "the other layers"
    return f"LoRA (rank {lo.rank}) on {where}"


def model_spec_from_entry(entry: Any) -> ModelSpec:
    """A catalog ModelEntry as the run's ModelSpec (torchvision files load by architecture name)."""
    if getattr(entry, "model_type", None) == "torchvision" and getattr(entry, "architecture", None):
        return ModelSpec(name_or_path=entry.architecture, source="torchvision", weights=entry.path)
    if getattr(entry, "model_type", None) == "timm":
        return ModelSpec(name_or_path=entry.path, source="timm")
    return ModelSpec(name_or_path=entry.path, source="hf")


def family_of_path(path: str) -> str | None:
    """The model family from a folder's config.json (``model_type``, or a timm ``architecture``), without
    loading anything."""
    try:
        cfg = json.loads((Path(path).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    from tunedesk.engine.catalog.timm import family_of, is_timm_config

    if is_timm_config(cfg):
        return family_of(cfg["architecture"])
    value = cfg.get("model_type") if isinstance(cfg, dict) else None
    return value if isinstance(value, str) else None


def table_columns(path: str) -> list[str]:
    """Column names of a CSV/TSV header or the first JSONL record; [] when unreadable."""
    p = Path(path)
    try:
        if p.suffix.lower() in (".jsonl", ".ndjson"):
            with p.open(encoding="utf-8-sig", errors="replace") as fh:
                for line in fh:
                    if line.strip():
                        record = json.loads(line)
                        return [str(k) for k in record] if isinstance(record, dict) else []
            return []
        with p.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
            head = fh.read(64 * 1024)
        delimiter = "\t" if p.suffix.lower() in (".tsv", ".tab") else ","
        row = next(csv.reader(head.splitlines(), delimiter=delimiter), [])
        return [c.strip() for c in row if c.strip()]
    except (OSError, ValueError, csv.Error):
        return []


def lm_kind(path: str) -> str:
    """A language-model data file: chat JSONL (messages per line) or a plain text corpus."""
    return "chat_jsonl" if path.lower().endswith((".jsonl", ".ndjson")) else "text_corpus"


def parse_number(text: str, field: str, what: str) -> float:
    try:
        return float(text.strip().replace(",", "."))
    except ValueError:
        raise FieldError(field, f"must be {what} (got {text.strip()!r})") from None


def lost_on_reload(config: RunConfig, path: str | Path) -> list[str]:
    """Settings that do not survive a save + load round trip (dotted names), e.g. TOML has no "empty"."""
    try:
        again = RunConfig.load(path).to_dict()
    except ConfigError:
        return ["the file"]
    lost: list[str] = []
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            lost += [f"{key}.{k}" for k, v in value.items() if again.get(key, {}).get(k) != v]
        elif again.get(key) != value:
            lost.append(key)
    return lost


def lr_note(
    text: str,
    suggested: str,
    family: str | None,
    task: str,
    *,
    head_from_pretrained: bool,
    lora: bool,
    params: int | None = None,
    pretrained: bool = True,
) -> str:
    """The words under the learning rate: why TuneDesk suggests it, or that the user set another."""
    lr, why = suggested_learning_rate(family or "", total_params=params, pretrained=pretrained)
    text = text.strip()
    if text and text != suggested:
        return f"Set by you; TuneDesk suggests {lr:g} for this model."
    why = why[0].upper() + why[1:]
    if task in ("text_classification", "image_classification") and head_from_pretrained:
        why += f". The new head trains at {suggested_head_learning_rate(lr):g} (it starts from random weights)."
    elif task == "causal_lm" and lora:
        why += f". The LoRA adapters train at {suggested_head_learning_rate(lr):g} (they start from random weights)."
    elif not why.endswith("."):
        why += "."
    return why


def task_for_data(spec: DataSpec) -> str | None:
    """The task a data source implies (None: it does not say)."""
    if spec.kind == "image_folder":
        return "image_classification"
    if spec.kind == "text_table":
        return "text_classification"
    if spec.kind in ("text_corpus", "chat_jsonl"):
        return "causal_lm"
    if spec.kind == "dataset_version" and spec.dataset_version:
        from tunedesk.engine.datasets import task_for_version

        try:  # a saved version knows what it holds: texts, images or a corpus
            return task_for_version(spec.dataset_version, spec.path or None)
        except TuneDeskError:
            return None  # an unknown version is reported with its hint when the run is prepared
    return None


def guess_column(columns: list[str], wanted: str, guesses: tuple[str, ...]) -> str:
    """The column to preselect: the one asked for if the file has it, else a usual name, else the one asked for."""
    if wanted in columns or not columns:
        return wanted
    return next((c for c in columns if c.lower() in guesses), wanted)


def model_family(source: str, name_or_path: str) -> str | None:
    """The family the learning-rate suggestion goes by: from a folder's config, else the architecture's name."""
    if source in ("hf", "timm"):
        return family_of_path(name_or_path)
    return name_or_path.rstrip("0123456789_")


def spin_box(lo: int, hi: int, value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(lo, hi)
    spin.setValue(value)
    spin.setKeyboardTracking(False)
    return spin


class DeviceCombo(QComboBox):
    """Automatic, then the devices of this machine; a configuration's device not found here stays, marked."""

    def __init__(self) -> None:
        super().__init__()
        self.addItem("Automatic (best available)", "auto")
        self.addItem("CPU", "cpu")

    def set_devices(self, devices: list[tuple[str, str]]) -> None:
        current = self.currentData()
        self.blockSignals(True)
        self.clear()
        self.addItem("Automatic (best available)", "auto")
        for dev, label in devices:
            self.addItem(label, dev)
        self.setCurrentIndex(max(self.findData(current), 0))
        self.blockSignals(False)

    def select(self, device: str) -> None:
        idx = self.findData(device)
        if idx < 0 and device == "cuda":
            idx = self.findData("cuda:0")
        if idx < 0:
            self.addItem(f"{device} (not found on this machine)", device)
            idx = self.count() - 1
        self.setCurrentIndex(idx)
