"""QLoRA: the frozen base of a causal LM held in 4 bits (NF4) or 8 bits by bitsandbytes, LoRA on top.

``freeze.lora.base_bits = 4`` loads every linear layer that neither trains fully nor is the output
layer as a bitsandbytes ``Linear4bit`` (NF4, double quantisation, compute in the training precision);
``8`` as ``Linear8bitLt`` (LLM.int8). Embeddings, norms, the output layer and any layer the freeze plan
trains fully stay in the training precision. PEFT puts its adapters on the quantised layers.

bitsandbytes is an optional extra (``pip install tunedesk[qlora]``) and needs a CUDA GPU; both are
checked before any weight is read, with a message saying what is missing. The memory arithmetic here
(``quantised_bytes``, ``dequant_working_bytes``) is what the Layers area's estimate uses.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from tunedesk.engine.errors import ConfigError

FIELD = "freeze.lora.base_bits"
BLOCK = 64  # NF4 quantisation block: one absmax constant per 64 weights
NESTED_BLOCK = 256  # double quantisation: the absmax constants quantised to 8 bits in blocks of 256


def bitsandbytes_installed() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def unavailable_reason(bits: int | None = 4) -> tuple[str, str] | None:
    """Why a ``bits``-bit base cannot be used on this machine, as (message, hint); None when it can."""
    if bits is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return (
            f"a {bits}-bit base needs a CUDA GPU, and this machine has none",
            "train LoRA with the base in the training precision, or run on a machine with an NVIDIA GPU",
        )
    if not bitsandbytes_installed():
        return (
            f"a {bits}-bit base needs the bitsandbytes package, which is not installed",
            "install it with `pip install bitsandbytes` (or `pip install tunedesk[qlora]`), then restart TuneDesk",
        )
    return None


def require(bits: int | None, device: Any = None) -> None:
    """Raise ConfigError (with the fix) when a quantised base cannot load here."""
    if bits is None:
        return
    if device is not None and getattr(device, "type", str(device)) != "cuda":
        raise ConfigError(
            FIELD,
            f"a {bits}-bit base needs a CUDA GPU (the run's device is {device})",
            "set device to auto or cuda on a machine with an NVIDIA GPU, or leave base_bits out",
        )
    reason = unavailable_reason(bits)
    if reason is not None:
        raise ConfigError(FIELD, *reason)


def quantization_config(bits: int, compute_dtype: Any, skip_modules: list[str] | None = None) -> Any:
    """transformers' ``BitsAndBytesConfig`` for QLoRA: NF4 with double quantisation, or LLM.int8.

    ``skip_modules``: module names left in the training precision (layers the freeze plan trains
    fully, next to transformers' own choice of the output layer)."""
    from transformers import BitsAndBytesConfig

    skip = list(skip_modules or [])
    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_quant_storage="uint8",
            llm_int8_skip_modules=skip or None,
        )
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip or None)
    raise ConfigError(
        FIELD, f"must be 4 or 8 (got {bits!r})", "4 (NF4) saves the most memory; leave it out for no quantisation"
    )


def logical_numel(param: Any) -> int:
    """Parameters a (possibly packed 4-bit) weight stands for: a ``Params4bit`` holds two per byte."""
    state = getattr(param, "quant_state", None)
    shape = getattr(state, "shape", None)
    if shape is not None:
        n = 1
        for s in shape:
            n *= int(s)
        return n
    return int(param.numel())


# ---- memory ---------------------------------------------------------------------------------------


def bytes_per_weight(bits: int) -> float:
    """Stored bytes per quantised weight, quantisation constants included.

    NF4 with double quantisation: half a byte, plus one 8-bit absmax per block of 64 weights and one
    fp32 constant per 256 such blocks (about 0.127 bits per weight, as in the QLoRA paper). LLM.int8:
    one byte; its per-row fp32 scale is counted by ``quantised_bytes``.
    """
    if bits == 4:
        return 0.5 + 1 / BLOCK + 4 / (BLOCK * NESTED_BLOCK)
    if bits == 8:
        return 1.0
    raise ValueError(bits)


def quantised_bytes(shapes: list[tuple[int, int]], bits: int) -> int:
    """Bytes of the quantised linear layers given as (in_features, out_features); each layer also
    keeps its 16-byte code book (NF4) or one fp32 scale per output row (int8)."""
    total = 0.0
    for fan_in, fan_out in shapes:
        total += fan_in * fan_out * bytes_per_weight(bits)
        total += 16 * 4 if bits == 4 else fan_out * 4
    return int(total)


def dequant_working_bytes(shapes: list[tuple[int, int]], compute_bytes: int = 2) -> int:
    """Working memory of the largest quantised layer while it runs: bitsandbytes dequantises the
    weight to the compute dtype for the matmul (forward), and again, transposed, for the input's
    gradient (backward); the two copies of one layer can be alive at once."""
    if not shapes:
        return 0
    largest = max(a * b for a, b in shapes)
    return 2 * largest * compute_bytes
