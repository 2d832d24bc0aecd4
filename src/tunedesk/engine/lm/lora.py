"""LoRA adapters (PEFT) on top of a freeze plan: which layers get one, wrapping, plan, memory.

Semantics (the layer tree, the engine and a re-opened run agree on them):

* The freeze plan (``FreezeSpec`` preset + rules) decides which parameters train fully.
* ``FreezeSpec.lora`` (a ``LoraSpec``) then chooses linear layers for a LoRA adapter: its preset
  (``attention``: the attention projections; ``all_linear``: every linear layer but the output
  layer) and its rules in order (a rule gives or denies an adapter, with its own rank, alpha,
  dropout; last match wins).
* An adapter only goes on a layer whose weight the freeze plan leaves frozen: a layer the plan
  trains keeps training fully. So "last N blocks fully, LoRA elsewhere" is simply
  ``preset=last_n_blocks`` + ``lora.preset=all_linear``.
* Each module of the tree is therefore frozen, trained, or LoRA (``module_choices``), and
  ``set_module_choice`` edits a FreezeSpec to make one module any of the three.

The wrapped model is a ``peft.PeftModelForCausalLM``; its parameter names carry PEFT's prefix
(``base_model.model.``) and ``base_layer`` for adapted layers. ``adapted_plan`` maps the freeze
plan onto those names and adds the adapter parameters, so the run stores their names too.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import re
import warnings
from dataclasses import dataclass
from typing import Any, cast

from torch import Tensor, nn

from tunedesk.engine import freezing
from tunedesk.engine.config import LAST_ATTENTION, FreezeRule, FreezeSpec, LoraRule, LoraSpec
from tunedesk.engine.errors import ConfigError

PEFT_PREFIX = "base_model.model."
ADAPTER_NAME = "default"
ATTENTION_LEAVES = {
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "qkv_proj",
    "c_attn",
    "query",
    "key",
    "value",
    "query_key_value",
    "Wqkv",
    "out_proj",
    "q",
    "k",
    "v",
    "o",
    "dense_qkv",
}
_ATTENTION_SEGMENT = re.compile(r"(attn|attention)", re.IGNORECASE)
CHOICES = ("frozen", "train", "lora")


@dataclass(frozen=True)
class LoraTarget:
    """One adapted layer: its module path in the base model and its adapter's settings."""

    path: str
    rank: int
    alpha: float
    dropout: float

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


# ---- which layers -------------------------------------------------------------------------------


