"""`python -m tunedesk` opens the window quickly (torch loads after it is visible) and quits cleanly.

The 1.5 s target is measured and reported (docs/ and the issue); here the bound is loose (3 s) since
CI machines may be loaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SHOWN_LIMIT_S = 3.0


def launch(tmp_path: Path, quit_after_ms: int) -> tuple[subprocess.CompletedProcess, dict[str, float]]:
    env = dict(os.environ)
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        env.pop(var, None)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        TUNEDESK_HOME=str(tmp_path / "home"),
        TUNEDESK_QUIT_AFTER_MS=str(quit_after_ms),
        TUNEDESK_REPORT_STARTUP="1",
        XDG_CONFIG_HOME=str(tmp_path / "config"),  # QSettings: never the user's ~/.config
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        HF_HUB_CACHE=str(tmp_path / "hf"),
        TORCH_HOME=str(tmp_path / "torch"),
    )
    proc = subprocess.run([sys.executable, "-m", "tunedesk"], env=env, capture_output=True, text=True, timeout=180)
    marks = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^TUNEDESK_(SHOWN|ENGINE_READY) ([0-9.]+)$", proc.stderr, re.MULTILINE)
    }
    return proc, marks


def test_window_is_visible_fast_and_quits_cleanly(tmp_path):
    proc, marks = launch(tmp_path, quit_after_ms=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "SHOWN" in marks, proc.stderr[-3000:]
    print(f"window visible {marks['SHOWN']:.2f} s after the process started")
    assert marks["SHOWN"] < SHOWN_LIMIT_S
    # quitting saved the window state into the private config folder
    conf = tmp_path / "config" / "TuneDesk" / "TuneDesk.conf"
    assert conf.is_file() and "geometry" in conf.read_text(encoding="latin-1")
    # a second start finds the remembered state and is as quick
    proc2, marks2 = launch(tmp_path, quit_after_ms=300)
    assert proc2.returncode == 0 and marks2.get("SHOWN", 99) < SHOWN_LIMIT_S, proc2.stderr[-3000:]
