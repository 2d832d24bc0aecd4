"""How TuneDesk writes the share of parameters that train (no torch here: the UI uses it before the engine loads).

A partial plan never reads 0% or 100%: a head on a frozen 8B model is "<0.01%", one frozen layer
out of thousands "99.9%".
"""

from __future__ import annotations

import math


def percent(part: float, whole: float) -> str:
    """``part`` of ``whole`` in percent, e.g. ``12%``, ``4.4%``, ``0.35%``, ``<0.01%``, ``99.9%``."""
    if not whole or part <= 0:
        return "0%"
    if part >= whole:
        return "100%"
    pct = 100 * part / whole
    if pct >= 99.5:
        return f"{math.floor(pct * 10) / 10:.1f}%"
    if pct >= 10:
        return f"{pct:.0f}%"
    if pct >= 1:
        return f"{pct:.1f}%"
    return f"{pct:.2f}%" if pct >= 0.01 else "<0.01%"
