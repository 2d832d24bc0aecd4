"""Data-parallel scaling: samples/s of `tunedesk train --gpus N` for N = 1, 2, 4 ... (torchrun, DDP).

Each case is run as a user would (a fresh `tunedesk train` process, its own home) with the same
batch per GPU, so the global batch grows with N (weak scaling). The figure per run is the median
samples/s of its logging windows after the first fifth (warm-up excluded), summed over all workers;
scaling efficiency = samples/s on N / (N x samples/s on 1). Cases: BERT-base full fine-tuning,
ResNet-50 full fine-tuning (from a folder of JPEGs), a Llama-shaped causal LM with LoRA adapters.
Weights are random (no network). The last line is JSON.

    # on a machine of 2 or more GPUs (~10 min with the defaults):
    python benchmarks/multi_gpu.py --gpus 1,2 --out /tmp/multi
    # small, on a CPU (processes with gloo instead of GPUs), to check the script:
    python benchmarks/multi_gpu.py --cpu --gpus 1,2 --small --out /tmp/multi-small
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from feed_e2e import _steady_sps, make_images, make_text_model, make_texts  # noqa: E402


def run(home: Path, config: dict, out: Path, name: str, n: int, cpu: bool) -> dict:
    cfg_path = out / f"{name}-{n}.json"
    cfg_path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    pythonpath = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "tunedesk.cli", "--home", str(home), "train", str(cfg_path), "--json"]
    cmd += ["--nproc" if cpu else "--gpus", str(n)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0 or result.get("status") != "completed":
        print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
        return {"case": name, "n": n, "status": result.get("status", "failed"), "wall_s": round(wall, 1)}
    return {
        "case": name,
        "n": n,
        "status": "completed",
        "sps": result["samples_per_second"],
        "steady_sps": _steady_sps(home, result["run_id"]),
        "wall_s": round(wall, 1),
    }


def lora_model(folder: Path, small: bool) -> Path:
    from lm_lora import build_model, write_corpus

    if not (folder / "config.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        build_model(folder, small)
    return write_corpus(folder.parent / "corpus.txt", 20_000 if small else 400_000), folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/tunedesk-multi-gpu")
    ap.add_argument("--gpus", default="1,2", help="comma-separated process counts, e.g. 1,2,4,8")
    ap.add_argument("--cases", default="bert,resnet,lora")
    ap.add_argument("--cpu", action="store_true", help="CPU processes with gloo (--nproc) instead of GPUs")
    ap.add_argument("--small", action="store_true", help="tiny models and data: checks the script, not speed")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = [int(c) for c in args.gpus.split(",")]
    small, device = args.small, "cpu" if args.cpu else "cuda"
    h = {"epochs": 1000, "max_steps": args.steps, "log_every": 5, "learning_rate": 1e-4, "warmup_ratio": 0.0}
    cases: dict[str, dict] = {}
    wanted = set(args.cases.split(","))
    if "bert" in wanted:
        texts = make_texts(out / f"texts-{'s' if small else 'l'}.csv", 400 if small else 20000)
        model = make_text_model(out / f"bert-{'tiny' if small else 'base'}", "tiny" if small else "bert-base")
        cases["bert_base_full"] = {
            "task": "text_classification",
            "model": {"name_or_path": str(model), "pretrained": False},
            "data": {"kind": "text_table", "path": str(texts)},
            "hparams": h | {"batch_size": 8 if small else 32, "max_length": 32 if small else 128},
        }
    if "resnet" in wanted:
        images = make_images(out / f"jpegs-{'s' if small else 'l'}", 160 if small else 8192, os.cpu_count() or 1)
        cases["resnet50_full"] = {
            "task": "image_classification",
            "model": {
                "name_or_path": "resnet18" if small else "resnet50",
                "source": "torchvision",
                "pretrained": False,
            },
            "data": {"kind": "image_folder", "path": str(images)},
            "hparams": h | {"batch_size": 8 if small else 128, "image_size": 64 if small else 224},
        }
    if "lora" in wanted:
        corpus, model = lora_model(out / f"llama-{'tiny' if small else '370m'}" / "model", small)
        from tunedesk.engine.lm import lora

        freeze = lora.preset_spec("lora_attention", rank=16, alpha=32, dropout=0.05)
        cases["llama_lora"] = {
            "task": "causal_lm",
            "model": {"name_or_path": str(model)},
            "data": {"kind": "text_corpus", "path": str(corpus), "val_fraction": 0.02},
            "freeze": dataclasses.asdict(freeze),
            "hparams": h | {"batch_size": 4 if small else 8, "max_length": 64 if small else 1024},
        }

    results = []
    for name, spec in cases.items():
        base = None
        for n in counts:
            # the same batch per GPU: the configured batch is the global one
            hp = spec["hparams"] | {"batch_size": spec["hparams"]["batch_size"] * n}
            config = {"freeze": {"preset": "all"}, **spec, "hparams": hp, "device": device, "seed": 0}
            if not args.cpu:
                config["precision"] = "auto"
            r = run(out / f"home-{name}-{n}", config, out, name, n, args.cpu)
            sps = r.get("steady_sps") or r.get("sps")
            if n == counts[0] and sps:
                base = sps / counts[0]
            r["efficiency"] = round(sps / (n * base), 3) if sps and base else None
            results.append(r)
            print(
                f"{name:16s} x{n}: {r['status']:9s} {sps or 0:9.1f} samples/s"
                f"  scaling efficiency {r['efficiency'] if r['efficiency'] is not None else '-'}"
                f"  ({r['wall_s']} s)",
                flush=True,
            )
    print(json.dumps({"benchmark": "multi_gpu", "device": device, "counts": counts, "results": results}))


if __name__ == "__main__":
    main()
