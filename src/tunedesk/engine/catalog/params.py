"""Exact parameter counts without touching weights: models are built on ``torch.device("meta")``.

Building a model, even on the meta device, costs 10-500 ms and the first one pays for importing
transformers, so results are memoised three ways: by config file (path, mtime, size), by a hash of
the config's content (caches hold many copies of the same architecture), and optionally in a JSON
file under the TuneDesk home so the next app start does not import torch just to list models.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Result = tuple[int | None, str | None]  # (parameter count, problem)

# Keys that do not change the architecture: dropping them lets copies of one model share a count.
_VOLATILE_KEYS = ("_name_or_path", "transformers_version", "_commit_hash", "torch_dtype", "dtype")
_MAX_STORED = 20000

_by_file: dict[tuple[str, int, int], Result] = {}
_by_hash: dict[str, Result] = {}
_tv_counts: dict[str, int | None] = {}
_lock = threading.Lock()
_build_lock = threading.Lock()  # one meta build at a time: the first import of transformers is not re-entrant-safe


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


class CountStore:
    """Parameter counts (and the torchvision name table) persisted as JSON; versions guard staleness."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.dirty = False
        self.versions = {"transformers": _version("transformers"), "torchvision": _version("torchvision")}
        self.hf: dict[str, list[Any]] = {}
        self.tv: dict[str, Any] = {}
        if path is None:
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # missing or corrupt: start afresh, it is only a cache
        if not isinstance(data, dict):
            return
        if data.get("transformers") == self.versions["transformers"] and isinstance(data.get("hf"), dict):
            self.hf = data["hf"]
        if data.get("torchvision") == self.versions["torchvision"] and isinstance(data.get("tv"), dict):
            self.tv = data["tv"]

    def get_hf(self, key: str) -> Result | None:
        value = self.hf.get(key)
        if isinstance(value, list) and len(value) == 2:
            return (value[0], value[1])
        return None

    def put_hf(self, key: str, result: Result) -> None:
        if self.get_hf(key) != result:
            self.hf[key] = list(result)
            self.dirty = True

    def save(self) -> None:
        """Write atomically; a failure only costs speed next time, so it is logged, not raised."""
        if self.path is None or not self.dirty:
            return
        hf = dict(list(self.hf.items())[-_MAX_STORED:])
        data = {**self.versions, "hf": hf, "tv": self.tv}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".counts-", suffix=".json", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError as exc:
            log.warning("could not save the parameter count cache %s: %s", self.path, exc)


_skip_init_mode: type | None = None


