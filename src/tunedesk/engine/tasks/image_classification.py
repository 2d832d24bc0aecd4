"""Image classification: a folder of class sub-folders -> a torchvision, timm or Hugging Face classifier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tunedesk.engine.config import RunConfig
from tunedesk.engine.data.split import split_warnings
from tunedesk.engine.data.tensors import ImageFiles
from tunedesk.engine.models import LoadedModel, build_hf_classifier, build_torchvision_classifier
from tunedesk.engine.tasks.base import ClassifierTask, PreparedData, hash_examples, labelled_version, report_warnings
from tunedesk.engine.timm_models import build_timm_classifier, is_timm_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageExamples:
    paths: list[str]
    labels: list[str]
    name: str
    summary: str
    split: list[str] | None = None
    warnings: list[str] | None = None


def _image_table_examples(config: RunConfig) -> ImageExamples:
    """A Parquet/Arrow table of image bytes + labels: images unpacked once into ``<home>/images`` (by
    content, shared with the Datasets area), unreadable ones left out and reported."""
    from tunedesk.engine.data.arrow import image_rows, open_source
    from tunedesk.engine.data.images import _check_image
    from tunedesk.engine.data.report import DataReport
    from tunedesk.engine.paths import home_dir

    d = config.data
    source = open_source(d.path)
    report = DataReport(source=str(source.path), unit="image")
    names: dict[str, str] = {}
    rows = image_rows(
        lambda *a, **k: None, source, d.image_column, d.label_column, home_dir() / "images", report, names
    )
    for issue in report.issues:  # the Datasets area imports such rows unlabelled; a run leaves them out
        if issue.reason.startswith("blank label"):
            issue.reason, issue.action = "blank label", "skipped"
    paths, labels = [], []
    for label, path in rows:
        report.rows_read += 1
        if not label:
            continue  # reported above, with its row
        where = f"{source.display} {names.get(path, Path(path).name)}"
        problem = _check_image(path, 8) if Path(path).exists() else f"image file not found: {path}"
        if problem:
            report.add(problem, path=where)
            continue
        paths.append(path)
        labels.append(label)
        if d.max_items is not None and len(paths) >= d.max_items:
            report.limit_reached = True
            break
    report.rows_kept = len(paths)
    return ImageExamples(paths, labels, source.display, report.summary(), warnings=report_warnings(report))


def _split_folder_examples(config: RunConfig, parts: dict[str, Path]) -> ImageExamples:
    """``train/<class>/...`` with ``val/<class>/...`` (or ``test/``): the folder's own split is kept,
    classes come from the level below (``split_roles`` decides what test/ is for)."""
    from tunedesk.engine.data import scan_image_folder
    from tunedesk.engine.data.images import split_roles

    d = config.data
    roles = split_roles(parts)
    used = [(folder, role) for folder, role in roles if role]
    out = [folder.name for folder, role in roles if not role]
    trains, validates = (next(f.name for f, r in used if r == want) for want in ("train", "val"))
    paths: list[str] = []
    labels: list[str] = []
    split: list[str] = []
    summaries: list[str] = []
    warnings = [
        f"{trains}/ and {validates}/ split the data already: the run trains on {trains}/ and validates on "
        f"{validates}/ (data.val_fraction is not used)"
        + "".join(f"; {name}/ is left out, for a final check of your own" for name in out)
    ]
    for folder, role in used:
        items, report = scan_image_folder(folder, max_items=d.max_items)
        paths += [it.path for it in items]
        labels += [it.label for it in items]
        split += [role] * len(items)
        summaries.append(f"{folder.name}/: {report.summary()}")
        warnings += [f"{folder.name}/{w}" for w in report_warnings(report)]
    return ImageExamples(paths, labels, Path(d.path).name, "; ".join(summaries), split=split, warnings=warnings)


def _fixed_side(model: nn.Module) -> int | None:
    """The input side a Hugging Face vision model was built for (``config.image_size``), if it has one."""
    value = getattr(getattr(model, "config", None), "image_size", None)
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    return value if isinstance(value, int) and value > 0 else None


def input_size(config: RunConfig, loaded: LoadedModel) -> int:
    """The image side a run uses: a timm model's own (its pretrained config), else hparams.image_size."""
    processor = loaded.processor if isinstance(loaded.processor, dict) else {}
    return int(processor.get("image_size") or config.hparams.image_size)


