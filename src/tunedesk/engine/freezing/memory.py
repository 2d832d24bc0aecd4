"""Training memory of a freeze plan: weights, optimizer state, gradients or activations, working memory.

The layer tree recomputes this on every click, so it is pure arithmetic over the ``ModelIndex``; only
a convolutional model on the meta device is traced once (per image size) to measure its layer outputs.
Checked against torch's peak allocation on an H200 (``benchmarks/layer_tree.py --calibrate``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from tunedesk.engine.freezing.plan import ModelIndex, ResolvedPlan, index_model

_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
CUDA_CONTEXT = 1 << 30


@dataclass
class MemoryEstimate:
    """Bytes at the peak of a training step.

    Backward frees each layer's stored activations as it writes that layer's gradients, so the two
    never peak together: the larger one counts (``peak_of_both``). ``working`` is what one layer
    needs while it runs (frozen layers too). Checked against torch's peak allocation on an H200
    (benchmarks/layer_tree.py --calibrate): within about 10% for BERT and Llama-style models.
    """

    weights: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int
    working: int = 0

    @property
    def peak_of_both(self) -> int:
        return max(self.gradients, self.activations)

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.peak_of_both + self.working + self.overhead

    def fits(self, available: int | None) -> bool | None:
        return None if not available else self.total <= available

    def to_dict(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "working": self.working,
            "overhead": self.overhead,
            "total": self.total,
        }


def estimate_memory(
    model: nn.Module,
    plan: ResolvedPlan,
    *,
    batch_size: int,
    precision: str = "fp32",
    sequence_length: int = 128,
    image_size: int = 224,
    cuda: bool = False,
    config: object | None = None,
) -> MemoryEstimate:
    """Training memory at the step's peak: weights, AdamW state, gradients or stored activations
    (whichever is larger), one layer's working memory, and the CUDA context on a GPU.

    Parameters are counted in the dtype the model holds them in (the checkpoint's dtype, as
    transformers loads it). A trainable fp32 parameter under mixed precision costs 18 bytes (weight
    4, gradient 4, AdamW moments 8, the half-precision copy autocast keeps 2); in fp32, 16; a frozen
    one only its weight (4, or 2 for a bf16/fp16 checkpoint). Activations are counted only from the
    first trainable layer on, because autograd keeps nothing for a frozen prefix.
    """
    if precision == "auto":
        from tunedesk.engine.devices import auto_precision

        precision = "bf16" if cuda else auto_precision("cpu")  # on a GPU bf16 and fp16 cost the same
    mixed = precision in ("bf16", "fp16")
    index = plan.index if plan.index is not None and plan.index.model_ref() is model else index_model(model)
    flags = (
        plan.flags
        if plan.flags and len(plan.flags) == len(index.names)
        else [plan.trainable.get(n, False) for n in index.names]
    )
    weights = gradients = optimizer = 0
    for size, nbytes, trains in zip(index.sizes, index.elem_bytes, flags):
        weights += size * nbytes
        if trains:
            gradients += size * nbytes
            optimizer += 2 * size * nbytes
            if mixed and nbytes > 2:
                weights += size * 2  # autocast caches a half-precision copy of trainable weights
    act_bytes = 2 if mixed else 4
    activations, working = _activation_bytes(
        model, index, flags, batch_size, sequence_length, image_size, act_bytes, config
    )
    overhead = CUDA_CONTEXT if cuda else 0
    return MemoryEstimate(weights, gradients, optimizer, activations, overhead, working)


def _first_trainable_block(index: ModelIndex, flags: list[bool]) -> float:
    """Share of the repeated blocks autograd stores activations for (from the first trainable one on)."""
    blocks = index.blocks.paths
    if not any(flags):
        return 0.0
    if not blocks:
        return 1.0
    ranges = [index.spans.get(p, []) for p in blocks]
    for i, rs in enumerate(ranges):
        if any(any(flags[s:e]) for s, e in rs):
            first = min((s for s, _ in rs), default=0)
            return 1.0 if any(flags[:first]) else (len(blocks) - i) / len(blocks)
    first = min((s for rs in ranges for s, _ in rs), default=len(flags))
    return 1.0 if any(flags[:first]) else 0.0  # embeddings train: the whole stack; head only: none


def _cfg(cfg: object, *names: str) -> int | None:
    for name in names:
        value = getattr(cfg, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _activation_bytes(
    model: nn.Module,
    index: ModelIndex,
    flags: list[bool],
    batch: int,
    seq: int,
    image: int,
    act_bytes: int,
    config: object | None,
) -> tuple[int, int]:
    """(activations kept for backward, working memory of the largest layer while it runs)."""
    if not any(flags):
        return 0, 0
    cfg = config if config is not None else getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg  # multimodal configs keep the sizes there
    hidden = _cfg(cfg, "hidden_size", "n_embd", "d_model", "dim") if cfg is not None else None
    layers = _cfg(cfg, "num_hidden_layers", "n_layer", "num_layers") if cfg is not None else None
    heads = _cfg(cfg, "num_attention_heads", "n_head", "num_heads") if cfg is not None else None
    if not (hidden and layers and heads):
        return _measured_activations(model, index, flags, batch, image, act_bytes)
    tokens = seq
    if (
        getattr(cfg, "model_type", "") in ("vit", "deit", "beit", "swin", "convnext", "dinov2", "siglip_vision_model")
        or _cfg(cfg, "patch_size")
        and not _cfg(cfg, "vocab_size")
    ):
        patch = _cfg(cfg, "patch_size") or 16
        tokens = (image // patch) ** 2 + 1  # vision transformers: patches are the sequence
    inter = _cfg(cfg, "intermediate_size", "n_inner", "ffn_dim", "d_ff") or 4 * hidden
    kv = hidden * (_cfg(cfg, "num_key_value_heads") or heads) // heads
    gated = any(p.endswith(("gate_proj", "gate_up_proj", ".w3")) for p in index.spans)
    # Kept for backward, per token and layer (Korthikanti et al. 2022, generalised): norm inputs,
    # q/k/v and their input, attention output and o_proj input, the MLP's input and hidden states.
    per_token = 6 * hidden + 2 * kv + (4 if gated else 2) * inter
    per_layer = batch * tokens * per_token * act_bytes
    per_layer += batch * tokens * hidden * 2  # dropout masks / residual copies kept by autograd
    if any("RMSNorm" in type(m).__name__ for m in model.modules()):
        # Llama-style RMS norms compute in fp32 and keep their fp32 input and output for backward:
        # about 10 bytes per hidden unit and token per layer more (measured on an H200, 2026-11-28)
        per_layer += batch * tokens * hidden * 10
    if getattr(cfg, "_attn_implementation", None) == "eager":
        per_layer += 5 * heads * tokens * tokens * batch * act_bytes // 2  # scores, softmax, dropout
    total = int(per_layer * layers * _first_trainable_block(index, flags))
    vocab = _cfg(cfg, "vocab_size")
    if (
        vocab
        and any(p == "lm_head" or p.endswith(".lm_head") for p in index.spans)
        or vocab
        and type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))
    ):
        # logits, their fp32 copy, the loss's log-softmax and its gradient at the start of backward
        # (2.95 GiB measured for 8 x 1024 tokens x 32k vocabulary in bf16 on an H200: act_bytes + 10 per entry)
        total += batch * tokens * vocab * (act_bytes + 10)
    return total, int(per_layer)


_measured: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def _measured_activations(
    model: nn.Module, index: ModelIndex, flags: list[bool], batch: int, image: int, act_bytes: int
) -> tuple[int, int]:
    """Leaf-module outputs from the first trainable layer on, for one image batch on the meta device.

    Only a model on the meta device is measured (no memory, no compute). The trace is taken once per
    model and image size for one image and scaled by the batch, so the layer tree's live summary
    does not re-run the forward on every click.
    """
    cache = _measured.setdefault(model, {})
    trace = cache.get(image)
    if trace is None:
        trace = _trace_leaf_outputs(model, image)
        cache[image] = trace
    working = 2 * max((numel for _, numel in trace), default=0) * act_bytes * batch  # a layer's input and output
    for pos, (path, _numel) in enumerate(trace):
        if any(any(flags[s:e]) for s, e in index.spans.get(path, ())):
            return sum(numel for _, numel in trace[pos:]) * act_bytes * batch, working
    return 0, working


def _trace_leaf_outputs(model: nn.Module, image: int) -> list[tuple[str, int]]:
    try:
        first = next(model.parameters())
    except StopIteration:
        return []
    if not first.is_meta:
        return []  # real weights: do not run a forward just for an estimate
    trace: list[tuple[str, int]] = []
    handles = []
    for name, module in model.named_modules():
        # in-place layers (ReLU(inplace=True)) write into their input: no new memory
        if not any(True for _ in module.children()) and not getattr(module, "inplace", False):

            def hook(_m, _inp, out, name=name):
                if isinstance(out, torch.Tensor):
                    trace.append((name, out.numel()))

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()  # one image: BatchNorm in training mode would refuse a 1x1 batch
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, image, image, device="meta"))
    except Exception:  # noqa: BLE001 - an estimate; unknown shapes give 0
        trace = []
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return trace
