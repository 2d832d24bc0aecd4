"""Freeze plans: rules over module paths -> ``requires_grad`` flags, presets, block detection.

A plan (``config.FreezeSpec``) is model-independent: a preset plus ordered rules whose patterns are
globs over dotted module paths or tokens (``@head``, ``@embeddings``, ``@norms``, ``@block:N``). It is
resolved against a concrete model (real or on the meta device) into one flag per parameter, so the
layer tree, the engine and a re-opened run always agree.

Resolution works on a ``ModelIndex`` (parameter order, sizes, and the contiguous range of parameters
under every module), built once per model: the layer tree re-resolves on every click of an 8B model
in about a millisecond by passing its index; a run resolves once and may let ``resolve`` build it.
"""

from __future__ import annotations

import fnmatch
import re
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from torch import nn

from tunedesk.engine.config import FreezeRule, FreezeSpec
from tunedesk.engine.errors import ConfigError
from tunedesk.engine.shares import percent

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_NORM_TYPES = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LocalResponseNorm,
)
_NORM_NAME = re.compile(r"(norm|ln_?\d*|layernorm)$", re.IGNORECASE)
_EMBEDDING_MODULES = (
    "embeddings",
    "wte",
    "wpe",
    "embed_tokens",
    "embed_positions",
    "patch_embed",
    "patch_embeddings",
    "conv_proj",
)
_EMBEDDING_PARAMS = ("class_token", "cls_token", "pos_embedding", "pos_embed", "position_embeddings", "mask_token")
_WHOLE_MODEL = ("", "*", "**")
TOKENS = ("@head", "@embeddings", "@norms", "@block:N")

Ranges = list[tuple[int, int]]


@dataclass
class Blocks:
    """The model's repeated blocks, in order (e.g. ``bert.encoder.layer.0`` ... ``.5``)."""

    container: str  # e.g. "bert.encoder.layer" or "" for sibling stages (layer1..layer4)
    paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


# ---- the model index -----------------------------------------------------------------------------


