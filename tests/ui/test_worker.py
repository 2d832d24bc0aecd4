"""The run worker, driven synchronously (``run()`` called in the test's thread) and in a QThread."""

from __future__ import annotations

import threading

import pytest

from tests.fixtures.data import tiny_text_config


@pytest.fixture(autouse=True)
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Recorder:
    """Collects every signal of a worker (direct connections: the worker runs in this thread)."""

    NAMES = (
        "progress",
        "prepared",
        "startFailed",
        "runStarted",
        "epochEnded",
        "checkpointSaved",
        "logMessage",
        "runFinished",
        "done",
        "predicted",
        "predictFailed",
    )

    def __init__(self, worker) -> None:
        self.calls: list[tuple[str, tuple]] = []
        for name in self.NAMES:
            getattr(worker, name).connect(lambda *args, _n=name: self.calls.append((_n, args)))

    def of(self, name: str) -> list[tuple]:
        return [args for n, args in self.calls if n == name]


def test_step_buffer_is_thread_safe():
    from tunedesk.engine.run.events import StepLogged
    from tunedesk.ui.worker import StepBuffer

    buf = StepBuffer()
    drained = []

    def produce(offset):
        for i in range(5000):
            buf.push(StepLogged(1, offset + i, 0, 1.0, 1e-5, 1.0, 0.0))

    threads = [threading.Thread(target=produce, args=(k * 10_000,)) for k in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        drained += buf.drain()
    for t in threads:
        t.join()
    drained += buf.drain()
    assert len(drained) == buf.total == 20_000
    assert len({e.step for e in drained}) == 20_000
    assert len(buf) == 0


def test_synchronous_run_emits_events_buffers_steps_and_predicts(home, tiny_bert_dir, text_csv, qtbot):
    from tunedesk.engine.store import RunStore
    from tunedesk.ui.worker import RunWorker

    worker = RunWorker(tiny_text_config(tiny_bert_dir, text_csv, epochs=2, log_every=1), home=home)
    rec = Recorder(worker)
    worker.run()
    assert worker.finished_flag.is_set()
    (result,) = rec.of("done")[0]
    assert result.status == "completed"
    assert rec.of("startFailed") == []
    info = rec.of("prepared")[0][0]
    assert info.label_names == ["account", "billing", "shipping", "technical"]
    assert "learning rate" in info.lr_explanation and info.trainable_params > 0
    started = rec.of("runStarted")[0][0]
    assert started.run_id == result.run_id == worker.run_id
    assert [a[0].epoch for a in rec.of("epochEnded")] == [1, 2]
    assert rec.of("runFinished")[0][0].status == "completed"
    # Steps are buffered, never one signal each.
    steps = worker.steps.drain()
    assert len(steps) == started.total_steps  # log_every=1
    assert [s.step for s in steps] == list(range(1, started.total_steps + 1))
    assert len(rec.calls) < len(steps) + 20
    with RunStore(home / "tunedesk.db") as store:
        assert store.get_run(result.run_id)["status"] == "completed"
    # "Try it" with the best checkpoint, from the prepared model.
    worker.predict(["refund for my invoice please"])
    inputs, scores = rec.of("predicted")[0]
    assert inputs == ["refund for my invoice please"]
    assert set(scores[0]) == set(info.label_names)
    assert sum(scores[0].values()) == pytest.approx(1.0, abs=1e-4)


def test_best_model_loads_from_a_finished_run_folder_without_the_prepared_model(home, tiny_bert_dir, text_csv):
    from tunedesk.engine.run import runner
    from tunedesk.ui.worker import load_best_model

    config = tiny_text_config(tiny_bert_dir, text_csv, epochs=1)
    prep = runner.prepare(config)
    result = runner.execute(config, home=home, prepared=prep)
    text = ["the parcel delivery is late"]
    task, loaded, _ = load_best_model(result.output_dir, prep)
    fresh_task, fresh, cfg = load_best_model(result.output_dir)
    assert cfg.to_dict() == prep.config.to_dict()
    a = task.predict(loaded, text)[0]
    b = fresh_task.predict(fresh, text)[0]
    assert a.keys() == b.keys()
    assert all(abs(a[k] - b[k]) < 1e-5 for k in a)


def test_predict_before_the_run_or_without_a_checkpoint_is_a_clear_error(home, tmp_path, tiny_bert_dir, text_csv):
    from tunedesk.engine.errors import TuneDeskError
    from tunedesk.ui.worker import RunWorker, load_best_model

    worker = RunWorker(tiny_text_config(tiny_bert_dir, text_csv), home=home)
    rec = Recorder(worker)
    worker.predict(["hello"])
    message, hint = rec.of("predictFailed")[0]
    assert "has not finished" in message and hint
    with pytest.raises(TuneDeskError, match="no best checkpoint"):
        load_best_model(tmp_path)


@pytest.mark.parametrize(
    "change, field, words",
    [
        (lambda c: setattr(c.hparams, "learning_rate", -1.0), "hparams.learning_rate", "must be > 0"),
        (lambda c: setattr(c.data, "path", "/nowhere/tickets.csv"), "data.path", "tickets.csv"),
        (lambda c: setattr(c.model, "name_or_path", "/nowhere/model"), "model.name_or_path", "/nowhere/model"),
    ],
)
def test_preparation_errors_become_start_failed_with_the_field(home, tiny_bert_dir, text_csv, change, field, words):
    from tunedesk.engine.store import RunStore
    from tunedesk.ui.worker import RunWorker

    config = tiny_text_config(tiny_bert_dir, text_csv)
    change(config)
    worker = RunWorker(config, home=home)
    rec = Recorder(worker)
    worker.run()
    message, hint, got_field = rec.of("startFailed")[0]
    assert words in message and got_field == field
    assert hint
    assert rec.of("done") == [(None,)] and rec.of("runStarted") == []
    with RunStore(home / "tunedesk.db") as store:
        assert store.list_runs() == []


def test_unexpected_errors_are_caught_and_reported(home, tiny_bert_dir, text_csv, monkeypatch):
    from tunedesk.engine.run import runner
    from tunedesk.ui.worker import RunWorker

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runner, "prepare", boom)
    worker = RunWorker(tiny_text_config(tiny_bert_dir, text_csv), home=home)
    rec = Recorder(worker)
    worker.run()  # never raises
    message, hint, _ = rec.of("startFailed")[0]
    assert "internal error: RuntimeError: disk on fire" in message
    assert "bug" in hint
    assert worker.finished_flag.is_set()


