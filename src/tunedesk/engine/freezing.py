"""Freeze plans: rules over module paths -> ``requires_grad`` flags, presets, block detection.

A plan (``config.FreezeSpec``) is model-independent: a preset plus ordered rules whose patterns are
globs over dotted module paths or tokens (``@head``, ``@embeddings``, ``@norms``, ``@block:N``). It is
resolved against a concrete model (real or on the meta device) into one flag per parameter, so the
layer tree, the engine and a re-opened run always agree.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from tunedesk.engine.config import FreezeRule, FreezeSpec
from tunedesk.engine.errors import ConfigError

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_NORM_NAME = re.compile(r"(norm|ln_?\d*|layernorm)$", re.IGNORECASE)


@dataclass
class Blocks:
    """The model's repeated blocks, in order (e.g. ``bert.encoder.layer.0`` ... ``.5``)."""

    container: str  # e.g. "bert.encoder.layer" or "" for sibling stages (layer1..layer4)
    paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class ResolvedPlan:
    trainable: dict[str, bool]  # parameter name -> trains
    param_sizes: dict[str, int]
    blocks: Blocks
    head_paths: list[str]

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


# ---- structure ---------------------------------------------------------------------------------


def detect_blocks(model: nn.Module) -> Blocks:
    """Find the repeated blocks that hold most of the model's parameters.

    Candidates are list-like containers (``ModuleList``/``Sequential``) of at least two children of
    one type (``encoder.layer.*``, ``layers.*``, ``h.*``, ``blocks.*``), parameterised children of a
    ``features`` Sequential, and numbered sibling stages (``layer1..layer4``). The one with the most
    parameters wins.
    """
    sizes = _module_param_sizes(model)
    best: tuple[int, Blocks] | None = None

    def consider(container: str, paths: list[str]) -> None:
        nonlocal best
        if len(paths) < 2:
            return
        total = sum(sizes.get(p, 0) for p in paths)
        if total and (best is None or total > best[0]):
            best = (total, Blocks(container, paths))

    for name, module in model.named_modules():
        children = list(module.named_children())
        if not children:
            continue
        prefix = f"{name}." if name else ""
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            with_params = [(n, c) for n, c in children if sizes.get(prefix + n, 0) > 0]
            types = {type(c).__name__ for _, c in with_params}
            if len(with_params) >= 2 and (len(types) == 1 or name.split(".")[-1] in ("features", "blocks", "layers")):
                consider(name, [prefix + n for n, _ in with_params])
        # numbered sibling stages: layer1, layer2, ... (ResNet), stage1.. , block1..
        groups: dict[str, list[tuple[int, str]]] = {}
        for child_name, _ in children:
            m = re.fullmatch(r"([A-Za-z_]+?)_?(\d+)", child_name)
            if m:
                groups.setdefault(m.group(1), []).append((int(m.group(2)), prefix + child_name))
        for stem, items in groups.items():
            if len(items) >= 2 and stem not in ("conv", "bn", "fc", "relu", "ln", "norm", "dropout"):
                consider(name, [p for _, p in sorted(items)])
    return best[1] if best else Blocks("", [])


def find_embedding_paths(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and (isinstance(m, nn.Embedding) or n.split(".")[-1] in ("embeddings", "wte", "wpe", "embed_tokens", "patch_embed", "conv_proj"))]


def find_norm_paths(model: nn.Module) -> list[str]:
    out = []
    for n, m in model.named_modules():
        if not n:
            continue
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d) + _BN_TYPES) \
                or "RMSNorm" in type(m).__name__ or (_NORM_NAME.search(n.split(".")[-1]) and not list(m.children())):
            out.append(n)
    return out


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


def _ancestors(param_name: str) -> list[str]:
    parts = param_name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _under(name: str, paths: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in paths)


def resolve(model: nn.Module, spec: FreezeSpec, head_paths: Iterable[str] = ()) -> ResolvedPlan:
    """Resolve a plan against a model: one trains/frozen flag per parameter, last matching rule wins."""
    head_paths = [h for h in head_paths if h]
    params = list(model.named_parameters())
    if not params:
        raise ConfigError("model", "has no parameters to train")
    sizes = {n: p.numel() for n, p in params}
    blocks = detect_blocks(model)
    names = [n for n, _ in params]

    if spec.preset == "all":
        flags = dict.fromkeys(names, True)
    elif spec.preset in ("none", "head_only"):
        flags = dict.fromkeys(names, False)
    elif spec.preset == "last_n_blocks":
        flags = dict.fromkeys(names, False)
        if spec.last_n > 0:
            if not blocks.paths:
                raise ConfigError("freeze.preset", "last_n_blocks needs repeated blocks, and none were found in this model",
                                  "use rules with module names instead, or the head_only preset")
            chosen = blocks.paths[-spec.last_n:]
            last_block = blocks.paths[-1]
            after_last = False
            for n in names:
                if _under(n, [last_block]):
                    after_last = True  # everything registered after the final block (pooler, final norm) trains too
                    flags[n] = True
                elif _under(n, chosen) or (after_last and not _under(n, blocks.paths)):
                    flags[n] = True
    else:
        raise ConfigError("freeze.preset", f"unknown preset {spec.preset!r}")

    if spec.preset != "none":
        for n in names:
            if _under(n, head_paths):
                flags[n] = True

    for i, rule in enumerate(spec.rules):
        matched = _match_rule(model, rule, names, blocks, head_paths)
        if matched is None:
            raise ConfigError(f"freeze.rules[{i}]", f"pattern {rule.pattern!r} is not understood",
                              "use a module path glob like 'encoder.layer.1*' or @head, @embeddings, @norms, @block:N")
        for n in matched:
            flags[n] = rule.train
    return ResolvedPlan(flags, sizes, blocks, head_paths)


