"""Image thumbnails for the items table: made off the GUI thread, cached in memory and on disk.

The model asks for a thumbnail when a row becomes visible. Requests go to a loader running in the
background (``ui.background``), which serves the newest request first (what is on screen now), makes the thumbnail
with Pillow into the disk cache under the TuneDesk home (``engine.datasets.thumbnails``) if it is
not there yet, and sends back a QImage (QImage, unlike QPixmap, may be made outside the GUI thread).
The GUI side keeps the last few thousand in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from tunedesk.engine.datasets.thumbnails import THUMB_SIZE, make_thumbnail
from tunedesk.ui.background import TaskContext, gui_thread, run_in_background

MAX_QUEUED = 400  # older requests beyond this are dropped (the rows scrolled away)


class _Requests:
    """The thumbnails asked for, newest first; put from the GUI thread, taken by the loader. Thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, str]] = deque()
        self.closed = False

    def put(self, content_hash: str, path: str) -> list[str]:
        """Queue a request; returns the hashes given up (scrolled away): ask again when visible."""
        dropped = []
        with self._cond:
            self._queue.append((content_hash, path))
            while len(self._queue) > MAX_QUEUED:
                dropped.append(self._queue.popleft()[0])
            self._cond.notify()
        return dropped

    def take(self) -> tuple[str, str] | None:
        """The newest request (waits for one); None once closed."""
        with self._cond:
            while not self._queue and not self.closed:
                self._cond.wait()
            return None if self.closed else self._queue.pop()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def _serve(ctx: TaskContext, requests: _Requests, cache_dir: Path, size: int) -> None:
    """The loader (in its thread): one thumbnail at a time, newest request first, until cancelled."""
    ctx.on_cancel(requests.close)
    while (item := requests.take()) is not None:
        content_hash, path = item
        dest = make_thumbnail(path, content_hash, cache_dir, size)
        ctx.progress(content_hash, QImage(str(dest)) if dest is not None else QImage())


class ThumbnailService(QObject):
    """GUI-side: memory cache + the loader (a background task). ``get`` returns a QImage, or None and asks for it."""

    ready = Signal(str)  # content hash whose thumbnail is now in memory

    def __init__(
        self, cache_dir: Path, size: int = THUMB_SIZE, memory_items: int = 3000, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.size = size
        self._memory: OrderedDict[str, QImage | None] = OrderedDict()
        self._max = memory_items
        self._pending: set[str] = set()
        self._requests = requests = _Requests()
        self.destroyed.connect(requests.close)  # the loader ends with its service, even one never stopped
        self._task = run_in_background(
            lambda ctx: _serve(ctx, self._requests, Path(cache_dir), size),
            name="datasets-thumbnails",
            on_progress=self._on_ready,
            parent=self,
        )

    def get(self, content_hash: str, path: str) -> tuple[bool, QImage | None]:
        """(known, image): known False means it was requested and ``ready`` will follow."""
        if content_hash in self._memory:
            self._memory.move_to_end(content_hash)
            return True, self._memory[content_hash]
        if content_hash and content_hash not in self._pending:
            self._pending.add(content_hash)
            self._pending.difference_update(self._requests.put(content_hash, path))
        return False, None

    @gui_thread
    def _on_ready(self, content_hash: str, image: QImage) -> None:
        self._pending.discard(content_hash)
        self._memory[content_hash] = None if image.isNull() else image
        while len(self._memory) > self._max:
            self._memory.popitem(last=False)
        self.ready.emit(content_hash)

    def stop(self) -> None:
        self._task.cancel()
        self._task.wait(5000)