def is_adaptable(module: nn.Module) -> bool:
    """Linear layers PEFT can adapt: ``nn.Linear`` and transformers' GPT-2 style ``Conv1D``."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _in_out(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    w = cast(Tensor, module.weight)  # Conv1D stores (in, out)
    return int(w.shape[0]), int(w.shape[1])


def output_layer_paths(model: nn.Module) -> list[str]:
    """The vocabulary projection (``lm_head``): never adapted, it is (often) tied to the embeddings."""
    out = []
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    for name, module in model.named_modules():
        if (head is not None and module is head) or name.split(".")[-1] in ("lm_head", "embed_out", "output"):
            out.append(name)
    return out


def linear_layers(model: nn.Module) -> list[str]:
    heads = set(output_layer_paths(model))
    return [n for n, m in model.named_modules() if n and is_adaptable(m) and n not in heads]


def attention_layers(model: nn.Module) -> list[str]:
    """Linear layers inside an attention module (``self_attn.q_proj``, ``attn.c_attn``, ...)."""
    out = []
    for path in linear_layers(model):
        parts = path.split(".")
        if parts[-1] in ATTENTION_LEAVES or any(_ATTENTION_SEGMENT.search(p) for p in parts[:-1]):
            out.append(path)
    return out


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r + ".") for r in roots)


def match_layers(
    model: nn.Module, pattern: str, linear: list[str] | None = None, blocks: freezing.Blocks | None = None
) -> list[str]:
    """The adaptable layers a LoRA rule pattern names (raises ConfigError for an unknown token)."""
    linear = linear_layers(model) if linear is None else linear
    pattern = pattern.strip()
    if pattern == "@linear" or pattern in ("*", "**"):
        return list(linear)
    if pattern == "@attention":
        keep = set(attention_layers(model))
        return [p for p in linear if p in keep]
    if pattern.startswith(LAST_ATTENTION):  # "@attention:last:N": the attention of the last N blocks
        try:
            n = int(pattern[len(LAST_ATTENTION) :])
        except ValueError:
            n = -1
        if n < 1:
            raise ConfigError(
                "freeze.lora.rules",
                f"pattern {pattern!r} needs a number of blocks of 1 or more",
                "write it like @attention:last:2",
            )
        blocks = blocks if blocks is not None else freezing.detect_blocks(model)
        roots, keep = blocks.paths[-n:], set(attention_layers(model))
        return [p for p in linear if p in keep and _under(p, roots)]
    if pattern.startswith("@block:"):
        blocks = blocks if blocks is not None else freezing.detect_blocks(model)
        try:
            root = blocks.paths[int(pattern.split(":", 1)[1])]
        except (ValueError, IndexError):
            return []
        return [p for p in linear if _under(p, [root])]
    if pattern.startswith("@"):
        raise ConfigError(
            "freeze.lora.rules",
            f"pattern {pattern!r} is not understood",
            "use a module path glob like 'model.layers.*.self_attn' or @attention, @linear, @block:N, "
            "@attention:last:N",
        )
    out = []
    for p in linear:
        parts = p.split(".")
        if any(fnmatch.fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            out.append(p)
    return out


def resolve_targets(
    model: nn.Module, spec: LoraSpec, plan: freezing.ResolvedPlan | None = None
) -> dict[str, LoraTarget]:
    """Module path -> LoraTarget for every layer that gets an adapter (works on meta models too).

    With a ``plan``, layers whose weight the plan trains fully are left out.
    """
    linear = linear_layers(model)
    blocks = plan.blocks if plan is not None else freezing.detect_blocks(model)
    chosen: dict[str, LoraTarget] = {}
    if spec.preset != "none":
        for path in match_layers(model, "@attention" if spec.preset == "attention" else "@linear", linear, blocks):
            chosen[path] = LoraTarget(path, spec.rank, float(spec.alpha), float(spec.dropout))
    for rule in spec.rules:
        for path in match_layers(model, rule.pattern, linear, blocks):
            if not rule.lora:
                chosen.pop(path, None)
                continue
            chosen[path] = LoraTarget(
                path,
                rule.rank if rule.rank is not None else spec.rank,
                float(rule.alpha if rule.alpha is not None else spec.alpha),
                float(rule.dropout if rule.dropout is not None else spec.dropout),
            )
    if plan is not None:
        chosen = {p: t for p, t in chosen.items() if not plan.trainable.get(f"{p}.weight", False)}
    return dict(sorted(chosen.items(), key=lambda kv: linear.index(kv[0])))


def adapter_params(model: nn.Module, targets: dict[str, LoraTarget]) -> int:
    """Parameters the adapters add: rank * (in + out) per adapted layer."""
    total = 0
    for path, t in targets.items():
        fan_in, fan_out = _in_out(model.get_submodule(path))
        total += t.rank * (fan_in + fan_out)
    return total


# ---- editing a spec (the layer tree) -------------------------------------------------------------


def preset_spec(name: str, *, last_n: int = 2, rank: int = 8, alpha: float = 16.0, dropout: float = 0.05) -> FreezeSpec:
    """The LoRA presets as complete freeze plans.

    ``lora_attention``: everything frozen, adapters on the attention projections.
    ``lora_attention_last_n``: everything frozen, adapters on the attention projections of the last
    ``last_n`` blocks only (tone and style live mostly in the upper layers; fewer adapters, less memory).
    ``lora_all_linear``: everything frozen, adapters on every linear layer.
    ``last_n_full``: the last ``last_n`` blocks (and the final norm) train fully, adapters on every
    other linear layer.
    """
    if name == "lora_attention_last_n":
        return FreezeSpec(
            preset="none",
            lora=LoraSpec(
                preset="none", rank=rank, alpha=alpha, dropout=dropout, rules=[LoraRule(f"{LAST_ATTENTION}{last_n}")]
            ),
        )
    lora = LoraSpec(
        preset="attention" if name == "lora_attention" else "all_linear", rank=rank, alpha=alpha, dropout=dropout
    )
    if name in ("lora_attention", "lora_all_linear"):
        return FreezeSpec(preset="none", lora=lora)
    if name == "last_n_full":
        return FreezeSpec(preset="last_n_blocks", last_n=last_n, lora=lora)
    raise ConfigError(
        "preset",
        f"unknown LoRA preset {name!r}",
        "use lora_attention, lora_attention_last_n, lora_all_linear or last_n_full",
    )


PRESET_LABELS = {
    "lora_attention": "LoRA on attention projections",
    "lora_attention_last_n": "LoRA on the attention of the last N blocks",
    "lora_all_linear": "LoRA on all linear layers",
    "last_n_full": "Last N blocks fully, LoRA elsewhere",
}


def set_module_choice(
    spec: FreezeSpec,
    path: str,
    choice: str,
    *,
    rank: int | None = None,
    alpha: float | None = None,
    dropout: float | None = None,
) -> FreezeSpec:
    """A copy of ``spec`` in which module ``path`` (and everything under it) is frozen, trained or LoRA.

    ``lora`` freezes the module's weights and gives each linear layer under it an adapter (with the
    given rank/alpha/dropout, else the spec's); ``train``/``frozen`` also remove adapters there.
    """
    if choice not in CHOICES:
        raise ConfigError("choice", f"must be one of {', '.join(CHOICES)} (got {choice!r})")
    new = copy.deepcopy(spec)
    new.rules = freezing.normalise_rules(new.rules + [FreezeRule(path, choice == "train")])
    rules = [r for r in new.lora.rules if not (r.pattern == path or r.pattern.startswith(path + "."))]
    rules.append(LoraRule(path, lora=choice == "lora", rank=rank, alpha=alpha, dropout=dropout))
    new.lora.rules = rules
    return new


def module_choices(model: nn.Module, spec: FreezeSpec, head_paths: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """Module path -> "lora" | "train" | "frozen" | "mixed" for every module with parameters."""
    plan = freezing.resolve(model, spec, head_paths)
    targets = resolve_targets(model, spec.lora, plan)
    state: dict[str, set[str]] = {}
    for name in plan.trainable:
        module_path = name.rsplit(".", 1)[0] if "." in name else ""
        kind = "lora" if module_path in targets else ("train" if plan.trainable[name] else "frozen")
        parts = name.split(".")
        for i in range(len(parts)):
            state.setdefault(".".join(parts[:i]), set()).add(kind)
    return {path: (kinds.pop() if len(kinds) == 1 else "mixed") for path, kinds in state.items()}


# ---- wrapping -------------------------------------------------------------------------------------


def peft_config(model: nn.Module, targets: dict[str, LoraTarget], base_path: str | None = None) -> Any:
    """A ``peft.LoraConfig`` naming every adapted layer by its full path; per-layer rank and alpha go
    in ``rank_pattern``/``alpha_pattern`` so the saved adapter reloads exactly."""
    from peft import LoraConfig

    if not targets:
        raise ConfigError(
            "freeze.lora",
            "chooses no layer for an adapter",
            "pick a LoRA preset, or check that the chosen layers are not trained fully by the freeze plan",
        )
    first = next(iter(targets.values()))
    rank_pattern = {re.escape(p): t.rank for p, t in targets.items() if t.rank != first.rank}
    alpha_pattern = {re.escape(p): t.alpha for p, t in targets.items() if t.alpha != first.alpha}
    conv1d = any(type(model.get_submodule(p)).__name__ == "Conv1D" for p in targets)
    return LoraConfig(
        r=first.rank,
        lora_alpha=first.alpha,  # type: ignore[arg-type]  # PEFT annotates int; scaling is alpha / r, floats work
        lora_dropout=first.dropout,
        target_modules=list(targets),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        fan_in_fan_out=conv1d,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_path,
    )


def wrap(model: nn.Module, targets: dict[str, LoraTarget], base_path: str | None = None) -> Any:
    """Inject the adapters: returns the ``PeftModelForCausalLM`` (the base model is changed in place)."""
    from peft import get_peft_model

    cfg = peft_config(model, targets, base_path)
    with quiet_peft():
        peft_model = get_peft_model(model, cfg)
    for path, t in targets.items():  # PEFT has one dropout per config; ours is per layer
        layer = peft_model.base_model.model.get_submodule(path)
        drops = getattr(layer, "lora_dropout", None)
        if drops is not None and ADAPTER_NAME in drops:
            drops[ADAPTER_NAME] = nn.Dropout(t.dropout) if t.dropout > 0 else nn.Identity()
    return peft_model


@contextlib.contextmanager
def quiet_peft():
    """PEFT's notices that TuneDesk handles itself (Conv1D fan_in_fan_out, tied weights, deprecated names)."""
    with warnings.catch_warnings():
        for text in (".*fan_in_fan_out.*", ".*tied.*", ".*is_gradient_checkpointing.*", ".*deprecated.*"):
            warnings.filterwarnings("ignore", message=text)
        yield


