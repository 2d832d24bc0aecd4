"""Runs under control: stop, pause, NaN, bad inputs, images with frozen BatchNorm."""

from __future__ import annotations

import csv
import threading

import pytest
import torch

from tests.fixtures.data import tiny_text_config
from tunedesk.engine.errors import ConfigError, DataError, ModelError, TuneDeskError


def test_stop_saves_a_resumable_checkpoint_and_marks_the_run_stopped(home, tiny_bert_dir, text_csv):
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute, open_store

    control = Control()

    def listener(event):
        if event.kind == "StepLogged" and event.step >= 4:
            control.request_stop()

    result = execute(tiny_text_config(tiny_bert_dir, text_csv, epochs=3), listeners=[listener], control=control)
    assert result.status == "stopped"
    store = open_store(home)
    run = store.get_run(result.run_id)
    assert run["status"] == "stopped"
    last = store.checkpoints(result.run_id)["last"]
    assert last["step"] == 4
    store.close()


def test_pause_blocks_the_loop_until_resumed(home, tiny_bert_dir, text_csv):
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute

    control = Control()
    seen = []

    def listener(event):
        if event.kind == "StepLogged":
            seen.append(event.step)
            if event.step == 2:
                control.pause()
                threading.Timer(0.5, control.resume).start()

    result = execute(tiny_text_config(tiny_bert_dir, text_csv, epochs=1), listeners=[listener], control=control)
    assert result.status == "completed"
    assert seen[0] == 2 and seen[-1] > 2


def test_nan_loss_fails_the_run_with_that_reason(home, tiny_bert_dir, text_csv, monkeypatch):
    from tunedesk.engine.run.runner import execute, open_store
    from tunedesk.engine.tasks.text_classification import TextClassification

    real = TextClassification.loss
    monkeypatch.setattr(
        TextClassification, "loss", lambda self, logits, batch: real(self, logits, batch) * float("nan")
    )
    result = execute(tiny_text_config(tiny_bert_dir, text_csv, epochs=1))
    assert result.status == "failed"
    assert "NaN" in result.reason and "learning rate" in result.hint
    store = open_store(home)
    assert store.get_run(result.run_id)["status"] == "failed"
    assert "NaN" in store.get_run(result.run_id)["error"]
    store.close()


@pytest.mark.parametrize(
    "case", ["missing_file", "empty", "single_class", "bad_column", "bad_lr", "missing_model", "latin1_forced_utf8"]
)
def test_bad_inputs_give_a_clear_error_before_any_work(case, home, tiny_bert_dir, text_csv, tmp_path):
    from tunedesk.engine.run.runner import execute, open_store

    config = tiny_text_config(tiny_bert_dir, text_csv)
    expected: type[TuneDeskError] = DataError
    if case == "missing_file":
        config.data.path = str(tmp_path / "nope.csv")
    elif case == "empty":
        (tmp_path / "empty.csv").write_text("text,label\n", encoding="utf-8")
        config.data.path = str(tmp_path / "empty.csv")
    elif case == "single_class":
        with (tmp_path / "one.csv").open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([["text", "label"]] + [[f"text {i}", "only"] for i in range(10)])
        config.data.path = str(tmp_path / "one.csv")
    elif case == "bad_column":
        config.data.label_column = "category"
    elif case == "bad_lr":
        config.hparams.learning_rate = -1e-4
        expected = ConfigError
    elif case == "missing_model":
        config.model.name_or_path = str(tmp_path / "no-model")
        expected = ModelError
    elif case == "latin1_forced_utf8":
        (tmp_path / "latin.csv").write_bytes("text,label\ncaf\xe9 cr\xe8me,a\nna\xefve,b\n".encode("latin-1"))
        config.data.path = str(tmp_path / "latin.csv")
        config.data.encoding = "utf-8"
    with pytest.raises(expected) as info:
        execute(config, home=home)
    assert info.value.message
    if case != "bad_lr":
        assert info.value.hint
    store = open_store(home)  # nothing was recorded for a refused run, and no run folder made
    try:
        assert store.count_runs() == 0
    finally:
        store.close()
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_image_run_with_local_weights_keeps_frozen_batchnorm_statistics(home, image_folder, tmp_path):
    import torchvision

    from tunedesk.engine.config import DataSpec, FreezeSpec, HyperParams, ModelSpec, RunConfig
    from tunedesk.engine.run.runner import execute

    torch.save(torchvision.models.get_model("resnet18", weights=None).state_dict(), tmp_path / "r18.pth")
    config = RunConfig(
        task="image_classification",
        model=ModelSpec("resnet18", source="torchvision", weights=str(tmp_path / "r18.pth")),
        data=DataSpec(kind="image_folder", path=str(image_folder)),
        freeze=FreezeSpec(preset="head_only"),
        hparams=HyperParams(epochs=2, batch_size=8, image_size=32, learning_rate=1e-2, log_every=1),
        device="cpu",
        seed=0,
    )
    snapshots = {}

    def listener(event):
        if event.kind == "RunStarted":
            snapshots["start"] = True

    from tunedesk.engine.run.runner import prepare

    prep = prepare(config)
    before = prep.loaded.model.bn1.running_mean.clone()
    result = execute(config, listeners=[listener], prepared=prep)
    assert result.status == "completed", result.reason
    assert torch.equal(prep.loaded.model.bn1.running_mean.cpu(), before)
    assert prep.plan.trainable_names == ["fc.weight", "fc.bias"]


def test_corrupt_image_is_skipped_and_reported(home, image_folder):
    from tunedesk.engine.config import DataSpec, HyperParams, ModelSpec, RunConfig
    from tunedesk.engine.run.runner import prepare

    (image_folder / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    config = RunConfig(
        task="image_classification",
        model=ModelSpec("resnet18", source="torchvision", pretrained=False),
        data=DataSpec(kind="image_folder", path=str(image_folder)),
        hparams=HyperParams(image_size=32),
        device="cpu",
    )
    prep = prepare(config)
    assert any("broken.png" in w for w in prep.warnings)
    assert len(prep.data.train) + len(prep.data.val) == 24
