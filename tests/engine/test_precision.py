"""What ``precision = "auto"`` means on each device, a bf16 run on the CPU, and AdamW's fused kernel there."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.fixtures.data import tiny_text_config
from tunedesk.engine import devices


@pytest.mark.native_bf16
def test_auto_is_bf16_on_a_cpu_with_native_bf16_and_fp32_without(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert devices.select_precision("auto", cpu) == "bf16"
    assert devices.auto_precision("mps") == "fp32"  # Apple GPUs keep fp32
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert devices.select_precision("auto", cpu) == "fp32"
    # an explicit choice is the user's on any CPU (bf16 is emulated where it is not native: slower, not wrong)
    assert devices.select_precision("bf16", cpu) == "bf16"
    assert devices.select_precision("fp32", cpu) == "fp32"


@pytest.mark.native_bf16
def test_cpu_bf16_probe_answers_a_plain_bool_even_when_a_probe_fails(monkeypatch):
    assert isinstance(devices.cpu_has_bf16(), bool)

    def broken() -> bool:
        raise RuntimeError("no cpuinfo here")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    assert devices.cpu_has_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert devices.cpu_has_bf16() is True


@pytest.mark.native_bf16
def test_memory_estimate_follows_what_auto_picks_on_the_cpu(monkeypatch):
    from transformers import BertConfig, BertForSequenceClassification

    from tunedesk.engine import freezing
    from tunedesk.engine.config import FreezeSpec

    model = BertForSequenceClassification(
        BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    )
    plan = freezing.resolve(model, FreezeSpec("all"), head_paths=["classifier"])

    def estimate(precision: str) -> int:
        return freezing.estimate_memory(model, plan, batch_size=8, precision=precision).total

    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert estimate("auto") == estimate("bf16") != estimate("fp32")
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert estimate("auto") == estimate("fp32")


@pytest.mark.native_bf16
def test_a_text_run_in_bf16_on_the_cpu_trains_and_says_so(home, tiny_bert_dir, text_csv, monkeypatch):
    from tunedesk.engine.run.runner import execute

    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    config = tiny_text_config(tiny_bert_dir, text_csv, epochs=3)
    config.precision = "auto"
    events: list = []
    result = execute(config, home=home, listeners=[events.append])
    assert result.status == "completed", result.reason
    started = next(e for e in events if e.kind == "RunStarted")
    assert (started.device, started.precision) == ("cpu", "bf16")
    losses = [e.loss for e in events if e.kind == "StepLogged"]
    assert losses and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_a_cpu_run_steps_with_fused_adamw_and_resumes_with_it(home, tiny_bert_dir, text_csv):
    """The unfused AdamW passes over every parameter about ten times per step (7x slower on the CPU for
    MiniLM); the run's optimizer, and so its resumable checkpoint, is the fused one."""
    from tunedesk.engine.devices import fused_optimizer
    from tunedesk.engine.run.checkpoint import STATE_FILE
    from tunedesk.engine.run.runner import execute

    assert fused_optimizer("cpu") and fused_optimizer("cuda") and not fused_optimizer("mps")
    result = execute(tiny_text_config(tiny_bert_dir, text_csv, epochs=1), home=home)
    assert result.status == "completed", result.reason
    saved = torch.load(Path(result.output_dir) / "last" / STATE_FILE, map_location="cpu", weights_only=True)
    assert all(group["fused"] for group in saved["optimizer"]["param_groups"])


# ---- image models on a CPU with native bf16: a probe picks the faster precision ----------------------------


def test_the_probe_keeps_bf16_unless_fp32_is_clearly_faster():
    from tunedesk.engine.run.precision_probe import FP32_MARGIN, choose

    assert choose({"bf16": 0.20, "fp32": 0.40})[0] == "bf16"
    assert choose({"bf16": 0.20, "fp32": 0.19})[0] == "bf16"  # a near tie keeps the measured default
    precision, why = choose({"bf16": 0.22, "fp32": 0.22 / FP32_MARGIN})
    assert precision == "fp32" and "fp32 for this model on this CPU" in why and "ms in bf16" in why


def test_a_probe_that_cannot_run_keeps_bf16_and_says_why():
    from tunedesk.engine.run.precision_probe import pick

    class Unreadable:
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int):
            raise OSError("cannot identify image file")

    precision, why = pick(None, torch.nn.Linear(2, 2), Unreadable(), True)
    assert precision == "bf16" and why.endswith("the timing probe could not run: OSError)")


def test_the_probe_leaves_the_model_as_it_found_it():
    import torchvision

    from tunedesk.engine import tasks
    from tunedesk.engine.run.precision_probe import time_passes

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    before = {n: b.clone() for n, b in model.named_buffers()}
    batch = {"pixel_values": torch.randn(4, 3, 32, 32), "labels": torch.tensor([0, 1, 2, 0])}
    rng = torch.get_rng_state()
    seconds = time_passes(tasks.get("image_classification"), model, batch)
    assert set(seconds) == {"bf16", "fp32"} and all(s > 0 for s in seconds.values())
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())  # BatchNorm statistics put back
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng) and not model.training


@pytest.mark.native_bf16
@pytest.mark.parametrize("faster", ["fp32", "bf16"])
def test_an_image_run_on_a_bf16_cpu_trains_in_the_precision_the_probe_found_faster(
    home, image_folder, tmp_path, monkeypatch, faster
):
    from tests.fixtures.data import resnet18_last_stage_config
    from tunedesk.engine.run import precision_probe
    from tunedesk.engine.run.runner import execute

    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    timed: list = []

    def fake(task, model, batch):
        timed.append(batch["pixel_values"].is_contiguous(memory_format=torch.channels_last))
        return {"bf16": 0.3, "fp32": 0.1} if faster == "fp32" else {"bf16": 0.1, "fp32": 0.3}

    monkeypatch.setattr(precision_probe, "time_passes", fake)
    config = resnet18_last_stage_config(image_folder, tmp_path, epochs=1)
    config.precision = "auto"
    events: list = []
    result = execute(config, home=home, listeners=[events.append])
    assert result.status == "completed", result.reason
    assert timed == [True]  # probed once, on a channels-last batch like the training's
    started = next(e for e in events if e.kind == "RunStarted")
    assert started.precision == faster
    logs = [e.message for e in events if e.kind == "LogMessage"]
    assert any(m.startswith("precision auto:") and faster in m for m in logs), logs
    config.precision = "bf16"  # an explicit choice is never probed
    timed.clear()
    assert execute(config, home=home).status == "completed" and timed == []
