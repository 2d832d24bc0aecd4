"""The resumable checkpoint's cost: ``CheckpointWriter.save_last`` on the bundled MiniLM, per freeze plan.

A ``last`` checkpoint is written at every epoch's end, on stop, and every 10 minutes by default; the
loop waits for it. For a model loaded from pretrained files its frozen weights are left out (a resume
reads them from the files again), so what a checkpoint costs follows what trains. This writes one
``last`` checkpoint per plan into a temporary folder (weights, AdamW state after one step, manifest
with SHA-256, fsync, swap) and prints its size and time, best of ``--repeat``. The last line is JSON.

    python benchmarks/checkpoint_write.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

PLANS = {
    "everything trains": None,
    "last block + head": ("encoder.layer.5.", "pooler.", "classifier."),
    "head only": ("classifier.",),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForSequenceClassification

    from tunedesk.engine.catalog import demo_model_path
    from tunedesk.engine.run.checkpoint import BaseWeights, CheckpointState, CheckpointWriter

    model = AutoModelForSequenceClassification.from_pretrained(
        str(demo_model_path()), num_labels=6, local_files_only=True
    )
    ids = torch.randint(1000, 20000, (8, 32))
    rows = {}
    for plan, trains in PLANS.items():
        for name, p in model.named_parameters():
            p.requires_grad_(trains is None or any(k in name for k in trains))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        model(input_ids=ids, labels=torch.zeros(8, dtype=torch.long)).loss.backward()
        optimizer.step()
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        # with the files' fingerprint (what a run from pretrained files does), and without (the whole model:
        # a run from random weights, and every run before 2026-12-07)
        for how, base in (("frozen left out", BaseWeights("benchmark", keep=("classifier",))), ("whole", None)):
            folder = Path(tempfile.mkdtemp(prefix="tunedesk-ckpt-"))
            best = float("inf")
            try:
                writer = CheckpointWriter(folder)
                for i in range(args.repeat):
                    t0 = time.perf_counter()
                    path = writer.save_last(model, optimizer, scheduler, scaler, [], CheckpointState(step=i), base)
                    best = min(best, time.perf_counter() - t0)
                sizes = {f.name: f.stat().st_size for f in path.iterdir()}
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            r = rows[f"{plan}, {how}"] = {
                "weights_mib": round(sizes["model.safetensors"] / 2**20, 2),
                "state_mib": round(sizes["training_state.pt"] / 2**20, 2),
                "seconds": round(best, 3),
            }
            print(
                f"{plan:<18} {how:<16} weights {r['weights_mib']:7.2f} MiB  "
                f"optimizer+state {r['state_mib']:7.2f} MiB  {best:6.3f} s"
            )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
