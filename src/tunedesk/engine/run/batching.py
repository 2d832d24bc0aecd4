"""Batch size "auto": the batch the defaults were calibrated for, split into the largest micro-batch that fits.

The learning-rate suggestion was calibrated with 16 examples per optimizer step (docs/benchmarks.md),
so "auto" keeps that effective batch: the micro-batch is the largest power of two up to 16 that the
memory estimate says fits the GPU with a margin, and gradient accumulation makes up the rest. On the
CPU (or MPS) main memory is the limit and 16 fits any model TuneDesk can load there.

A step that still runs out of GPU memory halves the micro-batch and doubles the accumulation (the
same effective batch), and the epoch goes on from the examples it had reached: see ``Trainer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunedesk.engine.config import AUTO_BATCH  # examples per optimizer step when the batch size is auto

MEMORY_MARGIN = 0.8  # plan for 80 % of the free GPU memory: the estimate is within ~10 % of the peak


@dataclass
class BatchChoice:
    batch_size: int  # examples per forward/backward (micro-batch)
    grad_accum_steps: int
    explanation: str


def choose_batch(
    config: Any,
    model: Any = None,
    plan: Any = None,
    free_bytes: int | None = None,
    precision: str = "fp32",
    image_size: int | None = None,
) -> BatchChoice:
    """Resolve ``hparams.batch_size`` (None: auto) and ``grad_accum_steps``.

    ``free_bytes``: free GPU memory (None on the CPU or when unknown: the calibrated batch is used).
    ``image_size``: the side the images really have (a model built for one size), else hparams'.
    """
    h = config.hparams
    if h.batch_size is not None:
        return BatchChoice(h.batch_size, h.grad_accum_steps, f"batch size {h.batch_size} (set by you)")
    target = AUTO_BATCH * h.grad_accum_steps
    if free_bytes is None or model is None or plan is None:
        return BatchChoice(
            AUTO_BATCH,
            h.grad_accum_steps,
            f"batch size auto: {AUTO_BATCH} examples per step, the batch TuneDesk's defaults were calibrated with",
        )
    from tunedesk.engine.freezing.memory import estimate_memory

    budget = int(free_bytes * MEMORY_MARGIN)
    micro = AUTO_BATCH
    while micro > 1:
        est = estimate_memory(
            model,
            plan,
            batch_size=micro,
            precision=precision,
            sequence_length=h.max_length,
            image_size=image_size or h.image_size,
            cuda=False,  # free_bytes is measured after the CUDA context exists
        )
        if est.total <= budget:
            break
        micro //= 2
    accum = max(1, target // micro)
    if micro == AUTO_BATCH:
        why = (
            f"batch size auto: {micro} examples per step (the calibrated batch; the memory estimate says it "
            f"fits in {free_bytes / 2**30:.1f} GiB free with a {100 - MEMORY_MARGIN * 100:.0f}% margin)"
        )
    else:
        why = (
            f"batch size auto: {micro} examples x {accum} accumulated = {micro * accum} per step (the largest "
            f"micro-batch the memory estimate fits in {free_bytes / 2**30:.1f} GiB free, with a "
            f"{100 - MEMORY_MARGIN * 100:.0f}% margin)"
        )
    return BatchChoice(micro, accum, why)


def free_gpu_bytes(device: Any) -> int | None:
    """Free memory of a CUDA device (None elsewhere)."""
    import torch

    if getattr(device, "type", None) != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)
