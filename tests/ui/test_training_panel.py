"""The Train area with pytest-qt: real tiny runs started from the panel, steered and recorded."""

from __future__ import annotations

import math
import time

import pytest

from tests.fixtures.data import tiny_text_config

RUN_TIMEOUT_MS = 180_000


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The CPU is shared: two intra-op threads on a busy 2-core machine run ~10x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def state(home, qtbot):
    from tunedesk.ui.state import AppState

    return AppState(home)


@pytest.fixture
def panel(state, qtbot):
    from tunedesk.ui.training.panel import TrainingPanel

    p = TrainingPanel(state)
    qtbot.addWidget(p)
    p.resize(1280, 800)
    yield p
    p.shutdown()


def _setup(panel, model_dir, data, **hparams):
    config = tiny_text_config(model_dir, data, **hparams)
    panel.form.apply_config(config)
    return config


def _wait_idle(qtbot, panel, timeout=RUN_TIMEOUT_MS):
    qtbot.waitUntil(lambda: panel.controller.mode == "idle" and not panel.state.running, timeout=timeout)


def _store(state):
    from tunedesk.engine.store import RunStore

    return RunStore(state.database)


def test_panel_imports_no_heavy_modules():
    import subprocess
    import sys

    code = (
        "import sys; import tunedesk.ui.training.panel as m; assert m.TrainingPanel; "
        "print(','.join(x for x in ('torch', 'transformers', 'pyqtgraph') if x in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_tiny_run_finishes_reaches_the_plots_is_recorded_and_answers_try_it(
    panel, state, qtbot, tiny_bert_dir, text_csv
):
    _setup(panel, tiny_bert_dir, text_csv, epochs=2)
    with qtbot.waitSignal(state.runFinished, timeout=RUN_TIMEOUT_MS) as finished:
        assert panel.controller.start()
        assert state.running
    _wait_idle(qtbot, panel)
    run_id = finished.args[0]
    # Metrics reached the plot buffers and the plots.
    assert len(panel.controller.curves.steps) >= 4
    assert panel.controller.curves.steps.view()[-1] == panel.monitor.total_steps
    assert math.isfinite(panel.controller.curves.ema.last())
    assert [e["epoch"] for e in panel.controller.curves.epochs] == [1, 2]
    assert panel.plots is not None and panel.plots.redraws >= 1
    xs, ys = panel.plots.ema_curve.getData()
    assert len(xs) == len(panel.controller.curves.steps)
    assert panel.monitor.overall_bar.value() == 1000
    assert panel.controller.last_finished.status == "completed"
    # The evaluation view shows the best epoch's confusion matrix with the class names.
    model = panel.evaluation.confusion_model
    assert model.rowCount() == 4 and model.headerData(0, __import__("PySide6.QtCore").QtCore.Qt.Orientation.Horizontal)
    assert sum(sum(r) for r in model.matrix) > 0
    # The run is in the database.
    with _store(state) as store:
        run = store.get_run(run_id)
        assert run["status"] == "completed"
        assert len(store.epoch_metrics(run_id)) == 2
    assert "finished" in "\n".join(panel.log.lines())
    # Try it: the best checkpoint answers in the worker's thread.
    assert panel.try_it.isEnabled()
    panel.try_it.text.setPlainText("refund for the invoice charge please")
    panel.try_it.predict_button.click()  # answered in the worker's thread (not waitSignal: it is cross-thread)
    qtbot.waitUntil(lambda: "Predicted class" in panel.try_it.status.text(), timeout=60_000)
    got = [(bar.format(), label.text()) for label, bar in panel.try_it.bars._rows]
    assert {name.replace("<b>", "").replace("</b>", "") for _, name in got} == {
        "account",
        "billing",
        "shipping",
        "technical",
    }
    assert sum(float(fmt.rstrip(" %")) for fmt, _ in got) == pytest.approx(100.0, abs=0.5)