@contextlib.contextmanager
def meta_device() -> Iterator[None]:
    """``torch.device("meta")`` that also skips ``torch.nn.init`` calls on meta tensors.

    Meta tensors hold no data, so initialising them is pure overhead; ``normal_`` on meta runs a
    slow Python reference kernel and was ~40% of a build. Torch function modes are thread-local,
    so a training thread building a real model at the same time is not affected.
    """
    global _skip_init_mode
    import torch
    from torch.overrides import TorchFunctionMode

    if _skip_init_mode is None:

        class SkipInitOnMeta(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if getattr(func, "__module__", None) == "torch.nn.init":
                    tensor = args[0] if args else kwargs.get("tensor")
                    if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                        return tensor
                return func(*args, **kwargs)

        _skip_init_mode = SkipInitOnMeta
    with torch.device("meta"), _skip_init_mode():
        yield


def config_hash(cfg: dict[str, Any]) -> str:
    clean = {k: v for k, v in cfg.items() if k not in _VOLATILE_KEYS}
    text = json.dumps(clean, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def count_config(cfg: dict[str, Any], config_file: Path | None = None, store: CountStore | None = None) -> Result:
    """(count, problem) for a config dict; ``problem`` says why there is no count."""
    result: Result | None
    file_key = None
    if config_file is not None:
        try:
            st = config_file.stat()
            file_key = (str(config_file), st.st_mtime_ns, st.st_size)
        except OSError:
            file_key = None
        if file_key is not None and file_key in _by_file:
            result = _by_file[file_key]
            if store is not None:
                store.put_hf(config_hash(cfg), result)
            return result
    key = config_hash(cfg)
    result = _by_hash.get(key)
    if result is None and store is not None:
        result = store.get_hf(key)
    if result is None:
        result = _count_hf(cfg)
    with _lock:
        _by_hash[key] = result
        if file_key is not None:
            _by_file[file_key] = result
    if store is not None:
        store.put_hf(key, result)
    return result


def count_timm(cfg: dict[str, Any], store: CountStore | None = None) -> Result:
    """(count, problem) for a timm config.json, memoised like ``count_config`` (the key names timm's version)."""
    key = f"timm-{_version('timm')}:{config_hash(cfg)}"
    result = _by_hash.get(key)
    if result is None and store is not None:
        result = store.get_hf(key)
    if result is None:
        with _build_lock:
            result = _count_timm(cfg)
    with _lock:
        _by_hash[key] = result
    if store is not None:
        store.put_hf(key, result)
    return result


def _count_timm(cfg: dict[str, Any]) -> Result:
    """The timm model built on the meta device, as transformers models are counted."""
    from tunedesk.engine.catalog.timm import TIMM_HINT, create
    from tunedesk.engine.errors import ModelError

    try:
        import timm  # noqa: F401 - only to tell "missing" apart from "cannot build"
    except ImportError:
        return None, f"a timm model, and timm is not installed: {TIMM_HINT}"
    try:
        with meta_device():
            model = create(cfg)
    except ModelError as exc:
        return None, exc.message
    except Exception as exc:  # noqa: BLE001 - any architecture timm cannot build is a problem, not a crash
        return None, f"timm cannot build this model: {type(exc).__name__}: {str(exc)[:200]}"
    return int(sum(p.numel() for p in model.parameters())), None


def _remote_code_problem(arch: str | None) -> str:
    what = f"its architecture {arch}" if arch else "it"
    return (
        f"{what} needs the model's own Python code (trust_remote_code), which TuneDesk does not run "
        "while listing models"
    )


def _count_hf(cfg: dict[str, Any]) -> Result:
    """Build the model class named by the config on the meta device and count its parameters."""
    archs = cfg.get("architectures")
    arch = archs if isinstance(archs, str) and archs else None
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        arch = archs[0]
    model_type = cfg.get("model_type") if isinstance(cfg.get("model_type"), str) else None
    with _build_lock:
        try:
            import transformers
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        except Exception as exc:  # noqa: BLE001 - a broken install must not break listing
            return None, f"cannot count parameters: transformers failed to import ({exc})"
        cls = None
        if arch:
            try:
                cls = getattr(transformers, arch, None)
            except Exception:  # noqa: BLE001 - lazy modules may fail on missing optional deps
                cls = None
            if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
                cls = None
        if cls is None and cfg.get("auto_map"):
            return None, _remote_code_problem(arch)
        if model_type is not None and model_type in CONFIG_MAPPING:
            config_cls = CONFIG_MAPPING[model_type]
        elif cls is not None and getattr(cls, "config_class", None) is not None:
            config_cls = cls.config_class
        elif model_type:
            return None, (
                f"model type {model_type!r} is not supported by the installed transformers {transformers.__version__}"
            )
        else:
            return None, "config.json has no model_type, so the architecture is unknown"
        values = {k: v for k, v in cfg.items() if k != "auto_map"}
        try:
            config = config_cls.from_dict(values)
            with meta_device():
                if cls is not None:
                    model = cls(config)
                else:
                    model = transformers.AutoModel.from_config(config, trust_remote_code=False)
            return int(sum(p.numel() for p in model.parameters())), None
        except Exception as exc:  # noqa: BLE001 - any config transformers rejects is a problem, not a crash
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return None, f"transformers cannot build this model from its config: {first[:200]}"


def count_torchvision(name: str, fallback: int | None = None, store: CountStore | None = None) -> int | None:
    """Parameters of a torchvision classifier built with ``weights=None`` on the meta device.

    A few builders (RegNet) compute layer widths with tensors and cannot run on meta; then
    ``fallback`` (torchvision's published count for the default weights) is used.
    """
    if name in _tv_counts:
        return _tv_counts[name]
    counts = (store.tv.get("counts") or {}) if store is not None else {}
    if name in counts:
        stored: int | None = counts[name]
        _tv_counts[name] = stored
        return stored
    count: int | None
    with _build_lock:
        try:
            import torchvision

            with meta_device():
                model = torchvision.models.get_model(name, weights=None)
            count = int(sum(p.numel() for p in model.parameters()))
        except Exception:  # noqa: BLE001 - builders that need real tensors
            count = fallback
    _tv_counts[name] = count
    if store is not None:
        store.tv.setdefault("counts", {})[name] = count
        store.dirty = True
    return count


def clear_memo() -> None:
    """Forget in-memory counts (tests, or after upgrading transformers in a running app)."""
    with _lock:
        _by_file.clear()
        _by_hash.clear()
        _tv_counts.clear()
