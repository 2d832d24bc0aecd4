"""Frozen-prefix feature cache: compute what a frozen prefix of the model outputs once, train the rest.

When every parameter up to a module boundary is frozen and that prefix sees the same input every
epoch, its output never changes; recomputing it each epoch is most of a head-only run's time. Here:

* ``find_split`` runs the model twice on a few examples with hooks on every module and picks the
  boundary: the outermost module around the first trained layer that no frozen, parameter-owning
  module runs inside of before that layer (``layer4`` of a ResNet, ``encoder.layer.11`` of BERT, the
  classifier for head-only). The *prefix* is every module that finishes before the boundary starts.
* ``build`` computes the boundary's input for every example once (evaluation mode, no gradients) and
  keeps it in ``<cache>/features/<key>/`` (memory-mapped), copied onto the GPU when it fits.
* ``Split.forward`` runs the model with each prefix module answering zeros of its recorded shape
  (an expanded zero tensor: no memory, no compute) and the boundary receiving the cached features,
  so the model's own forward code (masks, pooling, flattening) runs unchanged and autograd never
  enters the prefix. A split is used only after it reproduces the model's own outputs on real
  examples (``verify``); otherwise the run trains without the cache and says why.

The key covers the model's weights in the prefix, the boundary, the data (tokens or decoded
images), the sizes and the storage type; a cache folder is trusted only with a manifest whose size
and checksum match, so a partial or corrupt file is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

log = logging.getLogger("tunedesk.feature_cache")

CACHE_VERSION = 1
_CHUNK = 1 << 24


class _Stop(Exception):
    """Raised by the capture hook: the rest of the model is not needed to build the cache."""


# ---- finding the boundary --------------------------------------------------------------------------


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


@dataclass
class _Call:
    path: str
    start: int
    end: int = -1
    inputs: list[tuple[int, ...]] = field(default_factory=list)  # the first tensor argument's shape per run
    outputs: list[Any] = field(default_factory=list)  # output per run, tensors replaced by (shape, dtype)
    flops: int = 0  # work done inside the module (meta traces for the estimate)


@dataclass
class _Template:
    """How a prefix module's stand-in builds its output from its first tensor argument."""

    tree: Any  # the output structure with _Leaf in place of tensors


@dataclass(frozen=True)
class _Leaf:
    dims: tuple[tuple[str, int], ...]  # ("in", j): the input's dim j; ("fixed", n): n
    dtype: torch.dtype


def _spec(out: Any) -> Any:
    return pytree.tree_map(lambda t: (tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else t, out)


def _leaf(a: Any, b: Any, in_a: tuple[int, ...], in_b: tuple[int, ...]) -> _Leaf:
    (sa, dtype), (sb, _) = a, b
    if len(sa) != len(sb):
        raise ValueError("output rank changes with the input")
    dims: list[tuple[str, int]] = []
    for x, y in zip(sa, sb):
        if x == y:
            dims.append(("fixed", x))
            continue
        source = [j for j in range(min(len(in_a), len(in_b))) if in_a[j] == x and in_b[j] == y]
        if not source:
            raise ValueError("an output size follows no input size")
        dims.append(("in", source[0]))
    return _Leaf(tuple(dims), dtype)


def _template(call: _Call) -> _Template:
    a, b = call.outputs
    la, spec_a = pytree.tree_flatten(
        a, is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], torch.dtype)
    )
    lb, spec_b = pytree.tree_flatten(
        b, is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], torch.dtype)
    )
    if spec_a != spec_b or len(la) != len(lb):
        raise ValueError("output structure changes with the input")
    leaves = [
        _leaf(x, y, call.inputs[0], call.inputs[1])
        if isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], torch.dtype)
        else x
        for x, y in zip(la, lb)
    ]
    return _Template(pytree.tree_unflatten(leaves, spec_a))


def _zeros(template: _Template, device: torch.device) -> Callable[..., Any]:
    scalars: dict[torch.dtype, torch.Tensor] = {}

    def zero(dtype: torch.dtype) -> torch.Tensor:
        if dtype not in scalars:
            scalars[dtype] = torch.zeros((), dtype=dtype, device=device)
        return scalars[dtype]

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        first = _first_tensor(args, kwargs)
        shape_in = tuple(first.shape) if first is not None else ()

        def make(leaf: Any) -> Any:
            if not isinstance(leaf, _Leaf):
                return leaf
            shape = [shape_in[n] if kind == "in" else n for kind, n in leaf.dims]
            return zero(leaf.dtype).expand(shape)

        return pytree.tree_map(make, template.tree, is_leaf=lambda x: isinstance(x, _Leaf))

    return stand_in


