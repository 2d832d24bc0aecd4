"""Checks of the run configuration's values: each names the field and the fix (``hparams.*`` here, the
rest in ``RunConfig.validate``), and the hint table for settings whose check has no more specific hint."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tunedesk.engine.errors import ConfigError

if TYPE_CHECKING:
    from tunedesk.engine.config import HyperParams

SCHEDULES = ("auto", "cosine", "linear", "constant", "plateau")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
KERNEL_CHOICES = ("auto", "on", "off")  # hparams.fused_loss / fused_kernels
ATTENTION_CHOICES = ("auto", "sdpa", "eager", "flash_attention_2")
AUTO_BATCH = 16  # examples per optimizer step when the batch size is auto (what the defaults were calibrated with)


def _check(ok: bool, field_name: str, message: str, hint: str = "") -> None:
    if not ok:
        raise ConfigError(field_name, message, hint or field_hint(field_name))


# What to write instead, for settings whose check has no more specific hint.
_HINTS = {
    "task": "text_classification (labelled texts), image_classification (image folders) or causal_lm (language models)",
    "model.source": "hf for Hugging Face model folders, torchvision for torchvision architectures",
    "data.kind": "text_table (CSV/TSV/JSONL of texts and labels), image_folder (a sub-folder per class), "
    "text_corpus or chat_jsonl (language models), dataset_version (a version saved in the Datasets area)",
    "data.max_items": "leave it empty to use every row, or give a whole number such as 10000",
    "freeze.preset": "all (train everything), head_only (only the new head), last_n_blocks (the last "
    "freeze.last_n blocks and the head) or none",
    "freeze.last_n": "how many of the last blocks train, e.g. 2",
    "freeze.lr_multipliers": "a positive factor such as 0.1 (ten times slower) for the matching layers",
    "freeze.lora": "see the LoRA settings in the Layers area",
    "freeze.rules": 'write each rule as {pattern = "encoder.layer.1*", train = true}',
    "hparams.epochs": "a whole number of passes over the data, e.g. 3",
    "hparams.batch_size": "a whole number such as 16 or 32; lower it if memory runs out",
    "hparams.learning_rate": "fine-tuning usually uses 1e-5 to 1e-4; leave it empty for TuneDesk's suggestion",
    "hparams.head_learning_rate": "the new head usually trains at about 1e-3; leave it empty for the same rate",
    "hparams.weight_decay": "0.01 suits most fine-tuning; 0 switches it off",
    "hparams.schedule": "cosine suits most runs; constant keeps the rate after warm-up",
    "hparams.warmup_ratio": "0.1 warms up over the first tenth of the steps; 0 switches warm-up off",
    "hparams.grad_accum_steps": "1 updates after every batch; N sums N batches before each update",
    "hparams.max_grad_norm": "1.0 is usual; 0 switches clipping off",
    "hparams.max_length": "128 or 256 tokens suit short texts",
    "hparams.image_size": "224 suits most image models",
    "hparams.log_every": "e.g. 10: the loss is read and logged every 10 steps",
    "hparams.max_steps": "leave it empty to train every epoch",
    "hparams.checkpoint_every_steps": "leave it empty to checkpoint by time (checkpoint_every_minutes)",
    "hparams.num_workers": "0 loads data in the training process; 2 to 8 use worker processes",
    "hparams.sample_max_new_tokens": "48 tokens are enough to read the tone of a reply",
    "precision": "auto picks bf16 or fp16 on a GPU, bf16 on a CPU with native bf16 (AVX-512 BF16, AMX) and fp32 on other CPUs",
    "device": "auto uses the GPU when there is one, else the CPU",
    "seed": "any whole number such as 42",
    "version": "update TuneDesk",
}


def field_hint(field_name: str) -> str:
    """The hint for a setting (``hparams.epochs``, ``freeze.rules[2]``...); a generic one if none is known."""
    base = field_name.split("[", 1)[0]
    for key in (field_name, base, base.rsplit(".", 1)[0]):
        if key in _HINTS:
            return _HINTS[key]
    return (
        f"fix {field_name} in the configuration file, or set it in the app's Train area"
        if field_name
        else ("check the configuration file against the example in the README")
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_or_none(value: Any, name: str) -> None:
    if value is not None:
        _check(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            name,
            f"must be a whole number >= 1 or empty (got {value!r})",
        )


def check_hparams(h: HyperParams) -> None:
    """Raise ConfigError on the first invalid ``hparams`` value (combinations with other sections are
    checked by ``RunConfig.validate``)."""
    if h.epochs is not None:
        _check(
            isinstance(h.epochs, int) and not isinstance(h.epochs, bool) and h.epochs >= 1,
            "hparams.epochs",
            f"must be a whole number >= 1 (got {h.epochs})",
            "a whole number of passes over the data, e.g. 3, or leave it empty (auto) to stop when the validation metric stops improving",
        )
    if h.batch_size is not None:
        _check(
            isinstance(h.batch_size, int) and not isinstance(h.batch_size, bool) and h.batch_size >= 1,
            "hparams.batch_size",
            f"must be a whole number >= 1 (got {h.batch_size})",
            "a whole number such as 16 or 32, or leave it empty (auto) for the largest batch that fits",
        )
    _check(
        isinstance(h.patience, int) and not isinstance(h.patience, bool) and h.patience >= 1,
        "hparams.patience",
        f"must be a whole number >= 1 (got {h.patience!r})",
        "2 stops after two evaluations without improvement",
    )
    _check(
        _finite(h.min_delta) and h.min_delta >= 0,
        "hparams.min_delta",
        f"must be >= 0 (got {h.min_delta!r})",
        "0 counts any improvement",
    )
    _check(
        isinstance(h.auto_min_steps, int) and h.auto_min_steps >= 1,
        "hparams.auto_min_steps",
        f"must be a whole number >= 1 (got {h.auto_min_steps!r})",
    )
    _check(
        isinstance(h.auto_max_epochs, int) and h.auto_max_epochs >= 3,
        "hparams.auto_max_epochs",
        f"must be a whole number >= 3 (got {h.auto_max_epochs!r})",
    )
    if h.learning_rate is not None:
        _check(
            _finite(h.learning_rate) and h.learning_rate > 0,
            "hparams.learning_rate",
            f"must be > 0 (got {h.learning_rate})",
            "fine-tuning usually uses 1e-5 to 1e-4; leave it empty for TuneDesk's suggestion",
        )
        _check(
            h.learning_rate < 1.0,
            "hparams.learning_rate",
            f"must be < 1 (got {h.learning_rate})",
            "fine-tuning usually uses 1e-5 to 1e-4",
        )
    if h.head_learning_rate is not None:
        _check(
            _finite(h.head_learning_rate) and h.head_learning_rate > 0,
            "hparams.head_learning_rate",
            f"must be > 0 (got {h.head_learning_rate})",
        )
    _check(
        _finite(h.weight_decay) and h.weight_decay >= 0,
        "hparams.weight_decay",
        f"must be >= 0 (got {h.weight_decay})",
    )
    _check(h.schedule in SCHEDULES, "hparams.schedule", f"must be one of {', '.join(SCHEDULES)} (got {h.schedule!r})")
    _check(
        _finite(h.warmup_ratio) and 0 <= h.warmup_ratio < 1,
        "hparams.warmup_ratio",
        f"must be in [0, 1) (got {h.warmup_ratio})",
    )
    _check(
        isinstance(h.grad_accum_steps, int) and h.grad_accum_steps >= 1,
        "hparams.grad_accum_steps",
        f"must be a whole number >= 1 (got {h.grad_accum_steps})",
    )
    if h.max_grad_norm is not None:  # 0 (or empty) means no clipping
        _check(
            _finite(h.max_grad_norm) and h.max_grad_norm >= 0,
            "hparams.max_grad_norm",
            f"must be > 0, or 0 / empty for no clipping (got {h.max_grad_norm})",
        )
    _check(
        isinstance(h.max_length, int) and 8 <= h.max_length <= 131072,
        "hparams.max_length",
        f"must be between 8 and 131072 tokens (got {h.max_length})",
    )
    _check(
        isinstance(h.image_size, int) and 16 <= h.image_size <= 4096,
        "hparams.image_size",
        f"must be between 16 and 4096 pixels (got {h.image_size})",
    )
    _check(
        isinstance(h.log_every, int) and h.log_every >= 1,
        "hparams.log_every",
        f"must be a whole number >= 1 (got {h.log_every})",
    )
    _positive_or_none(h.max_steps, "hparams.max_steps")
    _positive_or_none(h.checkpoint_every_steps, "hparams.checkpoint_every_steps")
    _check(
        _finite(h.checkpoint_every_minutes) and h.checkpoint_every_minutes >= 0,
        "hparams.checkpoint_every_minutes",
        f"must be >= 0 (got {h.checkpoint_every_minutes!r})",
        "0 saves a resumable checkpoint only at the end of each epoch",
    )
    _check(
        h.num_workers is None or (isinstance(h.num_workers, int) and 0 <= h.num_workers <= 64),
        "hparams.num_workers",
        f"must be between 0 and 64, or empty to choose from the machine (got {h.num_workers})",
    )
    _check(
        isinstance(h.prompts, list) and all(isinstance(p, str) and p.strip() for p in h.prompts),
        "hparams.prompts",
        "must be a list of non-empty texts",
        "write one prompt per entry, or leave the list empty",
    )
    _check(
        len(h.prompts) <= 16,
        "hparams.prompts",
        f"has {len(h.prompts)} prompts; at most 16 are generated",
        "keep a few prompts that show the change you want",
    )
    _check(
        isinstance(h.sample_max_new_tokens, int) and 1 <= h.sample_max_new_tokens <= 2048,
        "hparams.sample_max_new_tokens",
        f"must be between 1 and 2048 (got {h.sample_max_new_tokens!r})",
    )
    for name in ("fused_loss", "fused_kernels"):
        value = getattr(h, name)
        _check(
            value in KERNEL_CHOICES,
            f"hparams.{name}",
            f"must be one of {', '.join(KERNEL_CHOICES)} (got {value!r})",
            "auto uses it where it was measured faster on this kind of device; off switches it off",
        )
    _check(
        h.attention in ATTENTION_CHOICES,
        "hparams.attention",
        f"must be one of {', '.join(ATTENTION_CHOICES)} (got {h.attention!r})",
        "auto lets transformers pick (SDPA where the model supports it)",
    )
