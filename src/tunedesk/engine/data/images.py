"""Image folders: one sub-folder per class. Find the images, check each one really decodes, and load
them at training time.

Checking is two steps because Pillow's ``verify()`` reads the structure but does not decode pixels
(a JPEG cut in half passes it); ``load()`` on a fresh open decodes and raises on truncation. We
never set ``ImageFile.LOAD_TRUNCATED_IMAGES``: a half-grey image is a silent bad example.
Decoding releases the GIL, so large folders are checked on a small thread pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunedesk.engine.data.report import DataReport
from tunedesk.engine.errors import DataError

if TYPE_CHECKING:
    from PIL import Image as PILImage

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_IGNORED_DIRS = {"__MACOSX"}
_POOL_MIN = 16  # fewer candidates than this: check in the calling thread
_PROGRESS_EVERY = 64

LAYOUT_HINT = (
    "put the images in one sub-folder per class, named after the class, e.g. "
    "pets/cat/001.jpg, pets/cat/002.jpg, pets/dog/001.jpg; choose the top folder (pets)"
)


@dataclass(slots=True)
class ImageExample:
    path: str  # absolute path of the image file
    label: str  # the class folder's name


def _hidden(name: str) -> bool:
    # ".DS_Store", "._photo.jpg" (macOS resource forks that carry an image suffix), ".git"
    return name.startswith(".") or name in _IGNORED_DIRS


def _is_image_name(name: str) -> bool:
    return not _hidden(name) and name.lower().endswith(IMAGE_SUFFIXES)


def _check_image(path: str, min_size: int) -> str | None:
    """None if the image decodes fully and is big enough, else the reason it is skipped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
            width, height = im.size
    except FileNotFoundError:
        return "file disappeared while scanning"
    except PermissionError:
        return "cannot open: permission denied"
    except UnidentifiedImageError:
        return "not a readable image: unknown or damaged format"
    except Image.DecompressionBombError as e:
        return f"too large: {e}"
    except Exception as e:  # noqa: BLE001 - Pillow raises many types (OSError, SyntaxError, struct.error...) on bad data
        text = str(e)
        if "truncated" in text.lower() or isinstance(e, EOFError):
            return "truncated image: the file is cut short"
        return f"corrupt image: {text or type(e).__name__}"
    if width < min_size or height < min_size:
        return f"too small: {width}x{height} pixels (minimum {min_size})"
    return None


def _class_folders(root: Path, report: DataReport) -> tuple[list[tuple[str, str]], list[str]]:
    """(class name, folder path) sorted by name, and the images lying directly in ``root``."""
    real_root = os.path.realpath(root)
    classes: list[tuple[str, str]] = []
    loose: list[str] = []
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if _hidden(entry.name):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                real = os.path.realpath(entry.path)
                if real == real_root or real_root.startswith(real + os.sep):
                    report.add("links back to the data folder (ignored)", path=entry.name + "/", action="warning")
                    continue
                classes.append((entry.name, entry.path))
            elif _is_image_name(entry.name):
                loose.append(entry.name)
    return classes, loose


TRAIN_FOLDERS = ("train", "training")
VAL_FOLDERS = ("val", "valid", "validation", "dev")
TEST_FOLDERS = ("test", "testing")


def split_folders(path: str | Path) -> dict[str, Path] | None:
    """A folder already split the common way (``train/<class>/...`` next to ``val/<class>/...`` or
    ``test/<class>/...``): {"train": ..., "val": ..., "test": ...} for the parts present. None for an
    ordinary class-per-folder layout; read as one, "train" and "val" would become the two classes."""
    root = Path(path).expanduser()
    try:
        subdirs = [e for e in os.scandir(root) if not _hidden(e.name) and e.is_dir()]
    except OSError:
        return None
    found: dict[str, Path] = {}
    for entry in subdirs:
        name = entry.name.casefold()
        part = (
            "train"
            if name in TRAIN_FOLDERS
            else "val"
            if name in VAL_FOLDERS
            else "test"
            if name in TEST_FOLDERS
            else None
        )
        if part is None or part in found:
            return None  # another folder beside them: a class folder, so the layout is class-per-folder
        try:
            if not any(not _hidden(e.name) and e.is_dir() for e in os.scandir(entry.path)):
                return None  # train/ holds images directly: it is a class (or a mistake scan reports)
        except OSError:
            return None
        found[part] = Path(entry.path)
    if "train" not in found or not ({"val", "test"} & found.keys()):
        return None
    return found


def split_roles(parts: dict[str, Path]) -> list[tuple[Path, str]]:
    """Each part of a split folder (``split_folders``) with the split its images take: train/ trains,
    val/ validates, test/ validates where there is no val/ and is kept out ("") where there is."""
    role = {"train": "train", "val": "val", "test": "" if "val" in parts else "val"}
    return [(parts[p], role[p]) for p in ("train", "val", "test") if p in parts]


def _list_class(folder: str, root: Path, report: DataReport) -> list[str]:
    """All image files under a class folder (sub-folders included), sorted. Symlinked folders are
    not entered (os.walk followlinks=False), so link loops cannot hang the scan."""

    def unreadable(err: OSError) -> None:
        rel = os.path.relpath(err.filename or folder, root).replace(os.sep, "/")
        report.add(f"cannot list folder: {err.strerror or err}", path=rel + "/", action="warning")

    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if _is_image_name(f))
    return files