def test_invalid_values_show_the_engine_message_beside_the_field_and_do_not_start(
    panel, state, tiny_bert_dir, text_csv
):
    _setup(panel, tiny_bert_dir, text_csv)
    panel.form.lr_edit.setText("-0.001")
    assert panel.controller.start() is False
    assert panel.controller.worker is None and not state.running
    errors = panel.form.visible_errors()
    assert "hparams.learning_rate" in errors
    assert "must be > 0" in errors["hparams.learning_rate"]
    assert panel.form._errors["hparams.learning_rate"].isVisibleTo(panel.form)

    panel.form.lr_edit.setText("fast")
    assert panel.controller.start() is False
    assert "must be a number" in panel.form.visible_errors()["hparams.learning_rate"]

    panel.form.lr_edit.setText("1e-3")
    panel.form.hparams.warmup.setText("1.5")
    assert panel.controller.start() is False
    assert set(panel.form.visible_errors()) == {"hparams.warmup_ratio"}

    # An incompatible combination lands beside the second field.
    panel.form.hparams.warmup.setText("0.1")
    panel.form.precision.setCurrentIndex(panel.form.precision.findData("fp16"))
    assert panel.controller.start() is False
    assert "fp16 is not supported on the CPU" in panel.form.visible_errors()["precision"]

    panel.form.precision.setCurrentIndex(panel.form.precision.findData("fp32"))
    panel.form.hparams.grad_accum.setValue(0)
    assert panel.controller.start() is False
    assert (
        "hparams.grad_accum_steps must be a whole number >= 1"
        in panel.form.visible_errors()["hparams.grad_accum_steps"]
    )
    with _store(state) as store:
        assert store.list_runs() == []


def test_suggested_learning_rate_is_filled_in_and_explained(panel, tiny_bert_dir, text_csv):
    config = tiny_text_config(tiny_bert_dir, text_csv, learning_rate=None, epochs=None, batch_size=None)
    panel.form.apply_config(config)
    assert panel.form.lr_edit.text() == "5e-05"  # the size is not known before the model is read
    note = panel.form.lr_note.text()
    assert "the bert family's fine-tuning rate 5e-05" in note and "calibrated on three real" in note
    from tunedesk.engine.defaults import suggested_head_learning_rate

    assert f"new head trains at {suggested_head_learning_rate(5e-5):g}" in note
    # Epochs and batch size show "auto" and ask the engine for its defaults.
    assert panel.form.hparams.epochs.text() == "auto" and panel.form.hparams.batch_size.text() == "auto"
    assert panel.form.build_config().hparams.epochs is None
    # Left at the suggestion, the config asks the engine for its default (so the head gets its own rate).
    assert panel.form.build_config().hparams.learning_rate is None
    panel.form.lr_edit.setText("3e-5")
    panel.form._lr_edited("3e-5")
    assert panel.form.build_config().hparams.learning_rate == pytest.approx(3e-5)
    assert "Set by you" in panel.form.lr_note.text()


