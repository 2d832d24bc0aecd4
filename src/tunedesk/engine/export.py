"""Export a run's fine-tuned model so it works without TuneDesk.

* ``hf``: a Hugging Face folder (config.json with the label names, model.safetensors, the tokenizer or
  an image processor matching TuneDesk's evaluation transform) that ``AutoModelFor...from_pretrained(dir,
  local_files_only=True)`` loads offline and that predicts what TuneDesk predicts.
* ``torchvision``: model.safetensors + tunedesk_model.json (architecture, class names, image size,
  mean/std) + README.md with the few lines that load it.
* ``timm``: timm's own Hugging Face layout (config.json with ``architecture``, ``pretrained_cfg`` holding
  the class names, mean/std and input size, model.safetensors) that ``timm.create_model(architecture,
  pretrained=True, num_classes=N, pretrained_cfg_overlay=dict(file=".../model.safetensors"))`` loads offline.
* ``onnx``: model.onnx (+ label names and tokenizer / preprocessing settings), when the ``onnx``
  package is installed and torch's exporter supports the model.
* ``tensorboard``: the run's recorded history as TensorBoard event files (``run.tensorboard``).
* causal-LM runs go through ``export_lm.export_lm_run``: ``merged`` (the default; a plain Hugging Face
  folder) or ``adapter`` (a PEFT LoRA adapter).

The export is written to a temporary folder next to the target and renamed at the end, so a failed
export never leaves half a model behind. Exports always come from the run's *best* checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.files import META_FILE, MODEL_FILE

if TYPE_CHECKING:
    from tunedesk.engine.models import LoadedModel
    from tunedesk.engine.tasks.base import Task

FORMATS = ("auto", "hf", "torchvision", "timm", "onnx", "merged", "adapter", "tensorboard")
LM_FORMATS = {"auto": "merged", "hf": "merged", "merged": "merged", "adapter": "adapter"}  # causal_lm runs
TORCHVISION_META = "tunedesk_model.json"
RESIZE_RATIO = 1.143  # TuneDesk's evaluation transform: resize the short side to size * 1.143, crop size


@dataclass
class BestCheckpoint:
    """Everything an export needs about one run's best weights."""

    run: dict[str, Any]
    folder: Path
    meta: dict[str, Any]
    config: Any  # RunConfig

    @property
    def kind(self) -> str:
        source = self.config.model.source
        return self.meta.get("kind") or (source if source in ("torchvision", "timm") else "hf")

    @property
    def label_names(self) -> list[str]:
        return list(self.meta.get("label_names") or [])


def find_best(run_id: int, home: str | os.PathLike[str] | None = None) -> BestCheckpoint:
    """The run's best checkpoint, or a TuneDeskError saying why there is none and what to do."""
    from tunedesk.engine.config import RunConfig
    from tunedesk.engine.files import CheckpointError, verify
    from tunedesk.engine.paths import home_dir
    from tunedesk.engine.run.runner import open_store
    from tunedesk.engine.store.history import run_config
    from tunedesk.engine.store.resolved import resolved

    store = open_store(home_dir(home))
    try:
        store.mark_interrupted()
        run = store.get_run(run_id)
        checkpoints = store.checkpoints(run_id)
    finally:
        store.close()
    best = checkpoints.get("best")
    if best is None:
        status = run["status"]
        if status == "failed":
            raise TuneDeskError(
                f"run {run_id} failed before its first checkpoint, so it has no model to export",
                "fix the problem shown in the run's log and train it again",
            )
        if status in ("queued", "running"):
            raise TuneDeskError(
                f"run {run_id} has not finished its first epoch yet, so there is no model to export",
                "wait for its first validation, then export",
            )
        raise TuneDeskError(
            f"run {run_id} ({status}) has no best checkpoint: it ended before its first validation",
            "resume it (`tunedesk runs resume ID`) or train it again, then export",
        )
    folder = Path(best["path"])
    if not (folder / MODEL_FILE).is_file():
        raise TuneDeskError(
            f"the best checkpoint of run {run_id} is missing from disk ({folder / MODEL_FILE})",
            "the run's files were moved or deleted; train the run again to export it",
        )
    try:
        verify(folder, required=(MODEL_FILE,))  # a damaged file must not be exported with the run's score
    except CheckpointError as exc:
        raise TuneDeskError(
            f"the best checkpoint of run {run_id} cannot be exported: {exc.message}",
            "train the run again (or resume it) to write a new best checkpoint",
        ) from None
    meta: dict[str, Any] = {}
    if (folder / META_FILE).is_file():
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
    config = RunConfig.from_dict(run_config(run))
    res = resolved(run)
    meta.setdefault("label_names", res.label_names or [])
    meta.setdefault("architecture", res.architecture)
    meta.setdefault("source_path", run.get("model_path"))
    if not meta["label_names"]:
        raise TuneDeskError(
            f"run {run_id}'s checkpoint does not record its class names",
            "train the run again with this TuneDesk version",
        )
    return BestCheckpoint(run, folder, meta, config)


