"""A tiny run end to end through the runner: events, history, checkpoints."""

from __future__ import annotations

import json

from tests.fixtures.data import tiny_text_config


def test_tiny_text_run_completes_and_is_recorded(home, tiny_bert_dir, text_csv):
    from tunedesk.engine.run.runner import execute, open_store

    events = []
    result = execute(tiny_text_config(tiny_bert_dir, text_csv, epochs=6), listeners=[events.append])
    assert result.status == "completed", result.reason
    assert result.metrics["val_accuracy"] > 0.5
    kinds = [e.kind for e in events]
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished"
    assert kinds.count("EpochEnded") == 6
    store = open_store(home)
    run = store.get_run(result.run_id)
    assert run["status"] == "completed"
    assert run["best_metric"] is not None
    assert len(store.epoch_metrics(result.run_id)) == 6
    assert store.step_metrics(result.run_id)
    assert set(store.checkpoints(result.run_id)) == {"best", "last"}
    assert "classifier.weight" in run["trainable_names"]
    store.close()
    out = result.output_dir
    meta = json.loads((__import__("pathlib").Path(out) / "best" / "tunedesk.json").read_text())
    assert meta["label_names"] == sorted(meta["label_names"])


def _last_checkpoints(home, tiny_bert_dir, text_csv, **hparams) -> list[tuple[int, int]]:
    from tunedesk.engine.run.runner import execute

    events: list = []
    config = tiny_text_config(tiny_bert_dir, text_csv, epochs=4, checkpoint_every_minutes=0, **hparams)
    result = execute(config, home=home, listeners=[events.append])
    assert result.status == "completed", result.reason
    return [(e.step, e.epoch) for e in events if e.kind == "CheckpointSaved" and e.which == "last"]


def test_short_epochs_write_the_resumable_checkpoint_after_the_first_and_the_last_epoch(
    home, tiny_bert_dir, text_csv, monkeypatch
):
    """Epochs of a few seconds would spend ~10% of a CPU run writing weights and AdamW's state; an epoch's
    end writes it when the last one is a minute old, after the first epoch, at the run's end, and when
    the mid-epoch cadence falls due there."""
    from tunedesk.engine.run import training

    epochs = [epoch for _, epoch in _last_checkpoints(home / "a", tiny_bert_dir, text_csv)]
    assert epochs == [1, 4]
    monkeypatch.setattr(training, "EPOCH_CHECKPOINT_GAP_S", 0.0)
    assert [epoch for _, epoch in _last_checkpoints(home / "b", tiny_bert_dir, text_csv)] == [1, 2, 3, 4]
    monkeypatch.setattr(training, "EPOCH_CHECKPOINT_GAP_S", 3600.0)
    saved = _last_checkpoints(home / "c", tiny_bert_dir, text_csv, checkpoint_every_steps=1)
    steps = [step for step, _ in saved]
    assert steps == list(range(1, steps[-1] + 1))  # every step, the epochs' last ones included
