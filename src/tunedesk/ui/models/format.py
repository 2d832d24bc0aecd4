"""Words and numbers for catalog entries: human counts and sizes, labels, and whether TuneDesk can train it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the catalog is imported by the scan thread, not before the window shows
    from tunedesk.engine.catalog import ModelEntry

# Tasks the training panel can fine-tune. feature_extraction: any encoder gets a new head.
TRAINABLE_TASKS = ("text_classification", "feature_extraction", "image_classification", "causal_lm")

SOURCE_LABELS = {
    "hf_cache": "HF cache",
    "torch_hub": "torch hub",
    "package": "package",
    "user_folder": "your folder",
    "user_file": "your file",
}

SUMMARY_LABELS = {
    "hidden_size": "hidden size",
    "num_hidden_layers": "layers",
    "num_attention_heads": "attention heads",
    "intermediate_size": "intermediate size",
    "vocab_size": "vocabulary",
    "max_position_embeddings": "max positions",
    "image_size": "image size",
    "patch_size": "patch size",
    "num_channels": "channels",
    "num_labels": "labels",
    "dtype": "dtype",
    "weights": "torchvision weights",
    "pretrained_tag": "pretrained weights",
    "num_features": "features",
    "num_classes": "classes",
}


def human_count(n: int | None) -> str:
    """22713216 -> '22.7M' (parameters)."""
    if n is None:
        return ""
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= limit:
            value = n / limit
            return f"{value:.1f}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return str(n)


def human_bytes(n: int | None) -> str:
    """Size on disk in binary units: 90859712 -> '86.6 MiB'."""
    if not n:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def task_label(task: str | None) -> str:
    return task.replace("_", " ") if task else ""


def source_label(source: str) -> str:
    return SOURCE_LABELS.get(source, source)


def summary_text(summary: dict) -> list[tuple[str, str]]:
    """(label, value) pairs of a config summary, in a stable, readable order."""
    out = []
    for key, value in summary.items():
        if isinstance(value, list):
            value = "x".join(str(v) for v in value)
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 10000:
            value = f"{value:,}"
        out.append((SUMMARY_LABELS.get(key, key.replace("_", " ")), str(value)))
    return out


def refusal(entry: ModelEntry) -> str | None:
    """Why "Use this model" must refuse this entry (a sentence naming the fix), or None when it can be used."""
    if entry.problem:
        return (
            f"{entry.name} cannot be used: {entry.problem}. Repair or re-download it "
            "(on a connected machine), or pick another model."
        )
    if not entry.weights_present:
        return (
            f"{entry.name} has no complete weights on this machine. Copy the full model folder "
            "here, or pick another model."
        )
    if entry.task not in TRAINABLE_TASKS:
        what = f"a {task_label(entry.task)} model" if entry.task else "a model whose task TuneDesk cannot tell"
        return (
            f"{entry.name} is {what}. TuneDesk fine-tunes text classification, feature extraction "
            "(encoders get a new head), image classification and causal language models: "
            'choose "Trainable" in the task filter to see those.'
        )
    return None