@dataclass
class Split:
    """Where the model is cut, and how to run the part after the cut from cached features."""

    boundary: str  # module path whose input is cached
    prefix: list[str]  # modules that answer zeros when training from features
    templates: dict[str, _Template]
    variable_dim: bool  # text: the features' dim 1 is the sequence (padded per batch)
    feature_shape: tuple[int, ...]  # per example, with the sequence dim at its longest seen in discovery
    feature_dtype: torch.dtype
    frozen_params: int
    total_params: int
    direct: bool = False  # the boundary's output is the model's: call it alone (head only), no stand-ins
    _modules: dict[str, nn.Module] | None = field(default=None, repr=False)
    _stand_ins: dict[str, Callable[..., Any]] | None = field(default=None, repr=False)

    def describe(self) -> str:
        return f"the input of {self.boundary or 'the model'}"

    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        if self._modules is None:
            self._modules = dict(model.named_modules())
        return self._modules

    @contextmanager
    def _patched(self, model: nn.Module, features: torch.Tensor, device: torch.device) -> Iterator[None]:
        modules = self.modules(model)
        if self._stand_ins is None:
            self._stand_ins = {path: _zeros(self.templates[path], device) for path in self.prefix}
        for path in self.prefix:
            modules[path].forward = self._stand_ins[path]  # an instance attribute shadows the class's forward

        def inject(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                return (features.to(args[0].dtype) if args[0].is_floating_point() else features, *args[1:]), kwargs
            key = next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
            return args, {**kwargs, key: features}

        handle = modules[self.boundary].register_forward_pre_hook(inject, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
            for path in self.prefix:
                del modules[path].forward

    def forward(
        self, model: nn.Module, task: Any, batch: dict[str, torch.Tensor], image_size: int | None
    ) -> torch.Tensor:
        """The model's output for a batch of cached features (and, for text, the attention mask)."""
        features = batch["features"]
        if self.direct:
            return self.modules(model)[self.boundary](features)
        b = features.shape[0]
        device = features.device
        if "attention_mask" in batch:  # text: the model builds its attention mask as usual
            mask = batch["attention_mask"]
            inputs = {
                "input_ids": torch.zeros((), dtype=torch.long, device=device).expand(mask.shape),
                "attention_mask": mask,
            }
        else:
            size = image_size or 224
            inputs = {"pixel_values": torch.zeros((), dtype=features.dtype, device=device).expand(b, 3, size, size)}
        with self._patched(model, features, device):
            return task.forward(model, inputs)


def record_calls(
    model: nn.Module, run: Callable[[int, bool], Any], runs: int = 2, flops: Any = None
) -> dict[str, _Call]:
    """Every module's first call: order, first tensor argument's shape and output per run, and (with a
    ``FlopCounterMode``) the floating-point operations done inside it."""
    calls: dict[str, _Call] = {}
    counter = [0]
    run_no = [0]
    handles = []
    for path, module in model.named_modules():

        def pre(_m: nn.Module, args: tuple, kwargs: dict, path: str = path) -> None:
            counter[0] += 1
            call = calls.get(path)
            if run_no[0] == 0 and call is None:
                call = calls[path] = _Call(path, counter[0])
                if flops is not None:
                    call.flops = -flops.get_total_flops()
            if call is not None and len(call.inputs) == run_no[0]:
                t = _first_tensor(args, kwargs)
                call.inputs.append(tuple(t.shape) if t is not None else ())

        def post(_m: nn.Module, _args: tuple, _kwargs: dict, out: Any, path: str = path) -> None:
            counter[0] += 1
            call = calls.get(path)
            if call is not None:
                if run_no[0] == 0 and call.end < 0:
                    call.end = counter[0]
                    if flops is not None:
                        call.flops += flops.get_total_flops()
                if len(call.outputs) == run_no[0]:
                    call.outputs.append(_spec(out))

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True))
    try:
        for i in range(runs):
            run_no[0] = i
            run(2 + i, i > 0)
    finally:
        for h in handles:
            h.remove()
    return calls


def _is_ancestor(a: str, b: str) -> bool:
    return a == "" or b.startswith(a + ".")


def _inside(path: str, paths: set[str]) -> bool:
    """Whether a proper ancestor of ``path`` (dotted, the root "" excluded) is in ``paths``: O(depth)
    set lookups, where comparing with every path was O(n) (the Layers area asks on every edit)."""
    parts = path.split(".")
    return any(".".join(parts[:i]) in paths for i in range(1, len(parts)))


