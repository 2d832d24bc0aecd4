"""Are the weights all there? Cheap checks that read headers and tails, never tensors.

A safetensors header lists every tensor's byte range, so a truncated copy shows up as a file shorter
than the header promises; ``torch.save`` zips end with an end-of-central-directory record.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.(?P<ext>safetensors|bin)$")
_MAX_HEADER = 100 * 1024 * 1024
_ZIP_EOCD = b"PK\x05\x06"


def format_of(filename: str) -> str | None:
    if filename.endswith(".safetensors"):
        return "safetensors"
    if filename.endswith(".bin"):
        return "bin"
    if filename.endswith((".pth", ".pt", ".ckpt")):
        return "pth"
    return None


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_safetensors(fh: BinaryIO, size: int, label: str) -> str | None:
    if size < 8:
        return f"{label} is not a safetensors file (only {size} bytes)"
    n = int.from_bytes(fh.read(8), "little")
    if n <= 1 or n > min(size - 8, _MAX_HEADER):
        return f"{label} is not a safetensors file (bad header)"
    try:
        header = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return f"{label} is not a safetensors file (unreadable header)"
    expected = 8 + n + end
    if size < expected:
        return f"{label} is truncated ({size:,} of {expected:,} bytes)"
    return None


def check_torch_pickle(fh: BinaryIO, size: int, label: str) -> str | None:
    head = fh.read(4)
    if head.startswith(b"PK\x03\x04"):
        fh.seek(max(0, size - 22))
        if fh.read(4) == _ZIP_EOCD:
            return None
        fh.seek(max(0, size - 65557))  # EOCD followed by a zip comment (up to 64 KiB)
        if _ZIP_EOCD in fh.read():
            return None
        return f"{label} is truncated (the zip archive has no end record)"
    if head[:1] == b"\x80":
        return None  # legacy pickle format: nothing cheap to verify
    return f"{label} is not a PyTorch checkpoint (unrecognised file header)"


def check_weight_file(path: Path, label: str | None = None) -> tuple[int, str | None]:
    """(size in bytes, problem) for one weight file; symlinks are followed (HF cache blobs)."""
    label = label or path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        if path.is_symlink():
            return 0, f"{label} is a broken link (its blob is missing)"
        return 0, f"{label} cannot be read: {_reason(exc)}"
    if size == 0:
        return 0, f"{label} is empty (0 bytes)"
    fmt = format_of(label)
    try:
        with path.open("rb") as fh:
            if fmt == "safetensors":
                return size, check_safetensors(fh, size, label)
            if fmt in ("bin", "pth"):
                return size, check_torch_pickle(fh, size, label)
    except OSError as exc:
        return size, f"{label} cannot be read: {_reason(exc)}"
    return size, None


@dataclass
class WeightInfo:
    format: str | None = None
    files: list[str] = field(default_factory=list)
    size: int = 0
    present: bool = False
    problems: list[str] = field(default_factory=list)


def _expected(folder: Path, names: set[str], fmt: str) -> tuple[list[str], list[str]]:
    """(file names a loader would need, problems) for one format in a Hugging Face folder."""
    index = SAFE_INDEX if fmt == "safetensors" else BIN_INDEX
    single = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
    if index in names:
        try:
            data = json.loads((folder / index).read_text(encoding="utf-8"))
            shards = sorted({str(v) for v in data["weight_map"].values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return [index], [f"{index} is unreadable ({type(exc).__name__})"]
        return shards, []
    if single in names:
        return [single], []
    matches = [SHARD_RE.match(n) for n in names]
    found = [
        m
        for m in matches
        if m
        and m.group("ext") == ("safetensors" if fmt == "safetensors" else "bin")
        and (fmt == "safetensors" or m.group("stem") == "pytorch_model")
    ]
    if found:
        m = found[0]
        total = int(m.group("n"))
        ext = m.group("ext")
        return [f"{m.group('stem')}-{i:05d}-of-{total:05d}.{ext}" for i in range(1, total + 1)], []
    if fmt == "safetensors":
        others = sorted(n for n in names if n.endswith(".safetensors") and not n.startswith("adapter_"))
        return others, []
    return [], []


def _evaluate(folder: Path, names: set[str], fmt: str) -> WeightInfo | None:
    files, problems = _expected(folder, names, fmt)
    if not files:
        return None
    info = WeightInfo(format=fmt, files=files, problems=problems)
    missing = [f for f in files if f not in names]
    for f in files:
        if f in missing:
            continue
        size, problem = check_weight_file(folder / f)
        info.size += size
        if problem:
            info.problems.append(problem)
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        if len(files) > 1:
            info.problems.append(f"missing {len(missing)} of {len(files)} weight shards ({shown})")
        else:
            info.problems.append(f"weight file {shown} is missing")
    info.present = not info.problems
    return info


def inspect_weights(folder: Path, names: set[str]) -> WeightInfo:
    """The weights a transformers loader would use: safetensors first, then pytorch_model.bin."""
    candidates = [i for i in (_evaluate(folder, names, "safetensors"), _evaluate(folder, names, "bin")) if i]
    for info in candidates:
        if info.present:
            return info
    if candidates:
        return candidates[0]
    other = sorted(
        n
        for n in names
        if n in ("tf_model.h5", "flax_model.msgpack", "model.onnx") or n.endswith((".pth", ".pt", ".ckpt", ".gguf"))
    )
    if other:
        return WeightInfo(
            problems=[
                f"only {', '.join(other[:3])}: no PyTorch weights a Hugging Face loader can "
                "use (model.safetensors or pytorch_model.bin)"
            ]
        )
    return WeightInfo(problems=["no weight files"])
