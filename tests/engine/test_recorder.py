"""RunRecorder: every event kind lands in the history, in batches, without ever blocking training."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.paths import database_path
from tunedesk.engine.run import recorder as recorder_module
from tunedesk.engine.run.events import (
    CheckpointSaved,
    EpochEnded,
    EventBus,
    LogMessage,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepLogged,
)
from tunedesk.engine.run.recorder import RunRecorder
from tunedesk.engine.store import RunStore


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return database_path(tmp_path)


@pytest.fixture
def store(db: Path):
    s = RunStore(db)
    yield s
    s.close()


def new_run(store: RunStore) -> int:
    return store.create_run(
        config={"epochs": 2},
        name="run",
        task="text_classification",
        model_name="tiny",
        model_path="/m",
        model_hash=None,
        dataset_name="tickets",
        dataset_hash=None,
    )


def started(run_id: int | None) -> RunStarted:
    return RunStarted(run_id, total_steps=20, steps_per_epoch=10, epochs=2, trainable_params=1_000,
                      total_params=50_000, device="cpu", precision="fp32", learning_rate=1e-3)  # fmt: skip


def step(run_id: int | None, s: int) -> StepLogged:
    return StepLogged(run_id, step=s, epoch=s // 10, loss=1.0 / s, learning_rate=1e-3, samples_per_second=64.0,
                      elapsed=s * 0.01, gpu_memory_mb=None)  # fmt: skip


def test_records_every_event_kind(store: RunStore, db: Path) -> None:
    run_id = new_run(store)
    rec = RunRecorder(db, run_id, best_metric="val_macro_f1")
    rec(started(run_id))
    for s in range(1, 11):
        rec(step(run_id, s))
    rec(LogMessage(run_id, "info", "epoch 1 done"))
    rec(
        EpochEnded(
            run_id,
            epoch=1,
            step=10,
            metrics={"val_loss": 0.7, "val_accuracy": 0.6, "val_macro_f1": 0.55},
            confusion=[[3, 1], [1, 3]],
            label_names=["a", "b"],
            per_class={"a": {"f1": 0.5}},
            is_best=True,
        )
    )
    rec(CheckpointSaved(run_id, "/runs/1/best", "best", 10, 1))
    rec(CheckpointSaved(run_id, "/runs/1/last", "last", 10, 1))
    rec(SampleGenerated(run_id, step=10, epoch=1, prompt="Hello", text="Hello there"))
    for s in range(11, 21):
        rec(step(None, s))  # run_id None: this recorder's run
    rec(EpochEnded(run_id, epoch=2, step=20, metrics={"val_macro_f1": 0.5}, is_best=False))
    rec(CheckpointSaved(run_id, "/runs/1/last2", "last", 20, 2))
    rec(RunFinished(run_id, status="completed", best_metric=0.55, final_metrics={"val_macro_f1": 0.5},
                    samples_per_second=70.5, steps=20, duration=12.5))  # fmt: skip
    assert rec.close() is True
    assert rec.errors == 0 and rec.steps_written == 20 and not rec.alive

    run = store.get_run(run_id)
    assert run["status"] == "completed" and run["started_at"] and run["finished_at"] >= run["started_at"]
    assert (run["trainable_params"], run["total_params"], run["total_steps"]) == (1_000, 50_000, 20)
    assert (run["device"], run["precision"], run["pid"]) == ("cpu", "fp32", __import__("os").getpid())
    assert (run["best_metric"], run["best_metric_name"]) == (0.55, "val_macro_f1")
    assert run["final_metrics"] == {"val_macro_f1": 0.5} and run["samples_per_second"] == 70.5
    assert run["duration_s"] == 12.5 and run["error"] is None
    steps = store.step_metrics(run_id)
    assert [r["step"] for r in steps] == list(range(1, 21)) and steps[0]["loss"] == 1.0
    epochs = store.epoch_metrics(run_id)
    assert [e["is_best"] for e in epochs] == [True, False] and epochs[0]["confusion"] == [[3, 1], [1, 3]]
    cks = store.checkpoints(run_id)
    assert cks["best"]["path"] == "/runs/1/best" and cks["last"]["path"] == "/runs/1/last2"
    assert [l["message"] for l in store.logs(run_id)] == ["epoch 1 done"]
    assert [(s["prompt"], s["text"]) for s in store.samples(run_id)] == [("Hello", "Hello there")]


def test_resumed_run_keeps_its_first_start(store: RunStore, db: Path) -> None:
    run_id = new_run(store)
    with RunRecorder(db, run_id, best_metric="val_macro_f1") as rec:
        rec(started(run_id))
        rec(RunFinished(run_id, status="stopped", reason="stopped by the user"))
    first = store.get_run(run_id)
    store.set_status(run_id, "queued")
    with RunRecorder(db, run_id, best_metric="val_macro_f1") as rec:
        rec(RunStarted(run_id, 20, 10, 2, 1_000, 50_000, "cpu", "fp32", 1e-3, start_step=10))
        rec(RunFinished(run_id, status="completed"))
    run = store.get_run(run_id)
    assert run["status"] == "completed" and run["error"] is None
    assert run["started_at"] == first["started_at"] and run["finished_at"] >= first["finished_at"]


def test_best_metric_is_the_metric_the_recorder_is_told(store: RunStore, db: Path) -> None:
    loss, accuracy = new_run(store), new_run(store)
    metrics = {"val_loss": 0.4, "val_accuracy": 0.8, "val_macro_f1": 0.8}  # two metrics share a value
    with RunRecorder(db, loss, best_metric="val_loss") as rec:
        rec(EpochEnded(loss, 1, 10, metrics, is_best=True))
        assert rec.flush()
        assert (store.get_run(loss)["best_metric_name"], store.get_run(loss)["best_metric"]) == ("val_loss", 0.4)
        rec(RunFinished(loss, status="completed", best_metric=0.4, final_metrics=metrics))
    with RunRecorder(db, accuracy, best_metric="val_macro_f1") as rec:
        rec(EpochEnded(accuracy, 1, 10, metrics, is_best=True))
        rec(RunFinished(accuracy, status="completed", best_metric=0.8, final_metrics=metrics))
    assert (store.get_run(loss)["best_metric_name"], store.get_run(loss)["best_metric"]) == ("val_loss", 0.4)
    assert (store.get_run(accuracy)["best_metric_name"], store.get_run(accuracy)["best_metric"]) == (
        "val_macro_f1",
        0.8,
    )


def test_failed_run_keeps_reason_and_hint(store: RunStore, db: Path) -> None:
    run_id = new_run(store)
    with RunRecorder(db, run_id, best_metric="val_macro_f1") as rec:
        rec(started(run_id))
        rec(RunFinished(run_id, status="failed", reason="loss became NaN at step 3", hint="lower the learning rate"))
    run = store.get_run(run_id)
    assert run["status"] == "failed" and run["error"] == "loss became NaN at step 3"
    assert run["error_hint"] == "lower the learning rate" and run["duration_s"] is not None


def test_ten_thousand_events_are_recorded_and_emitting_is_microseconds(store: RunStore, db: Path) -> None:
    run_id = new_run(store)
    rec = RunRecorder(db, run_id, best_metric="val_macro_f1")
    rec(started(run_id))
    events = [step(run_id, s) for s in range(1, 10_001)]
    t0 = time.perf_counter()
    for event in events:
        rec(event)
    per_event_us = (time.perf_counter() - t0) / len(events) * 1e6
    assert rec.close()
    assert per_event_us < 100, f"emitting took {per_event_us:.1f} us per event"
    assert rec.errors == 0 and rec.steps_written == 10_000
    rows = store.step_metrics(run_id)
    assert len(rows) == 10_000 and rows[-1]["step"] == 10_000 and rows[9_999]["loss"] == pytest.approx(1e-4)
    assert store.get_run(run_id)["status"] == "interrupted"  # started, never reported its end


def test_training_is_not_blocked_while_the_database_is_locked(store: RunStore, db: Path) -> None:
    run_id = new_run(store)
    rec = RunRecorder(db, run_id, best_metric="val_macro_f1", busy_timeout_s=0.05, flush_interval=0.05)
    rec(started(run_id))
    assert rec.flush()
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    try:
        t0 = time.perf_counter()
        for s in range(1, 5_001):
            rec(step(run_id, s))
        emit_s = time.perf_counter() - t0
        time.sleep(0.3)  # the writer tries, meets the lock, keeps the rows for later
        assert rec.errors >= 1 and rec.steps_written < 5_000
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert emit_s < 0.5, f"emitting 5000 events took {emit_s:.3f}s while the database was locked"
    rec(RunFinished(run_id, status="stopped", reason="stopped by the user"))
    assert rec.close()
    assert len(store.step_metrics(run_id)) == 5_000  # nothing lost: busy batches are retried
    assert store.get_run(run_id)["status"] == "stopped"


def test_steps_are_batched_by_count_and_by_time(store: RunStore, db: Path, monkeypatch) -> None:
    batches: list[int] = []
    original = RunStore.add_step_metrics

    def spy(self, run_id, rows):
        batches.append(len(rows))
        return original(self, run_id, rows)

    monkeypatch.setattr(RunStore, "add_step_metrics", spy)
    run_id = new_run(store)
    rec = RunRecorder(db, run_id, best_metric="val_macro_f1", batch_rows=200, flush_interval=0.3)
    for s in range(1, 451):
        rec(step(run_id, s))
    deadline = time.monotonic() + 5
    while rec.steps_written < 450 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert batches == [200, 200, 50]  # the last 50 flushed by the timer, before close()
    assert len(store.step_metrics(run_id)) == 450
    assert rec.close()


def test_a_steady_trickle_is_flushed_by_time(store: RunStore, db: Path) -> None:
    run_id = new_run(store)
    rec = RunRecorder(db, run_id, best_metric="val_macro_f1", batch_rows=200, flush_interval=0.1)
    for s in range(1, 41):  # one step every 10 ms: the queue is never idle for a whole interval
        rec(step(run_id, s))
        time.sleep(0.01)
    assert rec.steps_written >= 20  # readers (the UI) see the run progress while it trains
    assert rec.close() and rec.steps_written == 40


def test_close_is_clean_and_idempotent(store: RunStore, db: Path) -> None:
    run_id = new_run(store)
    rec = RunRecorder(db, run_id, best_metric="val_macro_f1")
    rec(step(run_id, 1))
    assert rec.close(timeout=5) and rec.close(timeout=5)
    rec(step(run_id, 2))  # after close: ignored, no error
    assert not rec.alive and rec.steps_written == 1
    assert [r["step"] for r in store.step_metrics(run_id)] == [1]
    assert store.get_run(run_id)["status"] == "queued"  # never started: left alone


def test_events_of_other_runs_are_ignored(store: RunStore, db: Path) -> None:
    mine, other = new_run(store), new_run(store)
    with RunRecorder(db, mine, best_metric="val_macro_f1") as rec:
        rec(step(other, 1))
        rec(LogMessage(other, "info", "not mine"))
        rec(step(mine, 1))
    assert store.step_metrics(other) == [] and store.logs(other) == []
    assert len(store.step_metrics(mine)) == 1


def test_works_as_an_event_bus_listener(store: RunStore, db: Path) -> None:
    run_id = new_run(store)
    rec = RunRecorder(db, run_id, best_metric="val_macro_f1")
    bus = EventBus(rec)
    bus.emit(started(run_id))
    bus.emit(step(run_id, 1))
    bus.emit(RunFinished(run_id, status="completed"))
    assert rec.close()
    assert store.get_run(run_id)["status"] == "completed"


class ReadOnlyStore(RunStore):
    """The recorder's connection sees a read-only database (what chmod 444 does, even as root)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.db.execute("PRAGMA query_only = ON")


