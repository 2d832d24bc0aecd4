"""Checkpoints: best weights (safetensors) and a resumable last checkpoint, written atomically.

Every file is written to a unique temporary name in the same folder, fsynced, then ``os.replace``d,
so a crash never leaves a half-written checkpoint where a good one was.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunedesk.engine.errors import TuneDeskError

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
META_FILE = "tunedesk.json"


@dataclass
class CheckpointState:
    step: int = 0
    epoch: int = 0  # the epoch to continue in (0-based)
    batch_in_epoch: int = 0  # micro-batches of that epoch already consumed
    best_metric: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_name)`` then move the result over ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_weights(path: Path, model: nn.Module) -> Path:
    from safetensors.torch import save_model

    return atomic_write(path, lambda tmp: save_model(model, tmp))


def save_best(
    output_dir: Path, model: nn.Module, loaded: Any, label_names: list[str], metrics: dict[str, float]
) -> Path:
    folder = Path(output_dir) / "best"
    save_weights(folder / MODEL_FILE, model)
    meta = {
        "architecture": loaded.architecture,
        "kind": loaded.kind,
        "source_path": loaded.path,
        "label_names": list(label_names),
        "head_paths": loaded.head_paths,
        "metrics": metrics,
    }
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2))
    return folder


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
    return CheckpointState(**s)