def load_best_model(
    run_id: int, home: str | os.PathLike[str] | None = None
) -> tuple[BestCheckpoint, tuple[Task, LoadedModel]]:
    """(task, LoadedModel) with the run's best weights, built the way TuneDesk built it for training,
    on the CPU: what the app uses for predictions from a finished run."""
    best = find_best(run_id, home)
    return best, _engine_model(best)


def _engine_model(best: BestCheckpoint) -> tuple[Task, LoadedModel]:
    import copy

    from safetensors.torch import load_model

    from tunedesk.engine import tasks

    config = copy.deepcopy(best.config)
    config.model.pretrained = False  # every weight comes from the checkpoint: skip loading the base
    if best.kind in ("hf", "timm") and best.meta.get("source_path"):
        config.model.name_or_path = best.meta["source_path"]
    task = tasks.get(config.task)
    loaded = task.build_model(config, best.label_names)
    loaded.warnings.clear()
    try:
        load_model(loaded.model, str(best.folder / MODEL_FILE), strict=True, device="cpu")
    except (RuntimeError, OSError, ValueError) as exc:
        raise TuneDeskError(
            f"the best checkpoint in {best.folder} does not fit the run's model ({str(exc).splitlines()[0]})",
            "the base model files changed since the run; train it again",
        ) from exc
    loaded.model.eval()
    loaded.pretrained = True
    return task, loaded


# ---- export -----------------------------------------------------------------------------------------