def _match_rule(model: nn.Module, rule: FreezeRule, names: list[str], blocks: Blocks, head_paths: list[str]) -> list[str] | None:
    pattern = rule.pattern.strip()
    if pattern == "@head":
        return [n for n in names if _under(n, head_paths)]
    if pattern == "@embeddings":
        paths = find_embedding_paths(model)
        return [n for n in names if _under(n, paths)]
    if pattern == "@norms":
        paths = find_norm_paths(model)
        return [n for n in names if _under(n, paths)]
    if pattern.startswith("@block:"):
        try:
            index = int(pattern.split(":", 1)[1])
            path = blocks.paths[index]
        except (ValueError, IndexError):
            return []
        return [n for n in names if _under(n, [path])]
    if pattern.startswith("@"):
        return None
    if pattern in ("", "*", "**"):
        return list(names)
    out = []
    for n in names:
        if any(fnmatch.fnmatchcase(a, pattern) for a in _ancestors(n)):
            out.append(n)
    return out


def apply(model: nn.Module, plan: ResolvedPlan) -> None:
    """Set ``requires_grad`` exactly as the plan says."""
    for n, p in model.named_parameters():
        p.requires_grad_(plan.trainable.get(n, False))


def set_train_mode(model: nn.Module, train_batchnorm_stats: bool = False) -> None:
    """``model.train()`` but frozen BatchNorm layers keep their running statistics (eval mode).

    Call instead of ``model.train()``: plain ``train()`` silently puts frozen BatchNorm back into
    training mode, which updates statistics the user asked to keep.
    """
    model.train()
    if train_batchnorm_stats:
        return
    for m in model.modules():
        if isinstance(m, _BN_TYPES):
            params = list(m.parameters(recurse=False))
            if not params or not any(p.requires_grad for p in params):
                m.eval()


def param_groups(model: nn.Module, learning_rate: float, weight_decay: float,
                 lr_multipliers: dict[str, float] | None = None, head_paths: Iterable[str] = (),
                 head_learning_rate: float | None = None) -> list[dict]:
    """Optimizer groups of trainable parameters only, by learning rate and weight decay.

    Biases and normalisation weights get no weight decay. Each group records its parameter names
    so a resume can check the optimizer matches the plan.
    """
    lr_multipliers = lr_multipliers or {}
    head_paths = list(head_paths)
    norm_paths = set(find_norm_paths(model))
    groups: dict[tuple[float, float], dict] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr = learning_rate
        if head_learning_rate is not None and _under(n, head_paths):
            lr = head_learning_rate
        for pattern, mult in lr_multipliers.items():
            if any(fnmatch.fnmatchcase(a, pattern) for a in _ancestors(n)):
                lr = learning_rate * mult
        module_path = n.rsplit(".", 1)[0]
        no_decay = p.ndim < 2 or module_path in norm_paths
        wd = 0.0 if no_decay else weight_decay
        group = groups.setdefault((lr, wd), {"params": [], "names": [], "lr": lr, "weight_decay": wd})
        group["params"].append(p)
        group["names"].append(n)
    return list(groups.values())


def describe(spec: FreezeSpec, plan: ResolvedPlan) -> str:
    """A short human summary, e.g. ``"12% - last 2 blocks + head"``."""
    pct = f"{100 * plan.share:.0f}%" if plan.share >= 0.01 or plan.share == 0 else f"{100 * plan.share:.2f}%"
    what = {
        "all": "everything",
        "none": "nothing",
        "head_only": "head only",
        "last_n_blocks": f"last {spec.last_n} block{'s' if spec.last_n != 1 else ''} + head",
    }[spec.preset]
    if spec.rules:
        what += f" + {len(spec.rules)} rule{'s' if len(spec.rules) != 1 else ''}"
    return f"{pct} - {what}"