def test_read_only_database_never_raises_into_training(store: RunStore, db: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(recorder_module, "RunStore", ReadOnlyStore)
    run_id = new_run(store)
    caplog.set_level(logging.ERROR, logger="tunedesk.recorder")
    rec = RunRecorder(db, run_id, best_metric="val_macro_f1")
    t0 = time.perf_counter()
    rec(started(run_id))
    for s in range(1, 1_001):
        rec(step(run_id, s))
    rec(LogMessage(run_id, "info", "x"))
    rec(CheckpointSaved(run_id, "/c", "last", 1, 1))
    rec(RunFinished(run_id, status="completed"))
    assert time.perf_counter() - t0 < 0.5
    assert rec.close()  # no exception, thread ended
    assert rec.errors >= 4 and "readonly" in rec.last_error
    assert any("readonly" in r.getMessage() for r in caplog.records)
    assert store.get_run(run_id)["status"] == "queued" and store.step_metrics(run_id) == []


def test_run_deleted_while_recording(store: RunStore, db: Path) -> None:
    run_id = new_run(store)
    rec = RunRecorder(db, run_id, best_metric="val_macro_f1")
    rec(started(run_id))
    rec(step(run_id, 1))
    assert rec.flush()
    with pytest.raises(TuneDeskError, match="training right now"):
        store.delete_run(run_id)  # refused: the run is live
    with store.db.conn:  # the row vanishes anyway (another tool): the recorder survives it
        store.db.execute("DELETE FROM runs WHERE id = ?", [run_id])
    rec(step(run_id, 2))
    rec(EpochEnded(run_id, 1, 2, {"val_loss": 1.0}, is_best=True))
    rec(RunFinished(run_id, status="completed"))
    assert rec.close()
    assert rec.errors >= 2  # logged, not raised


def test_unopenable_database_is_survived(tmp_path: Path) -> None:
    bad = tmp_path / "a-folder.db"
    bad.mkdir()
    rec = RunRecorder(bad, 1, best_metric="val_macro_f1")
    rec(started(1))
    rec(step(1, 1))
    assert rec.flush(timeout=5)
    assert rec.close() and rec.errors >= 1
    rec(step(1, 2))  # still harmless
