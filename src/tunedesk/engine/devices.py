"""Which compute devices this machine has, in words for the status bar and the device picker."""

from __future__ import annotations


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
