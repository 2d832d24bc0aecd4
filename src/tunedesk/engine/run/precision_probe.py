"""``precision = "auto"`` for an image model on a CPU with native bf16: time a training step both ways.

bf16 autocast is not faster for every network on such a CPU. One forward and backward pass of batch 32 at
128 px, two threads (docs/benchmarks.md, "Image models on the CPU"): ResNet-18, ResNet-50, RegNet and
ConvNeXt ran 1.3-1.9x faster in bf16, but MobileNet-V3 (small and large) 1.6-1.9x and EfficientNet-B0
1.2x *slower* than fp32 (depthwise convolutions and their activations). So before the first step an image
run times a few passes of a small real batch in each precision and keeps bf16 unless fp32 is clearly
faster. The probe leaves the model as it found it (BatchNorm statistics, gradients, random state).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn

PROBE_BATCH = 8  # images per timed pass: the cost is a few passes of this size, once per run
PROBE_PASSES = 3  # per precision; the first warms up (oneDNN's kernels for the shapes), the fastest of the rest counts
FP32_MARGIN = 1.3  # fp32 only when it is at least this much faster: a near tie keeps bf16 (the measured default)

log = logging.getLogger(__name__)


def pick(task: Any, model: nn.Module, dataset: Any, channels_last: bool) -> tuple[str, str]:
    """The precision an image run on a bf16 CPU trains in, and the log line that says why. A probe that
    cannot run (an unreadable image among the first few, say) keeps bf16 and says so; the run goes on."""
    try:
        return choose(time_passes(task, model, probe_batch(dataset, channels_last)))
    except Exception as exc:  # timing is an optimisation: never the reason a run fails
        log.info("precision probe failed", exc_info=True)
        return "bf16", f"precision auto: bf16 (the timing probe could not run: {type(exc).__name__})"


def choose(seconds: dict[str, float]) -> tuple[str, str]:
    """The precision to train in, and why, from the timed pass of each (``{"bf16": s, "fp32": s}``)."""
    bf16, fp32 = seconds["bf16"], seconds["fp32"]
    if fp32 * FP32_MARGIN <= bf16:
        return "fp32", (
            f"precision auto: fp32 for this model on this CPU (a training pass took {fp32 * 1000:.0f} ms in fp32, "
            f"{bf16 * 1000:.0f} ms in bf16)"
        )
    return "bf16", (
        f"precision auto: bf16 (a training pass took {bf16 * 1000:.0f} ms in bf16, {fp32 * 1000:.0f} ms in fp32)"
    )


def probe_batch(dataset: Any, channels_last: bool) -> dict[str, torch.Tensor]:
    """A few training images, decoded the evaluation way (the probe times the model, not the input)."""
    items = [dataset[i] for i in range(min(PROBE_BATCH, len(dataset)))]
    pixels = torch.stack([it["pixel_values"] for it in items])
    if channels_last:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    return {"pixel_values": pixels, "labels": torch.tensor([int(it["labels"]) for it in items])}


def time_passes(task: Any, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Seconds of one forward + backward pass in bf16 autocast and in fp32 (fastest of the timed ones).
    The model's buffers, its gradients and the random state are put back afterwards."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    rng = torch.get_rng_state()
    was_training = model.training
    model.train()
    seconds: dict[str, float] = {}
    try:
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
            runs = []
            for _ in range(PROBE_PASSES):
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                    loss = task.loss(task.forward(model, batch), batch)
                loss.backward()
                runs.append(time.perf_counter() - t)
                model.zero_grad(set_to_none=True)
            seconds[name] = min(runs[1:] or runs)
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
        torch.set_rng_state(rng)
        model.train(was_training)
    return seconds
