"""timm models: listed from a fake Hugging Face cache, layer tree with stage presets, trained, exported, reloaded.

The model is timm's ``test_convnext`` (270k parameters) saved with ``timm.models.save_for_hf`` into a
hub-cache layout, as ``timm/...`` repositories arrive on a machine.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

timm = pytest.importorskip("timm")

import torch  # noqa: E402

from tests.fixtures.catalog import make_hf_repo  # noqa: E402
from tunedesk.engine import catalog, structure  # noqa: E402
from tunedesk.engine.config import DataSpec, FreezeSpec, HyperParams, ModelSpec, RunConfig  # noqa: E402
from tunedesk.engine.errors import ModelError  # noqa: E402

REPO = "timm/test_convnext.r160_in1k"


@pytest.fixture(scope="module")
def timm_cache(tmp_path_factory) -> tuple[Path, Path, torch.nn.Module]:
    root = tmp_path_factory.mktemp("timm")
    torch.manual_seed(0)
    model = timm.create_model("test_convnext", pretrained=False)
    saved = root / "saved"
    timm.models.save_for_hf(model, str(saved), safe_serialization=True)
    cache = root / "hf" / "hub"
    snapshot = make_hf_repo(cache, REPO, {f.name: f.read_bytes() for f in saved.iterdir()})
    return cache, snapshot, model


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from PIL import Image

    rng = random.Random(0)
    root = tmp_path_factory.mktemp("timm-images") / "images"
    for label, rgb in {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}.items():
        (root / label).mkdir(parents=True)
        for i in range(4):
            colour = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in rgb)
            Image.new("RGB", (40 + 4 * i, 44), colour).save(root / label / f"{label}_{i}.png")
    return root


def test_timm_model_in_the_hf_cache_is_listed_with_parameters_and_task(timm_cache):
    cache, snapshot, model = timm_cache
    catalog.clear_memo()
    entries = catalog.scan(catalog.CatalogRoots(hf_caches=[cache], scan_packages=False))
    entry = next(e for e in entries if e.id == f"hf:{REPO}")
    assert entry.problem is None and entry.usable
    assert entry.model_type == "timm" and entry.architecture == "test_convnext" and entry.family == "test"
    assert entry.task == "image_classification"
    assert entry.parameters == sum(p.numel() for p in model.parameters())
    assert entry.config_summary["image_size"] == 160 and entry.config_summary["num_labels"] == 1000
    assert catalog.resolve_model_path(REPO, roots=catalog.CatalogRoots(hf_caches=[cache])) == snapshot


def test_a_user_folder_with_a_timm_model_is_listed(timm_cache, tmp_path):
    _, snapshot, _ = timm_cache
    entries = list(catalog.scan_path(snapshot))
    assert [(e.model_type, e.task) for e in entries] == [("timm", "image_classification")]


def test_without_timm_the_entry_says_what_to_install(timm_cache, monkeypatch):
    import builtins

    from tunedesk.engine.catalog import params
    from tunedesk.engine.catalog import timm as catalog_timm

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm" or name.startswith("timm."):
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    cfg = json.loads((timm_cache[1] / "config.json").read_text())
    count, problem = params._count_timm(cfg)
    assert count is None and "pip install timm" in problem
    with pytest.raises(ModelError, match="timm package is not installed") as err:
        catalog_timm.create(cfg)
    assert "tunedesk[timm]" in err.value.hint


def test_layer_tree_has_stages_and_the_new_head(timm_cache):
    _, snapshot, _ = timm_cache
    loaded = structure.build_meta_model(snapshot, num_labels=3)
    assert loaded.kind == "timm" and loaded.head_paths == ["head.fc"]
    assert structure.task_of_model(loaded) == "image_classification"
    tree = structure.ModelTree.from_loaded(loaded)
    assert tree.blocks.paths == [f"stages.{i}" for i in range(len(loaded.model.stages))]
    head_only = tree.resolve(FreezeSpec(preset="head_only"))
    assert set(head_only.trainable_names) == {"head.fc.weight", "head.fc.bias"}
    last_stage = tree.resolve(FreezeSpec(preset="last_n_blocks", last_n=1))
    names = last_stage.trainable_names
    last = f"stages.{len(loaded.model.stages) - 1}."
    assert any(n.startswith(last) for n in names) and "head.fc.weight" in names
    assert not any(n.startswith(("stages.0.", "stem.")) for n in names)
    assert tree.has_batchnorm is False  # ConvNeXt normalises with LayerNorm


def test_timm_run_with_the_last_stage_trains_exports_and_reloads_in_timm(timm_cache, images, tmp_path):
    from tunedesk.engine.data.tensors import ImageFiles
    from tunedesk.engine.export import export_run, load_best_model
    from tunedesk.engine.run.runner import execute

    _, snapshot, base = timm_cache
    home = tmp_path / "home"
    config = RunConfig(
        task="image_classification",
        model=ModelSpec(str(snapshot), source="timm"),
        data=DataSpec(kind="image_folder", path=str(images), val_fraction=0.25),
        freeze=FreezeSpec(preset="last_n_blocks", last_n=1),
        hparams=HyperParams(epochs=1, batch_size=3, learning_rate=1e-3, max_steps=1),
        device="cpu",
        seed=1,
    )
    result = execute(config, home=home)
    assert result.status == "completed", result.reason
    _, (task, loaded) = load_best_model(result.run_id, home)
    assert loaded.kind == "timm" and loaded.processor["image_size"] == 160
    assert loaded.processor["mean"] == (0.5, 0.5, 0.5)  # from the model's pretrained config, not ImageNet's
    # the first stage stayed as pre-trained, the last one moved
    trained = loaded.model.state_dict()
    before = base.state_dict()
    assert torch.equal(trained["stages.0.blocks.0.conv_dw.weight"], before["stages.0.blocks.0.conv_dw.weight"])
    last = len(loaded.model.stages) - 1
    key = next(k for k in trained if k.startswith(f"stages.{last}.") and k.endswith("weight"))
    assert not torch.equal(trained[key], before[key])

    out = tmp_path / "export"
    info = export_run(result.run_id, out, home=home)
    assert info["format"] == "timm" and {"config.json", "model.safetensors", "README.md"} <= set(info["files"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "test_convnext" and cfg["num_classes"] == 3
    assert cfg["label_names"] == loaded.label_names
    n = cfg["num_classes"]
    reloaded = timm.create_model(
        cfg["architecture"],
        pretrained=True,
        num_classes=n,
        pretrained_cfg_overlay=dict(file=str(out / "model.safetensors"), num_classes=n),
    ).eval()
    files = ImageFiles(
        sorted(map(str, images.rglob("*.png")))[:4], [0] * 4, 160, *(loaded.processor[k] for k in ("mean", "std"))
    )
    x = torch.stack([files[i]["pixel_values"] for i in range(4)])  # the evaluation view training used
    with torch.no_grad():
        assert torch.equal(reloaded(x), task.forward(loaded.model, {"pixel_values": x}))
    by_dir = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert by_dir.pretrained_cfg["mean"] == [0.5, 0.5, 0.5]
    with torch.no_grad():
        assert torch.equal(by_dir(x), reloaded(x))


def test_a_timm_folder_is_recognised_without_source_timm(timm_cache, images, tmp_path):
    from tunedesk.engine import tasks

    config = RunConfig(task="image_classification", model=ModelSpec(str(timm_cache[1])))
    loaded = tasks.get("image_classification").build_model(config, ["a", "b"], device="meta")
    assert loaded.kind == "timm" and loaded.model.get_classifier().out_features == 2


def test_timm_batchnorm_is_handled_as_for_torchvision(tmp_path):
    """timm's BatchNormAct2d is a BatchNorm2d: frozen stages keep their running statistics."""
    from tunedesk.engine import freezing
    from tunedesk.engine.timm_models import build_timm_classifier

    torch.manual_seed(0)
    timm.models.save_for_hf(timm.create_model("test_resnet", pretrained=False), str(tmp_path), safe_serialization=True)
    loaded = build_timm_classifier(ModelSpec(str(tmp_path), source="timm"), ["a", "b"])
    assert loaded.pretrained and loaded.head_paths == ["fc"]
    tree = structure.ModelTree.from_loaded(loaded)
    assert tree.has_batchnorm and tree.blocks.paths == ["layer1", "layer2", "layer3", "layer4"]
    plan = tree.resolve(FreezeSpec(preset="last_n_blocks", last_n=1))
    freezing.apply(loaded.model, plan)
    freezing.set_train_mode(loaded.model)
    assert not loaded.model.layer1[0].bn1.training and loaded.model.layer4[0].bn1.training
    freezing.set_train_mode(loaded.model, train_batchnorm_stats=True)
    assert loaded.model.layer1[0].bn1.training
