"""A task model built on the meta device: the same class and new head a run builds, with no weights.

An 8B model costs no memory and a fraction of a second here, so the layer tree can show what a run
will train before any weight is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from tunedesk.engine.config import ModelSpec
from tunedesk.engine.errors import ConfigError, ModelError
from tunedesk.engine.models import LoadedModel, family_of, head_paths_from_missing, heuristic_head_paths

TEXT, IMAGE, CAUSAL = "text_classification", "image_classification", "causal_lm"


# ---- building on the meta device -------------------------------------------------------------------


def build_meta_model(entry_or_path: Any, task: str | None = None, num_labels: int = 2) -> LoadedModel:
    """The model a run would train, on the meta device: no weights read, no memory used.

    ``entry_or_path``: a catalog ``ModelEntry``, a model folder, an installed/cached model name, or a
    torchvision architecture name. The task class follows the entry's task (``feature_extraction``
    and masked-LM checkpoints become sequence classifiers, as TuneDesk trains them); ``task``
    overrides it (``text_classification``, ``image_classification``, ``causal_lm``).
    """
    if num_labels < 1:
        raise ConfigError("num_labels", f"must be >= 1 (got {num_labels})")
    arch, folder, entry_task = _locate(entry_or_path)
    labels = [f"label_{i}" for i in range(num_labels)]
    if folder is None:
        return _build_torchvision(arch, labels)
    from tunedesk.engine.catalog.timm import read_timm_config

    if read_timm_config(folder) is not None:
        return _build_timm(folder, labels)
    from transformers import AutoConfig

    from tunedesk.engine.model_files import is_config_read_failure
    from tunedesk.engine.models import check_sizes, config_value_error, quiet_transformers

    quiet_transformers()
    id2label = dict(enumerate(labels))
    try:
        config = AutoConfig.from_pretrained(
            str(folder),
            local_files_only=True,
            trust_remote_code=False,  # the Layers area never runs a model folder's code
            num_labels=num_labels,
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
        )
    except ValueError as exc:
        if "trust_remote_code" in str(exc) or "custom code" in str(exc):
            raise ModelError(
                f"{folder.name} needs its own Python code to build (trust_remote_code)",
                "TuneDesk does not run a model's own code to show its layers",
            ) from exc
        raise ModelError(f"cannot read the configuration of {folder}: {_first_line(exc)}", "check config.json") from exc
    except OSError as exc:
        raise ModelError(f"cannot read the configuration of {folder}: {_first_line(exc)}", "check config.json") from exc
    except Exception as exc:  # a config.json value of the wrong type, recognised as in training; else re-raised
        if not is_config_read_failure(exc):
            raise
        raise config_value_error(folder, exc) from exc
    check_sizes(folder, config)  # an edited config.json's 2**31 layers would hang the meta build too
    loaded = build_meta_from_config(config, task=task or _train_task(entry_task, config), path=str(folder))
    missing = _missing_from_checkpoint(loaded.model, folder)
    if missing:
        loaded.head_paths = head_paths_from_missing(missing, loaded.model) or loaded.head_paths
    return loaded


def build_meta_from_config(config: Any, task: str = TEXT, path: str = "") -> LoadedModel:
    """A Hugging Face task model from a config object on the meta device (benchmarks, tests, folders)."""
    import transformers

    from tunedesk.engine.catalog.params import _build_lock, meta_device  # one meta build at a time (import safety)

    by_task: dict[str, list[Any]] = {
        TEXT: [transformers.AutoModelForSequenceClassification, transformers.AutoModelForImageClassification],
        IMAGE: [transformers.AutoModelForImageClassification],
        CAUSAL: [transformers.AutoModelForCausalLM],
    }
    autos = by_task.get(task)
    if autos is None:
        raise ConfigError("task", f"must be one of {TEXT}, {IMAGE}, {CAUSAL} (got {task!r})")
    errors: list[str] = []
    model = None
    with _build_lock:
        for auto in autos:
            try:
                with meta_device():
                    model = auto.from_config(config, trust_remote_code=False)
                break
            except (ValueError, KeyError, TypeError, AttributeError, ImportError, NotImplementedError) as exc:
                errors.append(_first_line(exc))
    if model is None:
        kind = getattr(config, "model_type", "?")
        raise ModelError(
            f"TuneDesk cannot build a {task.replace('_', ' ')} model from a {kind!r} configuration "
            f"({errors[0] if errors else 'unknown reason'})",
            "pick a model made for this task (its Models entry shows the task)",
        )
    heads = heuristic_head_paths(model)
    return LoadedModel(
        model=model,
        head_paths=heads,
        family=family_of(config),
        architecture=type(model).__name__,
        path=path,
        pretrained=False,
        kind="hf",
    )


def _build_torchvision(arch: str, labels: list[str]) -> LoadedModel:
    from tunedesk.engine.catalog.params import _build_lock, meta_device
    from tunedesk.engine.models import build_torchvision_classifier

    with _build_lock, meta_device():
        loaded = build_torchvision_classifier(
            ModelSpec(arch, source="torchvision", pretrained=False), labels, device="meta"
        )
    loaded.warnings = []
    return loaded


def _build_timm(folder: Path, labels: list[str]) -> LoadedModel:
    from tunedesk.engine.catalog.params import _build_lock
    from tunedesk.engine.timm_models import build_timm_classifier

    with _build_lock:
        loaded = build_timm_classifier(ModelSpec(str(folder), source="timm", pretrained=False), labels, device="meta")
    loaded.warnings = []
    return loaded


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _locate(entry_or_path: Any) -> tuple[str, Path | None, str | None]:
    """(torchvision architecture or "", Hugging Face folder or None, the catalog's task)."""
    entry_task = None
    if hasattr(entry_or_path, "path") and hasattr(entry_or_path, "model_type"):  # a catalog ModelEntry
        entry = entry_or_path
        entry_task = entry.task
        if entry.model_type == "torchvision":
            if not entry.architecture:
                raise ModelError(
                    f"{entry.name}: {entry.problem or 'the architecture is unknown'}",
                    "rename the file to its torchvision name (e.g. resnet18-...pth)",
                )
            return entry.architecture, None, "image_classification"
        target = Path(entry.path)
        if target.is_file():
            target = target.parent
        if not (target / "config.json").is_file():
            raise ModelError(
                f"{entry.name} cannot be shown: {entry.problem or 'it has no config.json'}",
                "the layer tree needs the model's config.json; check the folder in Models",
            )
        return "", target, entry_task
    text = str(entry_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        from tunedesk.engine.models import resolve_hf_path

        return "", resolve_hf_path(str(path)), entry_task
    if not path.exists() and "/" not in text and os.sep not in text:
        import torchvision

        if text in torchvision.models.list_models(module=torchvision.models):
            return text, None, IMAGE
    from tunedesk.engine.models import resolve_hf_path

    return "", resolve_hf_path(text), entry_task


def _train_task(entry_task: str | None, config: Any) -> str:
    """What TuneDesk trains from a checkpoint of this task (an encoder gets a classification head)."""
    if entry_task in (IMAGE, CAUSAL):
        return entry_task
    if entry_task is None:
        archs = getattr(config, "architectures", None) or []
        arch = archs[0] if archs else ""
        if "ForImageClassification" in arch:
            return IMAGE
        if "ForCausalLM" in arch or "LMHeadModel" in arch:
            return CAUSAL
    return TEXT


def _checkpoint_keys(folder: Path) -> dict[str, list[int] | None] | None:
    """Parameter names (and shapes where cheap) stored in a folder's weights, read from headers only."""
    try:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            return dict.fromkeys(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
        single = folder / "model.safetensors"
        if single.is_file():
            with single.open("rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if not 1 < n < (100 << 20):
                    return None
                header = json.loads(fh.read(n))
            return {k: v.get("shape") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
        index = folder / "pytorch_model.bin.index.json"
        if index.is_file():
            return dict.fromkeys(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return None  # a single pickle: reading its names means unpickling; the heuristic head is used


def _missing_from_checkpoint(model: nn.Module, folder: Path) -> list[str]:
    """Parameters the real load would initialise fresh (missing from, or shaped unlike, the checkpoint)."""
    stored = _checkpoint_keys(folder)
    if not stored:
        return []
    params = dict(model.named_parameters())
    prefix = getattr(model, "base_model_prefix", "") or ""
    if (
        prefix
        and any(n.startswith(prefix + ".") for n in params)
        and not any(k.startswith(prefix + ".") for k in stored)
    ):
        stored = {f"{prefix}.{k}": v for k, v in stored.items()}
    stored = {k.replace(".gamma", ".weight").replace(".beta", ".bias"): v for k, v in stored.items()}
    missing = []
    for name, p in params.items():
        shape = stored.get(name)
        if name not in stored or shape is not None and list(shape) != list(p.shape):
            missing.append(name)
    if len(missing) > len(params) // 2:
        return []  # the checkpoint's naming is not understood here: keep the heuristic head
    return missing


def task_of_model(loaded: LoadedModel) -> str:
    """The task a built model trains for (decides sequence length vs image size in the estimate)."""
    name = type(loaded.model).__name__
    if loaded.kind in ("torchvision", "timm") or "ForImageClassification" in name:
        return IMAGE
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return CAUSAL
    return TEXT
