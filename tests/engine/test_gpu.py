"""GPU-only code paths (bf16/fp16 autocast, GradScaler, channels_last, out of memory).

Skipped where no CUDA GPU is present (CI); run on a GPU machine with
``python -m pytest tests/engine/test_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from tests.fixtures.data import resnet18_last_stage_config, tiny_text_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _trainer(config, tmp_path):
    from tunedesk.engine import freezing
    from tunedesk.engine.run.events import EventBus
    from tunedesk.engine.run.runner import prepare
    from tunedesk.engine.run.training import Trainer

    prep = prepare(config)
    events = []
    trainer = Trainer(
        prep.config,
        prep.task,
        prep.loaded,
        prep.data,
        prep.plan,
        tmp_path / "out",
        EventBus(events.append),
        learning_rate=prep.learning_rate,
    )
    assert freezing  # the plan is applied by the trainer
    return trainer, events


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_cuda_text_run_completes(precision, tiny_bert_dir, text_csv, tmp_path):
    # 6 epochs left this tiny model at chance on some GPUs (fp32 too: CPU 0.75, H200 0.45): it only starts
    # to learn after ~40 steps, so give it room to converge
    config = tiny_text_config(tiny_bert_dir, text_csv, epochs=20)
    config.device, config.precision = "cuda", precision
    trainer, events = _trainer(config, tmp_path)
    finished = trainer.run()
    assert finished.status == "completed", finished.reason
    started = next(e for e in events if e.kind == "RunStarted")
    assert started.precision == precision and started.device.startswith("cuda")
    steps = [e for e in events if e.kind == "StepLogged"]
    assert steps and all(s.gpu_memory_mb is not None and s.gpu_memory_mb > 0 for s in steps)
    # 4 classes (chance 0.25) and about 20 validation items, one item = 5 points: fp16 on an H100 landed
    # on exactly 0.70 twice, so the bar is "clearly learned" (at least 12 of 20), not a quality figure
    assert finished.final_metrics["val_accuracy"] >= 0.6
    assert steps[-1].loss < steps[0].loss


def test_cuda_image_run_channels_last(image_folder, tmp_path):
    from tunedesk.engine.config import DataSpec, FreezeSpec, HyperParams, ModelSpec, RunConfig

    config = RunConfig(
        task="image_classification",
        model=ModelSpec("resnet18", source="torchvision", pretrained=False),
        data=DataSpec(kind="image_folder", path=str(image_folder)),
        freeze=FreezeSpec(preset="last_n_blocks", last_n=1),
        hparams=HyperParams(epochs=2, batch_size=8, image_size=64, learning_rate=1e-3, log_every=1),
        device="cuda",
        precision="bf16",
        seed=0,
    )
    trainer, events = _trainer(config, tmp_path)
    finished = trainer.run()
    assert finished.status == "completed", finished.reason
    # frozen BatchNorm layers kept their running statistics
    bn = trainer.loaded.model.bn1
    assert not bn.weight.requires_grad and not bn.training


def test_cuda_out_of_memory_fails_with_advice(tiny_bert_dir, text_csv, tmp_path):
    config = tiny_text_config(tiny_bert_dir, text_csv, epochs=1)
    config.device = "cuda"
    trainer, events = _trainer(config, tmp_path)
    real_forward = trainer.task.forward

    def greedy_forward(model, batch):
        torch.empty(1 << 40, dtype=torch.uint8, device="cuda")  # 1 TiB: more than any GPU has
        return real_forward(model, batch)

    trainer.task.forward = greedy_forward
    finished = trainer.run()
    assert finished.status == "failed"
    assert "out of GPU memory" in finished.reason
    assert "smaller batch" in finished.hint and "freeze more" in finished.hint


@pytest.mark.parametrize("precision,checkpointing", [("bf16", False), ("bf16", True), ("fp16", False)])
def test_cuda_lora_chat_run_trains_and_answers(precision, checkpointing, tmp_path):
    """Language models on the GPU: LoRA on the attention of the last block over half-precision frozen
    weights (with and without gradient checkpointing), then the "try it" reply on the GPU."""
    from tests.fixtures.causal_lm import lm_config, save_tiny_llama, word_tokenizer, write_chat
    from tunedesk.engine.lm import lora
    from tunedesk.engine.lm.export import clear_cache, generate
    from tunedesk.engine.run.runner import execute, open_store

    model = save_tiny_llama(tmp_path / "llama", word_tokenizer(), layers=2, hidden=64)
    data = write_chat(tmp_path / "chat.jsonl", 64)
    config = lm_config(model, data, epochs=4, gradient_checkpointing=checkpointing)
    config.freeze = lora.preset_spec("lora_attention_last_n", last_n=1, rank=8, alpha=16, dropout=0.0)
    config.device, config.precision = "cuda", precision
    result = execute(config, home=tmp_path / "home")
    assert result.status == "completed", (result.reason, result.hint)
    with open_store(tmp_path / "home") as store:
        epochs = store.epoch_metrics(result.run_id)
    losses = [e["metrics"]["val_loss"] for e in epochs]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    reply = generate(
        result.run_id,
        [{"role": "user", "content": "where is my parcel"}],
        6,
        0.0,
        home=tmp_path / "home",
        device="cuda",
    )
    assert isinstance(reply, str)
    clear_cache()


def test_cuda_qlora_chat_run_trains_and_exports(tmp_path):
    """QLoRA: the frozen base in 4-bit NF4 (bitsandbytes), adapters on every linear layer; the merged
    export loads the base in bf16, merges, and loads back in plain transformers."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    from tests.fixtures.causal_lm import lm_config, save_tiny_llama, word_tokenizer, write_chat
    from tunedesk.engine.lm import lora
    from tunedesk.engine.lm.export import export_lm_run
    from tunedesk.engine.run.runner import execute, open_store, prepare

    model = save_tiny_llama(tmp_path / "llama", word_tokenizer(), layers=2, hidden=64)
    data = write_chat(tmp_path / "chat.jsonl", 64)
    config = lm_config(model, data, epochs=4, gradient_checkpointing=True)
    config.freeze = lora.preset_spec("lora_all_linear", rank=8, alpha=16, dropout=0.0)
    config.freeze.lora.base_bits = 4
    config.device, config.precision = "cuda", "bf16"
    prep = prepare(config)
    kinds = {type(m).__name__ for m in prep.loaded.model.modules()}
    assert "Linear4bit" in kinds, kinds  # PEFT's 4-bit LoRA layer over bitsandbytes' Linear4bit
    assert prep.plan.total_params > 0
    result = execute(config, home=tmp_path / "home", prepared=prep)
    assert result.status == "completed", (result.reason, result.hint)
    with open_store(tmp_path / "home") as store:
        losses = [e["metrics"]["val_loss"] for e in store.epoch_metrics(result.run_id)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    info = export_lm_run(result.run_id, tmp_path / "merged", "merged", home=tmp_path / "home")
    back = AutoModelForCausalLM.from_pretrained(info["path"], local_files_only=True)
    assert not any("Linear4bit" in type(m).__name__ for m in back.modules())
    export_lm_run(result.run_id, tmp_path / "adapter", "adapter", home=tmp_path / "home")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_cuda_packed_chat_run_with_chunked_loss_and_fused_kernels(tmp_path):
    """Packing + the chunked loss (+ liger-kernel where installed) train on the GPU like the plain path."""
    from tests.fixtures.causal_lm import lm_config, save_tiny_llama, word_tokenizer, write_chat
    from tunedesk.engine.lm import kernels, lora
    from tunedesk.engine.run.runner import execute

    model = save_tiny_llama(tmp_path / "llama", word_tokenizer(), layers=2, hidden=64)
    data = write_chat(tmp_path / "chat.jsonl", 64)
    results = {}
    for fused in (False, True):
        config = lm_config(
            model,
            data,
            epochs=2,
            max_length=128,
            packing=True,
            fused_loss="on" if fused else "off",
            fused_kernels="on" if fused and kernels.liger_installed() else "off",
        )
        config.freeze = lora.preset_spec("lora_all_linear", rank=8, alpha=16, dropout=0.0)
        config.device, config.precision = "cuda", "bf16"
        result = execute(config, home=tmp_path / f"home-{fused}")
        assert result.status == "completed", (result.reason, result.hint)
        results[fused] = result.metrics["val_loss"]
    assert results[True] == pytest.approx(results[False], rel=0.05)


def test_cuda_qlora_run_stopped_mid_epoch_resumes_like_an_uninterrupted_one(tmp_path):
    """QLoRA's checkpoint holds only the adapters and the optimizer state (the 4-bit base is re-quantised
    from the model folder): a run stopped mid-epoch resumes, and its later losses follow the run that was
    never stopped (4-bit kernels are not bit-exact between launches, hence the tolerance)."""
    pytest.importorskip("bitsandbytes")
    from tests.fixtures.causal_lm import lm_config, save_tiny_llama, word_tokenizer, write_chat
    from tunedesk.engine.lm import lora

    model = save_tiny_llama(tmp_path / "llama", word_tokenizer(), layers=2, hidden=64)
    data = write_chat(tmp_path / "chat.jsonl", 64)
    config = lm_config(model, data, epochs=2, log_every=1, prompts=[])
    config.freeze = lora.preset_spec("lora_all_linear", rank=8, alpha=16, dropout=0.0)
    config.freeze.lora.base_bits = 4
    config.device, config.precision = "cuda", "bf16"
    ref, res = _losses_stopped_and_resumed(config, tmp_path / "home", stop_at=3)
    later = [s for s in ref if s > 3]
    assert later
    for s in later:
        assert res[s] == pytest.approx(ref[s], rel=0.02, abs=1e-3), (s, res[s], ref[s])


def _losses_stopped_and_resumed(config, home, stop_at: int) -> tuple[dict[int, float], dict[int, float]]:
    """The logged loss per step of a whole run, and of the same run stopped at ``stop_at`` and resumed."""
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute, open_store, resume

    reference = execute(config, home=home)
    assert reference.status == "completed", (reference.reason, reference.hint)
    control = Control()

    def stopper(event) -> None:
        if event.kind == "StepLogged" and event.step == stop_at:
            control.request_stop("test stop")

    stopped = execute(config, home=home, listeners=[stopper], control=control)
    assert stopped.status == "stopped", (stopped.reason, stopped.hint)
    resumed = resume(stopped.run_id, home=home)
    assert resumed.status == "completed", (resumed.reason, resumed.hint)
    with open_store(home) as store:
        ref = {r["step"]: r["loss"] for r in store.step_metrics(reference.run_id)}
        res = {r["step"]: r["loss"] for r in store.step_metrics(stopped.run_id)}
    assert sorted(res) == sorted(ref)
    return ref, res


def _graph_runs(config_for):
    """The same run with each step as one CUDA graph and eagerly: (graphed result, its logs, eager result)."""
    from tunedesk.engine.run.runner import execute

    results = {}
    for graph in (True, False):
        logs: list[str] = []
        config = config_for(graph)
        result = execute(
            config, listeners=[lambda e, logs=logs: logs.append(e.message) if e.kind == "LogMessage" else None]
        )
        assert result.status == "completed", result.reason
        results[graph] = (result, logs)
    return results[True][0], results[True][1], results[False][0]


def test_cuda_graph_steps_train_a_head_from_cached_features_like_eager_steps(home, no_dropout_bert, text_csv):
    def config(graph: bool):
        # cosine: the rate changes every step, which the graph must follow; 3 epochs: the epochs' last,
        # shorter batches run eagerly between replays with the same optimizer
        c = tiny_text_config(no_dropout_bert, text_csv, epochs=3, batch_size=16, schedule="cosine", cuda_graph=graph)
        c.freeze.preset = "head_only"
        c.device, c.precision = "cuda", "fp32"
        return c

    graphed, logs, eager = _graph_runs(config)
    assert any(m.startswith("one CUDA graph per step: the trained part") for m in logs), logs
    for key in ("val_loss", "val_accuracy"):
        assert graphed.metrics[key] == pytest.approx(eager.metrics[key], rel=1e-3, abs=1e-4)


def test_cuda_graph_steps_train_an_image_models_last_stage_from_cached_activations(home, image_folder, tmp_path):
    def config(graph: bool):
        c = resnet18_last_stage_config(image_folder, tmp_path, epochs=3, cuda_graph=graph)
        c.device, c.precision = "cuda", "fp32"
        return c

    graphed, logs, eager = _graph_runs(config)
    assert any(m.startswith("one CUDA graph per step: the trained part") for m in logs), logs
    assert any("from layer4 on" in m for m in logs)
    for key in ("val_loss", "val_accuracy"):  # layer4's BatchNorm statistics update inside the graph too
        assert graphed.metrics[key] == pytest.approx(eager.metrics[key], rel=2e-3, abs=1e-4)


def test_cuda_graph_run_stopped_mid_epoch_resumes_like_an_uninterrupted_one(home, no_dropout_bert, text_csv):
    """The graph lives in the process; the checkpoint is the optimizer's ordinary state (plain learning
    rates, no graph): a resumed run captures a new graph and follows the run that was never stopped."""
    config = tiny_text_config(no_dropout_bert, text_csv, epochs=3, batch_size=8, log_every=1, schedule="cosine")
    config.freeze.preset = "head_only"
    config.device, config.precision = "cuda", "fp32"
    ref, res = _losses_stopped_and_resumed(config, home, stop_at=7)
    for s in ref:
        assert res[s] == pytest.approx(ref[s], rel=1e-3, abs=1e-5), (s, res[s], ref[s])


def test_cuda_padded_text_batch_takes_the_prepared_mask_and_matches_the_2d_one(no_dropout_bert, monkeypatch):
    """On a GPU the task hands BERT a padded batch's mask in 4-D (no device read in transformers)."""
    from transformers import AutoModelForSequenceClassification

    from tunedesk.engine import tasks
    from tunedesk.engine.tasks import text_classification as tc

    model = AutoModelForSequenceClassification.from_pretrained(
        no_dropout_bert, num_labels=2, attn_implementation="sdpa"
    )
    model = model.cuda().eval()
    torch.manual_seed(0)
    mask = (torch.arange(12)[None, :] < torch.tensor([12, 7, 3, 10])[:, None]).long().cuda()
    ids = torch.randint(5, model.config.vocab_size, (4, 12), device="cuda") * mask
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.zeros(4, dtype=torch.long, device="cuda")}
    prepared = []
    original = tc.attention_mask_4d
    monkeypatch.setattr(tc, "attention_mask_4d", lambda m: prepared.append(original(m)) or prepared[-1])
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        got = tasks.get("text_classification").forward(model, batch).float()
        want = model(input_ids=ids, attention_mask=mask).logits.float()
    assert len(prepared) == 1 and prepared[0].shape == (4, 1, 12, 12) and prepared[0].dtype == torch.bool
    assert torch.allclose(got, want, atol=1e-2)
