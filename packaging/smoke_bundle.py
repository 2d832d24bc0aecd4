"""Check a built bundle the way a user meets it: the window opens, the command works, offline.

    python packaging/smoke_bundle.py [dist/tunedesk]

1. starts the bundled app offscreen with a private home and config, waits until the window is
   painted (``TUNEDESK_SHOWN``) and torch has loaded inside the bundle (``TUNEDESK_ENGINE_READY``),
   then lets it close itself;
2. runs the bundled ``tunedesk demo --json --epochs 1`` (fine-tunes the bundled MiniLM on the bundled
   tickets, CPU) and checks its JSON result;
3. prints the bundle's size and the start times, and a last JSON line with all of it.
Exit status 0 when every check passed. Runs with a scrubbed environment: no PYTHONPATH, no virtual
environment, no Hugging Face or torch caches, so nothing outside the bundle can help it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def clean_env(tmp: Path) -> dict[str, str]:
    keep = ("HOME", "LANG", "LC_ALL", "TERM", "USER")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        PATH="/usr/bin:/bin",
        QT_QPA_PLATFORM="offscreen",
        TUNEDESK_HOME=str(tmp / "home"),
        XDG_CONFIG_HOME=str(tmp / "config"),
        XDG_CACHE_HOME=str(tmp / "cache"),
        XDG_DATA_HOME=str(tmp / "data"),
        HF_HOME=str(tmp / "hf"),
        TORCH_HOME=str(tmp / "torch"),
        HF_HUB_OFFLINE="1",
    )
    return env


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def main() -> int:
    app = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "dist" / "tunedesk").resolve()
    exe = app / "tunedesk"
    if not exe.is_file():
        print(f"error: no bundled app at {exe}\nhint: build it first with `make bundle`", file=sys.stderr)
        return 2
    failures: list[str] = []
    result: dict[str, object] = {"bundle": str(app), "size_bytes": folder_size(app)}
    with tempfile.TemporaryDirectory(prefix="tunedesk-smoke-") as tmp_name:
        tmp = Path(tmp_name)
        env = clean_env(tmp)

        env_app = dict(env, TUNEDESK_REPORT_STARTUP="1", TUNEDESK_QUIT_AFTER_MS="8000")
        t0 = time.monotonic()
        proc = subprocess.run([str(exe)], env=env_app, capture_output=True, text=True, timeout=600, cwd=tmp)
        result["app_wall_s"] = round(time.monotonic() - t0, 2)
        marks = {
            m.group(1).lower(): float(m.group(2))
            for m in re.finditer(r"^TUNEDESK_(SHOWN|PANELS_BUILT|ENGINE_READY) ([0-9.]+)$", proc.stderr, re.MULTILINE)
        }
        result.update({f"{k}_s": v for k, v in marks.items()})
        if proc.returncode != 0 or "Traceback" in proc.stderr:
            failures.append(f"the app exited with {proc.returncode}: {proc.stderr[-2000:]}")
        if "shown" not in marks:
            failures.append("the window was never painted (no TUNEDESK_SHOWN)")
        if "engine_ready" not in marks:
            failures.append("torch never loaded inside the app (no TUNEDESK_ENGINE_READY within 8 s of showing)")

        t0 = time.monotonic()
        demo = subprocess.run(
            [str(exe), "demo", "--json", "--epochs", "1", "--device", "cpu"],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
            cwd=tmp,
        )
        result["demo_wall_s"] = round(time.monotonic() - t0, 1)
        lines = [ln for ln in demo.stdout.splitlines() if ln.strip()]
        try:
            data = json.loads(lines[-1]) if lines else {}
        except ValueError:
            data = {}
        if demo.returncode != 0 or not isinstance(data, dict):
            failures.append(f"`tunedesk demo --json` exited with {demo.returncode}: {demo.stderr[-2000:]}")
        else:
            accuracy = data.get("val_accuracy")
            result["demo_val_accuracy"] = accuracy
            if data.get("status", "completed") != "completed" or not isinstance(accuracy, (int, float)):
                failures.append(f"the demo's result is not a completed run with an accuracy: {lines[-1][:500]}")
            elif accuracy < 0.35:  # five queues: chance is 0.2; one epoch of the real demo reaches 0.6-0.9
                failures.append(f"the demo reached only {accuracy:.2f} validation accuracy (five classes)")
        version = subprocess.run([str(exe), "--help"], env=env, capture_output=True, text=True, timeout=300)
        if version.returncode != 0 or "usage: tunedesk" not in version.stdout:
            failures.append("`tunedesk --help` failed")

    size_gb = result["size_bytes"] / 1e9  # type: ignore[operator]
    print(f"bundle: {app} ({size_gb:.2f} GB)")
    if "shown_s" in result:
        print(
            f"window visible {result['shown_s']:.2f} s after start; torch ready at {result.get('engine_ready_s', '?')} s"
        )
    print(f"demo (1 epoch, CPU): {result['demo_wall_s']} s")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    result["ok"] = not failures
    print(json.dumps(result))
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
