"""Durable file writes, and the names of the files in a run's checkpoint folders.

Every file is written to a unique temporary name in the same folder, fsynced, then ``os.replace``d,
so a crash never leaves a half-written file where a good one was. Tasks write their best folder
with these, the run loop its resumable ``last`` folder; export and "try it" read the same names.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

MODEL_FILE = "model.safetensors"  # the whole model's weights (a classifier's best, every last)
META_FILE = "tunedesk.json"  # what a best folder holds: architecture, labels, head paths, metrics


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
    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    return atomic_write(path, write)


def save_weights(path: Path, model: nn.Module) -> Path:
    from safetensors.torch import save_model

    return atomic_write(path, lambda tmp: save_model(model, tmp))
