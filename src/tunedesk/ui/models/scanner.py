"""The model scan off the GUI thread: a worker QObject in a QThread, batches of entries as signals.

Two passes: a quick listing (``count_params=False``: no torch, everything shows at once), then the
full description with exact parameter counts (the first count of a cold cache imports transformers,
which can take many seconds; the rows are already there meanwhile). Batches leave the worker at
most every ``interval`` seconds, so thousands of entries cost the GUI thread a few inserts, not
thousands. A rescan cancels the running worker; late batches of an old scan are dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

if TYPE_CHECKING:  # imported in the worker thread: the window shows first
    from tunedesk.engine.catalog import CatalogRoots, ModelEntry

log = logging.getLogger(__name__)

LISTING, COUNTING = 1, 2  # pass numbers


class ScanWorker(QObject):
    """Runs ``catalog.scan`` in its thread; never touches widgets. ``cancel()`` is thread-safe."""

    batch = Signal(
        int, int, object
    )  # generation, pass, [ModelEntry] (object: a list type would be copied element-wise)
    passDone = Signal(int, int, int, bool)  # generation, pass, number of entries, cancelled
    failed = Signal(int, str, str)  # generation, message, hint
    done = Signal(int)  # generation

    def __init__(
        self,
        generation: int,
        roots: Callable[[], CatalogRoots],
        interval: float = 0.1,
        passes: tuple[int, ...] = (LISTING, COUNTING),
    ) -> None:
        super().__init__()
        self.generation = generation
        self._roots = roots
        self._interval = interval
        self._passes = passes
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @Slot()
    def run(self) -> None:
        from tunedesk.engine.errors import TuneDeskError

        try:
            roots = self._roots()
            for number in self._passes:
                if self._cancel.is_set():
                    break
                self._one_pass(roots, number)
        except TuneDeskError as exc:
            self.failed.emit(self.generation, exc.message, exc.hint)
        except Exception as exc:
            log.exception("model scan failed")
            self.failed.emit(
                self.generation,
                f"the model scan failed: {type(exc).__name__}: {exc}",
                "rescan (F5); if it fails again, report this with the log",
            )
        finally:
            self.done.emit(self.generation)

    def _one_pass(self, roots: CatalogRoots, number: int) -> None:
        from tunedesk.engine import catalog

        buffer: list[ModelEntry] = []
        last = time.monotonic()

        def on_entry(entry: ModelEntry) -> None:
            nonlocal last
            buffer.append(entry)
            now = time.monotonic()
            if now - last >= self._interval:
                self.batch.emit(self.generation, number, buffer.copy())
                buffer.clear()
                last = now

        found = catalog.scan(roots, on_entry=on_entry, cancel=self._cancel.is_set, count_params=(number == COUNTING))
        if buffer:
            self.batch.emit(self.generation, number, buffer.copy())
        self.passDone.emit(self.generation, number, len(found), self._cancel.is_set())


class ModelScanner(QObject):
    """Starts, cancels and stops scan workers; forwards the current scan's results on the GUI thread."""

    entries = Signal(int, object)  # pass, [ModelEntry]
    passFinished = Signal(int, object)  # pass, ids of every entry of that (complete) pass
    failed = Signal(str, str)  # message, hint
    finished = Signal()  # the current scan ended (done, cancelled or failed)

    def __init__(self, home: Path, parent: QObject | None = None, interval: float = 0.1) -> None:
        super().__init__(parent)
        self.home = Path(home)
        self.interval = interval
        self.passes: tuple[int, ...] = (LISTING, COUNTING)
        self._generation = 0
        self._current: ScanWorker | None = None
        self._jobs: dict[int, tuple[QThread, ScanWorker]] = {}
        self._seen: dict[int, list[str]] = {}
        self._ended: set[int] = set()

    def roots(self) -> CatalogRoots:
        """Where to look; read in the worker (the user-path file may change between scans)."""
        from tunedesk.engine import catalog

        return catalog.default_roots(self.home)

    def is_running(self) -> bool:
        return self._current is not None

    def start(self) -> None:
        """(Re)start scanning; a running scan is cancelled and its late results ignored."""
        self.cancel()
        self._generation += 1
        generation = self._generation
        worker = ScanWorker(generation, self.roots, self.interval, self.passes)
        thread = QThread()
        thread.setObjectName(f"model-scan-{generation}")
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.batch.connect(self._on_batch)
        worker.passDone.connect(self._on_pass_done)
        worker.failed.connect(self._on_failed)
        worker.done.connect(self._on_done)
        # Direct: quit() is thread-safe, and a queued call would wait for the GUI thread, which may be
        # the one blocked in shutdown() waiting for this thread.
        worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._reap)
        self._jobs[generation] = (thread, worker)
        self._seen[generation] = []
        self._current = worker
        thread.start(QThread.Priority.LowPriority)

    def cancel(self) -> None:
        if self._current is not None:
            self._current.cancel()
            self._current = None
            self.finished.emit()

    def shutdown(self, timeout_ms: int = 3000) -> bool:
        """Cancel every worker and wait for the threads; False when one is still busy (e.g. importing).

        A thread that does not stop is handed to ``tunedesk.ui.app.keep_until_finished``, so it is never
        destroyed while running (Qt would abort); the app then ends the process without waiting for it.
        """
        self.cancel()
        deadline = time.monotonic() + timeout_ms / 1000
        stopped = True
        for generation, (thread, worker) in list(self._jobs.items()):
            worker.cancel()
            thread.quit()
            left = max(0, int((deadline - time.monotonic()) * 1000))
            if not thread.wait(left):
                from tunedesk.ui.app import keep_until_finished

                stopped = False
                keep_until_finished(thread, worker)
            self._jobs.pop(generation, None)
        return stopped

    # ---- from the worker (queued onto the GUI thread) -------------------------------------------

    @Slot(int, int, object)
    def _on_batch(self, generation: int, number: int, entries: list) -> None:
        if generation != self._generation or self._current is None:
            return
        self._seen[generation].extend(e.id for e in entries)
        self.entries.emit(number, entries)

    @Slot(int, int, int, bool)
    def _on_pass_done(self, generation: int, number: int, count: int, cancelled: bool) -> None:
        if generation != self._generation or cancelled:
            return
        ids = self._seen.get(generation, [])
        self._seen[generation] = []
        self.passFinished.emit(number, ids)

    @Slot(int, str, str)
    def _on_failed(self, generation: int, message: str, hint: str) -> None:
        if generation == self._generation:
            self.failed.emit(message, hint)

    @Slot(int)
    def _on_done(self, generation: int) -> None:
        self._ended.add(generation)
        if generation == self._generation and self._current is not None:
            self._current = None
            self.finished.emit()

    @Slot()
    def _reap(self) -> None:
        # QThread.finished is emitted by the thread just before it ends: wait the last instant out.
        for generation, (thread, _worker) in list(self._jobs.items()):
            if generation in self._ended and thread.wait(500):
                self._jobs.pop(generation, None)
                self._seen.pop(generation, None)
                self._ended.discard(generation)


def describe(entries: list[Any]) -> str:
    """'12 models, 3 with problems' for the status line."""
    n = len(entries)
    bad = sum(1 for e in entries if not e.usable)
    text = f"{n} model{'s' if n != 1 else ''}"
    return text + (f", {bad} with problems" if bad else "")