def export_run(
    run_id: int, directory: str | os.PathLike[str], fmt: str = "auto", home: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Export run ``run_id``'s best model to ``directory`` (new or empty); returns
    ``{"path", "format", "files", "run_id", "label_names"}``."""
    if fmt not in FORMATS:
        raise TuneDeskError(f"unknown export format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
    target = Path(directory).expanduser().resolve()
    _check_target(target)
    if fmt == "tensorboard":  # the run's history (curves, evaluations, settings), not its weights
        from tunedesk.engine.run.tensorboard import export_run as export_events

        return export_events(run_id, target, home)
    if _run_task(run_id, home) == "causal_lm":
        return _export_lm(run_id, target, fmt, home)
    if fmt in ("merged", "adapter"):
        raise TuneDeskError(f"{fmt!r} is an export format for language-model runs", "use hf, torchvision or onnx")
    best = find_best(run_id, home)
    kind = best.kind
    if fmt == "auto":
        fmt = kind if kind in ("torchvision", "timm") else "hf"
    if "timm" in (fmt, kind) and fmt not in (kind, "onnx"):
        what = {"hf": "a Hugging Face", "torchvision": "a torchvision", "timm": "a timm"}.get(kind, "a")
        raise TuneDeskError(
            f"run {run_id} fine-tuned {what} model, which does not export in the {fmt} format",
            f"export with --format {kind} (or onnx)",
        )
    if fmt == "hf" and kind == "torchvision":
        raise TuneDeskError(
            f"run {run_id} fine-tuned the torchvision model {best.meta.get('architecture')}, "
            "which has no Hugging Face format",
            "export with --format torchvision (or onnx)",
        )
    if fmt == "torchvision" and kind != "torchvision":
        raise TuneDeskError(
            f"run {run_id} fine-tuned a Hugging Face model, not a torchvision one", "export with --format hf (or onnx)"
        )
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise TuneDeskError(
            "ONNX export needs the 'onnx' package, which is not installed",
            "pip install onnx  (then export again), or export as hf / torchvision",
        )

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".export", dir=target.parent))
    try:
        if fmt == "hf":
            _export_hf(best, tmp)
        elif fmt == "torchvision":
            _export_torchvision(best, tmp)
        elif fmt == "timm":
            _export_timm(best, tmp)
        else:
            _export_onnx(best, tmp)
        if target.exists():
            target.rmdir()  # empty (checked above)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    return {"path": str(target), "format": fmt, "files": files, "run_id": run_id, "label_names": best.label_names}


def _run_task(run_id: int, home: str | os.PathLike[str] | None) -> str:
    from tunedesk.engine.paths import home_dir
    from tunedesk.engine.run.runner import open_store

    store = open_store(home_dir(home))
    try:
        return str(store.get_run(run_id).get("task") or "")
    finally:
        store.close()


def _export_lm(run_id: int, target: Path, fmt: str, home: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Causal-LM runs export through ``export_lm``: ``merged`` (a plain Hugging Face folder, the default)
    or ``adapter`` (a PEFT LoRA adapter)."""
    kind = LM_FORMATS.get(fmt)
    if kind is None:
        raise TuneDeskError(
            f"run {run_id} is a language model, which exports as merged or adapter (not {fmt})",
            "use --format merged (a Hugging Face folder) or --format adapter (a LoRA adapter)",
        )
    from tunedesk.engine.lm.export import export_lm_run

    info = dict(export_lm_run(run_id, target, fmt=kind, home=home))
    path = Path(info.get("path") or target)
    info["path"] = str(path)
    info.setdefault("format", kind)
    info.setdefault("run_id", run_id)
    info.setdefault("label_names", [])
    info["files"] = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    return info


def _check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise TuneDeskError(f"{target} is a file, not a folder", "choose a new or empty folder to export into")
    if target.is_dir() and any(target.iterdir()):
        raise TuneDeskError(
            f"{target} is not empty", "choose a new or empty folder, so no file of yours is overwritten"
        )


def _copy_code_files(source: Path, out: Path) -> None:
    """Models that need their own code (trust_remote_code) keep it next to the weights."""
    for f in source.glob("*.py"):
        shutil.copy2(f, out / f.name)


def _hf_model(best: BestCheckpoint) -> Any:
    """The Hugging Face model with the best weights, its config carrying the label names."""
    import transformers
    from safetensors.torch import load_model
    from transformers import AutoConfig

    from tunedesk.engine.models import quiet_transformers

    quiet_transformers()
    source = Path(best.meta.get("source_path") or "")
    if not (source / "config.json").is_file():
        raise TuneDeskError(
            f"the base model folder of this run is gone ({source})",
            "put the model back at that path (its config and tokenizer are needed), then export",
        )
    labels = best.label_names
    id2label = dict(enumerate(labels))
    trust = bool(best.config.model.trust_remote_code)
    config = AutoConfig.from_pretrained(
        str(source),
        local_files_only=True,
        trust_remote_code=trust,
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    image = best.config.task == "image_classification"
    auto = transformers.AutoModelForImageClassification if image else transformers.AutoModelForSequenceClassification
    model = auto.from_config(config, trust_remote_code=trust)
    if not image and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = getattr(model.config, "eos_token_id", None)
    try:
        load_model(model, str(best.folder / MODEL_FILE), strict=True, device="cpu")
    except (RuntimeError, OSError, ValueError) as exc:
        raise TuneDeskError(
            f"the best checkpoint does not fit {source.name} ({str(exc).splitlines()[0]})",
            "the base model files changed since the run; train it again",
        ) from exc
    model.eval()
    return model, source, image


def _export_hf(best: BestCheckpoint, out: Path) -> None:

    if (best.folder / "config.json").is_file():  # tasks that save a complete HF folder as their best
        for f in best.folder.iterdir():
            if f.is_file() and f.name != META_FILE and not f.name.startswith("."):
                shutil.copy2(f, out / f.name)
        _write_readme(best, out, "hf")
        return
    model, source, image = _hf_model(best)
    model.save_pretrained(str(out), safe_serialization=True)
    if best.config.model.trust_remote_code:
        _copy_code_files(source, out)
    if image:
        _image_processor(best).save_pretrained(str(out))
    else:
        from tunedesk.engine.tasks.text_classification import load_tokenizer

        load_tokenizer(str(source), best.config.model.trust_remote_code).save_pretrained(str(out))
    _write_readme(best, out, "hf")


def _image_settings(best: BestCheckpoint) -> dict[str, Any]:
    """Image size and normalisation exactly as TuneDesk evaluated the run."""
    from tunedesk.engine.tasks.image_classification import IMAGENET_MEAN, IMAGENET_STD

    mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    size = int(best.config.hparams.image_size)
    if best.kind == "timm":  # the model's own pretrained config, as the run used it (a meta build reads no weights)
        from tunedesk.engine.timm_models import build_timm_classifier

        settings = build_timm_classifier(_spec_of(best), best.label_names, device="meta").processor
        mean, std = list(settings["mean"]), list(settings["std"])
        size = int(settings.get("image_size") or size)
    if best.kind == "hf":
        try:
            from transformers import AutoImageProcessor

            proc = AutoImageProcessor.from_pretrained(
                str(best.meta.get("source_path")),
                local_files_only=True,
                trust_remote_code=bool(best.config.model.trust_remote_code),
            )
            mean, std = list(proc.image_mean), list(proc.image_std)
        except (OSError, ValueError, AttributeError, TypeError):
            pass
    return {"image_size": size, "resize_shorter_side": int(size * RESIZE_RATIO), "mean": mean, "std": std}


def _spec_of(best: BestCheckpoint) -> Any:
    import copy

    spec = copy.deepcopy(best.config.model)
    if best.meta.get("source_path"):
        spec.name_or_path = best.meta["source_path"]
    return spec


def _image_processor(best: BestCheckpoint) -> Any:
    """A processor that does TuneDesk's evaluation transform: shorter side to size*1.143 (bilinear),
    centre crop to size, scale to [0, 1], normalise."""
    from transformers import BitImageProcessor

    s = _image_settings(best)
    return BitImageProcessor(
        do_resize=True,
        size={"shortest_edge": s["resize_shorter_side"]},
        resample=2,
        do_center_crop=True,
        crop_size={"height": s["image_size"], "width": s["image_size"]},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=s["mean"],
        image_std=s["std"],
        do_convert_rgb=True,
    )


def _export_torchvision(best: BestCheckpoint, out: Path) -> None:

    shutil.copy2(best.folder / MODEL_FILE, out / MODEL_FILE)
    meta = {
        "format": "torchvision",
        "architecture": best.meta.get("architecture"),
        "num_classes": len(best.label_names),
        "class_names": best.label_names,
        "head_paths": best.meta.get("head_paths") or [],
        **_image_settings(best),
        "metrics": best.meta.get("metrics") or {},
        "exported_from_run": best.run["id"],
    }
    (out / TORCHVISION_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    _write_readme(best, out, "torchvision")


def _export_timm(best: BestCheckpoint, out: Path) -> None:
    from tunedesk.engine.timm_models import save_export

    _, loaded = _engine_model(best)
    settings = _image_settings(best)
    save_export(loaded.model, out, best.label_names, settings)
    meta = {
        "format": "timm",
        "architecture": best.meta.get("architecture"),
        "class_names": best.label_names,
        **settings,
        "metrics": best.meta.get("metrics") or {},
        "exported_from_run": best.run["id"],
    }
    (out / TORCHVISION_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    _write_readme(best, out, "timm")


def _export_onnx(best: BestCheckpoint, out: Path) -> None:
    import torch

    if best.kind in ("torchvision", "timm"):
        _, loaded = _engine_model(best)
        model, image = loaded.model, True
    else:
        model, source, image = _hf_model(best)
    model.eval()
    meta: dict[str, Any] = {"format": "onnx", "class_names": best.label_names, "exported_from_run": best.run["id"]}
    if image:
        settings = _image_settings(best)
        meta.update(settings, inputs=["pixel_values"])
        size = settings["image_size"]
        wrapper = _Logits(model, ("pixel_values",))
        args: tuple = (torch.zeros(1, 3, size, size),)
        names = ["pixel_values"]
        axes = {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}
    else:
        from tunedesk.engine.tasks.text_classification import load_tokenizer

        tokenizer = load_tokenizer(str(source), best.config.model.trust_remote_code)
        tokenizer.save_pretrained(str(out))
        enc = tokenizer(["an example text", "another one"], padding=True, return_tensors="pt")
        names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        wrapper = _Logits(model, tuple(names))
        args = tuple(enc[k] for k in names)
        axes = {k: {0: "batch", 1: "sequence"} for k in names}
        axes["logits"] = {0: "batch"}
        meta.update(inputs=names, max_length=best.config.hparams.max_length)
    try:
        torch.onnx.export(
            wrapper,
            args,
            str(out / "model.onnx"),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    except Exception as exc:
        raise TuneDeskError(
            f"torch's ONNX exporter does not support this model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})",
            "export in the hf or torchvision format instead",
        ) from exc
    (out / "tunedesk_onnx.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    _write_readme(best, out, "onnx")


def _logits_module():
    from torch import nn

    class Logits(nn.Module):
        def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
            super().__init__()
            self.model, self.names = model, names

        def forward(self, *inputs):
            out = (
                self.model(**dict(zip(self.names, inputs)))
                if self.names != ("pixel_values",)
                else self.model(inputs[0])
            )
            return out if hasattr(out, "shape") else out.logits

    return Logits


def _Logits(model, names):  # noqa: N802 - reads like the class it builds
    return _logits_module()(model, names)


# ---- README ------------------------------------------------------------------------------------------


def _write_readme(best: BestCheckpoint, out: Path, fmt: str) -> None:
    run = best.run
    metrics = best.meta.get("metrics") or {}
    score = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("val_") and isinstance(v, float))
    head = (
        f"# {run.get('name') or 'TuneDesk model'}\n\nFine-tuned with TuneDesk (run {run['id']}, "
        f"{run.get('task')}) from `{best.meta.get('source_path') or run.get('model_name')}` on "
        f"{run.get('dataset_name')}.\n\nClasses: {', '.join(best.label_names)}\n\n"
        + (f"Best validation: {score}\n\n" if score else "")
    )
    if fmt == "hf":
        image = best.config.task == "image_classification"
        auto = "AutoModelForImageClassification" if image else "AutoModelForSequenceClassification"
        proc = "AutoImageProcessor" if image else "AutoTokenizer"
        if image:
            use = (
                "from PIL import Image\n"
                'inputs = processor(images=Image.open("photo.jpg").convert("RGB"), return_tensors="pt")\n'
            )
        else:
            use = (
                f'inputs = processor(["your text here"], truncation=True, '
                f'max_length={best.config.hparams.max_length}, padding=True, return_tensors="pt")\n'
            )
        body = (
            "## Load it\n\n```python\nimport torch\n"
            f"from transformers import {auto}, {proc}\n\n"
            f'model = {auto}.from_pretrained(".", local_files_only=True).eval()\n'
            f'processor = {proc}.from_pretrained(".", local_files_only=True)\n{use}'
            "with torch.no_grad():\n    logits = model(**inputs).logits\n"
            "print(model.config.id2label[int(logits.argmax(-1)[0])])\n```\n\n"
            'Replace "." with this folder\'s path when you run the code elsewhere.\n'
        )
    elif fmt == "torchvision":
        body = (
            "## Load it\n\n```python\nimport json\n\nimport torch\nimport torchvision\n"
            "from PIL import Image\nfrom safetensors.torch import load_model\nfrom torchvision import transforms as T\n\n"
            f'meta = json.load(open("{TORCHVISION_META}"))\n'
            'model = torchvision.models.get_model(meta["architecture"], weights=None, num_classes=meta["num_classes"])\n'
            'load_model(model, "model.safetensors")\nmodel.eval()\n\n'
            'preprocess = T.Compose([T.Resize(meta["resize_shorter_side"]), T.CenterCrop(meta["image_size"]),\n'
            '                        T.ToTensor(), T.Normalize(meta["mean"], meta["std"])])\n'
            'x = preprocess(Image.open("photo.jpg").convert("RGB")).unsqueeze(0)\n'
            "with torch.no_grad():\n    probs = model(x).softmax(-1)[0]\n"
            'print(meta["class_names"][int(probs.argmax())])\n```\n'
        )
    elif fmt == "timm":
        body = (
            "## Load it\n\n```python\nimport json\n\nimport timm\nimport torch\nfrom PIL import Image\n\n"
            'cfg = json.load(open("config.json"))\n'
            'n = cfg["num_classes"]\n'
            'model = timm.create_model(cfg["architecture"], pretrained=True, num_classes=n,\n'
            '                          pretrained_cfg_overlay=dict(file="model.safetensors", num_classes=n)).eval()\n'
            "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))\n"
            'x = transform(Image.open("photo.jpg").convert("RGB")).unsqueeze(0)\n'
            "with torch.no_grad():\n    probs = model(x).softmax(-1)[0]\n"
            'print(cfg["label_names"][int(probs.argmax())])\n```\n\n'
            "Replace the file names with their full paths when you run the code elsewhere; "
            'timm.create_model("local-dir:" + folder, pretrained=True) loads it too.\n'
        )
    else:
        body = (
            "## Load it\n\n```python\nimport json\n\nimport onnxruntime as ort\n\n"
            'meta = json.load(open("tunedesk_onnx.json"))\n'
            'session = ort.InferenceSession("model.onnx")\n'
            '# inputs: see meta["inputs"]; text models ship their tokenizer files here too\n```\n'
        )
    (out / "README.md").write_text(head + body, encoding="utf-8")
