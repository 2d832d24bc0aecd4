"""Numbers in words for the layer tree: parameter counts and bytes, short enough for a table cell."""

from __future__ import annotations


def count_text(n: int | None) -> str:
    """``22.7 M``, ``8.03 B``, ``4,096``: three significant digits past ten thousand."""
    if n is None:
        return "—"
    if n < 10_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1e3:.1f} K"
    if n < 1_000_000_000:
        return f"{n / 1e6:.2f} M" if n < 10_000_000 else f"{n / 1e6:.1f} M"
    return f"{n / 1e9:.2f} B"


def bytes_text(n: int | None) -> str:
    """``3.2 GiB``, ``740 MiB``."""
    if n is None:
        return "unknown"
    if n >= 100 * 2**30:
        return f"{n / 2**30:.0f} GiB"
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB"
