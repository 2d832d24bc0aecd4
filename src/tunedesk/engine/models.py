"""Building models: from local files only, with safe weight loading and a fresh task head.

Hugging Face checkpoints load through the Auto classes with ``local_files_only=True``; torchvision
architectures load by name with weights from a local file or the torch hub cache. Pickled weights go
through ``torch.load(weights_only=True)`` only; ``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunedesk.engine.config import ModelSpec
from tunedesk.engine.errors import ModelError
from tunedesk.engine.model_files import (
    build_error,
    is_config_read_failure,
    is_model_build_failure,
    is_weights_read_failure,
    load_state_dict,
    one_line,
    weights_error,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

HEAD_NAMES = ("classifier", "score", "fc", "head", "heads", "pre_classifier", "lm_head")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


@dataclass
class LoadedModel:
    model: nn.Module
    head_paths: list[str]  # module paths of the new task head (trained from scratch)
    family: str  # "bert", "resnet", ... (learning-rate suggestions)
    architecture: str
    path: str  # what was loaded from
    pretrained: bool
    processor: Any = None  # tokenizer (text) or image processor info (images)
    warnings: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    kind: str = "hf"  # "hf" or "torchvision"
    label_names: list[str] = field(default_factory=list)


def fingerprint(path: str | Path) -> str:
    """A content fingerprint of a model folder or file: config + size and head/tail bytes of weights.

    Cheap enough for multi-GB checkpoints (reads at most 2 MiB per weight file).
    """
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    for f in files:
        if not f.is_file():
            continue
        if f.name in ("config.json", "tokenizer.json", "vocab.txt", "preprocessor_config.json"):
            h.update(f.name.encode())
            h.update(f.read_bytes())
        elif f.suffix in WEIGHT_SUFFIXES:
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
                if size > (2 << 20):
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


# ---- model location -----------------------------------------------------------------------------


def resolve_hf_path(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path} has no config.json, so it is not a Hugging Face model folder",
                "pick the folder that holds config.json and the weights",
            )
        return path.resolve()
    if path.is_file():
        raise ModelError(
            f"{path} is a file; Hugging Face models are folders",
            "pick the folder that holds config.json, or use a torchvision architecture for a single weights file",
        )
    from tunedesk.engine import catalog

    return catalog.resolve_model_path(name_or_path)


def quiet_transformers() -> None:
    """TuneDesk reports loading itself; transformers' progress bars and load tables are noise here."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def family_of(config: Any) -> str:
    return str(getattr(config, "model_type", "") or "unknown")


# ---- head handling -------------------------------------------------------------------------------


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = get_module(model, parent_path)
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and name.isdigit():
        parent[int(name)] = module
    else:
        setattr(parent, name, module)


def find_classifier(model: nn.Module) -> tuple[str, nn.Linear]:
    """The final linear layer that produces class scores (``fc``, ``classifier.6``, ``heads.head``...)."""
    last: tuple[str, nn.Linear] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None:
        raise ModelError(
            f"{type(model).__name__} has no linear classifier layer to replace",
            "pick a classification architecture (ResNet, EfficientNet, ViT, ConvNeXt, ...)",
        )
    return last


def replace_classifier(model: nn.Module, num_labels: int) -> str:
    """Swap the final linear layer for a fresh one with ``num_labels`` outputs; return its path."""
    path, old = find_classifier(model)
    new = nn.Linear(old.in_features, num_labels, bias=old.bias is not None, device=old.weight.device)
    set_module(model, path, new)
    return path


def head_paths_from_missing(missing_keys: list[str], model: nn.Module) -> list[str]:
    """Module paths of the newly initialised parameters (the new head, maybe a pooler)."""
    paths: list[str] = []
    for key in missing_keys:
        module_path = key.rsplit(".", 1)[0]
        # climb to the outermost module whose parameters are all missing
        parts = module_path.split(".")
        best = module_path
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            sub = get_module(model, candidate)
            names = [f"{candidate}.{n}" for n, _ in sub.named_parameters()]
            if names and all(n in missing_keys for n in names):
                best = candidate
                break
        if best not in paths:
            paths.append(best)
    return paths


