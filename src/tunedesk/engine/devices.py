"""Which compute devices this machine has, in words for the status bar and the device picker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunedesk.engine.errors import ConfigError

if TYPE_CHECKING:
    import torch


def list_devices() -> list[tuple[str, str]]:
    """(device string, label) for each usable device, best first; the CPU is always last."""
    import torch

    out: list[tuple[str, str]] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            name = torch.cuda.get_device_name(i)
            try:
                free, total = torch.cuda.mem_get_info(i)
                label = f"GPU {i}: {name} ({free / 2**30:.1f} of {total / 2**30:.0f} GiB free)"
            except RuntimeError:
                label = f"GPU {i}: {name}"
            out.append((f"cuda:{i}", label))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append(("mps", "Apple GPU (MPS)"))
    out.append(("cpu", f"CPU ({torch.get_num_threads()} threads)"))
    return out


def device_memory(device: str) -> int | None:
    """Free memory in bytes of a CUDA device, or None where TuneDesk cannot tell."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return torch.cuda.mem_get_info(index)[0]
    if device == "cpu":
        try:
            import os

            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def describe_devices() -> str:
    devices = list_devices()
    return "device: " + devices[0][1]


def select_device(requested: str) -> torch.device:
    """``auto`` picks the first CUDA GPU, then Apple MPS, then the CPU."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            # With its index: tensors report cuda:0, and torch.device("cuda") != torch.device("cuda:0").
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "device", f"{requested} was asked for but no CUDA GPU is available", "choose device 'cpu' or 'auto'"
            )
        index = int(requested.split(":", 1)[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                "device",
                f"{requested} does not exist (this machine has {torch.cuda.device_count()} GPU(s))",
                "choose another GPU or 'auto'",
            )
        return torch.device("cuda", index)
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device", "Apple MPS was asked for but is not available", "choose 'cpu' or 'auto'")
    return torch.device(requested)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX-512 BF16 or AMX). There bf16 autocast
    trains faster than fp32 (the bundled MiniLM on real text: 0.71-0.85x the CPU time at the same
    accuracy; steps of MiniLM's shape 1.64x and of ResNet-18 1.73x faster: docs/benchmarks.md); elsewhere bf16 is emulated and slower."""
    import torch

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):  # private, so looked up with care
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # noqa: BLE001 - a probe that fails means "not known to have it"
            continue
    return False


def fused_optimizer(device_type: str) -> bool:
    """Whether AdamW runs its fused kernel here: on a GPU, and on the CPU, where the unfused step over the
    bundled MiniLM's 22.7M parameters took 113 ms against 19 ms fused (one thread; it passes over every
    parameter about ten times instead of once: benchmarks/cpu_step.py, docs/benchmarks.md)."""
    return device_type in ("cuda", "cpu")


def channels_last(device_type: str) -> bool:
    """Whether image models and their inputs are laid out channels-last (NHWC) here: on a GPU (tensor
    cores) and on the CPU, where oneDNN's convolutions trained 1.1-1.7x faster so in fp32 and mostly faster
    in bf16 (benchmarks/cpu_step.py --image-models, docs/benchmarks.md)."""
    return device_type in ("cuda", "cpu")


def auto_precision(device_type: str) -> str:
    """What ``auto`` means on this kind of device: bf16 on GPUs that have it (else fp16), bf16 on CPUs
    with native bf16 (else fp32), fp32 elsewhere (Apple MPS). An image model's run on such a CPU then
    times both and may keep fp32 (``engine/run/precision_probe.py``)."""
    import torch

    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device_type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def select_precision(requested: str, device: torch.device) -> str:
    """``auto``: ``auto_precision``; an explicit choice is checked against the device."""
    import torch

    if requested == "auto":
        return auto_precision(device.type)
    if requested == "fp16" and device.type == "cpu":
        raise ConfigError("precision", "fp16 is not supported on the CPU", "use fp32 or bf16 on the CPU")
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision", "this GPU does not support bf16", "use fp16 or fp32")
    return requested


def input_workers(requested: int | None = None, device_type: str = "cpu") -> int:
    """Worker processes for reading and decoding input files: the user's number, else chosen from the
    machine. A GPU run leaves one core for the training thread and one for the system; a CPU run
    shares its cores with the model's own threads, so it decodes on at most half of them."""
    import os

    if requested is not None:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if device_type == "cuda":
        return max(0, min(cores - 2, 16))
    return max(0, min(cores // 2, 8)) if cores > 2 else 0
