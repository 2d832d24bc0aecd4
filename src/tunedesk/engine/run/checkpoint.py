"""Checkpoints that a crash can never tear: each one is a folder written aside and swapped in whole.

A run's output folder holds ``best/`` (the best weights and their metrics) and ``last/`` (everything a
resume needs). A checkpoint is written into ``.last.new-<token>/``: its files, then ``manifest.json``
(step, epoch, size and SHA-256 of every file), then every file and the folder are fsynced. The new
folder then replaces the old one in a single ``renameat2(RENAME_EXCHANGE)`` where the OS has it
(Linux), or in two renames (``last`` -> ``.last.old-<token>``, new -> ``last``) that ``recover``
completes if a crash falls between them. Loading checks the manifest, so a damaged or mixed
checkpoint is reported and never used; a partial one is never in place (the previous one still is).
``recover`` (at the start of every run and resume) finishes or rolls back an interrupted swap and
deletes the leftovers of interrupted writes.

Before a checkpoint is swapped in, ``before_commit`` runs (the trainer flushes the history writer
there), so the history always holds every step up to the newest checkpoint on disk.

``last/model.safetensors`` holds what a resume cannot read elsewhere: for a model loaded from
pretrained files, the frozen pretrained parameters (and what belongs to them, such as a 4-bit
weight's quantisation state) are left out and named in the training state, with the files'
fingerprint; a resume reloads them from those files and refuses files that changed. A LoRA run on
an 8B base writes its adapters and buffers, not 16 GB, at every checkpoint.

Adding state to the resumable checkpoint (early stopping, say): add a field with a default to
``CheckpointState``. It is saved in ``training_state.pt`` with the rest, comes back from
``load_checkpoint``, and a checkpoint written before the field existed loads with its default.
Only plain values (numbers, text, lists, dicts of them) load under ``weights_only=True``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import random
import secrets
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.files import (
    MANIFEST_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    load_model_weights,
    read_manifest,
    sha256_file,
    verify,
)

MANIFEST_FORMAT = 1
KINDS = ("best", "last")

# Tests: "<which>:<n>:<op>" kills this process (SIGKILL) just before operation <op> of the n-th write
# of checkpoint <which> in this process, e.g. "last:2:swap". ``WRITE_OPS`` lists the operations in
# order ("swap-between": between the two renames, reached only where the one-step exchange is not used).
FAULT_ENV = "TUNEDESK_CHECKPOINT_FAULT"
WRITE_OPS = ("mkdir", "write", "manifest", "fsync", "swap", "swap-between", "sync-parent", "remove-old", "done")


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
    # a checkpoint between two logged steps: the open logging window, so the next logged loss is the same
    window_loss: float = 0.0
    window_micro: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointState:
        """Fields this version knows; missing ones (an older checkpoint) take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


FileWriter = Callable[[Path], None]  # writes one file (or a sub-folder) at the path it is given


# ---- the writer -----------------------------------------------------------------------------------


class _Faults:
    """The test hook: counts writes per kind and kills the process at the chosen operation."""

    def __init__(self, spec: str) -> None:
        self.which, self.nth, self.op = "", 0, ""
        if spec:
            which, nth, op = spec.split(":", 2)
            self.which, self.nth, self.op = which, int(nth), op
        self.counts: dict[str, int] = {}

    def start(self, which: str) -> int:
        self.counts[which] = self.counts.get(which, 0) + 1
        return self.counts[which]

    def at(self, which: str, number: int, op: str) -> None:
        if self.op and which == self.which and number == self.nth and op == self.op:
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)


_faults = _Faults(os.environ.get(FAULT_ENV, ""))


