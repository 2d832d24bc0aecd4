"""Where does a training step's time go? Runs a configuration through ``runner.execute`` (the path the
app and ``tunedesk train`` use) and records a window of steps with ``torch.profiler``: the ops and
kernels per step, host time per op, and the wall time per step, so that per-step overhead (the pace-
setter when the trained part is small, e.g. a head trained from cached features) can be read off.

    python benchmarks/step_profile.py run.json --start 100 --steps 50 --out /tmp/step-profile

The window opens when step ``--start`` is logged and closes ``--steps`` logged steps later, so use
``log_every = 1`` in the configuration (the script sets it). Writes ``ops.txt`` (top ops by host
time), ``kernels.txt`` (CUDA kernels, on a GPU), ``trace.json`` (chrome://tracing) and prints a JSON
line: steps/s in the window, ops and kernel launches per step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a run configuration (TOML or JSON)")
    ap.add_argument("--start", type=int, default=50, help="open the window at this logged step")
    ap.add_argument("--steps", type=int, default=50, help="optimizer steps in the window")
    ap.add_argument("--epochs", type=int, default=0, help="override hparams.epochs (0: keep)")
    ap.add_argument("--out", default="/tmp/tunedesk-step-profile")
    ap.add_argument("--home", default="", help="TuneDesk home for the run (default: OUT/home)")
    ap.add_argument("--stack", action="store_true", help="also write stacks.txt: ops grouped by Python call site")
    args = ap.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from tunedesk.engine.config import RunConfig
    from tunedesk.engine.run.runner import execute

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = RunConfig.load(args.config)
    config.hparams.log_every = 1
    if args.epochs:
        config.hparams.epochs = args.epochs
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    prof = profile(activities=activities, record_shapes=False, with_stack=args.stack)
    window: dict[str, float] = {}

    def listener(event) -> None:
        if event.kind != "StepLogged":
            return
        if event.step == args.start:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            prof.start()
            window["t0"] = time.perf_counter()
        elif event.step == args.start + args.steps and "t0" in window:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            window["t1"] = time.perf_counter()
            prof.stop()

    result = execute(config, home=args.home or out / "home", listeners=[listener])
    if "t1" not in window:
        print(f"the run ended ({result.status}) before step {args.start + args.steps}: lower --start/--steps")
        return 1
    averages = prof.key_averages()
    (out / "ops.txt").write_text(averages.table(sort_by="self_cpu_time_total", row_limit=60), encoding="utf-8")
    kernels = 0
    if torch.cuda.is_available():
        (out / "kernels.txt").write_text(
            averages.table(sort_by="self_device_time_total", row_limit=60), encoding="utf-8"
        )
        kernels = sum(e.count for e in averages if e.device_type.name == "CUDA")
    if args.stack:
        by_site = prof.key_averages(group_by_stack_n=6)
        (out / "stacks.txt").write_text(
            by_site.table(sort_by="count", row_limit=80, max_name_column_width=40), encoding="utf-8"
        )
    prof.export_chrome_trace(str(out / "trace.json"))
    ops = sum(e.count for e in averages if e.key.startswith("aten::"))
    seconds = window["t1"] - window["t0"]
    line = {
        "benchmark": "step_profile",
        "config": args.config,
        "device": str(result.metrics.get("device", "")) or ("cuda" if torch.cuda.is_available() else "cpu"),
        "status": result.status,
        "window_steps": args.steps,
        "ms_per_step": round(1000 * seconds / args.steps, 3),
        "steps_per_s": round(args.steps / seconds, 1),
        "aten_ops_per_step": round(ops / args.steps, 1),
        "cuda_kernels_per_step": round(kernels / args.steps, 1),
        "out": str(out),
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