def base_name(wrapped_name: str) -> str:
    """``base_model.model.x.y.base_layer.weight`` -> ``x.y.weight`` (adapter names keep their tail)."""
    name = wrapped_name[len(PEFT_PREFIX) :] if wrapped_name.startswith(PEFT_PREFIX) else wrapped_name
    return name.replace(".base_layer.", ".")


def is_adapter_param(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or ".lora_magnitude_vector." in name


def adapter_module_paths(targets: dict[str, LoraTarget]) -> list[str]:
    """The adapters' module paths in the wrapped model (they train at the new-parameter rate)."""
    return [f"{PEFT_PREFIX}{p}.{ab}" for p in targets for ab in ("lora_A", "lora_B")]


def adapted_plan(
    wrapped: nn.Module, plan: freezing.ResolvedPlan, targets: dict[str, LoraTarget]
) -> freezing.ResolvedPlan:
    """The freeze plan over the wrapped model's names: the plan's flags for base parameters, adapters trained."""
    trainable: dict[str, bool] = {}
    sizes: dict[str, int] = {}
    from tunedesk.engine.lm.quant import logical_numel

    for name, p in wrapped.named_parameters():
        trainable[name] = True if is_adapter_param(name) else plan.trainable.get(base_name(name), False)
        sizes[name] = logical_numel(p)  # a 4-bit base packs two weights per byte
    blocks = freezing.Blocks(
        PEFT_PREFIX + plan.blocks.container if plan.blocks.container else plan.blocks.container,
        [PEFT_PREFIX + b for b in plan.blocks.paths],
    )
    return freezing.ResolvedPlan(trainable, sizes, blocks, adapter_module_paths(targets))


def describe(spec: FreezeSpec, plan: freezing.ResolvedPlan, targets: dict[str, LoraTarget]) -> str:
    """``"0.8% - base frozen + LoRA r=8 on 12 layers"``."""
    text = freezing.describe(spec, plan)
    if not targets:
        return text
    ranks = sorted({t.rank for t in targets.values()})
    r = f"r={ranks[0]}" if len(ranks) == 1 else f"r={ranks[0]}-{ranks[-1]}"
    if text.endswith(" - nothing"):  # no layer trains fully: the adapters are all that learns
        text = text.removesuffix(" - nothing") + " - base frozen"
    return f"{text} + LoRA {r} on {len(targets)} layer{'s' if len(targets) != 1 else ''}"


# ---- memory ---------------------------------------------------------------------------------------


def estimate_memory(
    model: nn.Module,
    spec: FreezeSpec,
    *,
    batch_size: int,
    precision: str = "fp32",
    sequence_length: int = 512,
    cuda: bool = False,
    gradient_checkpointing: bool = False,
    head_paths: list[str] | tuple[str, ...] = (),
    config: Any = None,
    fused_loss: bool | None = None,
) -> freezing.MemoryEstimate:
    """Training memory of a causal LM with this freeze plan and its LoRA adapters (meta models work).

    Builds on ``freezing.estimate_memory`` for the base model: the adapters add their parameters
    (fp32 weight, its half-precision autocast copy, gradient and AdamW moments), make autograd keep
    activations from the first adapted block on (as if that layer trained), and keep each adapted
    layer's dropped-out input and rank-sized hidden state. Gradient checkpointing keeps only each
    block's input plus one block's activations (the output logits are unchanged).

    ``spec.lora.base_bits`` (QLoRA): the frozen linear layers count their quantised bytes and
    quantisation constants (``quant.quantised_bytes``), and the working memory one layer's weight
    dequantised for its matmul. ``fused_loss`` (None: what ``hparams.fused_loss = "auto"`` picks on this
    device): the chunked loss holds one chunk's logits instead of the whole batch's.
    """
    from tunedesk.engine.lm import kernels, quant

    if precision == "auto":
        precision = "bf16" if cuda else "fp32"
    mixed = precision in ("bf16", "fp16")
    act = 2 if mixed else 4
    kw = dict(batch_size=batch_size, precision=precision, sequence_length=sequence_length, cuda=cuda, config=config)
    base = freezing.resolve(model, spec, head_paths)
    targets = resolve_targets(model, spec.lora, base)
    est = freezing.estimate_memory(model, base, **kw)
    # activations: adapted layers need their inputs' gradients like trained ones
    flags = dict(base.trainable)
    for path in targets:
        if f"{path}.weight" in flags:
            flags[f"{path}.weight"] = True
    activations = (
        est.activations
        if not targets
        else freezing.estimate_memory(
            model, freezing.ResolvedPlan(flags, dict(base.param_sizes), base.blocks, base.head_paths), **kw
        ).activations
    )
    cfg = config if config is not None else getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    hidden = _cfg_int(cfg, "hidden_size", "n_embd", "d_model")
    layers = max(len(base.blocks), 1)
    tokens = batch_size * sequence_length
    for path, t in targets.items():  # each adapter keeps its rank-sized hidden state, and its dropout mask
        fan_in, _ = _in_out(model.get_submodule(path))  # (about 1 byte per input entry, measured on an H200)
        activations += tokens * ((fan_in if t.dropout > 0 else 0) + t.rank * act)
    if gradient_checkpointing and activations and hidden:  # adapters live in the blocks: recomputed too
        names = list(base.trainable)
        only_last = freezing.ResolvedPlan({n: n == names[-1] for n in names}, dict(base.param_sizes), base.blocks, [])
        outside = min(freezing.estimate_memory(model, only_last, **kw).activations, activations)  # logits, head
        in_blocks = activations - outside
        activations = outside + int(min(in_blocks, in_blocks / layers + tokens * hidden * act * layers))
    vocab = _cfg_int(cfg, "vocab_size")
    if fused_loss is None:
        fused_loss = kernels.use_fused_loss("auto", "cuda" if cuda else "cpu")
    logits = batch_size * sequence_length * vocab * (act + 10)
    if fused_loss and vocab and hidden and activations >= logits:  # one chunk of logits instead of all
        activations += kernels.chunked_loss_bytes(batch_size * sequence_length, vocab, hidden, act) - logits
    # what the causal_lm task holds: what trains in fp32 (+ autocast's half copy), frozen weights in
    # half precision on a GPU with bf16/fp16, else fp32
    trainable = base.trainable_params + adapter_params(model, targets)
    frozen = base.total_params - base.trainable_params
    half = 2 if mixed and cuda else 4
    working = 0
    bits = spec.lora.base_bits
    if bits is not None:  # the frozen linear layers (not the output layer) held by bitsandbytes
        shapes = quantised_shapes(model, base)
        quantised = sum(a * b for a, b in shapes)
        frozen -= quantised
        half = 2 if mixed else 4  # a quantised base runs on a GPU: the rest loads in the compute dtype
        working = quant.dequant_working_bytes(shapes, act)
        weights = trainable * (4 + (2 if mixed else 0)) + frozen * half + quant.quantised_bytes(shapes, bits)
    else:
        weights = trainable * (4 + (2 if mixed else 0)) + frozen * half
    return freezing.MemoryEstimate(weights, trainable * 4, trainable * 8, activations, est.overhead, working)


def quantised_shapes(model: nn.Module, plan: freezing.ResolvedPlan) -> list[tuple[int, int]]:
    """(in, out) of each linear layer a quantised base holds in 4/8 bits: every linear layer the plan
    leaves frozen, except the output layer (as ``CausalLM`` loads it)."""
    return [
        _in_out(model.get_submodule(p)) for p in linear_layers(model) if not plan.trainable.get(f"{p}.weight", False)
    ]


def _cfg_int(cfg: Any, *names: str) -> int:
    for name in names:
        value = getattr(cfg, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0