def heuristic_head_paths(model: nn.Module) -> list[str]:
    top = [n for n, _ in model.named_children()]
    return [n for n in HEAD_NAMES if n in top and n != "lm_head"][:2]


# ---- builders ------------------------------------------------------------------------------------


def load_hf_config(path: Path, spec: Any, **overrides: Any) -> Any:
    """A model folder's configuration (offline), or a ModelError that says why it cannot be read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=spec.trust_remote_code, **overrides
        )
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(
                f"{path.name} needs its own Python code to load (trust_remote_code)",
                "only if you trust its author, enable 'trust remote code' for this model",
            ) from exc
        raise ModelError(f"cannot read the configuration of {path}: {exc}", "check config.json") from exc
    except OSError as exc:
        raise ModelError(f"cannot read the configuration of {path}: {exc}", "check config.json") from exc
    except Exception as exc:  # a value of the wrong type in config.json, recognised below; anything else re-raised
        if not is_config_read_failure(exc):
            raise
        raise config_value_error(path, exc) from exc
    check_sizes(path, config)
    return config


# Far beyond any released model (Llama 3.1 405B: 126 layers, hidden 16,384, FFN 53,248, vocabulary 128,256),
# so only an edited or damaged config.json reaches them; building such a model would take minutes of
# allocation (or hang) before failing.
SIZE_LIMITS = {
    "num_hidden_layers": 2048, "n_layer": 2048, "num_layers": 2048,
    "hidden_size": 1 << 18, "n_embd": 1 << 18, "d_model": 1 << 18,
    "intermediate_size": 1 << 20, "n_inner": 1 << 20, "vocab_size": 1 << 24,
}  # fmt: skip


def check_sizes(path: Path, config: Any) -> None:
    """Refuse a configuration whose sizes no real model has (an edited config.json), before building it."""
    for key, limit in SIZE_LIMITS.items():
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise ModelError(
                f"config.json of {path.name} says {key} = {value:,}, far beyond any real model (at most {limit:,} here)",
                "the file was edited or damaged: restore the model's original config.json",
            )


def config_value_error(path: Path, exc: BaseException) -> ModelError:
    """A config.json value transformers refused (``is_config_read_failure``) as one sentence with the fix."""
    return ModelError(
        f"config.json in {path} has an invalid value ({one_line(exc)})",
        "the file was probably edited or damaged: copy the model folder again, or fix the value named",
    )


@contextmanager
def _building(path: Path) -> Iterator[None]:
    """Around ``from_config``: a config.json value the model code cannot use is a ModelError."""
    try:
        yield
    except Exception as exc:  # recognised by where it was raised; anything else re-raised
        if not is_model_build_failure(exc):
            raise
        raise build_error(path, exc) from exc


def build_hf_classifier(
    spec: ModelSpec, label_names: list[str], *, image: bool = False, device: str = "cpu"
) -> LoadedModel:
    """A Hugging Face sequence/image classifier with a fresh head sized to ``label_names``."""
    import transformers

    quiet_transformers()
    path = resolve_hf_path(spec.name_or_path)
    auto = transformers.AutoModelForImageClassification if image else transformers.AutoModelForSequenceClassification
    id2label = dict(enumerate(label_names))
    config = load_hf_config(
        path, spec, num_labels=len(label_names), id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )
    warnings: list[str] = []
    if device == "meta":
        with torch.device("meta"), _building(path):
            model = auto.from_config(config, trust_remote_code=spec.trust_remote_code)
        heads = heuristic_head_paths(model)
    elif spec.pretrained:
        try:
            # fp32 master weights whatever the checkpoint's stored dtype: autocast gives the speed of
            # bf16/fp16, and AdamW on half-precision weights would lose small updates (or fail to unscale)
            model, info = auto.from_pretrained(
                str(path),
                config=config,
                local_files_only=True,
                dtype=torch.float32,
                trust_remote_code=spec.trust_remote_code,
                ignore_mismatched_sizes=True,
                output_loading_info=True,
                use_safetensors=None,
            )
        except Exception as exc:  # damaged, truncated, refused, another format: one sentence each
            if is_model_build_failure(exc):
                raise build_error(path, exc) from exc
            if not is_weights_read_failure(exc):
                raise
            raise weights_error(path, exc) from exc
        missing = list(info.get("missing_keys", [])) + [k for k, *_ in info.get("mismatched_keys", [])]
        heads = head_paths_from_missing(missing, model) or heuristic_head_paths(model)
        body_missing = [h for h in heads if h not in HEAD_NAMES]
        if body_missing:
            warnings.append(f"not in the checkpoint, initialised randomly and trained: {', '.join(body_missing)}")
    else:
        torch.manual_seed(0)
        with _building(path):
            model = auto.from_config(config, trust_remote_code=spec.trust_remote_code)
        heads = heuristic_head_paths(model)
        warnings.append("random initialisation: this trains from scratch, it is not fine-tuning")
    if not image and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = getattr(model.config, "eos_token_id", None)
    return LoadedModel(
        model=model,
        head_paths=heads,
        family=family_of(config),
        architecture=type(model).__name__,
        path=str(path),
        pretrained=spec.pretrained and device != "meta",
        warnings=warnings,
        fingerprint=fingerprint(path) if device != "meta" else None,
        kind="hf",
        label_names=list(label_names),
    )


def torchvision_weights_file(name: str) -> Path | None:
    """A torch hub cache checkpoint for a torchvision architecture (``resnet18-f37072fd.pth``,
    ``efficientnet_b0_rwightman-7f5810bc.pth``), recognised as the model browser recognises it."""
    from tunedesk.engine.catalog import default_roots
    from tunedesk.engine.catalog.torch_hub import recognise, torchvision_index

    index = torchvision_index()
    if index is None:
        return None
    for hub in default_roots().torch_hub_dirs:
        for f in sorted(hub.iterdir()):
            if f.is_file() and f.suffix in (".pth", ".pt", ".safetensors") and recognise(f.name, index)[0] == name:
                return f
    return None


def build_torchvision_classifier(spec: ModelSpec, label_names: list[str], *, device: str = "cpu") -> LoadedModel:
    import torchvision

    name = spec.name_or_path
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = [m for m in available if name.lower()[:4] in m][:5]
        raise ModelError(
            f"{name!r} is not a torchvision classification architecture",
            f"try one of: {', '.join(close or available[:5])}",
        )
    warnings: list[str] = []
    weights_path: Path | None = None
    if spec.pretrained and device != "meta":
        weights_path = Path(spec.weights).expanduser() if spec.weights else torchvision_weights_file(name)
        if spec.weights and not (weights_path and weights_path.is_file()):
            raise ModelError(
                f"weights file not found: {weights_path}",
                "check the path, or leave it empty to use the torch hub cache",
            )
    ctx = torch.device("meta") if device == "meta" else torch.device("cpu")
    with ctx:
        model = torchvision.models.get_model(name, weights=None)
    if weights_path is not None:
        state = load_state_dict(weights_path)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise ModelError(
                f"{weights_path.name} does not match {name}: {len(result.missing_keys)} weights missing "
                f"(e.g. {result.missing_keys[0]})",
                "pick the weights file made for this architecture",
            )
    elif device != "meta":
        warnings.append(
            f"no pre-trained weights for {name} found (torch hub cache or a weights file): "
            "this trains from random initialisation, not fine-tuning"
        )
    head = replace_classifier(model, len(label_names))
    return LoadedModel(
        model=model,
        head_paths=[head],
        family=name.rstrip("0123456789_").split("_")[0] or name,
        architecture=name,
        path=str(weights_path or name),
        pretrained=weights_path is not None,
        warnings=warnings,
        fingerprint=fingerprint(weights_path) if weights_path else None,
        kind="torchvision",
        label_names=list(label_names),
    )
