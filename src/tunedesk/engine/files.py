"""Durable file writes, and the names of the files in a run's checkpoint folders.

Every file is written to a unique temporary name in the same folder, fsynced, then ``os.replace``d,
so a crash never leaves a half-written file where a good one was. Tasks write their best folder
with these, the run loop its resumable ``last`` folder; export and "try it" read the same names.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunedesk.engine.errors import TuneDeskError

if TYPE_CHECKING:
    from torch import nn

MODEL_FILE = "model.safetensors"  # the whole model's weights (a classifier's best, every last)
META_FILE = "tunedesk.json"  # what a best folder holds: architecture, labels, head paths, metrics
MANIFEST_FILE = "manifest.json"  # a checkpoint folder's step and the size + SHA-256 of each file
STATE_FILE = "training_state.pt"  # a last folder's optimizer, schedule, RNG and position


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


# ---- checkpoint folders: reading and verifying their manifest (writing: run/checkpoint.py) ------------


class CheckpointError(TuneDeskError):
    """A checkpoint folder that is missing, incomplete or damaged."""


@dataclass(frozen=True)
class Manifest:
    kind: str
    step: int
    epoch: int
    files: dict[str, dict[str, Any]]  # relative path -> {"size": int, "sha256": str}


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_manifest(folder: Path) -> Manifest | None:
    """The folder's manifest, or None for a checkpoint written before manifests (not verifiable)."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Manifest(str(data["kind"]), int(data["step"]), int(data["epoch"]), dict(data["files"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"the checkpoint in {folder} is damaged: its manifest is unreadable ({type(exc).__name__})",
            "resume from another checkpoint or start the run again",
        ) from None


def verify(folder: Path, *, hashes: bool = True, required: Sequence[str] = ()) -> Manifest | None:
    """Check a checkpoint folder against its manifest (sizes, and SHA-256 unless ``hashes=False``).

    Returns the manifest (None for an older, unverifiable checkpoint that has the ``required`` files);
    raises CheckpointError naming what is missing or damaged.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"the checkpoint folder {folder} does not exist", "the run's files were moved or deleted")
    manifest = read_manifest(folder)
    if manifest is None:
        missing = [n for n in required if not (folder / n).exists()]
        if missing:
            raise CheckpointError(
                f"the checkpoint in {folder} is incomplete ({', '.join(missing)} missing)",
                "it was cut short by a crash; resume from an earlier checkpoint or start the run again",
            )
        return None
    for name, info in manifest.files.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            raise CheckpointError(
                f"the checkpoint in {folder} is incomplete: {name} is missing",
                "the run's files were changed after the run; start the run again",
            ) from None
        if size != info.get("size") or (hashes and sha256_file(path) != info.get("sha256")):
            raise CheckpointError(
                f"the checkpoint in {folder} is damaged: {name} does not match its manifest"
                + (" (truncated)" if size < int(info.get("size") or 0) else ""),
                "the file changed after it was written (disk error or an edit); start the run again",
            )
    return manifest


def load_model_weights(
    folder: Path, model: nn.Module, weights: dict[str, Any] | None, device: str, *, read_state: bool = False
) -> None:
    """Load a ``last`` checkpoint's ``model.safetensors`` into ``model``: the whole state, or (``weights``
    from its training state, read from the folder with ``read_state``) everything but the frozen
    pretrained parameters, which ``model`` already holds from the same files."""
    from safetensors.torch import load_file, load_model

    if read_state and weights is None and (Path(folder) / STATE_FILE).is_file():
        import torch

        try:
            weights = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True).get("weights")
        except Exception as exc:  # any unreadable state: one sentence
            raise CheckpointError(
                f"the checkpoint in {folder} is unreadable ({type(exc).__name__})", "it is damaged; train the run again"
            ) from exc
    if not weights:
        load_model(model, str(folder / MODEL_FILE), strict=True, device=device)
        return
    state = load_file(str(folder / MODEL_FILE), device=device)
    result = model.load_state_dict(state, strict=False)
    missing = set(result.missing_keys) - set(weights.get("omitted") or [])
    if result.unexpected_keys or missing:
        names = (list(result.unexpected_keys) + sorted(missing))[:3]
        raise CheckpointError(
            f"the checkpoint in {folder} does not fit this model ({', '.join(names)})",
            "resume with the run's original model and freeze plan, or start a new run",
        )
