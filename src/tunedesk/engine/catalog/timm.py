"""timm model folders: ``config.json`` with an ``architecture`` key (no ``model_type``) and ``pretrained_cfg``.

Recognised without importing timm; parameters are counted on the meta device when timm is installed.
Building for training lives in ``tunedesk.engine.timm_models``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from tunedesk.engine.errors import ModelError

TIMM_HINT = "pip install timm  (or pip install 'tunedesk[timm]')"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_timm_config(cfg: dict[str, Any] | None) -> bool:
    """timm's config.json names one ``architecture``; transformers' has ``architectures`` / ``model_type``."""
    return (
        isinstance(cfg, dict)
        and isinstance(cfg.get("architecture"), str)
        and bool(cfg["architecture"])
        and "model_type" not in cfg
        and "architectures" not in cfg
    )


def read_timm_config(folder: str | Path) -> dict[str, Any] | None:
    """The folder's timm config.json, or None when it has none (or it is a transformers config)."""
    path = Path(folder) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return cfg if is_timm_config(cfg) else None


def family_of(architecture: str) -> str:
    """Leading letters of a timm name: ``convnext_tiny`` -> convnext, ``vit_base_patch16_224`` -> vit."""
    match = re.match(r"[a-z]+", architecture.lower())
    return match.group(0) if match else architecture


def require_timm(what: str = "this model") -> Any:
    try:
        import timm
    except ImportError as exc:
        raise ModelError(f"{what} is a timm model, and the timm package is not installed", TIMM_HINT) from exc
    return timm


def summary(cfg: dict[str, Any]) -> dict[str, Any]:
    """The few values the Models area shows for a timm config."""
    pre: dict[str, Any] = cfg["pretrained_cfg"] if isinstance(cfg.get("pretrained_cfg"), dict) else {}
    out: dict[str, Any] = {}
    if isinstance(cfg.get("num_classes"), int):
        out["num_labels"] = cfg["num_classes"]
    if isinstance(cfg.get("num_features"), int):
        out["num_features"] = cfg["num_features"]
    size = pre.get("input_size")
    if isinstance(size, list) and size and isinstance(size[-1], int):
        out["image_size"] = size[-1]
    if isinstance(pre.get("tag"), str):
        out["pretrained_tag"] = pre["tag"]
    return out


def _model_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    args = dict(cfg.get("model_args") or {}) if isinstance(cfg.get("model_args"), dict) else {}
    args.pop("num_classes", None)
    args.pop("pretrained", None)
    args.pop("pretrained_cfg", None)
    args.pop("pretrained_cfg_overlay", None)
    if isinstance(cfg.get("global_pool"), str):
        args.setdefault("global_pool", cfg["global_pool"])
    return args


def create(cfg: dict[str, Any], num_classes: int | None = None) -> Any:
    """The architecture named by ``cfg`` with random weights, its ``pretrained_cfg`` taken from the file
    (so mean/std/input size are the folder's, not timm's registry defaults). Never touches the network."""
    timm = require_timm(cfg.get("architecture") or "this model")
    arch = cfg["architecture"]
    if not timm.is_model(arch):
        raise ModelError(
            f"timm {timm.__version__} does not know the architecture {arch!r}",
            "upgrade timm (pip install -U timm), or pick another model",
        )
    pre: dict[str, Any] = copy.deepcopy(cfg["pretrained_cfg"]) if isinstance(cfg.get("pretrained_cfg"), dict) else {}
    for key in ("hf_hub_id", "url", "file"):  # where weights would come from: TuneDesk loads them itself
        pre.pop(key, None)
    classes = num_classes if num_classes is not None else int(cfg.get("num_classes") or pre.get("num_classes") or 0)
    try:
        return timm.create_model(
            arch, pretrained=False, num_classes=classes, pretrained_cfg_overlay=pre, **_model_kwargs(cfg)
        )
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"timm cannot build {arch} from its config.json ({first[:200]})", "check config.json") from exc
