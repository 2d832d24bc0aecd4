"""The model scan off the GUI thread (``ui.background``), batches of entries as signals.

Two passes: a quick listing (``count_params=False``: no torch, everything shows at once), then the
full description with exact parameter counts (the first count of a cold cache imports transformers,
which can take many seconds; the rows are already there meanwhile). Batches leave the worker at
most every ``interval`` seconds, so thousands of entries cost the GUI thread a few inserts, not
thousands. A rescan cancels the running scan; late batches of an old scan are dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QThread, Signal

from tunedesk.ui.background import BackgroundTask, TaskContext, gui_thread, keep_until_finished, run_in_background

if TYPE_CHECKING:  # imported in the worker thread: the window shows first
    from tunedesk.engine.catalog import CatalogRoots, ModelEntry

log = logging.getLogger(__name__)

LISTING, COUNTING = 1, 2  # pass numbers


def scan_passes(ctx: TaskContext, roots: Callable[[], CatalogRoots], interval: float, passes: tuple[int, ...]) -> None:
    """In the scan's thread: each pass reports ``("batch", pass, [ModelEntry])`` at most every
    ``interval`` seconds, then ``("pass", pass, number of entries, cancelled)``."""
    found_roots = roots()
    for number in passes:
        if ctx.cancelled:
            break
        _one_pass(ctx, found_roots, number, interval)


def _one_pass(ctx: TaskContext, roots: CatalogRoots, number: int, interval: float) -> None:
    from tunedesk.engine import catalog

    buffer: list[ModelEntry] = []
    last = time.monotonic()

    def on_entry(entry: ModelEntry) -> None:
        nonlocal last
        buffer.append(entry)
        now = time.monotonic()
        if now - last >= interval:
            ctx.progress("batch", number, buffer.copy())
            buffer.clear()
            last = now

    found = catalog.scan(roots, on_entry=on_entry, cancel=ctx.cancel_event.is_set, count_params=(number == COUNTING))
    if buffer:
        ctx.progress("batch", number, buffer.copy())
    ctx.progress("pass", number, len(found), ctx.cancelled)


class ModelScanner(QObject):
    """Starts, cancels and stops scans; forwards the current scan's results on the GUI thread."""

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
        self._current: BackgroundTask | None = None
        self._tasks: set[BackgroundTask] = set()
        self._seen: list[str] = []
        self._shut_down = False

    def roots(self) -> CatalogRoots:
        """Where to look; read in the worker (the user-path file may change between scans)."""
        from tunedesk.engine import catalog

        return catalog.default_roots(self.home)

    def is_running(self) -> bool:
        return self._current is not None

    def start(self) -> None:
        """(Re)start scanning; a running scan is cancelled and its late results ignored. After
        ``shutdown`` nothing starts (the panel's first scan is a timer that may fire after it)."""
        if self._shut_down:
            return
        self.cancel()
        self._generation += 1
        generation = self._generation
        self._seen = []
        task = run_in_background(
            lambda ctx: scan_passes(ctx, self.roots, self.interval, self.passes),
            name="model scan",
            on_progress=lambda *values: self._on_progress(generation, *values),
            on_error=lambda message, hint: self._on_failed(generation, message, hint),
            on_finished=lambda: self._on_done(generation),
            parent=self,
            priority=QThread.Priority.LowPriority,
        )
        self._tasks.add(task)
        task.finished.connect(lambda: self._tasks.discard(task))
        self._current = task

    def cancel(self) -> None:
        if self._current is not None:
            self._current.cancel()
            self._current = None
            self.finished.emit()

    def shutdown(self, timeout_ms: int = 3000) -> bool:
        """Cancel every scan and wait for it; False when one is still busy (e.g. importing).

        A thread that does not stop is kept alive until it ends (``background.keep_until_finished``),
        so it is never destroyed while running (Qt would abort); the app then ends the process without
        waiting for it.
        """
        self._shut_down = True
        self.cancel()
        deadline = time.monotonic() + timeout_ms / 1000
        stopped = True
        for task in list(self._tasks):
            task.cancel()
            if not task.wait(int((deadline - time.monotonic()) * 1000)):
                stopped = False
                keep_until_finished(task.thread_, task)
            self._tasks.discard(task)
        return stopped

    # ---- from the scan (on the GUI thread) ------------------------------------------------------

    @gui_thread
    def _on_progress(self, generation: int, what: str, number: int, *rest: Any) -> None:
        if generation != self._generation:
            return
        if what == "batch":
            if self._current is None:
                return
            entries = rest[0]
            self._seen.extend(e.id for e in entries)
            self.entries.emit(number, entries)
        elif not rest[1]:  # a pass ended, not cancelled
            ids, self._seen = self._seen, []
            self.passFinished.emit(number, ids)

    @gui_thread
    def _on_failed(self, generation: int, message: str, hint: str) -> None:
        if generation == self._generation:
            self.failed.emit(message, hint)

    @gui_thread
    def _on_done(self, generation: int) -> None:
        if generation == self._generation and self._current is not None:
            self._current = None
            self.finished.emit()


def describe(entries: list[Any]) -> str:
    """'12 models, 3 with problems' for the status line."""
    n = len(entries)
    bad = sum(1 for e in entries if not e.usable)
    text = f"{n} model{'s' if n != 1 else ''}"
    return text + (f", {bad} with problems" if bad else "")
