"""Long data set work (imports, cleaning, splits, versions) off the GUI thread.

A ``Job`` is a worker QObject moved to its own QThread. Its function gets a ``progress(done, total,
message)`` callback (which raises ``ImportCancelled`` once the job is cancelled) and a
``CancelToken``, opens its own ``DatasetStore`` (stores are bound to their thread), and returns a
plain value. The result or the error (message + hint) comes back as a signal; the worker never
touches a widget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from tunedesk.engine.errors import TuneDeskError

log = logging.getLogger("tunedesk.ui.datasets")

JobFn = Callable[[Callable[[int, int, str], None], Any], Any]  # (progress, CancelToken) -> result


class Job(QObject):
    progress = Signal(int, int, str)  # done, total (0 = unknown), what is happening
    succeeded = Signal(object)  # the function's return value
    failed = Signal(str, str)  # message, hint
    finished = Signal()  # after succeeded or failed

    def __init__(self, name: str, fn: JobFn) -> None:
        super().__init__()
        self.name = name
        self.fn = fn
        from tunedesk.engine.datasets.importers import CancelToken

        self.token = CancelToken()
        self.thread: QThread | None = None
        self.relay: QObject | None = None

    def cancel(self) -> None:
        self.token.cancel()

    def _progress(self, done: int, total: int, message: str) -> None:
        self.token.check()
        self.progress.emit(int(done), int(total), message)

    @Slot()
    def run(self) -> None:
        try:
            result = self.fn(self._progress, self.token)
        except TuneDeskError as exc:
            self.failed.emit(exc.message, exc.hint)
        except Exception as exc:
            log.exception("data set job %s failed", self.name)
            self.failed.emit(
                f"internal error while {self.name}: {type(exc).__name__}: {exc}",
                "this is a bug in TuneDesk; the log has the details, and your data is unchanged",
            )
        else:
            self.succeeded.emit(result)
        finally:
            self.finished.emit()


class _Relay(QObject):
    """Lives in the GUI thread: the job's signals reach these slots queued, so the callbacks (plain
    Python functions, which PySide would otherwise call in the emitting worker thread) run there."""

    def __init__(
        self,
        parent: QObject,
        on_done: Callable[[Any], None],
        on_failed: Callable[[str, str], None],
        on_progress: Callable[[int, int, str], None] | None,
        on_finished: Callable[[], None] | None,
    ) -> None:
        super().__init__(parent)
        self.on_done, self.on_failed, self.on_progress, self.on_finished = on_done, on_failed, on_progress, on_finished

    @Slot(object)
    def done(self, result: Any) -> None:
        self.on_done(result)

    @Slot(str, str)
    def failed(self, message: str, hint: str) -> None:
        self.on_failed(message, hint)

    @Slot(int, int, str)
    def progress(self, done: int, total: int, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(done, total, message)

    @Slot()
    def finished(self) -> None:
        try:
            if self.on_finished is not None:
                self.on_finished()
        finally:
            self.deleteLater()


def start_job(
    job: Job,
    parent: QObject,
    on_done: Callable[[Any], None],
    on_failed: Callable[[str, str], None],
    on_progress: Callable[[int, int, str], None] | None = None,
    on_finished: Callable[[], None] | None = None,
) -> Job:
    """Run ``job`` in a new QThread (ended when the job finishes); the callbacks run in the GUI thread
    (the thread of ``parent``), ``on_finished`` last."""
    relay = _Relay(parent, on_done, on_failed, on_progress, on_finished)
    job.relay = relay
    job.succeeded.connect(relay.done)
    job.failed.connect(relay.failed)
    job.progress.connect(relay.progress)
    job.finished.connect(relay.finished)
    thread = QThread()
    thread.setObjectName(f"datasets-{job.name}")
    job.thread = thread
    job.moveToThread(thread)
    thread.started.connect(job.run)
    job.finished.connect(thread.quit)
    thread.start()
    return job


def wait_job(job: Job | None, timeout_ms: int = 30000) -> bool:
    """Cancel a job and wait for its thread to end (closing the panel, tests)."""
    if job is None or job.thread is None:
        return True
    job.cancel()
    try:
        if job.thread.isRunning():
            return bool(job.thread.wait(timeout_ms))
    except RuntimeError:  # already deleted
        pass
    return True