def test_setup_files_and_past_run_configuration(panel, state, tmp_path, tiny_bert_dir, text_csv):
    from tunedesk.engine.config import FreezeSpec, RunConfig

    config = tiny_text_config(tiny_bert_dir, text_csv, epochs=4, batch_size=4, weight_decay=0.05, schedule="linear")
    config.freeze = FreezeSpec(preset="last_n_blocks", last_n=1)
    config.hparams.max_grad_norm = None
    state.configRequested.emit(config)
    built = panel.form.build_config()
    assert built.to_dict() == config.to_dict()
    assert "last 1 block + head" in panel.form.freeze_label.text()
    assert panel.save_config_file(tmp_path / "run.json")
    assert RunConfig.load(tmp_path / "run.json").to_dict() == config.to_dict()
    # TOML has no empty value: "no clipping" would come back as 1.0, so the panel says so.
    assert not panel.save_config_file(tmp_path / "lossy.toml")
    assert "hparams.max_grad_norm" in panel.form.visible_errors()[""]
    panel.form.hparams.clip.setText("0.5")
    config.hparams.max_grad_norm = 0.5
    panel.form.clear_errors()
    assert panel.save_config_file(tmp_path / "run.toml")
    assert RunConfig.load(tmp_path / "run.toml").to_dict() == config.to_dict()
    panel.form.hparams.epochs.setValue(9)
    assert panel.open_config_file(tmp_path / "run.toml")
    assert panel.form.hparams.epochs.value() == 4
    # A broken file: the message names the problem, the form keeps its values.
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [", encoding="utf-8")
    assert not panel.open_config_file(bad)
    assert "not valid TOML" in panel.form.visible_errors()[""]
    assert panel.form.hparams.epochs.value() == 4


def test_language_model_and_image_setups_survive_the_form(panel, tmp_path):
    from tunedesk.engine.config import DataSpec, HyperParams, ModelSpec, RunConfig

    lm = RunConfig(
        task="causal_lm",
        model=ModelSpec(str(tmp_path / "tiny-llama")),
        data=DataSpec(kind="chat_jsonl", path=str(tmp_path / "chat.jsonl")),
        hparams=HyperParams(
            prompts=["where is my parcel", "can i get a refund"], sample_max_new_tokens=20, gradient_checkpointing=True
        ),
    )
    panel.form.apply_config(lm)
    assert panel.form.build_config().to_dict() == lm.to_dict()
    assert not panel.form.text_col.isVisibleTo(panel.form)
    settings = panel.form.lm_settings  # the prompts the samples answer, in the form for language models
    assert panel.form.lm_group.isVisibleTo(panel.form)
    assert settings.prompts.toPlainText() == "where is my parcel\ncan i get a refund"
    settings.prompts.setPlainText("where is my parcel\n\n  and my invoice  ")
    settings.max_new.setValue(32)
    built = panel.form.build_config().hparams
    assert (built.prompts, built.sample_max_new_tokens) == (["where is my parcel", "and my invoice"], 32)
    settings.prompts.setPlainText("\n".join(f"question {i}" for i in range(17)))
    assert panel.form.validated_config() is None  # too many prompts: said beside them, none dropped silently
    assert "at most 16" in panel.form.visible_errors()["hparams.prompts"]
    images = RunConfig(
        task="image_classification",
        model=ModelSpec("resnet18", source="torchvision"),
        data=DataSpec(kind="image_folder", path=str(tmp_path)),
        device="cpu",
    )
    panel.form.apply_config(images)
    assert panel.form.build_config().to_dict() == images.to_dict()
    assert panel.form.hparams.image_size.isVisibleTo(panel.form) and not panel.form.hparams.max_length.isVisibleTo(
        panel.form
    )
    assert not panel.form.lm_group.isVisibleTo(panel.form)


def test_models_data_and_freeze_plan_come_from_the_app_state(state, qtbot, tiny_bert_dir, text_csv):
    from tunedesk.engine.catalog.entry import ModelEntry
    from tunedesk.engine.config import DataSpec, FreezeSpec
    from tunedesk.ui.training.panel import TrainingPanel

    state.model = ModelEntry(
        id="folder:x",
        name="tiny-bert",
        path=str(tiny_bert_dir),
        source="user_folder",
        family="bert",
        parameters=123_456,
    )
    p = TrainingPanel(state)
    qtbot.addWidget(p)
    assert p.form.model_edit.text() == str(tiny_bert_dir)
    assert "tiny-bert" in p.form.model_note.text()
    assert p.form.lr_edit.text() == "0.0002"  # a tiny model: the family rate x3 (the most for small size)
    state.select_data(DataSpec(kind="text_table", path=str(text_csv)))
    assert p.form.data_edit.text() == str(text_csv)
    assert p.form.text_col.currentText() == "text" and p.form.label_col.findText("label") >= 0
    state.set_freeze(FreezeSpec(preset="head_only"))
    assert "head only" in p.form.freeze_label.text()
    cfg = p.form.build_config()
    assert cfg.freeze.preset == "head_only" and cfg.model.name_or_path == str(tiny_bert_dir)
    tv = ModelEntry(
        id="torchvision:resnet18",
        name="resnet18",
        path="/w/resnet18-f37072fd.pth",
        source="torch_hub",
        architecture="resnet18",
        model_type="torchvision",
        family="resnet",
        task="image_classification",
    )
    state.select_model(tv)
    cfg = p.form.build_config()
    assert (cfg.model.source, cfg.model.name_or_path, cfg.model.weights) == ("torchvision", "resnet18", tv.path)


def test_stop_pause_and_resume(panel, state, qtbot, tiny_bert_dir, text_csv):
    _setup(panel, tiny_bert_dir, text_csv, epochs=3, log_every=1)
    assert panel.controller.start()
    qtbot.waitUntil(
        lambda: panel.controller.mode == "running" and panel.controller.worker.steps.total >= 2, timeout=RUN_TIMEOUT_MS
    )
    panel.controller.pause()
    assert panel.controller.mode == "paused" and panel.controller.worker.control.paused
    time.sleep(0.3)  # the step in flight finishes, then the loop waits
    held = panel.controller.worker.steps.total
    qtbot.wait(600)
    assert panel.controller.worker.steps.total == held  # no progress while paused
    panel.controller.unpause()
    qtbot.waitUntil(lambda: panel.controller.worker.steps.total > held, timeout=RUN_TIMEOUT_MS)
    panel.controller.stop()
    assert panel.controller.mode == "stopping"
    _wait_idle(qtbot, panel)
    run_id = panel.controller.run_id
    assert panel.controller.last_finished.status == "stopped"
    stopped_at = panel.controller.last_finished.steps
    with _store(state) as store:
        assert store.get_run(run_id)["status"] == "stopped"
        assert "last" in store.checkpoints(run_id)
    assert panel.continue_button.isVisibleTo(panel)
    # Resume the stopped run (runner.resume from its checkpoint) in the same record.
    with qtbot.waitSignal(state.runFinished, timeout=RUN_TIMEOUT_MS):
        panel.continue_button.click()
    _wait_idle(qtbot, panel)
    assert panel.controller.last_finished.status == "completed"
    steps = panel.controller.curves.steps.view()
    assert (steps[1:] > steps[:-1]).all()  # the curve continues: no repeated steps after the resume
    assert steps[-1] == panel.monitor.total_steps > stopped_at
    with _store(state) as store:
        run = store.get_run(run_id)
        assert run["status"] == "completed"
        assert len(store.epoch_metrics(run_id)) == 3
    assert any("resumed from step" in line for line in panel.log.lines())


def test_failing_run_shows_its_error_and_is_recorded_failed(panel, state, qtbot, tiny_bert_dir, text_csv, monkeypatch):
    import torch

    from tunedesk.engine.tasks.text_classification import TextClassification

    calls = {"n": 0}
    real_forward = TextClassification.forward

    def forward(self, model, batch):
        calls["n"] += 1
        if calls["n"] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(self, model, batch)

    monkeypatch.setattr(TextClassification, "forward", forward)
    _setup(panel, tiny_bert_dir, text_csv, epochs=1)
    with qtbot.waitSignal(state.runFinished, timeout=RUN_TIMEOUT_MS) as finished:
        panel.controller.start()
    _wait_idle(qtbot, panel)
    box = panel.error_dialog
    assert box is not None and box.isVisible()
    assert "ran out of GPU memory" in box.text()
    assert "halves the batch" in box.informativeText()
    box.close()
    with _store(state) as store:
        run = store.get_run(finished.args[0])
        assert run["status"] == "failed"
        assert "ran out of GPU memory" in run["error"]
    # The app stays usable: a fixed setup starts again.
    assert panel.start_button.isEnabled() and panel.form.isEnabled()


def test_missing_data_file_is_refused_before_a_run_exists(panel, state, qtbot, tiny_bert_dir, text_csv):
    _setup(panel, tiny_bert_dir, text_csv)
    text_csv.unlink()  # deleted after the setup was made
    assert panel.controller.start()
    _wait_idle(qtbot, panel, timeout=60_000)
    box = panel.error_dialog
    assert box is not None and box.isVisible()
    assert "tickets.csv" in box.text()
    assert box.informativeText()
    assert panel.form.visible_errors()  # and beside the data field
    with _store(state) as store:
        assert store.list_runs() == []


def test_closing_during_a_run_stops_cleanly(panel, state, qtbot, tiny_bert_dir, text_csv):
    _setup(panel, tiny_bert_dir, text_csv, epochs=3, log_every=1)
    panel.controller.start()
    qtbot.waitUntil(lambda: panel.controller.worker.steps.total >= 1, timeout=RUN_TIMEOUT_MS)
    assert state.running
    assert panel.stop_and_wait() is True
    assert not state.running
    assert panel.controller.worker is None  # thread ended
    with _store(state) as store:
        (run,) = store.list_runs()
        assert run["status"] == "stopped"
        assert "last" in store.checkpoints(run["id"])


def test_a_100k_step_run_redraws_as_fast_as_a_100_step_run(panel, qtbot):
    from tunedesk.engine.run.events import StepLogged

    panel.ensure_plots()
    panel.show()
    qtbot.waitExposed(panel)

    def feed(n):
        panel.controller.curves.reset()
        events = [
            StepLogged(1, i + 1, i // 1000, 2.0 * math.exp(-i / 20000) + 0.1 * math.sin(i), 1e-5, 100.0, i * 0.01)
            for i in range(n)
        ]
        t = time.perf_counter()
        panel.controller.curves.add_steps(events)  # what the timer does with a drained buffer
        return time.perf_counter() - t

    def timed_redraw():
        t = time.perf_counter()
        panel.plots.redraw(force=True)
        panel.plots.view.viewport().repaint()  # paint now, synchronously
        return time.perf_counter() - t

    feed(100)
    first_small = timed_redraw()
    small = min(timed_redraw() for _ in range(3))
    append_100k = feed(100_000)
    first_big = timed_redraw()
    big = min(timed_redraw() for _ in range(3))
    assert len(panel.controller.curves.steps) == 100_000
    assert panel.plots.raw_curve.xData.shape[0] == 100_000  # all data; getData() is what is drawn (downsampled)
    print(
        f"append 100k: {append_100k * 1000:.0f} ms; redraw 100: {first_small * 1000:.1f}/{small * 1000:.1f} ms, "
        f"100k: {first_big * 1000:.1f}/{big * 1000:.1f} ms"
    )
    assert append_100k < 2.0
    assert first_big < 0.5
    assert big < 0.25, f"redraw of 100k steps took {big * 1000:.0f} ms (100 steps: {small * 1000:.0f} ms)"
    assert big < max(10 * small, 0.05)


def test_lr_finder_dialog_proposes_a_value_and_fills_it_in(panel, qtbot, tiny_bert_dir, text_csv):
    _setup(panel, tiny_bert_dir, text_csv, learning_rate=None, batch_size=16)
    dialog = panel.open_lr_finder(num_steps=30)
    assert dialog is not None
    qtbot.waitUntil(lambda: dialog.finished_running, timeout=RUN_TIMEOUT_MS)
    assert dialog.error is None, dialog.error
    assert dialog.result is not None and dialog.use_button.isEnabled()
    assert len(dialog.raw.getData()[0]) == len(dialog.result.lrs)
    dialog.use_button.click()
    assert panel.form.lr_edit.text() == f"{dialog.result.suggestion:.2g}"
    assert "learning-rate finder" in panel.form.lr_note.text()
    assert panel.form.build_config().hparams.learning_rate == pytest.approx(float(f"{dialog.result.suggestion:.2g}"))


def test_cancelling_the_lr_finder_closes_at_once_and_changes_nothing(panel, qtbot, tiny_bert_dir, text_csv):
    from tunedesk.ui.training.lr_dialog import wait_for_background

    _setup(panel, tiny_bert_dir, text_csv, learning_rate=None)
    before = panel.form.lr_edit.text()
    dialog = panel.open_lr_finder(num_steps=30)
    t = time.perf_counter()
    dialog.reject()  # while it is still preparing
    assert time.perf_counter() - t < 1.0
    assert wait_for_background(120_000)  # the cancelled test ends on its own
    qtbot.waitUntil(lambda: panel.lr_dialog is None, timeout=5000)
    assert panel.form.lr_edit.text() == before


def test_language_model_sample_replies_reach_their_tab(panel):
    from tunedesk.engine.run.events import SampleGenerated

    tab = panel.tabs.indexOf(panel.samples)
    assert tab >= 0 and not panel.tabs.isTabVisible(tab)  # hidden for classifiers
    panel.tabs.setTabVisible(tab, True)
    panel.controller._on_sample(SampleGenerated(1, 0, 0, "where is my parcel", "arr, it sails"))
    panel.controller._on_sample(SampleGenerated(1, 10, 1, "where is my parcel", "arr, it be in port"))
    assert panel.samples.model.rowCount() == 2
    assert panel.tabs.currentWidget() is panel.samples


def test_lora_plans_are_described_with_their_adapters_and_rate(panel, tmp_path):
    from tunedesk.engine.config import DataSpec, ModelSpec, RunConfig
    from tunedesk.engine.lm import lora
    from tunedesk.ui.training.setup_helpers import freeze_text

    assert (
        freeze_text(lora.preset_spec("lora_attention_last_n", last_n=2))
        == "Base frozen + LoRA (rank 8) on the attention of the last 2 blocks"
    )
    assert (
        freeze_text(lora.preset_spec("lora_all_linear", rank=16)) == "Base frozen + LoRA (rank 16) on all linear layers"
    )
    assert freeze_text(lora.preset_spec("last_n_full", last_n=1)).endswith("+ LoRA (rank 8) on the other layers")
    model = tmp_path / "tiny-llama"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    panel.form.apply_config(
        RunConfig(
            task="causal_lm",
            model=ModelSpec(str(model)),
            data=DataSpec(kind="chat_jsonl", path=str(tmp_path / "chat.jsonl")),
        )
    )
    panel.form.set_freeze(lora.preset_spec("lora_attention"))
    assert "Base frozen + LoRA" in panel.form.freeze_label.text()
    assert "LoRA adapters train at 0.001" in panel.form.lr_note.text()  # the suggested base rate is 3e-05


def test_augmentation_and_feature_cache_switches_survive_the_form(panel, tmp_path):
    from tunedesk.engine.config import DataSpec, HyperParams, ModelSpec, RunConfig

    images = RunConfig(
        task="image_classification",
        model=ModelSpec("resnet18", source="torchvision"),
        data=DataSpec(kind="image_folder", path=str(tmp_path)),
        hparams=HyperParams(augment=False, feature_cache=False),
        device="cpu",
    )
    panel.form.apply_config(images)
    form = panel.form
    assert form.hparams.augment.isVisibleTo(form) and form.hparams.feature_cache.isVisibleTo(form)
    assert not form.hparams.augment.isChecked() and not form.hparams.feature_cache.isChecked()
    assert form.build_config().to_dict() == images.to_dict()
    form.hparams.augment.setChecked(True)
    form.hparams.feature_cache.setChecked(True)
    built = form.build_config().hparams
    assert built.augment and built.feature_cache
    panel.grab().save(str(tmp_path / "train-options.png"))
    lm = RunConfig(task="causal_lm", model=ModelSpec(str(tmp_path)), data=DataSpec(kind="text_corpus", path="x"))
    form.apply_config(lm)
    assert not form.hparams.augment.isVisibleTo(form) and not form.hparams.feature_cache.isVisibleTo(form)


def test_checkpoint_settings_survive_the_form_and_bad_steps_are_shown_beside_them(panel, tmp_path, qtbot):
    from tunedesk.engine.config import DataSpec, HyperParams, ModelSpec, RunConfig

    config = RunConfig(
        task="text_classification",
        model=ModelSpec(str(tmp_path)),
        data=DataSpec(kind="text_table", path=str(tmp_path / "t.csv")),
        hparams=HyperParams(checkpoint_every_minutes=2.5, checkpoint_every_steps=200),
        device="cpu",
    )
    form = panel.form
    form.apply_config(config)
    assert form.hparams.checkpoint_minutes.value() == 2.5
    assert form.hparams.checkpoint_steps.text() == "200"
    assert form.build_config().to_dict() == config.to_dict()
    # length grouping: a text-classification switch, on by default, that survives the form
    assert form.hparams.group_by_length.isVisibleTo(form) and form.hparams.group_by_length.isChecked()
    form.hparams.group_by_length.setChecked(False)
    assert form.build_config().hparams.group_by_length is False
    form.apply_config(config)
    assert form.hparams.group_by_length.isChecked()
    form.apply_config(RunConfig(task="causal_lm", model=ModelSpec(str(tmp_path)), data=DataSpec("text_corpus", "x")))
    assert not form.hparams.group_by_length.isVisibleTo(form)
    form.hparams.checkpoint_minutes.setValue(0.0)  # shown as "epoch ends only"
    form.hparams.checkpoint_steps.setText("")
    built = form.build_config().hparams
    assert built.checkpoint_every_minutes == 0.0 and built.checkpoint_every_steps is None
    assert form.hparams.checkpoint_minutes.text() == "epoch ends only"
    form.hparams.checkpoint_steps.setText("every hour")
    assert form.validated_config() is None
    errors = form.visible_errors()
    assert set(errors) <= {"hparams.checkpoint_every_steps", "hparams.checkpoint_every_minutes"}  # one row
    assert "whole number of optimizer steps" in errors["hparams.checkpoint_every_steps"]
    assert form.rows.widgets["hparams.checkpoint_every_steps"] is form.hparams.checkpoint_steps
    # shown in the checkpoint row
    shown = form.rows.errors["hparams.checkpoint_every_steps"]
    assert shown is form.rows.errors["hparams.checkpoint_every_minutes"]
