"""What the training loop eats: device batches from tensors, decoded images or cached features.

The loop asks for ``train_batches(sampler)`` and ``val_batches()`` and calls ``forward``; this module
decides where each batch comes from:

* tokenised texts (``TokenTensors``) move to the device once; a batch is a gather and a trim;
* image files (``ImageFiles``) are decoded once into a uint8 cache (``data.decoded``), kept on the
  GPU when they fit, else read from the memory map by a background thread into pinned memory;
  crops, flips and normalisation run on the device, a batch at a time;
* with a frozen prefix (``run.feature_cache``) the batches are cached features and ``forward`` runs
  only the layers after the cut;
* anything else (language-model data) goes through the loop's own DataLoader.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunedesk.engine import devices
from tunedesk.engine.config import AUTO_BATCH
from tunedesk.engine.data.tensors import ImageFiles, TokenTensors, batch_width
from tunedesk.engine.devices import input_workers
from tunedesk.engine.run import feature_cache as fc

log = logging.getLogger("tunedesk.feed")

DEVICE_SHARE = 0.4  # data kept on a GPU may take this share of its free memory


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def fits_on(device: torch.device, nbytes: int) -> bool:
    if device.type != "cuda":
        return False  # on the CPU the memory map already is host memory
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_SHARE * free


def _prefetch(items: Iterable[Any], depth: int = 3) -> Iterator[Any]:
    """Produce ``items`` on a background thread (gathers from a memory map release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread
            q.put(exc)
        q.put(done)

    thread = threading.Thread(target=work, name="tunedesk-prefetch", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


Make = Callable[[list[int], bool, int, "torch.Tensor | None"], dict[str, torch.Tensor]]


@dataclass
class Source:
    """One split's examples as stored tensors, and how a list of indices becomes a device batch.

    ``make(indices, train, batch number, index)``: ``index`` is the indices as a long tensor on
    ``index_device`` when the source has one (its tensors live there), else None. A pass over the data
    sends all its indices there in one copy and hands out slices (views), instead of one small
    host-to-device copy per batch: with a small trained part, per-step work sets the pace."""

    n: int
    make: Make
    threaded: bool = False  # gathering happens on the host: prefetch it on a thread
    index_device: torch.device | None = None

    def batches(self, index_lists: Iterable[list[int]], train: bool, first: int = 0) -> Iterator[dict]:
        if self.index_device is None:
            items = (self.make(idx, train, first + k, None) for k, idx in enumerate(index_lists))
        else:
            lists = list(index_lists)
            views = _device_slices(lists, self.index_device)
            items = (self.make(idx, train, first + k, views[k]) for k, idx in enumerate(lists))
        return _prefetch(items) if self.threaded else iter(items)


def _device_slices(lists: list[list[int]], device: torch.device) -> list[torch.Tensor]:
    """The index lists as views of one long tensor on ``device`` (one copy for the whole pass)."""
    if not lists:
        return []
    flat = torch.tensor([i for idx in lists for i in idx], dtype=torch.long)
    if device.type == "cuda":
        flat = flat.pin_memory().to(device, non_blocking=True)
    return list(flat.split([len(idx) for idx in lists]))


@dataclass
class Feed:
    config: Any
    task: Any
    device: torch.device
    train: Source | None
    val: Source | None
    split: fc.Split | None = None
    train_cached: bool = False
    notes: list[str] = field(default_factory=list)
    fallback: Callable[..., Any] | None = None  # the loop's DataLoader factory for other data
    data: Any = None
    image_size: int | None = None  # images: the side the model sees (a timm model's own, else hparams)

    def train_batches(self, sampler: Any) -> Iterable[dict]:
        if self.train is None:
            assert self.fallback is not None  # set by build_feed whenever a split has no source
            return self.fallback(self.data.train, sampler=sampler)
        return _Epoch(self.train, sampler)

    def val_batches(self, batch_size: int) -> Iterable[dict]:
        if self.val is None:
            assert self.fallback is not None
            return self.fallback(self.data.val, batch_size=batch_size)
        n = self.val.n
        lists = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        return _Fixed(self.val, lists)

    def to_device(self, batch: dict) -> dict:
        """Batches from a DataLoader (the fallback) still need moving; ours are there already."""
        from tunedesk.engine.tasks.base import to_device

        return to_device(batch, self.device) if self.train is None else batch

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "features" in batch and self.split is not None:
            return self.split.forward(model, self.task, batch, self.image_size)
        return self.task.forward(model, batch)


class _Epoch:
    """Iterating yields one epoch of the sampler's batches (it follows ``sampler.set_epoch``)."""

    def __init__(self, source: Source, sampler: Any) -> None:
        self.source, self.sampler = source, sampler

    def __iter__(self) -> Iterator[dict]:
        return self.source.batches(iter(self.sampler), True, getattr(self.sampler, "skip", 0))

    def __len__(self) -> int:
        return len(self.sampler)


class _Fixed:
    def __init__(self, source: Source, lists: list[list[int]]) -> None:
        self.source, self.lists = source, lists

    def __iter__(self) -> Iterator[dict]:
        return self.source.batches(self.lists, False)

    def __len__(self) -> int:
        return len(self.lists)


# ---- sources -------------------------------------------------------------------------------------------


def _index(idx: list[int], device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(idx, dtype=torch.long)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


# On a GPU a text batch's length is rounded up to a multiple of this: tensor cores want multiples of 8,
# and every new length costs the attention kernels a new plan (cuDNN's SDPA builds one per shape, about a
# millisecond of host time per layer and step while the lengths are new; measured on an H100 with batches
# of 82-122 tokens, benchmarks/step_gap.py). On a CPU the extra padding would only cost time.
CUDA_LENGTH_MULTIPLE = 8


def text_source(ds: TokenTensors, device: torch.device) -> Source:
    stored = {k: v.to(device) for k, v in ds.stored().items()}
    multiple = CUDA_LENGTH_MULTIPLE if device.type == "cuda" else 1

    def make(idx: list[int], _train: bool, _k: int, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return ds.batch(idx, stored, _index(idx, device) if index is None else index, multiple)

    return Source(len(ds), make, index_device=device)


def image_source(
    ds: ImageFiles, pixels: torch.Tensor, device: torch.device, augment: bool, seed: int, epoch_of: Callable[[], int]
) -> Source:
    """``pixels``: the decoded (N, 3, S, S) uint8 array, on the device or memory-mapped on the host."""
    from tunedesk.engine.data.decoded import device_images

    on_device = pixels.device == device
    labels = ds.labels.to(device)
    channels_last = devices.channels_last(device.type)  # as the model (training.py)

    def make(idx: list[int], train: bool, k: int, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if index is None:
            index = _index(idx, device)
        x = pixels.index_select(0, index if on_device else torch.as_tensor(idx, dtype=torch.long))
        if not on_device:
            x = x.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else x
        r = None
        if train and augment:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch_of() * 100_003 + k)
            r = torch.rand(len(idx), 5, generator=g)
        out = device_images(x, ds.size, ds.mean, ds.std, r)
        if channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return {"pixel_values": out, "labels": labels.index_select(0, index)}

    return Source(len(ds), make, threaded=not on_device and device.type == "cuda", index_device=device)


def feature_source(
    stored: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    lengths: torch.Tensor | None,
    text: bool,
    mask: bool = True,
) -> Source:
    """``mask=False``: the features go straight into the trained module (head only), which needs no
    attention mask for one vector per text."""
    on_device = stored.device == device
    labels = labels.to(device)
    lengths_dev = lengths.to(device) if lengths is not None else None
    channels_last = devices.channels_last(device.type) and stored.dim() == 4
    multiple = CUDA_LENGTH_MULTIPLE if device.type == "cuda" else 1

    def make(idx: list[int], _train: bool, _k: int, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if index is None:
            index = _index(idx, device)
        source = stored
        if lengths is not None:  # texts: cut to the batch's longest first, so the gather copies only that
            longest = batch_width(lengths, idx, multiple, int(stored.shape[1]))
            source = stored[:, :longest]
        if on_device:
            feats = source.index_select(0, index)
        else:
            feats = source.index_select(0, torch.as_tensor(idx, dtype=torch.long))
            feats = feats.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else feats
        batch: dict[str, torch.Tensor] = {"labels": labels.index_select(0, index)}
        if lengths is not None and lengths_dev is not None:
            positions = torch.arange(longest, device=device)
            batch["attention_mask"] = (positions[None, :] < lengths_dev.index_select(0, index)[:, None]).long()
        elif text and mask:  # one vector per text: the model still wants a mask to build its (skipped) attention
            batch["attention_mask"] = torch.ones((), dtype=torch.long, device=device).expand(len(idx), 1)
        if channels_last:
            feats = feats.contiguous(memory_format=torch.channels_last)
        batch["features"] = feats
        return batch

    return Source(int(stored.shape[0]), make, threaded=not on_device and device.type == "cuda", index_device=device)


# ---- building the feed ---------------------------------------------------------------------------------


def build_feed(
    config: Any,
    task: Any,
    loaded: Any,
    data: Any,
    plan: Any,
    device: torch.device,
    cache_dir: Path,
    autocast_dtype: torch.dtype | None,
    fallback: Callable[..., Any],
    epoch_of: Callable[[], int],
    say: Callable[[str], None] = lambda _m: None,
) -> Feed:
    h = config.hparams
    model = loaded.model
    feed = Feed(config, task, device, None, None, fallback=fallback, data=data)
    tr, va = data.train, data.val
    if isinstance(tr, TokenTensors) and isinstance(va, TokenTensors):
        feed.train, feed.val = text_source(tr, device), text_source(va, device)
        where = "on the GPU" if device.type == "cuda" else "in memory"
        feed.notes.append(
            f"input: {len(tr):,} + {len(va):,} tokenised texts kept {where}; batches padded to their longest text"
        )
    elif isinstance(tr, ImageFiles) and isinstance(va, ImageFiles):
        feed.image_size = tr.size
        _image_sources(feed, tr, va, data.fingerprint, cache_dir, device, config, epoch_of, say)
    else:
        return feed  # language-model data: the loop's DataLoader

    if not h.feature_cache:
        feed.notes.append("feature cache: off (hparams.feature_cache)")
        return feed
    if config.freeze.train_batchnorm_stats:
        feed.notes.append("feature cache: not used, batch-norm statistics keep learning in the frozen layers")
        return feed
    _feature_cache(feed, model, loaded, data, plan, cache_dir, autocast_dtype, say)
    return feed


def _image_sources(
    feed: Feed,
    tr: ImageFiles,
    va: ImageFiles,
    fingerprint: str,
    cache_dir: Path,
    device: torch.device,
    config: Any,
    epoch_of: Callable[[], int],
    say: Callable[[str], None],
) -> None:
    from tunedesk.engine.data.decoded import decoded_images, stored_size

    h = config.hparams
    workers = input_workers(h.num_workers, device.type)
    stores = []
    for name, ds in (("training", tr), ("validation", va)):
        say(f"decoding {len(ds):,} {name} images")
        stores.append(decoded_images(ds.paths, ds.size, cache_dir, f"{fingerprint}:{name}", device, workers))
    total = sum(s.nbytes for s in stores)
    on_gpu = fits_on(device, total)
    arrays = [s.array.to(device) if on_gpu else s.array for s in stores]
    feed.train = image_source(tr, arrays[0], device, h.augment, config.seed, epoch_of)
    feed.val = image_source(va, arrays[1], device, False, config.seed, epoch_of)
    how = "reused from the run cache" if not any(s.built for s in stores) else f"decoded once ({stores[0].decoder})"
    where = (
        "kept on the GPU"
        if on_gpu
        else ("read from the memory map by a background thread" if device.type == "cuda" else "memory-mapped")
    )
    aug = "random crops and flips" if h.augment else "centre crops (augmentation off)"
    feed.notes.append(
        f"input: {len(tr):,} + {len(va):,} images {how} at {stored_size(tr.size)} px ({gib(total)}), {where}; "
        f"{aug} and normalisation on the {'GPU' if device.type == 'cuda' else 'CPU'} a batch at a time; "
        f"{workers} input worker{'s' if workers != 1 else ''}"
    )


def _feature_cache(
    feed: Feed,
    model: nn.Module,
    loaded: Any,
    data: Any,
    plan: Any,
    cache_dir: Path,
    autocast_dtype: torch.dtype | None,
    say: Callable[[str], None],
) -> None:
    h, device = feed.config.hparams, feed.device
    text = isinstance(data.train, TokenTensors)
    val = feed.val
    assert val is not None

    def sample(n: int, longer: bool) -> dict[str, torch.Tensor]:
        batch = val.make(list(range(min(n, val.n))), False, 0, None)
        if text and "attention_mask" not in batch:  # a batch without padding has none; the split needs one
            batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        if longer and text:  # padded past the first run's length, so sizes that follow the sequence show
            extra = int(data.val.lengths[:2].max()) + 1 - batch["input_ids"].shape[1]
            pad = torch.zeros_like(batch["input_ids"][:, :1]).expand(-1, max(extra, 1))
            batch = {k: (torch.cat([v, pad], 1) if v.dim() == 2 else v) for k, v in batch.items()}
        return batch

    if val.n < 3:
        feed.notes.append("feature cache: not used, fewer than 3 validation examples to check it on")
        return
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None),
        ):
            split, why = fc.find_split(
                model,
                plan.trainable,
                lambda n, longer: feed.task.forward(model, sample(n, longer)),
                plan.blocks.paths,
            )
            if split is not None:
                why = _verify(split, model, feed, sample(8, False))
    finally:
        model.train(was_training)
    if split is None or why:
        feed.notes.append(f"feature cache: not used, {why}")
        return
    cache_train = text or not h.augment
    digest = fc.weights_digest(model, split)
    precision = str(autocast_dtype) if autocast_dtype else "fp32"
    stores: list[fc.Stored] = []
    parts = [("validation", data.val, val)] + ([("training", data.train, feed.train)] if cache_train else [])
    for name, ds, source in parts:
        assert source is not None  # the feed reads both splits from sources whenever it caches features
        key = fc.cache_key(
            [
                loaded.fingerprint or "-",
                digest,
                split.boundary,
                ",".join(split.prefix),
                _data_key(ds),
                precision,
                device.type,
                name,
            ]
        )
        message = f"computing the frozen layers' output for the {name} examples once"
        stored = _compute(
            split,
            model,
            feed,
            ds,
            source,
            cache_dir / "features" / key,
            autocast_dtype,
            text,
            h.batch_size or AUTO_BATCH,
            lambda message=message: say(message),
        )
        stores.append(stored)
    total = sum(s.nbytes for s in stores)
    on_gpu = fits_on(device, total)
    per_token = text and split.variable_dim  # else one vector per example (head only)
    lengths = {"validation": data.val.lengths, "training": data.train.lengths} if per_token else {}
    sources = {}
    for (name, ds, _), stored in zip(parts, stores):
        t = stored.features.to(device) if on_gpu else stored.features
        sources[name] = feature_source(t, ds.labels, device, lengths.get(name), text, mask=not split.direct)
    feed.val = sources["validation"]
    if cache_train:
        feed.train = sources["training"]
        feed.train_cached = True
    feed.split = split
    reused = all(not s.built for s in stores)
    which = (
        "training and validation"
        if cache_train
        else "validation (training images are augmented: set hparams.augment off to cache them too)"
    )
    where = "on the GPU" if on_gpu else "memory-mapped in the run cache"
    feed.notes.append(
        f"feature cache: used for {which}; {split.describe()} ({gib(total)}, {where}) "
        f"{'reused from an earlier run' if reused else 'computed once'}; epochs run only the layers from {split.boundary} on"
    )


def _data_key(ds: Any) -> str:
    import zlib

    if isinstance(ds, TokenTensors):
        crc = 0
        for k in sorted(ds.tensors):
            crc = zlib.crc32(ds.tensors[k].numpy().tobytes(), crc)
        crc = zlib.crc32(ds.lengths.numpy().tobytes(), crc)
        return f"text:{len(ds)}:{crc:08x}"
    crc = zlib.crc32("\x1e".join(ds.paths).encode("utf-8", "surrogatepass"))
    from tunedesk.engine.data.decoded import _files_key

    return f"images:{len(ds)}:{crc:08x}:{_files_key(ds.paths)}:{ds.size}:{ds.mean}:{ds.std}"


def _verify(split: fc.Split, model: nn.Module, feed: Feed, batch: dict[str, torch.Tensor]) -> str:
    """'' when the model run from the cut reproduces the model's own output, else why not."""
    size = feed.image_size
    direct, split.direct = split.direct, False
    try:
        expected = feed.task.forward(model, batch).float()
        feats = fc.capture(model, split, feed.task, batch)
        cut = {"features": feats, "labels": batch["labels"]}
        if "attention_mask" in batch:
            mask = batch["attention_mask"]
            cut["attention_mask"] = mask if split.variable_dim else mask[:, :1]
        got = split.forward(model, feed.task, cut, size).float()
    except Exception as exc:
        log.info("feature cache check failed", exc_info=True)
        return f"the model cannot run from {split.boundary} alone ({type(exc).__name__})"
    if got.shape != expected.shape:
        return f"the model run from {split.boundary} gives a different output shape"
    tol = 1e-4 if expected.dtype == torch.float32 and feats.dtype == torch.float32 else 2e-2
    if not torch.allclose(got, expected, rtol=tol, atol=tol * (1 + float(expected.abs().max()))):
        return f"the model run from {split.boundary} does not reproduce its own outputs"
    if direct:  # the last layer alone (head only) must give what the model run from the cut gives
        split.direct = True
        try:
            alone = split.forward(model, feed.task, cut, size).float()
            split.direct = alone.shape == got.shape and torch.allclose(alone, got, rtol=1e-5, atol=1e-6)
        except Exception:  # noqa: BLE001 - then the general way is used
            split.direct = False
    return ""


def _compute(
    split: fc.Split,
    model: nn.Module,
    feed: Feed,
    ds: Any,
    source: Source,
    folder: Path,
    autocast_dtype: torch.dtype | None,
    text: bool,
    batch_size: int,
    announce: Any,
) -> fc.Stored:
    device = feed.device
    n = source.n
    lists = [list(range(i, min(i + batch_size * 2, n))) for i in range(0, n, batch_size * 2)]
    probe = source.make(lists[0][:2], False, 0, None)
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None),
        ):
            first = fc.capture(model, split, feed.task, probe)
        dtype = first.dtype
        if device.type == "cuda" and autocast_dtype is not None and dtype == torch.float32:
            dtype = autocast_dtype  # half the memory; the trained layers compute in this type anyway
        per_example = tuple(first.shape[1:])
        if text and split.variable_dim:
            per_example = (int(ds.lengths.max()), *per_example[1:])
        shape = (n, *per_example)

        def fill(write: Callable[[list[int], torch.Tensor], None]) -> None:
            with (
                torch.inference_mode(),
                torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None),
            ):
                for batch, rows in zip(source.batches(lists, False), lists):
                    write(rows, fc.capture(model, split, feed.task, batch))

        return fc.load_or_build(folder, shape, dtype, fill, announce)
    finally:
        model.train(was_training)