def normalise_rules(rules: list[FreezeRule]) -> list[FreezeRule]:
    """Drop rules made irrelevant by a later rule over the same or an enclosing module path.

    The layer tree appends a rule per click; this keeps the plan short and readable.
    """
    out: list[FreezeRule] = []
    for i, rule in enumerate(rules):
        later = rules[i + 1:]
        shadowed = any(
            not r.pattern.startswith("@") and not rule.pattern.startswith("@")
            and not any(c in r.pattern for c in "*?[")
            and (rule.pattern == r.pattern or rule.pattern.startswith(r.pattern + "."))
            for r in later
        )
        if not shadowed:
            out.append(rule)
    return out


# ---- memory estimate ----------------------------------------------------------------------------

_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    def fits(self, available: int | None) -> bool | None:
        return None if not available else self.total <= available

    def to_dict(self) -> dict[str, int]:
        return {"weights": self.weights, "gradients": self.gradients, "optimizer": self.optimizer,
                "activations": self.activations, "overhead": self.overhead, "total": self.total}


def estimate_memory(model: nn.Module, plan: ResolvedPlan, *, batch_size: int, precision: str = "fp32",
                    sequence_length: int = 128, image_size: int = 224, cuda: bool = False,
                    config: object | None = None) -> MemoryEstimate:
    """Training memory: weights + gradients + AdamW state + activations (+ CUDA context on a GPU).

    Mixed precision keeps fp32 master weights: ~18 bytes per trainable parameter with AdamW, the
    weights' bytes per frozen one. Activations are counted only from the first trainable block on,
    because autograd never enters a frozen prefix.
    """
    if precision == "auto":
        precision = "bf16" if cuda else "fp32"
    total, trainable = plan.total_params, plan.trainable_params
    frozen = total - trainable
    mixed = precision in ("bf16", "fp16")
    weights = trainable * 4 + frozen * (2 if mixed else 4)
    if mixed:
        weights += trainable * 2  # half-precision copy used by autocast
    gradients = trainable * 4
    optimizer = trainable * 8
    act_bytes = 2 if mixed else 4
    activations = _activation_bytes(model, plan, batch_size, sequence_length, image_size, act_bytes, config)
    overhead = (1 << 30) if cuda else 0
    return MemoryEstimate(weights, gradients, optimizer, activations, overhead)


def _backprop_fraction(model: nn.Module, plan: ResolvedPlan) -> float:
    """Share of the blocks that autograd must store activations for (from the first trainable one)."""
    blocks = plan.blocks.paths
    if not blocks:
        return 1.0 if plan.trainable_params else 0.0
    names = list(plan.trainable)
    for i, path in enumerate(blocks):
        if any(plan.trainable[n] for n in names if _under(n, [path])):
            return (len(blocks) - i) / len(blocks)
    # only parameters outside the blocks train: before the blocks (embeddings) means all of them
    first_block_param = next((j for j, n in enumerate(names) if _under(n, blocks)), len(names))
    if any(plan.trainable[n] for n in names[:first_block_param]):
        return 1.0
    return 0.05 if plan.trainable_params else 0.0  # head only: a sliver


def _activation_bytes(model: nn.Module, plan: ResolvedPlan, batch: int, seq: int, image: int,
                      act_bytes: int, config: object | None) -> int:
    frac = _backprop_fraction(model, plan)
    cfg = config if config is not None else getattr(model, "config", None)
    hidden = getattr(cfg, "hidden_size", None) if cfg is not None else None
    layers = getattr(cfg, "num_hidden_layers", None) if cfg is not None else None
    heads = getattr(cfg, "num_attention_heads", None) if cfg is not None else None
    if hidden and layers and heads and getattr(cfg, "model_type", "") not in ("vit", "deit", "beit", "swin", "convnext"):
        # Korthikanti et al. (2022): s*b*h*(34 + 5*a*s/h) bytes per layer in 16-bit.
        per_layer = seq * batch * hidden * (34 + 5 * heads * seq / hidden) * act_bytes / 2
        return int(per_layer * layers * frac)
    if hidden and layers and heads:  # vision transformers: patches are the sequence
        patch = getattr(cfg, "patch_size", 16) or 16
        tokens = (image // patch) ** 2 + 1
        per_layer = tokens * batch * hidden * (34 + 5 * heads * tokens / hidden) * act_bytes / 2
        return int(per_layer * layers * frac)
    return int(_meta_forward_activations(model, batch, image, act_bytes) * frac)


def _meta_forward_activations(model: nn.Module, batch: int, image: int, act_bytes: int) -> int:
    """Sum of leaf-module outputs for one image batch, measured on the meta device (no memory)."""
    total = 0

    def hook(_m, _inp, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()

    try:
        meta = model if next(model.parameters()).is_meta else None
    except StopIteration:
        return 0
    if meta is None:
        return 0  # real weights: do not run a forward just for an estimate
    handles = [m.register_forward_hook(hook) for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            meta(torch.empty(batch, 3, image, image, device="meta"))
    except Exception:  # noqa: BLE001 - an estimate; unknown shapes give 0
        total = 0
    finally:
        for h in handles:
            h.remove()
    return total * act_bytes
