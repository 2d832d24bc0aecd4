"""timm image models: built offline from local weights, with a fresh head, and exported for timm.

A timm model folder (a ``timm/...`` repository in the Hugging Face cache, or a folder the user added)
holds ``config.json`` with an ``architecture`` key, ``pretrained_cfg`` (mean, std, input size, the
classifier's name) and the weights (``model.safetensors``, else ``pytorch_model.bin``). The model is
built by name with timm (``pretrained=False``: no hub access), the weights are loaded through
TuneDesk's safe loader, and ``reset_classifier`` gives it a fresh head for the user's labels.
timm is optional (``pip install 'tunedesk[timm]'``); ``catalog.timm`` recognises the folders without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunedesk.engine.catalog.timm import WEIGHT_FILES, create, family_of, read_timm_config, require_timm
from tunedesk.engine.errors import ModelError


def weights_file(folder: Path) -> Path | None:
    return next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)


def classifier_paths(model: Any) -> list[str]:
    """Module paths of the classifier timm names in ``pretrained_cfg['classifier']`` (``head.fc``, ``fc``...)."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = [names] if isinstance(names, str) else list(names)
    modules = dict(model.named_modules())
    found = [n for n in names if n in modules]
    if found:
        return found
    from tunedesk.engine.models import find_classifier

    return [find_classifier(model)[0]]


def data_settings(model: Any) -> dict[str, Any]:
    """mean, std and input size from the model's pretrained config (timm's own resolution)."""
    timm = require_timm()
    data = timm.data.resolve_data_config({}, model=model)
    size = data.get("input_size") or (3, 224, 224)
    return {
        "mean": tuple(float(v) for v in data.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(float(v) for v in data.get("std", (0.229, 0.224, 0.225))),
        "image_size": int(size[-1]),
        "interpolation": data.get("interpolation"),
        "crop_pct": data.get("crop_pct"),
    }


def resolve_folder(name_or_path: str) -> Path:
    """A timm model folder from a path or a cached id (``timm/resnet18.a1_in1k``)."""
    from tunedesk.engine import catalog

    folder = catalog.resolve_model_path(name_or_path)
    if folder.is_file():
        folder = folder.parent
    if read_timm_config(folder) is None:
        raise ModelError(
            f"{folder} is not a timm model folder (its config.json has no 'architecture')",
            "pick a folder holding timm's config.json and model.safetensors, or set model.source to hf",
        )
    return folder


def is_timm_model(name_or_path: str) -> bool:
    """True when ``name_or_path`` resolves to a timm folder (a path or an HF cache id); never raises."""
    try:
        from tunedesk.engine import catalog

        folder = catalog.resolve_model_path(name_or_path)
    except Exception:  # noqa: BLE001 - unresolvable names are the hf builder's to explain
        return False
    return read_timm_config(folder if folder.is_dir() else folder.parent) is not None


def build_timm_classifier(spec: Any, label_names: list[str], *, device: str = "cpu") -> Any:
    """A timm classifier with the folder's weights and a fresh head sized to ``label_names``."""
    import torch

    from tunedesk.engine.model_files import load_state_dict
    from tunedesk.engine.models import LoadedModel, fingerprint

    folder = resolve_folder(spec.name_or_path)
    cfg = read_timm_config(folder) or {}
    arch = cfg["architecture"]
    warnings: list[str] = []
    pretrained = bool(spec.pretrained) and device != "meta"
    if device == "meta":
        from tunedesk.engine.catalog.params import meta_device

        with meta_device():
            model = create(cfg)
            model.reset_classifier(len(label_names))
    else:
        model = create(cfg)
        if pretrained:
            weights = weights_file(folder)
            if weights is None:
                raise ModelError(
                    f"{folder} has no weights file ({' or '.join(WEIGHT_FILES[:2])})",
                    "the download may be incomplete: copy the weights into the folder",
                )
            state = load_state_dict(weights)
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ModelError(
                    f"{weights.name} does not match {arch} ({str(exc).splitlines()[0][:200]})",
                    "the folder's config.json and weights come from different models: copy the folder again",
                ) from exc
        else:
            torch.manual_seed(0)
            warnings.append("random initialisation: this trains from scratch, it is not fine-tuning")
        model.reset_classifier(len(label_names))
    model.pretrained_cfg = {**(model.pretrained_cfg or {}), "num_classes": len(label_names)}
    settings = data_settings(model)
    return LoadedModel(
        model=model,
        head_paths=classifier_paths(model),
        family=family_of(arch),
        architecture=arch,
        path=str(folder),
        pretrained=pretrained,
        processor=settings,
        warnings=warnings,
        fingerprint=fingerprint(folder) if device != "meta" else None,
        kind="timm",
        label_names=list(label_names),
    )


def save_export(model: Any, out: Path, label_names: list[str], settings: dict[str, Any]) -> None:
    """config.json + model.safetensors in timm's own Hugging Face layout (``timm.models.save_for_hf``),
    with the class names and the evaluation settings in ``pretrained_cfg``."""
    timm = require_timm()
    model.pretrained_cfg = {
        **(model.pretrained_cfg or {}),
        "num_classes": len(label_names),
        "label_names": list(label_names),
        "mean": list(settings["mean"]),
        "std": list(settings["std"]),
        "input_size": [3, settings["image_size"], settings["image_size"]],
    }
    timm.models.save_for_hf(model, str(out), model_config={"label_names": list(label_names)}, safe_serialization=True)