class ImageClassification(ClassifierTask):
    name = "image_classification"
    channels_last = True

    def load_examples(self, config: RunConfig) -> ImageExamples:
        d = config.data
        if d.kind == "dataset_version":
            ex = labelled_version(config, "image")
            return ImageExamples(ex.items, ex.labels, ex.name, ex.summary(), split=ex.split, warnings=ex.warnings)
        if d.kind == "image_table":
            return _image_table_examples(config)
        from tunedesk.engine.data import scan_image_folder
        from tunedesk.engine.data.images import split_folders

        parts = split_folders(d.path)
        if parts:
            return _split_folder_examples(config, parts)
        items, report = scan_image_folder(d.path, max_items=d.max_items)
        return ImageExamples(
            [it.path for it in items],
            [it.label for it in items],
            Path(d.path).name,
            report.summary(),
            warnings=report_warnings(report),
        )

    def build_model(self, config: RunConfig, label_names: list[str], device: str = "cpu") -> LoadedModel:
        if config.model.source == "torchvision":
            loaded = build_torchvision_classifier(config.model, label_names, device=device)
            loaded.processor = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
            return loaded
        if config.model.source == "timm" or is_timm_model(config.model.name_or_path):
            return build_timm_classifier(config.model, label_names, device=device)  # mean/std/size: its own
        loaded = build_hf_classifier(config.model, label_names, image=True, device=device)
        loaded.processor = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        if device != "meta":
            try:
                from transformers import AutoImageProcessor

                proc = AutoImageProcessor.from_pretrained(
                    loaded.path, local_files_only=True, trust_remote_code=config.model.trust_remote_code
                )
                loaded.processor = {"mean": tuple(proc.image_mean), "std": tuple(proc.image_std)}
            except (OSError, ValueError, AttributeError, TypeError):
                loaded.warnings.append("no image processor settings found: using ImageNet mean and std")
        side = _fixed_side(loaded.model)
        if side:  # ViT, DeiT, BEiT, Swin ...: position embeddings for one input size
            loaded.processor["image_size"] = side
        return loaded

    def prepare(self, config: RunConfig, loaded: LoadedModel, examples: ImageExamples) -> PreparedData:
        label_names = loaded.label_names
        index = {name: i for i, name in enumerate(label_names)}
        y = [index[label] for label in examples.labels]
        train_idx, val_idx = self.split(config, examples)
        mean, std = loaded.processor["mean"], loaded.processor["std"]
        size = input_size(config, loaded)
        warnings = list(examples.warnings or []) + split_warnings(
            examples.labels, train_idx, val_idx, examples.split is not None
        )
        if size != config.hparams.image_size:
            warnings.append(
                f"images are {size} px, the size this model was built for; hparams.image_size "
                f"{config.hparams.image_size} is not used"
            )
        train = ImageFiles([examples.paths[i] for i in train_idx], [y[i] for i in train_idx], size, mean, std)
        val = ImageFiles([examples.paths[i] for i in val_idx], [y[i] for i in val_idx], size, mean, std)
        return PreparedData(
            train=train,
            val=val,
            collate=None,
            label_names=label_names,
            name=examples.name,
            fingerprint=hash_examples(list(zip(examples.paths, examples.labels))),
            summary=examples.summary,
            warnings=warnings,
            train_labels=[y[i] for i in train_idx],
        )

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(batch["pixel_values"])
        return out if isinstance(out, torch.Tensor) else out.logits

    def predict(self, loaded: LoadedModel, images: list[str], image_size: int = 224) -> list[dict[str, float]]:
        # the same decoding, resize, centre crop and normalisation as training's evaluation view
        size = loaded.processor.get("image_size", image_size)
        files = ImageFiles(images, [0] * len(images), size, loaded.processor["mean"], loaded.processor["std"])
        model = loaded.model
        model.eval()
        device = next(model.parameters()).device
        x = torch.stack([files[i]["pixel_values"] for i in range(len(files))]).to(device)
        with torch.no_grad():
            probs = self.forward(model, {"pixel_values": x}).float().softmax(-1).cpu().tolist()
        return [dict(zip(loaded.label_names, p)) for p in probs]
