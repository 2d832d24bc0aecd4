"""What the screenshot scripts share: an offscreen, offline Qt and ways to wait for the GUI."""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent


def wait(app, condition, timeout: float, what: str) -> None:
    """Process events until ``condition()`` holds; give up after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def settle(app, n: int = 15) -> None:
    """Let pending layouts and repaints happen before a grab."""
    for _ in range(n):
        app.processEvents()
        time.sleep(0.02)
