"""The resumable ``last`` checkpoint: model, optimizer, scheduler, scaler, RNG and position.

Written with ``files.atomic_write`` (temporary name, fsync, ``os.replace``), so a crash never leaves a
half-written checkpoint where a good one was. The ``best`` folder is the task's (``Task.save_best``).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.files import MODEL_FILE, atomic_write, save_weights

STATE_FILE = "training_state.pt"


@dataclass
class CheckpointState:
    step: int = 0
    epoch: int = 0  # the epoch to continue in (0-based)
    batch_in_epoch: int = 0  # micro-batches of that epoch already consumed
    best_metric: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    early_stopping: dict = field(default_factory=dict)  # EarlyStopping state: best, best epoch, patience count
    budget_epochs: int = 0  # the length the run resolved (auto budget or the epochs set)
    batch_size: int = 0  # the micro-batch (halved after an out-of-memory step) ...
    grad_accum_steps: int = 0  # ... and the accumulation that keeps the effective batch


def save_last(
    output_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    group_names: list[list[str]],
    state: CheckpointState,
) -> Path:
    folder = Path(output_dir) / "last"
    save_weights(folder / MODEL_FILE, model)
    payload = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "group_names": group_names,
        "state": asdict(state),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
        },
    }
    atomic_write(folder / STATE_FILE, lambda tmp: torch.save(payload, tmp))
    return folder


def load_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    group_names: list[list[str]],
    device: torch.device,
) -> CheckpointState:
    """Restore model, optimizer, scheduler, scaler, RNG and position from a ``last`` checkpoint."""
    from safetensors.torch import load_model

    folder = Path(folder)
    if not (folder / STATE_FILE).is_file() or not (folder / MODEL_FILE).is_file():
        raise TuneDeskError(
            f"no resumable checkpoint in {folder}", "the run stopped before its first checkpoint; start it again"
        )
    try:
        payload = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TuneDeskError(
            f"the checkpoint in {folder} is unreadable ({type(exc).__name__})", "it may be damaged; start the run again"
        ) from exc
    if payload.get("group_names") != group_names:
        raise TuneDeskError(
            "the freeze plan differs from the checkpoint's, so the optimizer state does not fit",
            "resume with the run's original freeze plan, or start a new run",
        )
    load_model(model, str(folder / MODEL_FILE), strict=True, device=str(device))
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    py = rng["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    s = payload["state"]
    known = {f for f in CheckpointState.__dataclass_fields__}
    return CheckpointState(**{k: v for k, v in s.items() if k in known})