class CheckpointWriter:
    """Writes and swaps in the checkpoints of one output folder (one writer per run at a time)."""

    def __init__(self, output_dir: Path, before_commit: Callable[[], None] | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.before_commit = before_commit

    def write(self, which: str, files: Sequence[tuple[str, FileWriter]], step: int, epoch: int) -> Path:
        """Write ``files`` into a new folder, then swap it in as ``output_dir/which``; return that path."""
        if which not in KINDS:
            raise ValueError(f"checkpoint kind must be one of {KINDS} (got {which!r})")
        number = _faults.start(which)

        def op(name: str) -> None:
            _faults.at(which, number, name)

        final = self.output_dir / which
        op("mkdir")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.output_dir / f".{which}.new-{secrets.token_hex(6)}"
        tmp.mkdir()  # not mkdtemp: its 0700 mode would stay on the checkpoint folder
        try:
            op("write")
            for name, writer in files:
                writer(tmp / name)
            op("manifest")
            _write_manifest(tmp, which, step, epoch)
            op("fsync")
            _fsync_tree(tmp)
            if self.before_commit is not None:
                self.before_commit()
            op("swap")
            old = _swap_in(tmp, final, lambda: op("swap-between"))
            op("sync-parent")
            _fsync_dir(self.output_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        op("remove-old")
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        op("done")
        return final

    def save_last(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
        group_names: list[list[str]],
        state: CheckpointState,
        base: BaseWeights | None = None,
    ) -> Path:
        """Everything a resume needs: weights, optimizer, scheduler, scaler, RNG, position.

        With ``base`` (the model was loaded from pretrained files), the frozen pretrained parameters
        are not written again: a resume loads them from those files, checked by fingerprint. A LoRA run
        on an 8B base then writes megabytes per checkpoint instead of the whole base."""
        from safetensors.torch import save_file, save_model

        weights = partial_weights(model, base) if base is not None else None
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
        if weights is None:
            files = [(MODEL_FILE, lambda p: save_model(model, str(p)))]
        else:
            tensors, omitted = weights
            payload["weights"] = {"base_fingerprint": base.fingerprint if base else None, "omitted": omitted}
            files = [(MODEL_FILE, lambda p: save_file(tensors, str(p), metadata={"tunedesk": "partial"}))]
        files.append((STATE_FILE, lambda p: torch.save(payload, p)))
        return self.write("last", files, state.step, state.epoch)

    def save_best(self, files: Sequence[tuple[str, FileWriter]], step: int, epoch: int) -> Path:
        """The best checkpoint: the task's files (``Task.best_files``: weights and what rebuilds the model)."""
        return self.write("best", files, step, epoch)


@dataclass(frozen=True)
class BaseWeights:
    """Where a run's frozen pretrained weights come from: ``fingerprint`` of the model files, and the
    module paths (the new head) whose parameters are written even when frozen (they are not in the files)."""

    fingerprint: str
    keep: tuple[str, ...] = ()

    @classmethod
    def of(cls, loaded: Any) -> BaseWeights | None:
        """For a ``LoadedModel``: None unless it came from pretrained files that a resume can read again."""
        if not (loaded.pretrained and loaded.fingerprint):
            return None
        return cls(loaded.fingerprint, tuple(loaded.head_paths))


def partial_weights(model: nn.Module, base: BaseWeights) -> tuple[dict[str, torch.Tensor], list[str]] | None:
    """The model's state without the frozen pretrained parameters (and what belongs to them, such as a
    4-bit weight's quantisation state), and the names left out; None when nothing would be left out."""
    entries = model.state_dict(keep_vars=True)
    frozen = {
        name
        for name, t in entries.items()
        if isinstance(t, nn.Parameter)
        and not t.requires_grad
        and not any(name == k or name.startswith(k + ".") for k in base.keep)
    }
    if not frozen:
        return None
    tensors: dict[str, torch.Tensor] = {}
    omitted: list[str] = []
    seen: dict[tuple[str, int], str] = {}
    for name, t in entries.items():
        # the parameter itself, or an entry under it ("...weight.absmax": a 4-bit weight's quantisation state)
        cuts = [i for i, c in enumerate(name) if c == "."]
        if name in frozen or any(name[:i] in frozen for i in cuts):
            omitted.append(name)
            continue
        key = (str(t.device), t.untyped_storage().data_ptr()) if t.numel() else None
        if key is not None and key in seen:  # tied weights: loading the first fills both
            omitted.append(name)
            continue
        if key is not None:
            seen[key] = name
        tensors[name] = t.detach().contiguous()
    return tensors, omitted


def _write_manifest(folder: Path, which: str, step: int, epoch: int) -> None:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {"format": MANIFEST_FORMAT, "kind": which, "step": int(step), "epoch": int(epoch), "files": files}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    for path in [p for p in folder.rglob("*") if p.is_dir()] + [folder]:
        _fsync_dir(path)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open folders; its renames are durable without it
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where the OS cannot."""
    if not sys.platform.startswith("linux") or not USE_EXCHANGE:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    # EINVAL/ENOSYS (non-zero): the file system cannot; the two-rename path handles it
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


# "rename" (tests) uses the two-rename swap even where the one-step exchange exists
USE_EXCHANGE = os.environ.get("TUNEDESK_CHECKPOINT_SWAP", "") != "rename"


def _swap_in(new: Path, final: Path, between: Callable[[], None]) -> Path | None:
    """Put ``new`` at ``final``; return the folder now holding the old checkpoint (to delete), if any."""
    if not final.exists():
        os.rename(new, final)
        return None
    if _exchange(new, final):
        old = new.with_name(new.name.replace(".new-", ".old-", 1))
        os.rename(new, old)  # the old checkpoint, under a name that says so, until it is deleted
        return old
    old = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
    os.rename(final, old)
    between()  # a crash here leaves no `final`: recover() puts the complete new folder in place
    os.rename(new, final)
    return old


# ---- reading and recovery ----------------------------------------------------------------------------


def _leftovers(output_dir: Path, which: str) -> list[Path]:
    return sorted(output_dir.glob(f".{which}.new-*")) + sorted(output_dir.glob(f".{which}.old-*"))


def recover(output_dir: Path) -> list[str]:
    """Finish or roll back a swap a crash interrupted, and delete leftovers of interrupted writes.

    Call only when this process owns the run (nobody else writes there). Returns what it did, one
    sentence each, for the run's log.
    """
    output_dir = Path(output_dir)
    notes: list[str] = []
    if not output_dir.is_dir():
        return notes
    for which in KINDS:
        final = output_dir / which
        leftovers = _leftovers(output_dir, which)
        if not final.exists():
            # A crash between the two renames of a swap: the newest complete folder takes the place.
            candidates = []
            for folder in leftovers:
                try:
                    manifest = verify(folder, hashes=False)
                except CheckpointError:
                    continue
                if manifest is not None:
                    candidates.append((manifest.step, folder.name.startswith(f".{which}.new-"), folder))
            if candidates:
                step, _, chosen = max(candidates)
                os.rename(chosen, final)
                _fsync_dir(output_dir)
                leftovers.remove(chosen)
                notes.append(f"completed the interrupted write of the {which} checkpoint (step {step})")
        freed = 0
        for folder in leftovers:
            freed += _size(folder)
            shutil.rmtree(folder, ignore_errors=True)
        # Temporary files of the per-file writes of earlier versions
        for stale in list(final.glob(".*.tmp")) if final.is_dir() else []:
            freed += _size(stale)
            stale.unlink(missing_ok=True)
        if freed or leftovers:
            notes.append(f"removed the leftovers of an interrupted {which} checkpoint write ({freed / 2**20:.1f} MiB)")
    return notes


def _size(path: Path) -> int:
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return 0


def last_step(folder: Path) -> int:
    """The step a ``last`` checkpoint was written at (sizes checked; the hashes are checked on load)."""
    manifest = verify(folder, hashes=False, required=(MODEL_FILE, STATE_FILE))
    if manifest is not None:
        return manifest.step
    return int(_load_payload(Path(folder))["state"]["step"])


def _load_payload(folder: Path) -> dict[str, Any]:
    try:
        return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"the checkpoint in {folder} is unreadable ({type(exc).__name__})", "it is damaged; start the run again"
        ) from exc


def load_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    group_names: list[list[str]],
    device: torch.device,
    fingerprint: str | None = None,
) -> CheckpointState:
    """Restore model, optimizer, scheduler, scaler, RNG and position from a verified ``last`` checkpoint.
    ``fingerprint``: that of the model files ``model`` was loaded from (a checkpoint that left out the
    frozen pretrained weights fits only those)."""
    folder = Path(folder)
    if not (folder / STATE_FILE).is_file() and read_manifest(folder) is None and not (folder / MODEL_FILE).is_file():
        raise CheckpointError(
            f"no resumable checkpoint in {folder}", "the run stopped before its first checkpoint; start it again"
        )
    manifest = verify(folder, required=(MODEL_FILE, STATE_FILE))
    payload = _load_payload(folder)
    if manifest is not None and int(payload["state"]["step"]) != manifest.step:
        raise CheckpointError(
            f"the checkpoint in {folder} is mixed: its state is from step {payload['state']['step']}, "
            f"its manifest says step {manifest.step}",
            "start the run again",
        )
    if payload.get("group_names") != group_names:
        raise TuneDeskError(
            "the freeze plan differs from the checkpoint's, so the optimizer state does not fit",
            "resume with the run's original freeze plan, or start a new run",
        )
    weights = payload.get("weights")
    saved = (weights or {}).get("base_fingerprint")
    if saved and fingerprint and saved != fingerprint:
        raise TuneDeskError(
            "the model files changed since this run's checkpoint was written; its frozen weights came from them",
            "put the original model files back to resume, or start a new run",
        )
    load_model_weights(folder, model, weights, str(device))
    load_optimizer(optimizer, payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    py = rng["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    return CheckpointState.from_dict(payload["state"])


DEVICE_FLAGS = ("fused", "capturable", "foreach")  # how AdamW runs on this machine, not what it has learnt


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """The saved optimizer state, run the way this machine's optimizer was built: a checkpoint written
    on a GPU (fused, or capturable after a CUDA-graph run, engine.run.graphed) resumes on a CPU too."""
    own = [{k: g[k] for k in DEVICE_FLAGS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, flags in zip(optimizer.param_groups, own):
        group.update(flags)


def saved_batch(folder: Path) -> tuple[int, int] | None:
    """The (batch size, accumulation) a checkpoint was written with, if it says (None: unreadable or older)."""
    try:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)["state"]
    except Exception:  # noqa: BLE001 - load_checkpoint reports an unreadable checkpoint properly
        return None
    if state.get("batch_size") and state.get("grad_accum_steps"):
        return int(state["batch_size"]), int(state["grad_accum_steps"])
    return None
