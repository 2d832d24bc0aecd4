"""Faster, leaner causal-LM steps: a chunked cross-entropy over the vocabulary, liger-kernel's fused
RMSNorm / SwiGLU / RoPE, and the attention implementation.

* **Chunked loss** (``hparams.fused_loss``): the decoder's hidden states go through the output layer a
  few hundred tokens at a time, each chunk's logits recomputed in backward (activation checkpointing
  of the chunk), so the batch x sequence x vocabulary logits (and their fp32 copy and gradient) never
  exist whole. Pure PyTorch, any device; with liger-kernel on a GPU its fused linear cross-entropy
  (Triton) does the same in one kernel. In evaluation the chunks also count correct next tokens.
* **Fused kernels** (``hparams.fused_kernels``): liger-kernel (Apache-2.0, optional extra
  ``tunedesk[kernels]``) swaps in Triton RMSNorm, SwiGLU and RoPE for the families it knows.
  Note: liger patches RoPE at module level, so it applies to every model of that family loaded later
  in the same process.
* **Attention** (``hparams.attention``): passed to transformers as ``attn_implementation``; ``auto``
  keeps transformers' default (SDPA where the model supports it).

``"auto"`` switches a feature on only where the GPU measurement (``benchmarks/qlora.py``) showed it
faster with the same loss curve: the ``AUTO_ON_CUDA`` constants below are that decision.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tunedesk.engine.errors import ConfigError

IGNORE_INDEX = -100
# What "auto" means on a CUDA GPU (on the CPU and MPS, "auto" is always off). Set from the side-by-side
# GPU measurement of benchmarks/qlora.py (H100, 2026-12-07, 8B-shaped Llama, QLoRA r16 on attention + MLP,
# seq 2048, checkpointing): both on together ran 4,147 tokens/s against 3,667 (+13%), peak 6.89 GiB against
# 9.31, and the loss curve within 0.002 of the unfused run over 60 steps. Measured together, so both on.
AUTO_ON_CUDA = {"fused_loss": True, "fused_kernels": True}
CHUNK_ENTRIES = 1 << 25  # logits per chunk (about 32M: 256 tokens of a 128k vocabulary)
# config settings with which a model scales or caps its logits (or hidden state) in its own forward:
# Gemma 2/3 soft-capping, Cohere, Granite, Falcon-H1, MiniCPM (muP). The chunked loss leaves those alone.
LOGIT_SCALES = (
    "final_logit_softcapping",
    "logit_scale",
    "logits_scaling",
    "output_multiplier_scale",
    "lm_head_multiplier",
    "dim_model_base",
    "mup_width_multiplier",
)


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def _decide(name: str, setting: str, device_type: str) -> bool:
    if setting == "on":
        return True
    if setting == "off":
        return False
    return device_type == "cuda" and AUTO_ON_CUDA[name]


def use_fused_loss(setting: str, device_type: str) -> bool:
    """Whether training uses the chunked loss (evaluation uses it whenever the model allows)."""
    return _decide("fused_loss", setting, device_type)


def use_fused_kernels(setting: str, device_type: str) -> bool:
    """Whether liger-kernel is applied; ``on`` without liger or without a GPU is refused with the fix."""
    if setting == "on":
        if device_type != "cuda":
            raise ConfigError(
                "hparams.fused_kernels",
                f"fused kernels (liger-kernel, Triton) need a CUDA GPU (the run's device is {device_type})",
                "set fused_kernels to auto or off",
            )
        if not liger_installed():
            raise ConfigError(
                "hparams.fused_kernels",
                "fused kernels need the liger-kernel package, which is not installed",
                "install it with `pip install liger-kernel` (or `pip install tunedesk[kernels]`), or set "
                "fused_kernels to auto or off",
            )
        return True
    return _decide("fused_kernels", setting, device_type) and liger_installed()


def attn_implementation(setting: str) -> str | None:
    """transformers' ``attn_implementation`` for a run (None: transformers' own default)."""
    return None if setting == "auto" else setting


def apply_liger(model: nn.Module) -> bool:
    """Fused RMSNorm, SwiGLU and RoPE on a loaded model (before LoRA wraps it); False when liger-kernel
    does not know the model's family. The loss is TuneDesk's own (``causal_lm_loss``)."""
    from liger_kernel.transformers.monkey_patch import (
        MODEL_TYPE_TO_APPLY_LIGER_FN,
        _apply_liger_kernel_to_instance,
    )

    if getattr(model.config, "model_type", None) not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return False
    _apply_liger_kernel_to_instance(
        model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
    )
    return True


# ---- the chunked loss ---------------------------------------------------------------------------------


def causal_model(model: nn.Module) -> Any:
    """The ``*ForCausalLM`` under a PEFT wrapper (or the model itself): a transformers model, whose
    ``get_decoder`` / ``get_output_embeddings`` / ``config`` are looked up dynamically."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def supports_chunked_loss(model: nn.Module) -> bool:
    """The output layer is a plain linear map of the decoder's last hidden state: no logit soft-capping
    or scaling (Gemma 2, Cohere) that the model applies in its own forward."""
    causal = causal_model(model)
    cfg = getattr(causal, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    if any(getattr(cfg, name, None) not in (None, 0, 1, 0.0, 1.0) for name in LOGIT_SCALES):
        return False
    head = causal.get_output_embeddings() if hasattr(causal, "get_output_embeddings") else None
    get_decoder = getattr(causal, "get_decoder", None)
    return type(head) is nn.Linear and callable(get_decoder) and get_decoder() is not None


def chunk_size(vocab: int) -> int:
    return max(64, CHUNK_ENTRIES // max(vocab, 1))


def _chunk_loss(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor
) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_cross_entropy(
    hidden: torch.Tensor,
    head: nn.Linear,
    labels: torch.Tensor,
    *,
    chunk: int | None = None,
    count_correct: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean next-token loss over the labelled positions, and (``count_correct``) how many positions'
    argmax is the label. ``hidden``: (batch, seq, hidden); ``labels``: (batch, seq), not yet shifted."""
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1)
    step = chunk or chunk_size(head.out_features)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    correct = torch.zeros((), dtype=torch.long, device=hidden.device) if count_correct else None
    grad = torch.is_grad_enabled() and (h.requires_grad or head.weight.requires_grad)
    for start in range(0, h.shape[0], step):
        hs, ys = h[start : start + step], y[start : start + step]
        if grad:  # the chunk's logits are recomputed in backward instead of kept
            total = total + checkpoint(_chunk_loss, hs, head.weight, head.bias, ys, use_reentrant=False)
        else:
            logits = F.linear(hs, head.weight, head.bias)
            total = total + F.cross_entropy(logits.float(), ys, ignore_index=IGNORE_INDEX, reduction="sum")
            if correct is not None:
                correct += ((logits.argmax(-1) == ys) & (ys != IGNORE_INDEX)).sum()
    count = (y != IGNORE_INDEX).sum().clamp(min=1)
    return total / count, correct


def liger_cross_entropy(hidden: torch.Tensor, head: nn.Linear, labels: torch.Tensor) -> torch.Tensor:
    """liger-kernel's fused linear cross-entropy (Triton): the same mean loss in one fused pass."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1)
    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX)(head.weight, h, y, head.bias)


def causal_lm_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], *, liger: bool = False, count_correct: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mean loss, correct next tokens or None) of a batch without materialising its logits."""
    causal = causal_model(model)
    decoder, head = causal.get_decoder(), causal.get_output_embeddings()
    kwargs: dict[str, Any] = {"input_ids": batch["input_ids"], "use_cache": False}
    if batch.get("attention_mask") is not None:
        kwargs["attention_mask"] = batch["attention_mask"]
    if batch.get("position_ids") is not None:
        kwargs["position_ids"] = batch["position_ids"]
    hidden = decoder(**kwargs).last_hidden_state
    if liger and torch.is_grad_enabled() and hidden.is_cuda:
        return liger_cross_entropy(hidden, head, batch["labels"]), None
    return chunked_cross_entropy(hidden, head, batch["labels"], count_correct=count_correct)


# ---- memory ---------------------------------------------------------------------------------------------


def chunked_loss_bytes(tokens: int, vocab: int, hidden: int, act_bytes: int) -> int:
    """What the chunked loss holds at the start of backward: the hidden states it keeps for the
    output layer, and one chunk's logits (half precision, fp32 copy, log-softmax and gradient)."""
    chunk = min(tokens, chunk_size(vocab))
    return tokens * hidden * act_bytes + chunk * vocab * (act_bytes + 10)
