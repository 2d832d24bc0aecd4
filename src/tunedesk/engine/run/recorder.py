"""RunRecorder: the one writer of a run's history while it trains.

The training loop (through ``EventBus``) calls ``recorder(event)``; that only puts the event on an
unbounded queue (a few microseconds, never waits on the database). A background thread owns its own
RunStore connection and writes: step rows in batches (every ``flush_interval`` seconds or
``batch_rows`` rows, one transaction each), everything else as it comes, in emission order.

A database problem (locked too long, disk full, run deleted, read-only file) is logged on the
``tunedesk.recorder`` logger and counted in ``errors``; it never reaches the training thread. Steps that
failed because the database was busy are retried on the next flush.

    recorder = RunRecorder(database_path(home), run_id, best_metric=task.primary_metric)
    bus = EventBus(recorder, *other_listeners)
    ... train ...
    recorder.close()          # flushes and joins; marks the run interrupted if it never finished
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunedesk.engine.run.events import (
    CheckpointSaved,
    EpochEnded,
    Event,
    LogMessage,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepLogged,
)
from tunedesk.engine.store import DEFAULT_BUSY_TIMEOUT_S, RUN_STATUSES, RunStore
from tunedesk.engine.store.connection import this_process

log = logging.getLogger("tunedesk.recorder")

_STOP = object()
_MAX_LOGGED_ERRORS = 5  # then only counted, so a dead database does not flood the log
_MAX_RETRY_ROWS = 100_000


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class RunRecorder:
    """Callable event listener that records one run into the history database."""

    def __init__(
        self,
        db_path: Path | str,
        run_id: int,
        *,
        best_metric: str,
        flush_interval: float = 0.5,
        batch_rows: int = 200,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        max_pending: int = 500_000,
    ) -> None:
        self.db_path = Path(db_path)
        self.run_id = int(run_id)
        self.flush_interval = float(flush_interval)
        self.batch_rows = max(1, int(batch_rows))
        self.busy_timeout_s = busy_timeout_s
        self.best_metric = best_metric  # the metric runs.best_metric holds (the task's primary metric)
        self.max_pending = max_pending
        # Counters, read by tests and the UI; written only by the writer thread (dropped: by callers).
        self.errors = 0
        self.last_error: str = ""
        self.dropped = 0
        self.steps_written = 0
        self.events_written = 0
        self.started = False
        self.finished = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._accepting = True
        self._closed = False
        self._retry_at = 0.0
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"tunedesk-recorder-{self.run_id}", daemon=True)
        self._thread.start()

    # -- training side (any thread) ---------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Queue an event for writing. Never blocks, never raises."""
        if not self._accepting:
            return
        run_id = getattr(event, "run_id", None)
        if run_id is not None and run_id != self.run_id:
            return  # another run's event on a shared bus
        if type(event) is StepLogged and self._queue.qsize() >= self.max_pending:
            self.dropped += 1  # database stuck for a very long time: keep memory bounded
            return
        self._queue.put((time.time(), event))

    emit = __call__

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (or failed); False on timeout."""
        if self._closed or not self._thread.is_alive():
            return not self._thread.is_alive()
        marker = _Flush()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop accepting events, write what is queued, close the connection. True when done in time."""
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._accepting = False
                self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("run %s: the history writer did not finish within %.0f s", self.run_id, timeout)
            return False
        return True

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            store = RunStore(self.db_path, busy_timeout_s=self.busy_timeout_s)
        except Exception as exc:  # noqa: BLE001 - never into training
            self._error("cannot open the run history", exc)
            self._accepting = False
            self._drain_after_failure()
            return
        pending: list[tuple] = []
        first_at = 0.0
        try:
            while True:
                timeout = None
                if pending:
                    timeout = max(0.0, first_at + self.flush_interval - time.monotonic())
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    pending = self._flush_steps(store, pending)
                    first_at = time.monotonic()
                    continue
                if item is _STOP:
                    break
                if isinstance(item, _Flush):
                    pending = self._flush_steps(store, pending)
                    first_at = time.monotonic()
                    item.done.set()
                    continue
                ts, event = item
                if type(event) is StepLogged:
                    if not pending:
                        first_at = time.monotonic()
                    pending.append(
                        (event.step, event.epoch, event.loss, event.learning_rate, event.samples_per_second,
                         event.elapsed, event.gpu_memory_mb, event.gpu_peak_memory_mb)
                    )  # fmt: skip
                    now = time.monotonic()
                    due = len(pending) >= self.batch_rows or now - first_at >= self.flush_interval
                    if due and now >= self._retry_at:
                        pending = self._flush_steps(store, pending)
                        first_at = time.monotonic()
                    continue
                pending = self._flush_steps(store, pending)  # keep emission order
                first_at = time.monotonic()
                self._write_event(store, ts, event)
        except Exception as exc:  # noqa: BLE001 - a bug here must not surface in training either
            self._accepting = False
            self._error("the history writer stopped", exc)
        finally:
            pending = self._flush_steps(store, pending)
            if pending:
                self._error(f"{len(pending)} step rows could not be written", None)
            self._finish_unfinished(store)
            try:
                store.close()
            except Exception:  # noqa: BLE001
                pass
            self._drain_after_failure()
            if self.errors:
                log.warning("run %s: %d history writes failed (last: %s)", self.run_id, self.errors, self.last_error)

    def _drain_after_failure(self) -> None:
        """Release anyone waiting on flush() once the writer is gone."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Flush):
                item.done.set()

    def _flush_steps(self, store: RunStore, pending: list[tuple]) -> list[tuple]:
        if not pending:
            return pending
        keys = ("step", "epoch", "loss", "learning_rate", "samples_per_second", "elapsed", "gpu_memory_mb",
                "gpu_peak_memory_mb")  # fmt: skip
        try:
            store.add_step_metrics(self.run_id, [dict(zip(keys, row)) for row in pending])
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            self._error(f"writing {len(pending)} step rows", exc)
            if busy and len(pending) < _MAX_RETRY_ROWS:
                self._retry_at = time.monotonic() + self.flush_interval  # not on every new step
                return pending  # retried on the next timed flush
            return []
        except Exception as exc:  # noqa: BLE001
            self._error(f"writing {len(pending)} step rows", exc)
            return []
        self.steps_written += len(pending)
        return []

    def _write_event(self, store: RunStore, ts: float, event: Event) -> None:
        try:
            self._apply(store, ts, event)
            self.events_written += 1
        except Exception as exc:  # noqa: BLE001 - logged, never raised into training
            self._error(f"recording {type(event).__name__}", exc)

    def _apply(self, store: RunStore, ts: float, event: Event) -> None:
        rid = self.run_id
        if isinstance(event, RunStarted):
            self.started = True
            resumed = event.start_step > 0 and store.get_run(rid)["started_at"]
            store.update_run(
                rid,
                status="running",
                started_at=resumed or _iso(ts),  # a resumed run keeps its first start
                finished_at=None,
                trainable_params=int(event.trainable_params),
                total_params=int(event.total_params),
                total_steps=int(event.total_steps),
                device=event.device,
                precision=event.precision,
                pid=this_process()[0],
                owner_started=this_process()[1],
            )
        elif isinstance(event, EpochEnded):
            store.add_epoch_metrics(
                rid, event.epoch, event.step, event.metrics, event.confusion, event.label_names, event.per_class,
                event.is_best,
            )  # fmt: skip
            value = event.metrics.get(self.best_metric)
            if event.is_best and value is not None:
                store.update_run(rid, best_metric=float(value), best_metric_name=self.best_metric)
        elif isinstance(event, CheckpointSaved):
            store.set_checkpoint(rid, event.which, event.path, event.step, event.epoch)
        elif isinstance(event, LogMessage):
            store.add_log(rid, event.level, event.message, ts=_iso(ts))
        elif isinstance(event, SampleGenerated):
            store.add_sample(rid, event.step, event.epoch, event.prompt, event.text, ts=_iso(ts))
        elif isinstance(event, RunFinished):
            self._finished_event(store, ts, event)
        # Unknown event kinds are not part of the history.

    def _finished_event(self, store: RunStore, ts: float, event: RunFinished) -> None:
        status = event.status if event.status in RUN_STATUSES else "failed"
        error = event.reason or None
        if status != event.status:
            error = f"{error or 'the run ended'} (unknown status {event.status!r})"
        run = store.get_run(self.run_id)
        finished_at = _iso(ts)
        duration = float(event.duration) if event.duration else None
        if duration is None and run["started_at"]:
            duration = (datetime.fromisoformat(finished_at) - datetime.fromisoformat(run["started_at"])).total_seconds()
        fields: dict[str, Any] = {
            "status": status,
            "error": error,
            "error_hint": event.hint or None,
            "final_metrics": dict(event.final_metrics),
            "samples_per_second": float(event.samples_per_second),
            "finished_at": finished_at,
            "duration_s": duration,
        }
        if event.best_metric is not None:
            fields["best_metric"] = float(event.best_metric)
            fields["best_metric_name"] = self.best_metric
        store.update_run(self.run_id, **fields)
        self.finished = True

    def _finish_unfinished(self, store: RunStore) -> None:
        if not self.started or self.finished:
            return
        try:
            store.set_status(
                self.run_id,
                "interrupted",
                error="the run ended without reporting its result",
                error_hint="see the run's log; resume it from its last checkpoint or start it again",
            )
        except Exception as exc:  # noqa: BLE001
            self._error("marking the run interrupted", exc)

    def _error(self, what: str, exc: BaseException | None) -> None:
        self.errors += 1
        self.last_error = f"{what}: {exc}" if exc is not None else what
        if self.errors <= _MAX_LOGGED_ERRORS:
            # a full, locked or read-only database is the machine's state, not a bug: no traceback for it
            bug = exc is not None and not isinstance(exc, (sqlite3.Error, OSError))
            log.error("run %s: %s", self.run_id, self.last_error, exc_info=exc if bug and self.errors == 1 else None)
        elif self.errors == _MAX_LOGGED_ERRORS + 1:
            log.error("run %s: more history write errors; no longer logging each one", self.run_id)
