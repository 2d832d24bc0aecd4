"""Image thumbnails for the data set table, cached on disk under the TuneDesk home.

Keyed by the file's content hash (not its path), so renamed or copied images reuse one thumbnail
and an edited image gets a new one. Pillow only; the UI calls this from a worker thread.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

THUMB_SIZE = 64


def thumbnail_dir(home: Path) -> Path:
    return Path(home) / "cache" / "thumbnails"


def thumbnail_path(cache_dir: Path, content_hash: str, size: int = THUMB_SIZE) -> Path:
    return Path(cache_dir) / content_hash[:2] / f"{content_hash}-{size}.png"


def make_thumbnail(src: str, content_hash: str, cache_dir: Path, size: int = THUMB_SIZE) -> Path | None:
    """The cached thumbnail of ``src`` (made now if missing), or None when the image cannot be read.
    Written atomically (temporary file, then rename): two threads or a crash never leave half a file."""
    dest = thumbnail_path(cache_dir, content_hash or "nohash", size)
    if content_hash and dest.is_file():
        return dest
    from PIL import Image, ImageOps

    from tunedesk.engine.data.images import eight_bit

    try:
        with Image.open(src) as opened:
            opened.draft("RGB", (size * 2, size * 2))
            im = eight_bit(ImageOps.exif_transpose(opened) or opened)
            im = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
            im.thumbnail((size, size), Image.Resampling.LANCZOS)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".tmp")
            os.close(fd)
            try:
                im.save(tmp, "PNG")
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except Exception:  # noqa: BLE001 - any unreadable image simply has no thumbnail
        return None
    return dest