def test_stop_then_resume_synchronously(home, tiny_bert_dir, text_csv):
    from tunedesk.engine.store import RunStore
    from tunedesk.ui.worker import RunWorker

    worker = RunWorker(tiny_text_config(tiny_bert_dir, text_csv, epochs=2, log_every=1), home=home)
    rec = Recorder(worker)
    # Stop as soon as the run starts: the loop finishes its step, checkpoints and ends "stopped".
    worker.runStarted.connect(lambda _ev: worker.control.request_stop())
    worker.run()
    finished = rec.of("runFinished")[0][0]
    assert finished.status == "stopped" and finished.steps == 1
    assert any(a[0].which == "last" for a in rec.of("checkpointSaved"))
    again = RunWorker(home=home, resume_run_id=worker.run_id)
    rec2 = Recorder(again)
    again.run()
    assert rec2.of("startFailed") == []
    started = rec2.of("runStarted")[0][0]
    assert started.start_step == 1 and started.run_id == worker.run_id
    assert rec2.of("done")[0][0].status == "completed"
    assert again.steps.drain()[0].step == 2
    with RunStore(home / "tunedesk.db") as store:
        assert store.get_run(worker.run_id)["status"] == "completed"
        assert len(store.list_runs()) == 1
    # A completed run cannot be resumed: a clear message, not a crash.
    third = RunWorker(home=home, resume_run_id=worker.run_id)
    rec3 = Recorder(third)
    third.run()
    message, hint, _ = rec3.of("startFailed")[0]
    assert "nothing to resume" in message and hint


def test_worker_in_a_thread_pauses_and_stops(home, tiny_bert_dir, text_csv, qtbot):
    from tunedesk.ui.background import run_in_background
    from tunedesk.ui.worker import RunWorker

    worker = RunWorker(tiny_text_config(tiny_bert_dir, text_csv, epochs=5, log_every=1), home=home)
    worker.control.pause()  # paused from the start: the loop holds after its first step
    task = run_in_background(lambda ctx: worker.run(), name="test-run", move=worker)
    thread = task.thread_
    try:
        qtbot.waitUntil(lambda: worker.steps.total >= 1, timeout=120_000)
        assert worker.thread() is thread  # the worker lives in its thread, not the GUI's
        qtbot.wait(500)
        assert worker.steps.total == 1
        worker.control.resume()
        qtbot.waitUntil(lambda: worker.steps.total >= 3, timeout=120_000)
        worker.control.request_stop()
        assert worker.finished_flag.wait(120)
        assert worker.result.status == "stopped"
    finally:
        assert task.wait()


def test_run_worker_needs_a_config_or_a_run():
    from tunedesk.ui.worker import RunWorker

    with pytest.raises(ValueError):
        RunWorker()
