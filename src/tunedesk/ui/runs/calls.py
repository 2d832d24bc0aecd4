"""Run one function in a QThread and get its result back as a signal (exports, comparisons, model layouts).

The function runs in the worker thread: it must open its own RunStore and never touch widgets. A
TuneDeskError arrives as ``failed(message, hint)``; anything else as an internal-error message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from tunedesk.engine.errors import TuneDeskError

log = logging.getLogger("tunedesk.ui.runs")


class _Call(QObject):
    finished = Signal(object)
    failed = Signal(str, str)
    done = Signal()

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.fn = fn

    @Slot()
    def run(self) -> None:
        try:
            self.finished.emit(self.fn())
        except TuneDeskError as exc:
            self.failed.emit(exc.message, exc.hint)
        except Exception as exc:
            log.exception("background task failed")
            self.failed.emit(
                f"internal error: {type(exc).__name__}: {exc}", "this is a bug in TuneDesk; the log has the details"
            )
        finally:
            self.done.emit()


class _Relay(QObject):
    """Lives in the GUI thread, so the worker's signals reach the callbacks queued, in that thread
    (a plain Python callable connected to a worker's signal would run in the worker thread)."""

    def __init__(self, on_done: Callable[[Any], None], on_error: Callable[[str, str], None] | None) -> None:
        super().__init__()
        self.on_done, self.on_error = on_done, on_error

    @Slot(object)
    def deliver(self, value: Any) -> None:
        self.on_done(value)

    @Slot(str, str)
    def fail(self, message: str, hint: str) -> None:
        if self.on_error is not None:
            self.on_error(message, hint)


class Calls(QObject):
    """Keeps the threads of running calls alive; ``wait_all`` on close."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._running: list[tuple[QThread, _Call, _Relay]] = []

    def start(
        self, fn: Callable[[], Any], on_done: Callable[[Any], None], on_error: Callable[[str, str], None] | None = None
    ) -> QThread:
        thread = QThread()
        call = _Call(fn)
        relay = _Relay(on_done, on_error)
        call.moveToThread(thread)
        call.finished.connect(relay.deliver)
        call.failed.connect(relay.fail)
        call.done.connect(thread.quit)
        thread.started.connect(call.run)
        pair = (thread, call, relay)
        thread.finished.connect(self._reap)  # a bound slot: queued to this GUI-thread object
        self._running.append(pair)
        thread.start()
        return thread

    @Slot()
    def _reap(self) -> None:
        for pair in [p for p in self._running if p[0].isFinished()]:
            self._running.remove(pair)
            for obj in pair:
                obj.deleteLater()

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def wait_all(self, timeout_ms: int = 30000) -> bool:
        """Wait for the calls in flight; False when one is still running after ``timeout_ms`` each."""
        return all([thread.wait(timeout_ms) for thread, _, _ in list(self._running)])
