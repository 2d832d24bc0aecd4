"""Exports load without TuneDesk and predict exactly what TuneDesk predicts; bad requests are refused."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest

from tests.fixtures.data import make_texts, tiny_text_config
from tunedesk.engine.errors import TuneDeskError

pytestmark = pytest.mark.slow  # fine-tunes tiny models (seconds each)

TEXTS = ["refund for my invoice please", "login crash after the update", "parcel is late again",
         "change my password and email", "help"]  # fmt: skip


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, tiny_bert_dir):
    """One completed tiny-BERT run (2 epochs) in a module-private home."""
    import csv

    from tunedesk.engine.run.runner import execute

    base = tmp_path_factory.mktemp("export-text")
    data = base / "tickets.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(make_texts())
    home = base / "home"
    result = execute(tiny_text_config(tiny_bert_dir, data, epochs=2), home=home)
    assert result.status == "completed", result.reason
    return home, result.run_id


def _readme_code(folder: Path) -> str:
    text = (folder / "README.md").read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_hf_text_export_loads_offline_and_predicts_like_tunedesk(text_run, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunedesk.engine.export import export_run, load_best_model

    home, run_id = text_run
    info = export_run(run_id, tmp_path / "exported", home=home)
    out = Path(info["path"])
    assert info["format"] == "hf" and out == (tmp_path / "exported").resolve()
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "README.md"} <= set(info["files"])
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "account", "1": "billing", "2": "shipping", "3": "technical"}
    assert config["label2id"]["technical"] == 3
    assert config["architectures"] == ["BertForSequenceClassification"]

    model = AutoModelForSequenceClassification.from_pretrained(str(out), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    enc = tokenizer(TEXTS, truncation=True, max_length=128, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits.softmax(-1)

    _, (task, loaded) = load_best_model(run_id, home=home)
    expected = task.predict(loaded, TEXTS)
    for i, scores in enumerate(expected):
        exported = {model.config.id2label[j]: probs[i, j].item() for j in range(probs.shape[1])}
        assert exported == pytest.approx(scores, abs=1e-6)
        assert max(exported, key=exported.get) == max(scores, key=scores.get)

    # The README's snippet works as written (run from inside the folder).
    monkeypatch.chdir(out)
    namespace: dict = {}
    exec(_readme_code(out).replace("your text here", TEXTS[0]), namespace)
    first = max(expected[0], key=expected[0].get)
    assert namespace["model"].config.id2label[int(namespace["logits"].argmax(-1)[0])] == first


def test_export_refuses_a_folder_that_is_not_empty_and_wrong_formats(text_run, tmp_path):
    from tunedesk.engine.export import export_run

    home, run_id = text_run
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(TuneDeskError, match="not empty") as err:
        export_run(run_id, busy, home=home)
    assert "empty" in err.value.hint
    assert (busy / "keep.txt").read_text() == "mine"
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    with pytest.raises(TuneDeskError, match="is a file"):
        export_run(run_id, afile, home=home)
    with pytest.raises(TuneDeskError, match="not a torchvision") as err:
        export_run(run_id, tmp_path / "tv", fmt="torchvision", home=home)
    assert "--format hf" in err.value.hint
    with pytest.raises(TuneDeskError, match="unknown export format"):
        export_run(run_id, tmp_path / "x", fmt="keras", home=home)
    with pytest.raises(TuneDeskError, match="run 999 not found"):
        export_run(999, tmp_path / "y", home=home)
    # An empty folder is fine.
    (tmp_path / "empty").mkdir()
    assert export_run(run_id, tmp_path / "empty", home=home)["format"] == "hf"


def test_onnx_needs_the_onnx_package(text_run, tmp_path, monkeypatch):
    from tunedesk.engine import export

    monkeypatch.setattr(export.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(TuneDeskError, match="needs the 'onnx' package") as err:
        export.export_run(text_run[1], tmp_path / "onnx", fmt="onnx", home=text_run[0])
    assert "pip install onnx" in err.value.hint
    assert not (tmp_path / "onnx").exists()


def test_a_failed_export_leaves_nothing_behind(text_run, tmp_path, monkeypatch):
    from tunedesk.engine import export

    def boom(best, out):
        (out / "half.bin").write_bytes(b"x")
        raise TuneDeskError("disk full", "free some space")

    monkeypatch.setattr(export, "_export_hf", boom)
    with pytest.raises(TuneDeskError, match="disk full"):
        export.export_run(text_run[1], tmp_path / "out", home=text_run[0])
    assert list(tmp_path.iterdir()) == []


def _fake_run(home: Path, status: str, output_dir: Path | None = None) -> int:
    from tunedesk.engine.run.runner import open_store

    store = open_store(home)
    try:
        rid = store.create_run(
            config={"task": "text_classification", "model": {"name_or_path": "/m"}},
            name="x",
            task="text_classification",
            model_name="/m",
            model_path="/m",
            model_hash=None,
            dataset_name="d",
            dataset_hash=None,
            output_dir=str(output_dir or ""),
        )
        store.set_status(rid, "running")
        store.set_status(rid, status, error="boom" if status == "failed" else None)
        if output_dir is not None:
            store.set_checkpoint(rid, "best", str(output_dir / "best"), 5, 1)
    finally:
        store.close()
    return rid


def test_runs_without_a_usable_best_checkpoint_are_explained(home, tmp_path):
    from tunedesk.engine.export import export_run

    failed = _fake_run(home, "failed")
    with pytest.raises(TuneDeskError, match="failed before its first checkpoint"):
        export_run(failed, tmp_path / "a")
    stopped = _fake_run(home, "stopped")
    with pytest.raises(TuneDeskError, match="no best checkpoint") as err:
        export_run(stopped, tmp_path / "b")
    assert "resume" in err.value.hint
    gone = _fake_run(home, "completed", output_dir=tmp_path / "deleted-run")
    with pytest.raises(TuneDeskError, match="missing from disk"):
        export_run(gone, tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


# ---- images ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from PIL import Image

    rng = random.Random(0)
    root = tmp_path_factory.mktemp("export-images") / "images"
    for label, rgb in {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}.items():
        (root / label).mkdir(parents=True)
        for i in range(4):  # not square: resize + centre crop must match too
            colour = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in rgb)
            Image.new("RGB", (40 + 6 * i, 52), colour).save(root / label / f"{label}_{i}.png")
    return root


def _image_run(home: Path, images: Path, model) -> int:
    from tunedesk.engine.config import DataSpec, HyperParams, RunConfig
    from tunedesk.engine.run.runner import execute

    config = RunConfig(task="image_classification", model=model, data=DataSpec(kind="image_folder", path=str(images),
                       val_fraction=0.25), hparams=HyperParams(epochs=1, batch_size=3, image_size=32, learning_rate=1e-3),
                       device="cpu", seed=1)  # fmt: skip
    result = execute(config, home=home)
    assert result.status == "completed", result.reason
    return result.run_id


def test_hf_image_export_uses_tunedesks_evaluation_transform(images, tmp_path):
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTConfig, ViTModel

    from tunedesk.engine.config import ModelSpec
    from tunedesk.engine.export import export_run, load_best_model

    vit = tmp_path / "tiny-vit"
    torch.manual_seed(0)
    ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(vit)
    home = tmp_path / "home"
    run_id = _image_run(home, images, ModelSpec(str(vit), source="hf"))
    info = export_run(run_id, tmp_path / "out", home=home)
    assert "preprocessor_config.json" in info["files"]
    model = AutoModelForImageClassification.from_pretrained(info["path"], local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(info["path"], local_files_only=True)
    paths = sorted(str(p) for p in images.rglob("*.png"))
    with torch.no_grad():
        probs = model(
            **processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")
        ).logits.softmax(-1)
    _, (task, loaded) = load_best_model(run_id, home=home)
    for i, scores in enumerate(task.predict(loaded, paths, image_size=32)):
        assert {model.config.id2label[j]: probs[i, j].item() for j in range(3)} == pytest.approx(scores, abs=1e-5)


def test_torchvision_export_loads_with_its_readme_and_predicts_like_tunedesk(images, tmp_path, monkeypatch):
    from tunedesk.engine.config import ModelSpec
    from tunedesk.engine.export import export_run, load_best_model

    home = tmp_path / "home"
    run_id = _image_run(home, images, ModelSpec("mobilenet_v3_small", source="torchvision", pretrained=False))
    with pytest.raises(TuneDeskError, match="no Hugging Face format"):
        export_run(run_id, tmp_path / "hf", fmt="hf", home=home)
    info = export_run(run_id, tmp_path / "out", home=home)
    assert info["format"] == "torchvision"
    assert sorted(info["files"]) == ["README.md", "model.safetensors", "tunedesk_model.json"]
    out = Path(info["path"])
    meta = json.loads((out / "tunedesk_model.json").read_text())
    assert meta["architecture"] == "mobilenet_v3_small" and meta["class_names"] == ["blue", "green", "red"]
    assert meta["image_size"] == 32 and len(meta["mean"]) == 3

    photo = next(images.rglob("red_3.png"))
    shutil.copy(photo, out / "photo.jpg.png")
    monkeypatch.chdir(out)
    namespace: dict = {}
    exec(_readme_code(out).replace('"photo.jpg"', '"photo.jpg.png"'), namespace)
    _, (task, loaded) = load_best_model(run_id, home=home)
    expected = task.predict(loaded, [str(photo)], image_size=32)[0]
    got = dict(zip(meta["class_names"], namespace["probs"].tolist()))
    assert got == pytest.approx(expected, abs=1e-5)


def test_language_model_runs_export_through_export_lm(home, tmp_path, monkeypatch):
    from tunedesk.engine import export
    from tunedesk.engine.lm import export as export_lm
    from tunedesk.engine.run.runner import open_store

    store = open_store(home)
    rid = store.create_run(
        config={"task": "causal_lm"},
        name="lm",
        task="causal_lm",
        model_name="/m",
        model_path="/m",
        model_hash=None,
        dataset_name="d",
        dataset_hash=None,
    )
    store.close()
    calls = []

    def fake(run_id, directory, fmt="merged", home=None):
        Path(directory).mkdir()
        (Path(directory) / "config.json").write_text("{}")
        calls.append((run_id, fmt))
        return {"run_id": run_id, "path": str(directory), "format": fmt, "base_path": "/m"}

    monkeypatch.setattr(export_lm, "export_lm_run", fake)
    info = export.export_run(rid, tmp_path / "merged")
    assert calls == [(rid, "merged")] and info["files"] == ["config.json"] and info["format"] == "merged"
    export.export_run(rid, tmp_path / "adapter", fmt="adapter")
    assert calls[-1] == (rid, "adapter")
    with pytest.raises(TuneDeskError, match="exports as merged or adapter"):
        export.export_run(rid, tmp_path / "x", fmt="torchvision")
