"""Training length "auto": the budget, early stopping, best weights, resume; batch size auto and OOM halving.

CPU only, with the tiny BERT built from a config and generated tickets.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.fixtures.data import tiny_text_config
from tunedesk.engine.config import HyperParams, RunConfig
from tunedesk.engine.run.batching import AUTO_BATCH, choose_batch
from tunedesk.engine.run.length import EarlyStopping, PlateauSchedule, outcome, plan_length

# ---- the budget and the stopping rule (no model) ----------------------------------------------------


def test_auto_budget_holds_the_minimum_steps_within_the_maximum_epochs():
    h = HyperParams(auto_min_steps=600, auto_max_epochs=20)
    small = plan_length(h, steps_per_epoch=34, n_train=540)
    assert small.auto and small.early_stopping and small.schedule == "plateau"
    assert small.epochs == math.ceil(600 / 34) == 18
    assert "at least 600 optimizer steps, at most 20 epochs" in small.explanation
    tiny = plan_length(h, steps_per_epoch=5, n_train=80)
    assert tiny.epochs == 20  # 120 epochs would be needed: capped
    large = plan_length(h, steps_per_epoch=5000, n_train=80000)
    assert large.epochs == 3  # never fewer than 3 epochs
    fixed = plan_length(HyperParams(epochs=4), steps_per_epoch=10, n_train=80)
    assert (fixed.epochs, fixed.auto, fixed.early_stopping, fixed.schedule) == (4, False, False, "cosine")
    assert fixed.total_steps == 40 and fixed.warmup_steps == 4
    opted_in = plan_length(HyperParams(epochs=4, early_stopping=True), steps_per_epoch=10, n_train=80)
    assert opted_in.early_stopping and opted_in.epochs == 4 and opted_in.schedule == "plateau"


def test_early_stopping_counts_evaluations_without_improvement():
    stop = EarlyStopping("val_accuracy", True, patience=2, min_delta=0.01)
    assert stop.update(0.5, 1) and stop.update(0.6, 2)
    assert not stop.update(0.605, 3)  # less than min_delta: no improvement
    assert not stop.should_stop
    assert not stop.update(0.59, 4)
    assert stop.should_stop and stop.best_epoch == 2 and stop.best == 0.6
    assert EarlyStopping.from_dict(stop.to_dict()) == stop
    loss = EarlyStopping("val_loss", False, patience=1)
    assert loss.update(2.0, 1) and loss.update(1.5, 2) and not loss.update(1.6, 3) and loss.should_stop
    length = plan_length(HyperParams(), 10, 80)
    assert outcome(length, stop, 4, True) == (
        "auto: stopped after epoch 4, best epoch 2 (validation accuracy did not improve for 2 epochs)"
    )


def test_plateau_schedule_warms_up_halves_and_round_trips():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = PlateauSchedule(opt, warmup_steps=4)
    lrs = []
    for _ in range(6):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs[:3] == pytest.approx([0.4e-3, 0.6e-3, 0.8e-3]) and lrs[3:] == pytest.approx([1e-3] * 3)
    sched.plateau()
    assert sched.get_last_lr()[0] == pytest.approx(5e-4)
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    other = PlateauSchedule(opt2, warmup_steps=4)
    other.load_state_dict(sched.state_dict())
    assert other.get_last_lr() == pytest.approx(sched.get_last_lr())


def test_batch_auto_is_the_calibrated_batch_or_what_fits():
    cfg = RunConfig()
    assert choose_batch(cfg).batch_size == AUTO_BATCH
    cfg.hparams.batch_size = 24
    assert (choose_batch(cfg).batch_size, choose_batch(cfg).grad_accum_steps) == (24, 1)


def test_batch_auto_splits_what_does_not_fit(tiny_bert_dir):
    from tunedesk.engine import freezing
    from tunedesk.engine.config import FreezeSpec, ModelSpec
    from tunedesk.engine.freezing.memory import estimate_memory
    from tunedesk.engine.models import build_hf_classifier

    loaded = build_hf_classifier(ModelSpec(str(tiny_bert_dir)), ["a", "b"], device="meta")
    plan = freezing.resolve(loaded.model, FreezeSpec(), loaded.head_paths)
    cfg = RunConfig()
    at = {b: estimate_memory(loaded.model, plan, batch_size=b, sequence_length=128).total for b in (4, 8, 16)}
    # free memory that fits a micro-batch of 4 (with the margin) but not 8
    free = int(((at[4] + at[8]) / 2) / 0.8)
    choice = choose_batch(cfg, loaded.model, plan, free_bytes=free)
    assert (choice.batch_size, choice.grad_accum_steps) == (4, 4)
    assert "4 examples x 4 accumulated = 16 per step" in choice.explanation
    roomy = choose_batch(cfg, loaded.model, plan, free_bytes=at[16] * 2)
    assert (roomy.batch_size, roomy.grad_accum_steps) == (16, 1)


def test_auto_is_accepted_in_files(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('task = "text_classification"\n[model]\nname_or_path = "m"\n[data]\npath = "d.csv"\n'
                    '[hparams]\nepochs = "auto"\nbatch_size = "auto"\n', encoding="utf-8")  # fmt: skip
    cfg = RunConfig.load(path).validate()
    assert cfg.hparams.epochs is None and cfg.hparams.batch_size is None
    cfg.save(tmp_path / "back.toml")
    again = RunConfig.load(tmp_path / "back.toml")
    assert again.hparams.epochs is None and again.hparams.batch_size is None


# ---- runs with the tiny BERT -------------------------------------------------------------------------


def _auto_config(tiny_bert_dir: Path, text_csv: Path, **overrides):
    h = dict(epochs=None, auto_max_epochs=8, log_every=1)
    h.update(overrides)
    return tiny_text_config(tiny_bert_dir, text_csv, **h)


def _logs(home: Path, run_id: int) -> list[str]:
    from tunedesk.engine.run.runner import open_store

    store = open_store(home)
    try:
        return [r["message"] for r in store.logs(run_id)]
    finally:
        store.close()


def test_patience_stops_a_run_and_the_best_weights_are_kept(home, tiny_bert_dir, text_csv, monkeypatch):
    """A validation metric that peaks at epoch 2 stops the run after epoch 4 (patience 2); the best
    checkpoint holds the weights of epoch 2, not the last ones."""
    from safetensors.torch import load_file

    from tunedesk.engine.run import evaluation
    from tunedesk.engine.run.runner import execute, open_store, prepare

    scores = iter([0.5, 0.75, 0.7, 0.75, 0.9, 0.9, 0.9, 0.9])
    real_evaluate = evaluation.Validator.evaluate

    def scripted(self, model, loader, autocast_dtype):
        metrics, confusion, per_class = real_evaluate(self, model, loader, autocast_dtype)
        metrics["val_accuracy"] = next(scores)
        return metrics, confusion, per_class

    monkeypatch.setattr(evaluation.Validator, "evaluate", scripted)
    config = _auto_config(tiny_bert_dir, text_csv, patience=2)
    prep = prepare(config)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(event) -> None:
        if event.kind == "EpochEnded":
            snapshots[event.epoch] = {k: v.detach().clone() for k, v in prep.loaded.model.state_dict().items()}

    result = execute(config, prepared=prep, listeners=[snapshot])
    assert result.status == "completed", result.reason
    assert sorted(snapshots) == [1, 2, 3, 4]  # the budget was 8 epochs
    assert result.summary == (
        "auto: stopped after epoch 4, best epoch 2 (validation accuracy did not improve for 2 epochs)"
    )
    assert result.best_metric == 0.75 and result.metrics["epoch"] == 2
    best = load_file(str(Path(result.output_dir) / "best" / "model.safetensors"))
    for name, value in best.items():
        assert torch.equal(value, snapshots[2][name]), name
    assert any(not torch.equal(best[n], snapshots[4][n]) for n in best)  # the last weights differ
    logs = _logs(home, result.run_id)
    assert any(m.startswith("auto: at most 8 epochs") for m in logs)
    assert result.summary in logs
    store = open_store(home)
    try:
        epochs = store.epoch_metrics(result.run_id)
    finally:
        store.close()
    assert [e["is_best"] for e in epochs] == [True, True, False, False]


def test_fixed_epochs_still_train_them_all(home, tiny_bert_dir, text_csv):
    from tunedesk.engine.run.runner import execute

    result = execute(tiny_text_config(tiny_bert_dir, text_csv, epochs=2))
    assert result.status == "completed" and result.summary == "2 epoch(s): trained 2 epoch(s)"


def test_auto_run_stopped_mid_way_resumes_to_the_same_result(home, tiny_bert_dir, text_csv):
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute, open_store, resume

    # a high rate and a plateau: validation accuracy saturates, patience ends the run before the budget
    config = _auto_config(tiny_bert_dir, text_csv, auto_max_epochs=12)
    reference = execute(config)
    assert reference.status == "completed", reference.reason
    assert reference.summary.startswith("auto: stopped after epoch"), reference.summary
    ref_epochs = int(reference.summary.split("epoch ")[1].split(",")[0])
    assert ref_epochs < 12

    control = Control()
    stop_at = {"epoch": max(2, ref_epochs - 1)}  # past the best epoch: the patience counter is running

    def stopper(event) -> None:
        if event.kind == "EpochEnded" and event.epoch == stop_at["epoch"]:
            control.request_stop("test stop")

    stopped = execute(config, listeners=[stopper], control=control)
    assert stopped.status == "stopped"
    resumed = resume(stopped.run_id)
    assert resumed.status == "completed", resumed.reason
    assert resumed.summary == reference.summary
    assert resumed.best_metric == pytest.approx(reference.best_metric)
    store = open_store(home)
    try:
        a = store.epoch_metrics(reference.run_id)
        b = store.epoch_metrics(stopped.run_id)
    finally:
        store.close()
    assert [e["epoch"] for e in a] == [e["epoch"] for e in b]
    for x, y in zip(a, b):
        assert y["metrics"]["val_loss"] == pytest.approx(x["metrics"]["val_loss"], abs=1e-5)
        assert y["is_best"] == x["is_best"]


def test_out_of_memory_halves_the_batch_and_goes_on(home, tiny_bert_dir, text_csv, monkeypatch):
    """An injected CUDA out-of-memory error for batches of 8: the run goes on with 4 x 2
    accumulated (the same 8 examples per step), says so in its log, and trains the same steps."""
    from tunedesk.engine.run.runner import execute, open_store
    from tunedesk.engine.tasks.text_classification import TextClassification

    real_forward = TextClassification.forward
    sizes: list[int] = []

    def forward(self, model, batch):
        if model.training:
            sizes.append(int(batch["labels"].shape[0]))
        if batch["labels"].shape[0] >= 8:  # validation batches too (they start at 32)
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(self, model, batch)

    config = tiny_text_config(tiny_bert_dir, text_csv, epochs=2, batch_size=8)
    reference = execute(config)
    monkeypatch.setattr(TextClassification, "forward", forward)
    result = execute(config)
    assert result.status == "completed", result.reason
    assert sizes[0] == 8 and max(sizes[1:]) <= 5  # (a last batch of one joins the one before)
    store = open_store(home)
    try:
        steps = [r["step"] for r in store.step_metrics(result.run_id)]
        ref_steps = [r["step"] for r in store.step_metrics(reference.run_id)]
    finally:
        store.close()
    assert steps == ref_steps  # the same optimizer steps: the effective batch did not change
    logs = _logs(home, result.run_id)
    assert any("out of GPU memory at step 1 with 8 examples per batch" in m and "4 x 2 accumulated" in m for m in logs)


def test_out_of_memory_with_a_batch_of_one_fails_with_a_hint(home, tiny_bert_dir, text_csv, monkeypatch):
    from tunedesk.engine.run.runner import execute
    from tunedesk.engine.tasks.text_classification import TextClassification

    def forward(self, model, batch):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(TextClassification, "forward", forward)
    result = execute(tiny_text_config(tiny_bert_dir, text_csv, epochs=1, batch_size=2))
    assert result.status == "failed"
    assert result.reason == "ran out of GPU memory" and "down to one example" in result.hint


@pytest.mark.parametrize(
    "kind,name", [("cosine", "cosine"), ("linear", "linear"), ("constant", "constant_with_warmup")]
)
def test_fixed_length_schedules_follow_transformers_curves(kind, name):
    """TuneDesk's own warm-up + decay factors equal transformers' schedules of the same name at every step
    (checkpoints written with either resume with the other: both are a LambdaLR)."""
    import torch
    from transformers import get_scheduler

    from tunedesk.engine.run.length import WarmupDecay

    def rates(make) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = make(opt)
        out = []
        for _ in range(60):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out

    ours = rates(lambda o: torch.optim.lr_scheduler.LambdaLR(o, WarmupDecay(kind, 7, 50)))
    theirs = rates(lambda o: get_scheduler(name, o, num_warmup_steps=7, num_training_steps=50))
    assert ours == pytest.approx(theirs, abs=1e-12)
