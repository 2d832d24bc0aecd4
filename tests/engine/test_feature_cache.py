"""Frozen-prefix feature cache and the decoded image cache: same results, rebuilt exactly when needed."""

from __future__ import annotations

import csv
import random

import pytest
import torch

from tests.fixtures.data import resnet18_last_stage_config, tiny_text_config


def _run(config):
    from tunedesk.engine.run.runner import execute

    logs: list[str] = []
    result = execute(config, listeners=[lambda e: logs.append(e.message) if e.kind == "LogMessage" else None])
    assert result.status == "completed", result.reason
    return result, logs


def _cache_note(logs: list[str]) -> str:
    return next(m for m in logs if m.startswith("feature cache:"))


def _text(model, csv, preset="head_only", cache=True, epochs=1):
    config = tiny_text_config(model, csv, epochs=epochs, feature_cache=cache, log_every=1)
    config.freeze.preset = preset
    config.freeze.last_n = 1
    return config


@pytest.mark.parametrize("preset", ["head_only", "last_n_blocks", "last_n_blocks, padded"])
def test_text_training_from_the_cache_matches_training_without_it(home, no_dropout_bert, text_csv, preset, tmp_path):
    """The tickets are all 8 tokens long, so their batches carry no mask; 'padded' drops 0-3 words of
    each text, so batches are padded and carry one."""
    if preset.endswith("padded"):
        rng = random.Random(1)
        with text_csv.open(encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        text_csv = tmp_path / "padded.csv"
        with text_csv.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(
                [rows[0]] + [[" ".join(t.split()[: 6 - rng.randint(0, 3)]), y] for t, y in rows[1:]]
            )
    preset = preset.split(",")[0]
    configs = [_text(no_dropout_bert, text_csv, preset, cache=c, epochs=2) for c in (False, True)]
    plain, plain_logs = _run(configs[0])
    cached, logs = _run(configs[1])
    assert _cache_note(plain_logs) == "feature cache: off (hparams.feature_cache)"
    note = _cache_note(logs)
    assert note.startswith("feature cache: used for training and validation"), note
    boundary = "classifier" if preset == "head_only" else "bert.encoder.layer.1"
    assert f"from {boundary} on" in note
    for key in ("val_loss", "val_accuracy", "val_macro_f1"):
        assert cached.metrics[key] == pytest.approx(plain.metrics[key], rel=1e-4, abs=1e-5)


def test_image_training_from_the_cache_matches_training_without_it(home, image_folder, tmp_path):
    def config(cache: bool):
        return resnet18_last_stage_config(image_folder, tmp_path, feature_cache=cache)

    plain, _ = _run(config(False))
    cached, logs = _run(config(True))
    assert "from layer4 on" in _cache_note(logs)
    for key in ("val_loss", "val_accuracy"):
        assert cached.metrics[key] == pytest.approx(plain.metrics[key], rel=1e-4, abs=1e-5)


def test_augmented_images_cache_only_validation(home, image_folder):
    from tunedesk.engine.config import DataSpec, FreezeSpec, HyperParams, ModelSpec, RunConfig

    config = RunConfig(
        task="image_classification",
        model=ModelSpec("resnet18", source="torchvision", pretrained=False),
        data=DataSpec(kind="image_folder", path=str(image_folder)),
        freeze=FreezeSpec(preset="head_only"),
        hparams=HyperParams(epochs=1, batch_size=8, image_size=32, augment=True),
        device="cpu",
    )
    _, logs = _run(config)
    assert _cache_note(logs).startswith("feature cache: used for validation (training images are augmented")


def _built(logs: list[str]) -> int:
    return sum(1 for m in logs if m.startswith("computing the frozen layers' output"))


def test_the_cache_is_reused_and_rebuilt_exactly_when_model_plan_or_data_change(
    home, no_dropout_bert, text_csv, tmp_path
):
    _, first = _run(_text(no_dropout_bert, text_csv))
    assert _built(first) == 2  # validation and training
    _, again = _run(_text(no_dropout_bert, text_csv))
    assert _built(again) == 0 and "reused from an earlier run" in _cache_note(again)

    _, other_plan = _run(_text(no_dropout_bert, text_csv, preset="last_n_blocks"))
    assert _built(other_plan) == 2

    fewer = tmp_path / "fewer.csv"
    lines = text_csv.read_text(encoding="utf-8").splitlines()
    fewer.write_text("\n".join(lines[:-3]) + "\n", encoding="utf-8")
    _, other_data = _run(_text(no_dropout_bert, fewer))
    assert _built(other_data) >= 1

    import shutil

    from safetensors.torch import load_file, save_file

    changed = tmp_path / "changed-model"
    shutil.copytree(no_dropout_bert, changed)
    weights = load_file(changed / "model.safetensors")
    key = next(k for k in weights if "embeddings.word_embeddings" in k)
    weights[key] = weights[key] + 0.01
    save_file(weights, changed / "model.safetensors")
    _, other_model = _run(_text(changed, text_csv))
    assert _built(other_model) == 2

    _, unchanged = _run(_text(no_dropout_bert, text_csv))
    assert _built(unchanged) == 0


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_a_partial_or_corrupt_cache_is_rebuilt_not_used(home, no_dropout_bert, text_csv, damage):
    plain, _ = _run(_text(no_dropout_bert, text_csv))
    files = sorted((home / "cache" / "features").glob("*/features.bin"))
    assert len(files) == 2
    for f in files:
        data = bytearray(f.read_bytes())
        if damage == "truncate":
            f.write_bytes(bytes(data[: len(data) // 2]))
        elif damage == "flip":
            data[len(data) // 3] ^= 0xFF
            f.write_bytes(bytes(data))
        else:
            (f.parent / "manifest.json").write_text("{not json", encoding="utf-8")
    again, logs = _run(_text(no_dropout_bert, text_csv))
    assert _built(logs) == 2
    assert again.metrics["val_loss"] == pytest.approx(plain.metrics["val_loss"], rel=1e-5)
    _, reused = _run(_text(no_dropout_bert, text_csv))
    assert _built(reused) == 0


def test_decoded_images_are_reused_and_a_damaged_cache_is_rebuilt(tmp_path, image_folder):
    from tunedesk.engine.data import scan_image_folder
    from tunedesk.engine.data.decoded import decoded_images

    items, _ = scan_image_folder(image_folder)
    paths = [it.path for it in items]
    cpu = torch.device("cpu")
    first = decoded_images(paths, 32, tmp_path, "fp", cpu, workers=0)
    pixels = first.array.clone()
    assert first.built and first.array.shape == (len(paths), 3, 36, 36) and first.array.dtype == torch.uint8
    red = [i for i, it in enumerate(items) if it.label == "red"][0]
    assert first.array[red, 0].float().mean() > first.array[red, 2].float().mean() + 100
    again = decoded_images(paths, 32, tmp_path, "fp", cpu, workers=0)
    assert not again.built and torch.equal(again.array, first.array)
    assert decoded_images(paths, 48, tmp_path, "fp", cpu, workers=0).built  # another size, another cache
    data = first.folder / "images.u8"
    raw = bytearray(data.read_bytes())
    raw[10] ^= 0xFF
    data.write_bytes(bytes(raw))
    rebuilt = decoded_images(paths, 32, tmp_path, "fp", cpu, workers=0)
    assert rebuilt.built and torch.equal(rebuilt.array, pixels)


def test_device_augmentation_is_seeded_and_keeps_the_evaluation_view_exact():
    from tunedesk.engine.data.decoded import device_images

    x = torch.randint(0, 256, (4, 3, 36, 36), dtype=torch.uint8)
    view = device_images(x, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert torch.allclose(view * 255, x[:, :, 2:34, 2:34].float())
    r = torch.rand(4, 5, generator=torch.Generator().manual_seed(1))
    a = device_images(x, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), r)
    b = device_images(x, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), r)
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b)
    flip_only = torch.tensor([[1.0, 0.5, 0.5, 0.5, 0.0]])  # the whole square, no offset, flipped
    flipped = device_images(x[:1], 36, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), flip_only) * 255
    assert torch.allclose(flipped, x[:1].flip(-1).float(), atol=1e-3)


def test_gpu_decoding_is_only_tried_on_a_cuda_device(tmp_path, image_folder, monkeypatch):
    from tunedesk.engine.data import decoded

    called = []
    monkeypatch.setattr(decoded, "_decode_cuda", lambda *a, **k: called.append(1) or 0)
    items = [str(p) for p in sorted(image_folder.rglob("*.png"))]
    decoded.decoded_images(items, 32, tmp_path, "x", torch.device("cpu"), workers=0)
    assert not called


def test_input_workers_follow_the_machine(monkeypatch):
    import os

    from tunedesk.engine.devices import input_workers

    assert input_workers(3, "cuda") == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    assert input_workers(None, "cuda") == 14
    assert input_workers(None, "cpu") == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert input_workers(None, "cpu") == 0
    random.seed(0)


def test_frozen_embeddings_alone_are_not_cached(home, no_dropout_bert, text_csv):
    from tunedesk.engine.config import FreezeRule

    config = _text(no_dropout_bert, text_csv, preset="all")
    config.freeze.rules = [FreezeRule("@embeddings", False)]
    _, logs = _run(config)
    assert _cache_note(logs).startswith("feature cache: not used, no block is frozen")


def test_a_text_batch_is_cut_to_its_longest_text_rounded_up_and_contiguous():
    from tunedesk.engine.data.tensors import TokenTensors

    rows = [[1] * n for n in (3, 11, 5, 17, 2)]
    ds = TokenTensors({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]}, [0, 1, 0, 1, 0])
    stored = ds.stored()
    for idx, multiple, width in [([0, 2], 1, 5), ([0, 2], 8, 8), ([1, 4], 8, 16), ([3], 8, 17), ([0, 1], 16, 16)]:
        out = ds.batch(idx, stored, torch.tensor(idx), multiple)
        assert out["input_ids"].shape == (len(idx), width)  # never wider than the longest stored text (17)
        assert out["input_ids"].is_contiguous()
        if all(len(rows[i]) >= width for i in idx):  # no padding: no mask, as the model's own "no padding"
            assert "attention_mask" not in out
            continue
        assert out["attention_mask"].is_contiguous()
        for row, i in enumerate(idx):
            assert int(out["attention_mask"][row].sum()) == len(rows[i])
    assert torch.equal(out["labels"], torch.tensor([0, 1]))
    full = ds.batch([3], stored, torch.tensor([3]), 8)
    assert "attention_mask" not in full and full["input_ids"].shape == (1, 17)
    assert "attention_mask" in ds.batch([1, 3], stored, torch.tensor([1, 3]), 1)  # 11 of 17: padded


def test_one_cuda_graph_per_step_says_where_it_does_not_apply():
    from types import SimpleNamespace

    from tunedesk.engine.run.graphed import GraphedStep

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    fixed = SimpleNamespace(split=SimpleNamespace(variable_dim=False), train_cached=True)
    texts = SimpleNamespace(split=SimpleNamespace(variable_dim=True), train_cached=True)
    uncached = SimpleNamespace(split=None, train_cached=False)
    assert GraphedStep.reason_not(True, cuda, fixed, 1, "bf16", False) is None
    assert GraphedStep.reason_not(True, cuda, fixed, 1, "fp32", False) is None
    cases = {
        "hparams.cuda_graph": (False, cuda, fixed, 1, "bf16", False),
        "needs a CUDA GPU": (True, cpu, fixed, 1, "fp32", False),
        "cached features": (True, cuda, uncached, 1, "bf16", False),
        "varying length": (True, cuda, texts, 1, "bf16", False),
        "accumulation": (True, cuda, fixed, 2, "bf16", False),
        "fp16": (True, cuda, fixed, 1, "fp16", False),
        "several processes": (True, cuda, fixed, 1, "bf16", True),
    }
    for words, args in cases.items():
        reason = GraphedStep.reason_not(*args)
        assert reason is not None and words in reason, (words, reason)


def test_cpu_runs_from_the_cache_train_eagerly(home, no_dropout_bert, text_csv):
    _result, logs = _run(_text(no_dropout_bert, text_csv))
    assert not any("CUDA graph" in m for m in logs)  # nothing to say on a CPU: graphs are a GPU matter


def test_an_optimizer_state_saved_by_a_gpu_run_loads_and_steps_on_a_cpu():
    import copy

    from tunedesk.engine.run.checkpoint import load_optimizer

    w = torch.nn.Parameter(torch.ones(4))
    first = torch.optim.AdamW([w], lr=0.1)
    w.grad = torch.ones(4)
    first.step()
    for flags in ({"fused": True, "capturable": True}, {"capturable": True}):  # as GPU runs write them
        saved = copy.deepcopy(first.state_dict())
        saved["param_groups"][0].update(flags)
        again = torch.optim.AdamW([w], lr=0.1)
        load_optimizer(again, saved)
        assert not again.param_groups[0]["capturable"] and not again.param_groups[0]["fused"]
        w.grad = torch.ones(4)
        again.step()  # the unfused AdamW refuses capturable=True for CPU parameters
        assert float(again.state[w]["step"]) == 2.0


def test_a_plan_that_trains_everything_is_not_traced_for_a_cut():
    from tunedesk.engine.run import feature_cache as fc

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    trainable = {n: True for n, _ in model.named_parameters()}

    def run(_n, _longer):
        raise AssertionError("the model must not run")

    assert fc.find_split(model, trainable, run) == (None, "every layer trains")
