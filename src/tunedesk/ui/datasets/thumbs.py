"""Image thumbnails for the items table: made off the GUI thread, cached in memory and on disk.

The model asks for a thumbnail when a row becomes visible. Requests go to a loader QObject in its
own thread, which serves the newest request first (what is on screen now), makes the thumbnail
with Pillow into the disk cache under the TuneDesk home (``engine.datasets.thumbnails``) if it is
not there yet, and sends back a QImage (QImage, unlike QPixmap, may be made outside the GUI thread).
The GUI side keeps the last few thousand in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from pathlib import Path

from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot
from PySide6.QtGui import QImage

from tunedesk.engine.datasets.thumbnails import THUMB_SIZE, make_thumbnail

MAX_QUEUED = 400  # older requests beyond this are dropped (the rows scrolled away)


class _Loader(QObject):
    ready = Signal(str, QImage)  # content hash, the thumbnail (a null QImage: cannot be read)
    dropped = Signal(list)  # content hashes given up (scrolled away): ask again when visible

    def __init__(self, cache_dir: Path, size: int) -> None:
        super().__init__()
        self.cache_dir, self.size = cache_dir, size
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, str]] = deque()
        self._scheduled = False
        self.stopped = False

    @Slot(str, str)
    def request(self, content_hash: str, path: str) -> None:
        dropped = []
        with self._lock:
            self._queue.append((content_hash, path))
            while len(self._queue) > MAX_QUEUED:
                dropped.append(self._queue.popleft()[0])
        if dropped:
            self.dropped.emit(dropped)
        if not self._scheduled:
            self._scheduled = True
            QTimer.singleShot(0, self._step)

    @Slot()
    def _step(self) -> None:
        """One thumbnail per event-loop turn, newest first, so new requests are seen between them."""
        with self._lock:
            item = self._queue.pop() if self._queue and not self.stopped else None
            self._scheduled = item is not None
        if item is None:
            return
        content_hash, path = item
        dest = make_thumbnail(path, content_hash, self.cache_dir, self.size)
        self.ready.emit(content_hash, QImage(str(dest)) if dest is not None else QImage())
        QTimer.singleShot(0, self._step)


class ThumbnailService(QObject):
    """GUI-side: memory cache + the loader thread. ``get`` returns a QImage, or None and asks for it."""

    ready = Signal(str)  # content hash whose thumbnail is now in memory
    _request = Signal(str, str)

    def __init__(
        self, cache_dir: Path, size: int = THUMB_SIZE, memory_items: int = 3000, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.size = size
        self._memory: OrderedDict[str, QImage | None] = OrderedDict()
        self._max = memory_items
        self._pending: set[str] = set()
        self._thread = QThread()
        self._thread.setObjectName("datasets-thumbnails")
        self._loader = _Loader(Path(cache_dir), size)
        self._loader.moveToThread(self._thread)
        self._request.connect(self._loader.request)
        self._loader.ready.connect(self._on_ready)
        self._loader.dropped.connect(self._on_dropped)
        self._thread.start()

    def get(self, content_hash: str, path: str) -> tuple[bool, QImage | None]:
        """(known, image): known False means it was requested and ``ready`` will follow."""
        if content_hash in self._memory:
            self._memory.move_to_end(content_hash)
            return True, self._memory[content_hash]
        if content_hash and content_hash not in self._pending:
            self._pending.add(content_hash)
            self._request.emit(content_hash, path)
        return False, None

    @Slot(str, QImage)
    def _on_ready(self, content_hash: str, image: QImage) -> None:
        self._pending.discard(content_hash)
        self._memory[content_hash] = None if image.isNull() else image
        while len(self._memory) > self._max:
            self._memory.popitem(last=False)
        self.ready.emit(content_hash)

    @Slot(list)
    def _on_dropped(self, hashes: list[str]) -> None:
        self._pending.difference_update(hashes)

    def stop(self) -> None:
        self._loader.stopped = True
        self._thread.quit()
        self._thread.wait(5000)
