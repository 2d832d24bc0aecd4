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
