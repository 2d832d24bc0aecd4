"""Images decoded once, at training resolution, into a uint8 array in the run cache.

Decoding a JPEG costs far more than training a step on it on a GPU, and the result is the same every
epoch. So each image is decoded once (on the GPU with nvJPEG where there is one, else on CPU worker
processes), resized so its shorter side is ``stored_size(size)`` and centre-cropped to a square, and
written to ``<cache>/decoded/<key>/images.u8``. The key is the data set's fingerprint (paths and
labels), the files' sizes and times, and the image size, so a changed folder or size gets a new
cache. Crops, flips and normalisation then happen on the device, a batch at a time
(``device_images``).

A cache folder is complete only with its ``manifest.json`` (written last, after the pixels are on
disk, and the folder renamed into place); its size and checksum are checked before use, and a
cache that does not match is rebuilt, never used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("tunedesk.decoded")
# torchvision 0.29 announces that TorchCodec will take over image decoding; until then its decoders
# (libjpeg-turbo, nvJPEG) are the ones to use, and the notice would repeat for every image.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities", category=DeprecationWarning)

CACHE_VERSION = 1
_CHUNK = 1 << 24
_JPEG = (".jpg", ".jpeg")


def stored_size(size: int) -> int:
    """The square side kept on disk: the evaluation resize (size * 1.143, 256 for 224), cropped later."""
    return int(size * 1.143)


def file_checksum(path: Path) -> str:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _files_key(paths: Sequence[str]) -> str:
    """Paths with their sizes and modification times: an edited image changes the key."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\x1f{st.st_size}\x1f{st.st_mtime_ns}\x1e".encode("utf-8", "surrogatepass"))
        except OSError:
            h.update(f"{p}\x1fmissing\x1e".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


@dataclass
class DecodedImages:
    """A complete, checked decoded cache: ``array`` is (N, 3, S, S) uint8, memory-mapped."""

    folder: Path
    array: torch.Tensor
    built: bool  # decoded now (False: reused from an earlier run)
    decoder: str  # "cuda (nvJPEG)" / "cpu, 3 workers" / "reused"

    @property
    def nbytes(self) -> int:
        return self.array.numel()


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _open(folder: Path, count: int, side: int, check: bool = True) -> torch.Tensor | None:
    """The cached array if the folder holds a complete, intact cache of this shape, else None."""
    manifest = _read_manifest(folder)
    data = folder / "images.u8"
    expected = count * 3 * side * side
    if manifest is None or manifest.get("version") != CACHE_VERSION:
        return None
    if manifest.get("count") != count or manifest.get("side") != side or manifest.get("bytes") != expected:
        return None
    try:
        if data.stat().st_size != expected:
            return None
        if check and file_checksum(data) != manifest.get("crc32"):
            return None
    except OSError:
        return None
    arr = np.memmap(data, dtype=np.uint8, mode="r", shape=(count, 3, side, side))
    with warnings.catch_warnings():  # a read-only map: nothing writes to it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def _decode_one(path: str, side: int) -> torch.Tensor:
    """(3, side, side) uint8: EXIF rotation applied, shorter side resized to ``side``, centre-cropped."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        img = decode_image(path, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        if img.dtype == torch.uint16:  # 16-bit PNGs (scans, microscopy) decode to 0..65535
            img = (img.to(torch.int32) >> 8).to(torch.uint8)
        elif img.dtype != torch.uint8:
            raise ValueError(f"unexpected sample type {img.dtype}")
    except (RuntimeError, ValueError):  # formats torchvision does not read (BMP, TIFF, ...): Pillow
        from tunedesk.engine.data.images import load_image

        img = torch.from_numpy(np.asarray(load_image(path), dtype=np.uint8).copy()).permute(2, 0, 1)
    return _fit(img, side)


def _fit(img: torch.Tensor, side: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    img = F.resize(img, side, antialias=True)
    return F.center_crop(img, [side, side]).contiguous()


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], side: int) -> None:
        self.paths, self.side = list(paths), side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return _decode_one(self.paths[i], self.side)


def _stack(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(items)


def _decode_cpu(
    paths: Sequence[str], side: int, out: np.ndarray, workers: int, progress: Callable[[int, int], None]
) -> None:
    loader = torch.utils.data.DataLoader(
        _Files(paths, side),
        batch_size=64,
        num_workers=workers,
        collate_fn=_stack,
        prefetch_factor=4 if workers else None,
    )
    pos = 0
    for batch in loader:
        out[pos : pos + len(batch)] = batch.numpy()
        pos += len(batch)
        progress(pos, len(paths))


def _decode_cuda(
    paths: Sequence[str], side: int, out: np.ndarray, device: torch.device, progress: Callable[[int, int], None]
) -> int:
    """nvJPEG in batches for the JPEG files; the others (and any JPEG nvJPEG refuses) on the CPU.
    Returns how many were decoded on the GPU. EXIF rotation is applied for JPEGs that carry it."""
    from concurrent.futures import ThreadPoolExecutor

    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    on_gpu = 0
    batch = 128
    with ThreadPoolExecutor(max_workers=8) as pool:
        for start in range(0, len(paths), batch):
            chunk = list(range(start, min(start + batch, len(paths))))
            jpegs = [i for i in chunk if paths[i].lower().endswith(_JPEG)]
            others = [i for i in chunk if i not in set(jpegs)]
            if jpegs:
                raw = list(pool.map(read_file, [paths[i] for i in jpegs]))
                try:
                    imgs = decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
                    fitted = torch.stack([_fit(im, side) for im in imgs]).cpu()
                    oriented = [_exif_rotated(paths[i]) for i in jpegs]
                    for k, i in enumerate(jpegs):
                        out[i] = _decode_one(paths[i], side).numpy() if oriented[k] else fitted[k].numpy()
                    on_gpu += len(jpegs) - sum(oriented)
                except RuntimeError as exc:  # CMYK or unusual JPEGs: the CPU decoder reads them
                    log.info("GPU decoding of a batch failed (%s); decoding it on the CPU", exc)
                    others = chunk
            for i, img in zip(others, pool.map(lambda j: _decode_one(paths[j], side), others)):
                out[i] = img.numpy()
            progress(chunk[-1] + 1, len(paths))
    return on_gpu


def _exif_rotated(path: str) -> bool:
    """True when the JPEG's EXIF orientation is not the identity (phone photos stored sideways)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.getexif().get(0x0112, 1) not in (0, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF: decode on the CPU, which reports real errors
        return True


def decoded_images(
    paths: Sequence[str],
    size: int,
    cache_dir: Path,
    fingerprint: str,
    device: torch.device,
    workers: int,
    progress: Callable[[int, int], None] | None = None,
    announce: Callable[[str], None] | None = None,
) -> DecodedImages:
    """The decoded cache for ``paths`` at training size ``size``: reused when complete and intact,
    else (re)built. ``fingerprint`` names the data set (paths and labels)."""
    side = stored_size(size)
    key = hashlib.sha256(f"{CACHE_VERSION}|{fingerprint}|{_files_key(paths)}|{side}".encode()).hexdigest()[:20]
    root = Path(cache_dir) / "decoded"
    folder = root / key
    arr = _open(folder, len(paths), side)
    if arr is not None:
        return DecodedImages(folder, arr, built=False, decoder="reused")
    if folder.exists():
        log.warning("decoded image cache %s is incomplete or damaged: rebuilding it", folder)
        shutil.rmtree(folder, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    if announce is not None:
        announce(f"decoding {len(paths):,} images once at {side} px")
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        data = tmp / "images.u8"
        shape = (len(paths), 3, side, side)
        mm = np.memmap(data, dtype=np.uint8, mode="w+", shape=shape)
        say = progress or (lambda _done, _total: None)
        decoder = f"cpu, {workers} worker{'s' if workers != 1 else ''}"
        if device.type == "cuda" and torch.cuda.is_available():
            try:
                on_gpu = _decode_cuda(paths, side, mm, device, say)
                decoder = f"cuda (nvJPEG, {on_gpu} of {len(paths)} on the GPU)"
            except (RuntimeError, ImportError) as exc:  # no nvJPEG in this build: the CPU path
                log.info("GPU decoding unavailable (%s); decoding on the CPU", exc)
                _decode_cpu(paths, side, mm, workers, say)
        else:
            _decode_cpu(paths, side, mm, workers, say)
        mm.flush()
        del mm
        with open(data, "rb+") as fh:
            os.fsync(fh.fileno())
        manifest = {
            "version": CACHE_VERSION,
            "count": len(paths),
            "side": side,
            "bytes": int(np.prod(shape)),
            "crc32": file_checksum(data),
            "fingerprint": fingerprint,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    arr = _open(folder, len(paths), side, check=False)
    assert arr is not None
    return DecodedImages(folder, arr, built=True, decoder=decoder)


# ---- on the device: crops, flips, normalisation, a batch at a time --------------------------------


@functools.lru_cache(maxsize=8)
def _stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std in 0-255 units on the device, made once: building them per batch would copy from
    the host each step (and a copy from pageable memory waits for the GPU)."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255
    return m.to(device), s.to(device)


def device_images(
    x: torch.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    augment: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, 3, S, S) uint8 on the device -> (B, 3, size, size) normalised float.

    ``augment`` is None for the evaluation view (the centre crop), else (B, 5) random numbers in
    [0, 1) drawn on the host (so a seed reproduces them): area scale, aspect, x, y, flip. The random
    resized crop (area 0.6-1 of the stored square, aspect 3/4-4/3) and the flip are one affine
    resampling of the whole batch.
    """
    b, _, side, _ = x.shape
    m, s = _stats(tuple(mean), tuple(std), x.device)
    if augment is None:
        off = (side - size) // 2
        crop = x[:, :, off : off + size, off : off + size]
        return (crop.float() - m) / s
    r = augment.to(x.device, torch.float32, non_blocking=True)
    area = 0.6 + 0.4 * r[:, 0]
    log_ratio = (r[:, 1] * 2 - 1) * float(np.log(4 / 3))
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width / side
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (r[:, 2] * 2 - 1) * (1 - w)  # crop centre in [-1, 1] coordinates, inside the image
    cy = (r[:, 3] * 2 - 1) * (1 - h)
    flip = torch.where(r[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = torch.nn.functional.affine_grid(theta, [b, 3, size, size], align_corners=False)
    out = torch.nn.functional.grid_sample(x.float(), grid, mode="bilinear", align_corners=False)
    return (out - m) / s