def _interleave(per_class: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    """Round-robin over classes, so that a ``max_items`` prefix has every class in it."""
    out: list[tuple[str, str]] = []
    longest = max((len(files) for _, files in per_class), default=0)
    for i in range(longest):
        for label, files in per_class:
            if i < len(files):
                out.append((label, files[i]))
    return out


def scan_image_folder(
    path: str | Path,
    verify: bool = True,
    max_items: int | None = None,
    min_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[ImageExample], DataReport]:
    """List the images of a class-per-folder data set. With ``verify`` every image is decoded once;
    corrupt, truncated and tiny images are skipped and reported. ``max_items`` takes images from
    the classes in turn, so a small sample still covers every class. Examples are returned sorted
    by class, then path. ``progress(checked, total)`` is called now and then while verifying (a
    large folder takes a while); it may raise to cancel the scan."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"image folder not found: {root}", "check the path; " + LAYOUT_HINT)
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder", LAYOUT_HINT)
    if max_items is not None and max_items < 1:
        raise DataError(f"max_items must be at least 1 (got {max_items})", "leave max_items empty to use every image")
    root = Path(os.path.abspath(root))
    report = DataReport(source=str(root), unit="image")

    try:
        classes, loose = _class_folders(root, report)
    except OSError as e:
        raise DataError(f"cannot read folder {root}: {e.strerror or e}", "check the folder permissions") from None
    if not classes:
        if loose:
            raise DataError(
                f"the images in {root.name} are not sorted into class folders ({len(loose)} images found directly in it)",
                LAYOUT_HINT,
            )
        raise DataError(f"{root.name} has no class sub-folders", LAYOUT_HINT)
    for name in loose:
        report.add("not in a class folder", path=name)

    per_class: list[tuple[str, list[str]]] = []
    for label, folder in classes:
        files = _list_class(folder, root, report)
        if files:
            per_class.append((label, files))
        else:
            report.add("class folder has no images (ignored)", path=label + "/", action="warning")
    candidates = _interleave(per_class)
    if not candidates:
        raise DataError(
            f"no images found in {root.name}",
            f"supported files: {', '.join(IMAGE_SUFFIXES)}; " + LAYOUT_HINT,
        )

    def rel(p: str) -> str:
        return os.path.relpath(p, root).replace(os.sep, "/")

    kept: list[ImageExample] = []
    if not verify:
        chosen = candidates if max_items is None else candidates[:max_items]
        report.limit_reached = len(chosen) < len(candidates)
        report.rows_read = len(chosen)
        kept = [ImageExample(path=p, label=label) for label, p in chosen]
    else:
        total = len(candidates) if max_items is None else min(max_items, len(candidates))
        workers = min(8, os.cpu_count() or 1)
        pool = ThreadPoolExecutor(max_workers=workers) if len(candidates) >= _POOL_MIN and workers > 1 else None
        try:
            pos = 0
            while pos < len(candidates):
                if max_items is None:
                    step = len(candidates)
                else:
                    remaining = max_items - len(kept)
                    if remaining <= 0:
                        report.limit_reached = True
                        break
                    step = max(remaining, 32)  # check only what is still needed, plus slack for bad ones
                chunk = candidates[pos : pos + step]
                paths = [p for _, p in chunk]
                if pool is not None:
                    reasons = pool.map(_check_image, paths, [min_size] * len(paths))  # lazy, in order
                else:
                    reasons = (_check_image(p, min_size) for p in paths)
                for (label, p), reason in zip(chunk, reasons):
                    if progress is not None and report.rows_read % _PROGRESS_EVERY == 0:
                        progress(report.rows_read, total)
                    if max_items is not None and len(kept) >= max_items:
                        report.limit_reached = True
                        break
                    report.rows_read += 1
                    if reason is None:
                        kept.append(ImageExample(path=p, label=label))
                    else:
                        report.add(reason, path=rel(p))
                pos += len(chunk)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        if progress is not None:
            progress(report.rows_read, total)
    report.rows_kept = len(kept)
    if not kept:
        first = "; ".join(str(i) for i in report.issues[:3])
        raise DataError(
            f"no usable images in {root.name}: {report.summary()}",
            f"every image was skipped; replace or re-export the damaged files. First problems: {first}",
        )
    kept.sort(key=lambda e: (e.label, e.path))
    return kept, report


def eight_bit(im: PILImage.Image) -> PILImage.Image:
    """A 16-bit grey image (scans, microscopy) as 8-bit grey, scaled as torchvision's decoder scales it
    (the high byte), so the cached training images, predictions, thumbnails and near-duplicate hashes
    agree; Pillow's own conversion clips everything above 255 to white. Other images are returned as
    they are."""
    import numpy as np
    from PIL import Image

    if not (im.mode.startswith("I;16") or im.mode == "I"):
        return im
    arr = np.asarray(im).astype(np.int64)
    if im.mode.startswith("I;16") or arr.max(initial=0) > 255:
        arr = arr >> 8
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")


def load_image(path: str) -> PILImage.Image:
    """Open an image as RGB for training or prediction, with EXIF rotation applied (phone photos
    are stored sideways). Use this same function at prediction time so inputs match training."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            im = ImageOps.exif_transpose(opened) or opened
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")  # avoids Pillow's palette-transparency warning
            return eight_bit(im).convert("RGB")
    except FileNotFoundError:
        raise DataError(
            f"image not found: {path}",
            "the file was moved or deleted after the data set was scanned; re-scan the folder",
        ) from None
    except UnidentifiedImageError:
        raise DataError(f"cannot read image {path}: unknown or damaged format", "remove or replace the file") from None
    except Exception as e:  # noqa: BLE001 - truncated/corrupt data surfaces as OSError, SyntaxError, ...
        raise DataError(
            f"cannot read image {path}: {e or type(e).__name__}",
            "the file is damaged or cut short; remove or replace it (scanning with verify on finds these)",
        ) from None