def choose_cut(
    calls: dict[str, _Call], trainable: dict[str, bool], blocks: Iterable[str] = ()
) -> tuple[str, list[_Call], str]:
    """(boundary, prefix calls, '') for a freeze plan, or ('', [], reason) when no cut pays.

    The boundary is the outermost module around the first trained layer inside which no frozen layer
    with weights runs before that layer; the prefix is every module that finishes before it starts.
    With repeated ``blocks``, at least one of them must be in the prefix: embeddings alone are a
    lookup, not worth a cache (and computing them once would drop their dropout for nothing)."""
    owned: dict[str, list[str]] = {}
    for name in trainable:
        module_path, _, _ = name.rpartition(".")
        owned.setdefault(module_path, []).append(name)
    trains = {path: any(trainable[n] for n in names) for path, names in owned.items()}
    if not any(trains.values()):
        return "", [], "nothing trains"
    order = sorted(calls.values(), key=lambda c: c.start)
    first = next((c for c in order if trains.get(c.path)), None)
    if first is None:
        return "", [], "the trained layers are not reached by the forward pass"
    boundary = first.path
    for anc in (c for c in order if c.path and _is_ancestor(c.path, first.path)):
        between = [c for c in order if anc.start < c.start < first.start and not _is_ancestor(c.path, first.path)]
        if not any(c.path in owned for c in between):
            boundary = anc.path
            break
    b_call = calls[boundary]
    before = [c for c in order if c.path and 0 <= c.end < b_call.start and not _is_ancestor(c.path, boundary)]
    before_paths = {c.path for c in before}
    prefix = [c for c in before if not _inside(c.path, before_paths)]  # the outermost ones
    paths = {c.path for c in prefix}
    in_prefix = [n for n in trainable if _inside(n, paths)]
    if not in_prefix:
        return "", [], "the first trained layer comes before any frozen layer with weights"
    if any(trainable[n] for n in in_prefix):
        return "", [], "a trained layer runs before the cut"
    blocks = list(blocks)
    if blocks and not any(_is_ancestor(p, b) or _is_ancestor(b, p) or p == b for p in paths for b in blocks):
        return (
            "",
            [],
            "no block is frozen before the first trained layer (only embeddings or a stem): too little to cache",
        )
    return boundary, prefix, ""


def find_split(
    model: nn.Module, trainable: dict[str, bool], run: Callable[[int, bool], Any], blocks: Iterable[str] = ()
) -> tuple[Split | None, str]:
    """The cut for this model and freeze plan, or None and the reason there is none.

    ``run(n, longer)`` runs the model on ``n`` real examples (``longer``: one extra padding position
    for text) in evaluation mode; it is called twice so sizes that follow the batch (and the
    sequence) can be told from fixed ones.
    """
    if not any(trainable.values()):
        return None, "nothing trains"
    if all(trainable.values()):  # decided without tracing the model (two forward passes)
        return None, "every layer trains"
    calls = record_calls(model, run)
    boundary, prefix, why = choose_cut(calls, trainable, blocks)
    if not boundary:
        return None, why
    b_call = calls[boundary]
    try:
        templates = {c.path: _template(c) for c in prefix}
    except (ValueError, IndexError) as exc:
        return None, f"a frozen layer's output cannot be stood in for ({exc})"
    in_a, in_b = b_call.inputs
    if len(in_a) != len(in_b) or not in_a:
        return None, "the cut's input has no tensor"
    paths = {c.path for c in prefix}
    return (
        Split(
            boundary=boundary,
            prefix=[c.path for c in prefix],
            templates=templates,
            variable_dim=len(in_a) >= 2 and in_a[1] != in_b[1],
            feature_shape=tuple(in_b[1:]),
            feature_dtype=torch.float32,
            frozen_params=sum(1 for n in trainable if any(n.startswith(p + ".") for p in paths)),
            total_params=len(trainable),
            direct=not any(c.start > b_call.end for c in calls.values()),
        ),
        "",
    )


# ---- what the Layers area shows: the cache's size and the expected speed-up ---------------------------

MAX_SPEEDUP = 100.0  # beyond this the loop's own per-step work sets the pace


@dataclass
class CacheEstimate:
    boundary: str
    bytes_per_example: int
    speedup: float  # epochs from the cache against recomputing the frozen layers (compute only)

    def nbytes(self, examples: int) -> int:
        return self.bytes_per_example * examples


def trace_calls(model: nn.Module, text: bool, sequence_length: int, image_size: int) -> dict[str, _Call] | None:
    """One forward on the meta device (no memory, no weights) recording the calls and their work."""
    from torch.utils.flop_counter import FlopCounterMode

    def run(_n: int, _longer: bool) -> Any:
        if text:
            ids = torch.zeros(1, sequence_length, dtype=torch.long, device="meta")
            return model(input_ids=ids)  # no mask: checking one for padding reads values meta tensors lack
        return model(torch.zeros(1, 3, image_size, image_size, device="meta"))

    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            return record_calls(model, run, runs=1, flops=counter)
    except Exception:
        log.debug("meta trace for the cache estimate failed", exc_info=True)
        return None


