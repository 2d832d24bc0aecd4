"""TensorBoard: a run writes event files that TensorBoard's own reader reads back with the logged values,
and a past run exports the same from its recorded history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.fixtures.data import tiny_text_config


def read(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def text_of(acc: EventAccumulator, tag: str) -> str:
    return acc.Tensors(tag)[0].tensor_proto.string_val[0].decode("utf-8")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, tiny_bert_dir):
    import csv

    from tests.fixtures.data import make_texts
    from tunedesk.engine.run.runner import execute

    root = tmp_path_factory.mktemp("tb")
    data = root / "tickets.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("text", "label"), *make_texts()])
    config = tiny_text_config(tiny_bert_dir, data)
    config.hparams.epochs = 2
    config.hparams.log_every = 2
    result = execute(config, home=root / "home")
    assert result.status == "completed", result.reason
    return root / "home", result


def test_a_run_writes_events_tensorboard_reads_back(text_run):
    from tunedesk.engine.run.runner import open_store

    home, result = text_run
    folder = Path(result.output_dir) / "tensorboard"
    acc = read(folder)
    store = open_store(home)
    try:
        steps = store.step_metrics(result.run_id)
        evaluations = store.epoch_metrics(result.run_id)
        run = store.get_run(result.run_id)
    finally:
        store.close()
    loss = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert loss == pytest.approx({r["step"]: r["loss"] for r in steps}, rel=1e-6)
    lr = {e.step: e.value for e in acc.Scalars("train/learning_rate")}
    assert lr == pytest.approx({r["step"]: r["learning_rate"] for r in steps}, rel=1e-6)
    accuracy = [(e.step, e.value) for e in acc.Scalars("val/accuracy")]
    assert accuracy == [(ev["step"], pytest.approx(ev["metrics"]["val_accuracy"])) for ev in evaluations]
    assert len(accuracy) == 2 and "val/loss" in acc.Tags()["scalars"]
    plan = text_of(acc, "freeze_plan/text_summary")
    assert run["freeze_summary"] in plan and "classifier.weight" in plan
    assert json.loads(text_of(acc, "config/text_summary").replace("\n    ", "\n"))["task"] == "text_classification"
    hparams = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(hparams)
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["batch_size"].number_value == 8
    assert start.session_start_info.hparams["freeze_preset"].string_value == run["config"]["freeze"]["preset"]


def test_runs_export_tensorboard_from_the_history(text_run, tmp_path, capsys):
    from tunedesk.cli import main

    home, result = text_run
    out = tmp_path / "tb-export"
    assert main(["--home", str(home), "runs", "export", str(result.run_id), str(out), "--format", "tensorboard"]) == 0
    assert f"tensorboard --logdir {out}" in capsys.readouterr().out
    exported, live = read(out), read(Path(result.output_dir) / "tensorboard")
    for tag in ("train/loss", "train/learning_rate", "val/accuracy", "val/macro_f1"):
        assert [(e.step, e.value) for e in exported.Scalars(tag)] == [(e.step, e.value) for e in live.Scalars(tag)]
    assert text_of(exported, "freeze_plan/text_summary").startswith("**")


def test_tensorboard_setting_off_and_on(tiny_bert_dir, text_csv, tmp_path, monkeypatch):
    from tunedesk.engine.config import RunConfig
    from tunedesk.engine.errors import ConfigError
    from tunedesk.engine.run import tensorboard

    config = tiny_text_config(tiny_bert_dir, text_csv)
    config.tensorboard = False
    assert tensorboard.enabled(config.tensorboard) is False
    assert RunConfig.from_dict(config.to_dict()).tensorboard is False
    config.tensorboard = None
    assert tensorboard.enabled(None) is True  # installed here
    monkeypatch.setattr(tensorboard, "available", lambda: False)
    assert tensorboard.enabled(None) is False
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    config.tensorboard = True
    with pytest.raises(ConfigError, match="tensorboard") as err:
        config.validate()
    assert "pip install tensorboard" in err.value.hint
