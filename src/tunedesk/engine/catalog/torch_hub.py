"""Torchvision checkpoints in the torch hub cache (``resnet18-f37072fd.pth``), recognised by file name.

Files are never unpickled here: the architecture comes from the name, the count from a meta-device
build (or torchvision's published count for that exact file), and integrity from cheap header checks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunedesk.engine.catalog.entry import ModelEntry
from tunedesk.engine.catalog.params import CountStore, count_torchvision
from tunedesk.engine.catalog.weights import check_weight_file, format_of

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")
PARTIAL_RE = re.compile(r"^(?P<name>.+)\.[0-9a-f]{32}\.partial$")  # torch.hub.download_url_to_file temp files
NOT_TORCHVISION = "not a recognised torchvision checkpoint"


@dataclass
class TorchvisionIndex:
    names: list[str]  # classification architectures, longest first
    files: dict[str, dict[str, Any]]  # official file name -> {name, num_params, weights, num_classes, image_size}
    defaults: dict[str, int | None]  # architecture -> published count of its DEFAULT weights


_index: TorchvisionIndex | None = None


def torchvision_index(store: CountStore | None = None) -> TorchvisionIndex | None:
    """The classification model names and official weight files; None when torchvision is missing."""
    global _index
    if _index is not None:
        return _index
    cached = store.tv.get("index") if store is not None else None
    if isinstance(cached, dict) and {"names", "files", "defaults"} <= cached.keys():
        _index = TorchvisionIndex(cached["names"], cached["files"], cached["defaults"])
        return _index
    try:
        import torchvision
        from torchvision.models import get_model_weights
    except Exception:  # noqa: BLE001 - no torchvision: nothing in the hub can be recognised
        return None
    names = sorted(torchvision.models.list_models(module=torchvision.models), key=lambda n: (-len(n), n))
    files: dict[str, dict[str, Any]] = {}
    defaults: dict[str, int | None] = {}
    for name in names:
        try:
            enum = get_model_weights(name)
        except Exception:  # noqa: BLE001
            continue
        default = getattr(enum, "DEFAULT", None)
        defaults[name] = _num_params(default)
        for weights in enum:
            meta = weights.meta
            size = meta.get("min_size")
            files[os.path.basename(weights.url)] = {
                "name": name,
                "num_params": _num_params(weights),
                "weights": f"{enum.__name__}.{weights.name}",
                "num_classes": len(meta.get("categories") or []) or None,
                "image_size": list(size) if isinstance(size, tuple) else None,
            }
    _index = TorchvisionIndex(names, files, defaults)
    if store is not None:
        store.tv["index"] = {"names": names, "files": files, "defaults": defaults}
        store.dirty = True
    return _index


def _num_params(weights: Any) -> int | None:
    value = getattr(weights, "meta", {}).get("num_params") if weights is not None else None
    return value if isinstance(value, int) else None


def recognise(filename: str, index: TorchvisionIndex) -> tuple[str | None, dict[str, Any] | None]:
    """(architecture, official file info) for a checkpoint file name.

    An official file name matches exactly; otherwise the architecture is the longest torchvision
    model name that the part before the last ``-hash`` starts with, at a ``_``/``-`` boundary
    (``efficientnet_b0_rwightman-7f5810bc.pth`` -> efficientnet_b0).
    """
    info = index.files.get(filename)
    if info is not None:
        return info["name"], info
    stem = filename
    for suffix in CHECKPOINT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    base = stem.rsplit("-", 1)[0] if "-" in stem else stem
    for name in index.names:  # longest first
        if base == name or (base.startswith(name) and base[len(name)] in "_-."):
            return name, None
    return None, None


def family_of(architecture: str) -> str:
    """Leading letters of a torchvision name: resnet18 -> resnet, vit_b_16 -> vit, wide_resnet50_2 -> resnet."""
    match = re.match(r"[a-z]+", architecture.lower())
    family = match.group(0) if match else architecture
    return "resnet" if family == "wide" else family


def checkpoint_entry(
    path: Path,
    *,
    source: str,
    entry_id: str | None = None,
    count_params: bool = True,
    store: CountStore | None = None,
    partial: bool = False,
    unknown_problem: str = NOT_TORCHVISION,
) -> ModelEntry:
    """An entry for one weight file; recognised torchvision names get architecture, task and count."""
    shown = PARTIAL_RE.sub(r"\g<name>", path.name) if partial else path.name
    entry = ModelEntry(
        id=entry_id or f"file:{path}", name=shown, path=str(path), source=source, weight_format=format_of(shown)
    )
    index = torchvision_index(store)
    arch, info = recognise(shown, index) if index is not None else (None, None)
    problems: list[str] = []
    size, weight_problem = check_weight_file(path, shown)
    entry.size_bytes = size
    if partial:
        problems.append(f"download incomplete ({path.name} is a partial download)")
    elif weight_problem:
        problems.append(weight_problem)
    if arch is None:
        problems.append(
            unknown_problem
            if index is not None
            else "torchvision is not installed, so the architecture cannot be recognised"
        )
    else:
        entry.name = arch
        entry.id = entry_id or f"torchvision:{arch}"
        entry.architecture = arch
        entry.model_type = "torchvision"
        entry.family = family_of(arch)
        entry.task = "image_classification"
        if info is not None:
            entry.config_summary = {k: info[k] for k in ("weights", "num_classes", "image_size") if info.get(k)}
        if count_params:
            if info is not None and info.get("num_params"):
                entry.parameters = info["num_params"]  # exact for this very file (e.g. 384px SWAG ViTs)
            else:
                fallback = index.defaults.get(arch) if index is not None else None
                entry.parameters = count_torchvision(arch, fallback, store)
    entry.weights_present = not partial and weight_problem is None
    entry.problem = "; ".join(problems) or None
    return entry


def iter_checkpoints(
    folder: Path, *, source: str, count_params: bool = True, store: CountStore | None = None
) -> Iterator[ModelEntry]:
    """Entries for the weight files directly inside ``folder`` (a hub ``checkpoints`` dir)."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if not e.name.startswith("."))
    except OSError as exc:
        yield ModelEntry(
            id=f"folder:{folder}",
            name=folder.name,
            path=str(folder),
            source=source,
            problem=f"cannot read folder: {exc.strerror or exc}",
        )
        return
    present = set(names)
    for name in names:
        partial = PARTIAL_RE.match(name)
        if partial:
            if partial.group("name") in present:
                continue  # a stale temp file next to the finished download
            yield checkpoint_entry(folder / name, source=source, count_params=count_params, store=store, partial=True)
        elif name.endswith(CHECKPOINT_SUFFIXES) and not (folder / name).is_dir():
            yield checkpoint_entry(folder / name, source=source, count_params=count_params, store=store)
