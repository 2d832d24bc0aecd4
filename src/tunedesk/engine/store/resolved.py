"""What the engine resolved when a run started, recorded once beside the configuration the user gave.

The runner writes a ``ResolvedRun`` when it creates the run (``RunStore.create_run(resolved=...)``);
everything else reads it through ``resolved(run)``. It is stored in the run's configuration JSON under
``_resolved`` (so list queries can read the effective learning rate with ``json_extract``), carries its
own version (0: recorded before it had one), and reads tolerantly: runs recorded before a field existed
get ``None`` for it, and fields a newer TuneDesk added are ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RESOLVED_VERSION = 1
RESOLVED_KEY = "_resolved"  # the key in the stored configuration JSON


@dataclass
class ResolvedRun:
    learning_rate: float | None = None  # what the base model trained at (suggested when the user gave none)
    head_learning_rate: float | None = None  # new head or adapters, when they train at their own rate
    lr_explanation: str | None = None
    label_names: list[str] | None = None  # the classes, in the head's order
    head_paths: list[str] | None = None  # modules built new for this run (heads, adapters)
    trainable_names: list[str] | None = None  # parameters that trained (a resume must find the same)
    architecture: str | None = None
    family: str | None = None
    pretrained: bool | None = None
    model_kind: str | None = None  # hf, torchvision or timm (a timm folder may be named with source hf)
    chat: bool | None = None  # trained on conversations: prompts go through the chat template
    best_metric: str | None = None  # the metric that picked the best checkpoint (the task's primary metric)
    batch_size: int | None = None  # examples per forward/backward (auto: what fitted)
    grad_accum_steps: int | None = None
    batch_explanation: str | None = None
    version: int = RESOLVED_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ResolvedRun:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in (data or {}).items() if k in known}
        values.setdefault("version", 0 if data else RESOLVED_VERSION)  # 0: recorded before the version was
        return cls(**values)


def resolved(run: Mapping[str, Any]) -> ResolvedRun:
    """The resolved facts of a run row: ``RunStore.get_run`` puts them under ``resolved``; a row decoded
    some other way may still carry them inside its configuration. Empty for a run that recorded none."""
    value = run.get("resolved")
    if isinstance(value, ResolvedRun):
        return value
    if not value:
        config = run.get("config")
        value = config.get(RESOLVED_KEY) if isinstance(config, Mapping) else None
    return ResolvedRun.from_dict(value if isinstance(value, Mapping) else None)