def estimate(
    calls: dict[str, _Call], trainable: dict[str, bool], feature_bytes: int, blocks: Iterable[str] = ()
) -> CacheEstimate | None:
    """The feature cache a plan would use, from ``trace_calls``: None when it does not apply."""
    boundary, prefix, _why = choose_cut(calls, trainable, blocks)
    if not boundary:
        return None
    total = max((c.flops for c in calls.values() if c.path == ""), default=0)
    before = sum(c.flops for c in prefix)
    after = max(total - before, 0)
    uncached = total + 2 * after  # forward through everything, backward from the cut on
    cached = 3 * after
    speedup = MAX_SPEEDUP if cached <= uncached / MAX_SPEEDUP else uncached / cached
    shape = calls[boundary].inputs[0]
    per_example = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return CacheEstimate(boundary, per_example * feature_bytes, speedup)


# ---- computing and storing the features ---------------------------------------------------------------


def capture(model: nn.Module, split: Split, task: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The boundary's input for a batch (the prefix's output): runs the model up to the boundary only."""
    box: list[Any] = []  # the boundary's first input (a tensor for every model the cache accepts)

    def grab(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        t = args[0] if args else _first_tensor((), kwargs)
        box.append(t)
        raise _Stop

    handle = dict(model.named_modules())[split.boundary].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        task.forward(model, batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not box:
        raise RuntimeError("the cut was not reached")
    return box[0]


def weights_digest(model: nn.Module, split: Split) -> str:
    crc = 0
    params = dict(model.named_parameters())
    for name in sorted(params):
        if any(name.startswith(p + ".") for p in split.prefix):
            t = params[name].detach()
            crc = zlib.crc32(t.to("cpu", torch.float32).contiguous().numpy().tobytes(), crc)
    for name, buf in sorted(model.named_buffers()):
        if any(name.startswith(p + ".") for p in split.prefix) and buf.is_floating_point():
            crc = zlib.crc32(buf.detach().to("cpu", torch.float32).contiguous().numpy().tobytes(), crc)
    return f"{crc:08x}"


def _checksum(path: Path) -> str:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.uint16}


@dataclass
class Stored:
    """Cached features of one split of the data: ``features`` (N, ...) on the device or memory-mapped."""

    features: torch.Tensor
    folder: Path
    built: bool

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


def _open(folder: Path, shape: tuple[int, ...], dtype: torch.dtype, check: bool = True) -> torch.Tensor | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    data = folder / "features.bin"
    nbytes = int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
    if (
        manifest.get("version") != CACHE_VERSION
        or tuple(manifest.get("shape", ())) != tuple(shape)
        or manifest.get("dtype") != str(dtype)
        or manifest.get("bytes") != nbytes
    ):
        return None
    try:
        if data.stat().st_size != nbytes or (check and _checksum(data) != manifest.get("crc32")):
            return None
    except OSError:
        return None
    arr = np.memmap(data, dtype=_NP[dtype], mode="r", shape=shape)
    with warnings.catch_warnings():  # a read-only map: nothing writes to it
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(arr)
    return t.view(dtype) if dtype == torch.bfloat16 else t


def cache_key(parts: Iterable[str]) -> str:
    return hashlib.sha256("|".join([str(CACHE_VERSION), *parts]).encode()).hexdigest()[:24]


def load_or_build(
    folder: Path,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    fill: Callable[[Callable[[list[int], torch.Tensor], None]], None],
    announce: Callable[[], None] | None = None,
) -> Stored:
    """The features in ``folder`` when complete and intact; else computed by ``fill(write)`` (which calls
    ``write(rows, features)`` per batch) into a temporary folder that is renamed into place."""
    t = _open(folder, shape, dtype)
    if t is not None:
        return Stored(t, folder, built=False)
    if folder.exists():
        log.warning("feature cache %s is incomplete or damaged: rebuilding it", folder)
        shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if announce is not None:
        announce()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        data = tmp / "features.bin"
        mm = np.memmap(data, dtype=_NP[dtype], mode="w+", shape=shape)
        target = torch.from_numpy(mm)
        if dtype == torch.bfloat16:
            target = target.view(torch.bfloat16)

        def write(rows: list[int], feats: torch.Tensor) -> None:
            host = feats.detach().to("cpu", dtype)
            idx = torch.as_tensor(rows, dtype=torch.long)
            if host.dim() >= 2 and len(shape) >= 2 and host.shape[1] != shape[1]:
                target[idx, : host.shape[1]] = host  # text: this batch is padded to its own longest text
            else:
                target[idx] = host

        fill(write)
        mm.flush()
        del mm
        with open(data, "rb+") as fh:
            os.fsync(fh.fileno())
        nbytes = int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
        manifest = {
            "version": CACHE_VERSION,
            "shape": list(shape),
            "dtype": str(dtype),
            "bytes": nbytes,
            "crc32": _checksum(data),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    t = _open(folder, shape, dtype, check=False)
    assert t is not None
    return Stored(t, folder, built=True)