class ModelIndex:
    """Everything resolution needs about a model's structure, computed once.

    ``spans[path]`` lists the index ranges (into ``names``) of the parameters under a module path or
    parameter name; parameters are enumerated module by module, so each is one range in practice.
    Shared parameters appear once, under the first module that owns them (as ``named_parameters``).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model_ref = weakref.ref(model)
        params = list(model.named_parameters())
        self.names: list[str] = [n for n, _ in params]
        self.sizes: list[int] = [p.numel() for _, p in params]
        self.elem_bytes: list[int] = [p.element_size() for _, p in params]
        self.position: dict[str, int] = {n: i for i, n in enumerate(self.names)}
        spans: dict[str, Ranges] = {}
        for i, name in enumerate(self.names):
            parts = name.split(".")
            for k in range(len(parts) + 1):
                key = ".".join(parts[:k])
                ranges = spans.get(key)
                if ranges is None:
                    spans[key] = [(i, i + 1)]
                elif ranges[-1][1] == i:
                    ranges[-1] = (ranges[-1][0], i + 1)
                else:
                    ranges.append((i, i + 1))
        self.spans = spans
        self.total = sum(self.sizes)
        self._blocks: Blocks | None = None
        self._embeddings: list[str] | None = None
        self._norms: list[str] | None = None
        self._patterns: dict[str, Ranges] = {}

    @property
    def modules(self) -> list[tuple[str, nn.Module]]:
        """``named_modules()`` of the model (not kept: the index must not keep the model alive)."""
        model = self.model_ref()
        if model is None:
            raise RuntimeError("the model of this index no longer exists")
        return list(model.named_modules())

    @property
    def blocks(self) -> Blocks:
        if self._blocks is None:
            sizes = {k: sum(sum(self.sizes[s:e]) for s, e in r) for k, r in self.spans.items()}
            self._blocks = _detect_blocks(self.modules, sizes)
        return self._blocks

    @property
    def embedding_paths(self) -> list[str]:
        if self._embeddings is None:
            paths = [
                n
                for n, m in self.modules
                if n and (isinstance(m, nn.Embedding) or n.split(".")[-1] in _EMBEDDING_MODULES)
            ]
            paths += [n for n in self.names if n.split(".")[-1] in _EMBEDDING_PARAMS and not _under(n, paths)]
            self._embeddings = paths
        return self._embeddings

    @property
    def norm_paths(self) -> list[str]:
        if self._norms is None:
            self._norms = [n for n, m in self.modules if n and _is_norm(n, m)]
        return self._norms

    def ranges_of(self, paths: Iterable[str]) -> Ranges:
        out: Ranges = []
        for p in paths:
            out.extend(self.spans.get(p, ()))
        return out

    def glob(self, pattern: str) -> Ranges:
        """Ranges of the parameters under any module path (or parameter name) matching the glob."""
        cached = self._patterns.get(pattern)
        if cached is None:
            match = compile_pattern(pattern)
            cached = [r for key, ranges in self.spans.items() if key and match(key) for r in ranges]
            if len(self._patterns) > 256:
                self._patterns.clear()
            self._patterns[pattern] = cached
        return cached

    def match(self, pattern: str, head_paths: list[str]) -> Ranges | None:
        """Ranges a rule pattern selects; None when the pattern is not understood."""
        pattern = pattern.strip()
        if pattern in _WHOLE_MODEL:
            return [(0, len(self.names))]
        if pattern == "@head":
            return self.ranges_of(head_paths)
        if pattern == "@embeddings":
            return self.ranges_of(self.embedding_paths)
        if pattern == "@norms":
            return self.ranges_of(self.norm_paths)
        if pattern.startswith("@block:"):
            try:
                path = self.blocks.paths[int(pattern.split(":", 1)[1])]
            except (ValueError, IndexError):
                return []
            return self.ranges_of([path])
        if pattern.startswith("@"):
            return None
        return self.glob(pattern)


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Callable[[str], object]:
    return re.compile(fnmatch.translate(pattern)).match


_index_cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, ModelIndex]] = weakref.WeakKeyDictionary()


def index_model(model: nn.Module, index: ModelIndex | None = None) -> ModelIndex:
    """The model's index: ``index`` when it was built for this very model, else a cached one.

    The cache is checked against the model's current parameters (names and objects), so a replaced
    head or a wrapped model gets a fresh index; the check costs a walk over the parameters only.
    """
    if index is not None and index.model_ref() is model:
        return index
    signature = tuple((n, id(p)) for n, p in model.named_parameters())
    cached = _index_cache.get(model)
    if cached is not None and cached[0] == signature:
        return cached[1]
    fresh = ModelIndex(model)
    try:
        _index_cache[model] = (signature, fresh)
    except TypeError:  # pragma: no cover - a module that cannot be weakly referenced
        pass
    return fresh


def _is_norm(name: str, module: nn.Module) -> bool:
    if (
        isinstance(module, _NORM_TYPES + BN_TYPES)
        or "RMSNorm" in type(module).__name__
        or type(module).__name__.endswith(("LayerNorm", "GroupNorm"))
    ):
        return True
    return bool(_NORM_NAME.search(name.split(".")[-1])) and not any(True for _ in module.children())


# ---- structure ---------------------------------------------------------------------------------


def detect_blocks(model: nn.Module) -> Blocks:
    """Find the repeated blocks that hold most of the model's parameters.

    Candidates are list-like containers (``ModuleList``/``Sequential``) of at least two children of
    one type (``encoder.layer.*``, ``layers.*``, ``h.*``, ``blocks.*``), parameterised children of a
    ``features`` Sequential, and numbered sibling stages (``layer1..layer4``). The one with the most
    parameters wins.
    """
    return _detect_blocks(list(model.named_modules()), _module_param_sizes(model))


def _detect_blocks(modules: list[tuple[str, nn.Module]], sizes: dict[str, int]) -> Blocks:
    best: tuple[int, Blocks] | None = None

    def consider(container: str, paths: list[str]) -> None:
        nonlocal best
        if len(paths) < 2:
            return
        total = sum(sizes.get(p, 0) for p in paths)
        if total and (best is None or total > best[0]):
            best = (total, Blocks(container, paths))

    for name, module in modules:
        children = list(module._modules.items())
        if not children:
            continue
        prefix = f"{name}." if name else ""
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            with_params = [(n, c) for n, c in children if c is not None and sizes.get(prefix + n, 0) > 0]
            types = {type(c).__name__ for _, c in with_params}
            if len(with_params) >= 2 and (len(types) == 1 or name.split(".")[-1] in ("features", "blocks", "layers")):
                consider(name, [prefix + n for n, _ in with_params])
        # numbered sibling stages: layer1, layer2, ... (ResNet), stage1.. , block1..
        groups: dict[str, list[tuple[int, str]]] = {}
        for child_name, child in children:
            if child is None:
                continue
            m = re.fullmatch(r"([A-Za-z_]+?)_?(\d+)", child_name)
            if m:
                groups.setdefault(m.group(1), []).append((int(m.group(2)), prefix + child_name))
        for stem, items in groups.items():
            if len(items) >= 2 and stem not in ("conv", "bn", "fc", "relu", "ln", "norm", "dropout"):
                consider(name, [p for _, p in sorted(items)])
    return best[1] if best else Blocks("", [])


def find_embedding_paths(model: nn.Module) -> list[str]:
    """Module paths (and loose parameters such as ``class_token``) that embed the input."""
    return index_model(model).embedding_paths


def find_norm_paths(model: nn.Module) -> list[str]:
    """Normalisation layers: LayerNorm, RMSNorm, GroupNorm, BatchNorm... (by type, else by leaf name)."""
    return [n for n, m in model.named_modules() if n and _is_norm(n, m)]


def _module_param_sizes(model: nn.Module) -> dict[str, int]:
    """Parameters under each module path (shared parameters counted once, at first owner)."""
    sizes: dict[str, int] = {}
    for pname, p in model.named_parameters():
        parts = pname.split(".")
        for i in range(len(parts)):
            key = ".".join(parts[:i])
            sizes[key] = sizes.get(key, 0) + p.numel()
    return sizes


def module_table(model: nn.Module, trainable: dict[str, bool]) -> dict[str, tuple[int, int]]:
    """Module path -> (parameters, trainable parameters) for every module (the layer tree's columns)."""
    table: dict[str, list[int]] = {n: [0, 0] for n, _ in model.named_modules()}
    for pname, p in model.named_parameters():
        parts = pname.split(".")
        n = p.numel()
        t = trainable.get(pname, False)
        for i in range(len(parts)):
            row = table.setdefault(".".join(parts[:i]), [0, 0])
            row[0] += n
            if t:
                row[1] += n
    return {k: (v[0], v[1]) for k, v in table.items()}


# ---- resolution ----------------------------------------------------------------------------------


@dataclass
class ResolvedPlan:
    trainable: dict[str, bool]  # parameter name -> trains
    param_sizes: dict[str, int]
    blocks: Blocks
    head_paths: list[str]
    flags: list[bool] = field(default_factory=list, repr=False)  # the same flags in ``index.names`` order
    index: ModelIndex | None = field(default=None, repr=False, compare=False)

    @property
    def trainable_names(self) -> list[str]:
        return [n for n, t in self.trainable.items() if t]

    @property
    def trainable_params(self) -> int:
        return sum(self.param_sizes[n] for n, t in self.trainable.items() if t)

    @property
    def total_params(self) -> int:
        return sum(self.param_sizes.values())

    @property
    def share(self) -> float:
        total = self.total_params
        return self.trainable_params / total if total else 0.0


def _ancestors(param_name: str) -> list[str]:
    parts = param_name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _under(name: str, paths: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in paths)


def _fill(flags: list[bool], ranges: Ranges, value: bool) -> None:
    for s, e in ranges:
        flags[s:e] = [value] * (e - s)


def resolve_flags(index: ModelIndex, spec: FreezeSpec, head_paths: Iterable[str] = ()) -> list[bool]:
    """One trains/frozen flag per parameter in ``index.names`` order; the last matching rule wins."""
    head_paths = [h for h in head_paths if h]
    n = len(index.names)
    if not n:
        raise ConfigError(
            "model", "has no parameters to train", "pick a model with weights, or train at least its head"
        )
    blocks = index.blocks
    if spec.preset == "all":
        flags = [True] * n
    elif spec.preset in ("none", "head_only"):
        flags = [False] * n
    elif spec.preset == "last_n_blocks":
        flags = [False] * n
        if spec.last_n > 0:
            if not blocks.paths:
                raise ConfigError(
                    "freeze.preset",
                    "last_n_blocks needs repeated blocks, and none were found in this model",
                    "use rules with module names instead, or the head_only preset",
                )
            last = index.spans.get(blocks.paths[-1])
            if last:
                # everything registered after the final block starts (pooler, final norm) trains too
                in_blocks = [False] * n
                _fill(in_blocks, index.ranges_of(blocks.paths), True)
                start = last[0][0]
                flags[start:] = [not b for b in in_blocks[start:]]
            _fill(flags, index.ranges_of(blocks.paths[-spec.last_n :]), True)
    else:
        raise ConfigError(
            "freeze.preset", f"unknown preset {spec.preset!r}", "use one of all, head_only, last_n_blocks, none"
        )
    if spec.preset != "none":
        _fill(flags, index.ranges_of(head_paths), True)
    for i, rule in enumerate(spec.rules):
        ranges = index.match(rule.pattern, head_paths)
        if ranges is None:
            raise ConfigError(
                f"freeze.rules[{i}]",
                f"pattern {rule.pattern!r} is not understood",
                "use a module path glob like 'encoder.layer.1*' or @head, @embeddings, @norms, @block:N",
            )
        _fill(flags, ranges, bool(rule.train))
    return flags


def resolve(
    model: nn.Module, spec: FreezeSpec, head_paths: Iterable[str] = (), *, index: ModelIndex | None = None
) -> ResolvedPlan:
    """Resolve a plan against a model: one trains/frozen flag per parameter, last matching rule wins.

    Pass the model's ``index`` (``index_model(model)``) when resolving the same model repeatedly.
    """
    head_paths = [h for h in head_paths if h]
    index = index_model(model, index)
    flags = resolve_flags(index, spec, head_paths)
    return ResolvedPlan(
        dict(zip(index.names, flags)), dict(zip(index.names, index.sizes)), index.blocks, head_paths, flags, index
    )


def matching_params(
    model: nn.Module, pattern: str, head_paths: Iterable[str] = (), *, index: ModelIndex | None = None
) -> list[str]:
    """Names of the parameters a rule pattern selects (what a glob typed in the layer tree would hit)."""
    index = index_model(model, index)
    ranges = index.match(pattern, [h for h in head_paths if h])
    if ranges is None:
        raise ConfigError(
            "pattern",
            f"{pattern!r} is not understood",
            "use a module path glob like 'encoder.layer.1*' or @head, @embeddings, @norms, @block:N",
        )
    hit = sorted({i for s, e in ranges for i in range(s, e)})
    return [index.names[i] for i in hit]


def apply(model: nn.Module, plan: ResolvedPlan) -> None:
    """Set ``requires_grad`` exactly as the plan says."""
    for n, p in model.named_parameters():
        p.requires_grad_(plan.trainable.get(n, False))


def set_train_mode(model: nn.Module, train_batchnorm_stats: bool = False) -> None:
    """``model.train()`` but frozen BatchNorm layers keep their running statistics (eval mode).

    Call instead of ``model.train()``: plain ``train()`` silently puts frozen BatchNorm back into
    training mode, which updates statistics the user asked to keep. A BatchNorm without affine
    parameters counts as frozen when its parent module has nothing to train.
    """
    model.train()
    if train_batchnorm_stats:
        return
    parents = {id(c): m for m in model.modules() for c in m.children()}
    for m in model.modules():
        if not isinstance(m, BN_TYPES):
            continue
        params = list(m.parameters(recurse=False))
        if params:
            frozen = not any(p.requires_grad for p in params)
        else:
            parent = parents.get(id(m))
            frozen = parent is None or not any(p.requires_grad for p in parent.parameters())
        if frozen:
            m.eval()


def lr_multiplier_for(
    index: ModelIndex, lr_multipliers: dict[str, float], head_paths: Iterable[str] = ()
) -> list[float]:
    """The learning-rate multiplier of each parameter (``index.names`` order); the last matching pattern wins."""
    out = [1.0] * len(index.names)
    heads = [h for h in head_paths if h]
    for pattern, mult in lr_multipliers.items():
        ranges = index.match(pattern, heads)
        if ranges is None:
            raise ConfigError(
                f"freeze.lr_multipliers[{pattern!r}]",
                "is not a module pattern TuneDesk understands",
                "use a module path glob like 'encoder.layer.1*' or @head, @embeddings, @norms, @block:N",
            )
        for s, e in ranges:
            out[s:e] = [float(mult)] * (e - s)
    return out


def param_groups(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    lr_multipliers: dict[str, float] | None = None,
    head_paths: Iterable[str] = (),
    head_learning_rate: float | None = None,
) -> list[dict]:
    """Optimizer groups of trainable parameters only, by learning rate and weight decay.

    Biases and normalisation weights get no weight decay. A multiplier scales the parameter's own
    base rate (``head_learning_rate`` for the new head). Each group records its parameter names so a
    resume can check the optimizer matches the plan.
    """
    head_paths = [h for h in head_paths if h]
    index = index_model(model)
    mults = lr_multiplier_for(index, lr_multipliers or {}, head_paths)
    head = [False] * len(index.names)
    _fill(head, index.ranges_of(head_paths), True)
    norm_paths = set(index.norm_paths)
    groups: dict[tuple[float, float], dict] = {}
    for i, (n, p) in enumerate(model.named_parameters()):
        if not p.requires_grad:
            continue
        base = head_learning_rate if head_learning_rate is not None and head[i] else learning_rate
        lr = base * mults[i]
        module_path = n.rsplit(".", 1)[0] if "." in n else ""
        no_decay = p.ndim < 2 or module_path in norm_paths
        wd = 0.0 if no_decay else weight_decay
        group = groups.setdefault((lr, wd), {"params": [], "names": [], "lr": lr, "weight_decay": wd})
        group["params"].append(p)
        group["names"].append(n)
    return list(groups.values())


# ---- words -----------------------------------------------------------------------------------------


def describe(spec: FreezeSpec, plan: ResolvedPlan) -> str:
    """A short human summary, e.g. ``"12% - last 2 blocks + head, embeddings frozen"``."""
    what = {
        "all": "everything",
        "none": "nothing",
        "head_only": "head only",
        "last_n_blocks": f"last {spec.last_n} block{'s' if spec.last_n != 1 else ''} + head",
    }.get(spec.preset, spec.preset)
    extras: list[str] = []
    custom = 0
    for rule in spec.rules:
        token = rule.pattern.strip()
        if token in ("@embeddings", "@norms", "@head"):
            noun = {"@embeddings": "embeddings", "@norms": "norms", "@head": "head"}[token]
            extras.append(f"{noun} {'trained' if rule.train else 'frozen'}")
        else:
            custom += 1
    if custom:
        extras.append(f"{custom} rule{'s' if custom != 1 else ''}")
    text = f"{percent(plan.trainable_params, plan.total_params)} - {what}"
    return text + (", " + ", ".join(extras) if extras else "")


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def normalise_rules(rules: list[FreezeRule]) -> list[FreezeRule]:
    """Drop rules made irrelevant by a later rule over the same or an enclosing module.

    A later rule shadows an earlier one when it has the same pattern, when it names an enclosing
    module path, when it is a whole-model pattern (``*``), or when it is a glob matching the earlier
    rule's module path or one of its parents. The layer tree appends a rule per click; this keeps
    the plan short and readable.
    """
    out: list[FreezeRule] = []
    for i, rule in enumerate(rules):
        pattern = rule.pattern.strip()
        exact = not pattern.startswith("@") and not is_glob(pattern) and pattern not in _WHOLE_MODEL
        ancestors = _ancestors(pattern) if exact else []
        shadowed = False
        for later in rules[i + 1 :]:
            lp = later.pattern.strip()
            if lp == pattern or lp in _WHOLE_MODEL:
                shadowed = True
            elif exact and not lp.startswith("@"):
                match = compile_pattern(lp) if is_glob(lp) else None
                shadowed = pattern.startswith(lp + ".") if match is None else any(match(a) for a in ancestors)
            if shadowed:
                break
        if not shadowed:
            out.append(rule)
    return out


# The training-memory estimate lives in freezing/memory.py; its names stay available from here.
