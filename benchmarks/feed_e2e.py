"""`tunedesk train` on real files against an expert's plain loop: does the input path keep up?

Writes a folder of JPEGs (about 500x375, one sub-folder per class) and a CSV of texts of 80-120
words, then runs `tunedesk train` on them as a user would (a fresh process per run, its own home):
ResNet-50 full / last stage + head / head only, BERT-base full / last block + head / head only, with
and without the frozen-prefix feature cache. Prints one line per run and, on a CUDA machine, the
anchor figures of ../shared/anchors/gpu_plain_loops.py (data already on the GPU) run in the same
call, with the ratios the issue asks for. The last line is JSON.

    # the GPU figures (one call, ~10 min on an H100):
    python benchmarks/feed_e2e.py --out /tmp/feed --anchor shared/anchors/gpu_plain_loops.py
    # small, on a CPU:
    python benchmarks/feed_e2e.py --images 240 --texts 600 --image-model resnet18 --image-size 64 \
        --text-model tiny --image-batch 32 --text-batch 32 --device cpu --out /tmp/feed-small

Weights are random (no network): speed does not depend on their values. The texts use a word-level
vocabulary, so 80-120 words are 82-122 tokens (the anchor pads every text to 128: dynamic padding
makes TuneDesk's batches a little shorter).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES_IMG = 10
CLASSES_TXT = 4


# ---- data ------------------------------------------------------------------------------------------------


def _write_images(args: tuple[Path, int, int, int]) -> int:
    import numpy as np
    from PIL import Image

    folder, start, stop, seed = args
    for i in range(start, stop):
        rng = np.random.default_rng(seed + i)
        label = i % CLASSES_IMG
        base = np.array([(label * 25) % 256, (label * 70) % 256, (label * 130) % 256], dtype=np.float32)
        small = rng.normal(0, 40, (47, 63, 3)).astype(np.float32) + base  # smooth-ish noise: JPEG-sized files
        img = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize((500, 375), Image.BILINEAR)
        img.save(folder / f"c{label}" / f"img_{i:06d}.jpg", quality=90)
    return stop - start


def make_images(folder: Path, n: int, workers: int) -> Path:
    marker = folder / f".complete-{n}"
    if marker.exists():
        return folder
    for c in range(CLASSES_IMG):
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
    chunks = [(folder, s, min(s + 256, n), 0) for s in range(0, n, 256)]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(_write_images, chunks))
    marker.touch()
    return folder


def _words() -> list[str]:
    rng = random.Random(1)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(6000)})


def make_texts(path: Path, n: int) -> Path:
    if path.exists() and sum(1 for _ in path.open(encoding="utf-8")) == n + 1:
        return path
    import csv

    words = _words()
    topics = [words[i::CLASSES_TXT][:300] for i in range(CLASSES_TXT)]
    rng = random.Random(2)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(n):
            label = i % CLASSES_TXT
            k = rng.randint(80, 120)
            text = " ".join(rng.choice(topics[label]) if rng.random() < 0.3 else rng.choice(words) for _ in range(k))
            w.writerow([text, f"topic{label}"])
    return path


def make_text_model(folder: Path, kind: str) -> Path:
    """A BERT folder (config, random weights saved as safetensors, word-level tokenizer), loaded as a
    user's pre-trained model is: building BERT-base from a config initialises 110M parameters on the
    CPU (about 6 s on the 2-core machine), which a user's run never does."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    if (folder / "model.safetensors").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _words()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    if kind == "tiny":
        cfg = BertConfig(
            vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
        )
    else:  # bert-base-uncased's shape (the anchor's)
        cfg = BertConfig(vocab_size=30522)
    cfg.architectures = ["BertModel"]
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder, safe_serialization=True)
    return folder


# ---- runs ------------------------------------------------------------------------------------------------


# Process-wide switches a case may set before `tunedesk train` starts (measured alternatives, not settings)
PRELUDES = {
    # cuDNN's attention builds a plan per new shape (benchmarks/attention_backends.py): the same run without it
    "no_cudnn_sdpa": "import torch; torch.backends.cuda.enable_cudnn_sdp(False)",
}


def run_cli(home: Path, config: dict, out: Path, name: str, pythonpath: str, prelude: str = "") -> dict:
    cfg_path = out / f"{name}.json"
    cfg_path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    argv = ["--home", str(home), "train", str(cfg_path), "--json"]
    if prelude:  # the same command line, after the prelude, in one process
        code = f"{PRELUDES[prelude]}; import sys; from tunedesk.cli import main; sys.exit(main({argv!r}))"
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "-m", "tunedesk.cli", *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return {"name": name, "status": "failed", "wall_s": wall}
    result = json.loads(lines[-1])
    notes = [
        ln.strip()
        for ln in proc.stderr.splitlines()
        if ln.strip().startswith(("input:", "feature cache:", "one CUDA graph"))
    ]
    steady = _steady_sps(home, result["run_id"])
    return {
        "name": name,
        "status": result["status"],
        "sps": result["samples_per_second"],
        "steady_sps": steady,
        "wall_s": round(wall, 1),
        "duration_s": result["duration_s"],
        "val_accuracy": result["val_accuracy"],
        "notes": notes,
    }


def _steady_sps(home: Path, run_id: int) -> float | None:
    """Median samples/s of the logging windows after the first fifth of the run (warm-up excluded)."""
    con = sqlite3.connect(home / "tunedesk.db")
    try:
        rows = con.execute(
            "SELECT step, samples_per_second FROM step_metrics WHERE run_id = ? ORDER BY step", (run_id,)
        ).fetchall()
    finally:
        con.close()
    if not rows:
        return None
    last = rows[-1][0]
    tail = [s for step, s in rows if step > last * 0.2 and s] or [s for _, s in rows if s]
    return round(statistics.median(tail), 1) if tail else None


def base_config(task: str, model: dict, data: dict, args, **hp) -> dict:
    h = {
        "epochs": args.epochs,
        "log_every": 5,
        "learning_rate": 1e-4,
        "num_workers": args.workers,
    }
    h.update(hp)
    return {
        "task": task,
        "model": model,
        "data": data,
        "freeze": {"preset": "all"},
        "hparams": h,
        "device": args.device,
        "precision": args.precision,
        "seed": 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/tunedesk-feed-bench", help="data, configs and run homes go here")
    ap.add_argument("--images", type=int, default=10240)
    ap.add_argument("--texts", type=int, default=32000)
    ap.add_argument("--image-model", default="resnet50")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--image-batch", type=int, default=256)
    ap.add_argument("--text-model", default="bert-base", choices=["bert-base", "tiny"])
    ap.add_argument("--text-batch", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--workers", type=int, default=None, help="input workers (default: chosen from the machine)")
    ap.add_argument(
        "--cases",
        default="all",
        help="comma list of: img_full,img_last,img_head,txt_full,txt_full_nocudnn,txt_last,txt_head",
    )
    ap.add_argument("--anchor", default="", help="gpu_plain_loops.py to run in the same call (CUDA only)")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    cases = set(args.cases.split(",")) if args.cases != "all" else None
    want = lambda c: cases is None or c in cases  # noqa: E731

    t0 = time.perf_counter()
    images = make_images(out / f"jpegs-{args.images}", args.images, os.cpu_count() or 1)
    texts = make_texts(out / f"texts-{args.texts}.csv", args.texts)
    text_model = make_text_model(out / f"text-model-{args.text_model}", args.text_model)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: {images}, {texts}", file=sys.stderr)

    img_model = {"name_or_path": args.image_model, "source": "torchvision", "pretrained": False}
    img_data = {"kind": "image_folder", "path": str(images)}
    txt_model = {"name_or_path": str(text_model)}
    txt_data = {"kind": "text_table", "path": str(texts)}
    ib, tb = args.image_batch, args.text_batch
    runs: list[tuple[str, dict]] = []

    def img(name, preset, **hp):
        c = base_config(
            "image_classification", img_model, img_data, args, batch_size=ib, image_size=args.image_size, **hp
        )
        c["freeze"] = {"preset": preset, "last_n": 1}
        runs.append((name, c))

    def txt(name, preset, **hp):
        c = base_config(
            "text_classification", txt_model, txt_data, args, batch_size=tb, max_length=args.max_length, **hp
        )
        c["freeze"] = {"preset": preset, "last_n": 1}
        runs.append((name, c))

    if want("img_full"):
        img("resnet_full", "all")
    if want("img_last"):
        img("resnet_last_stage", "last_n_blocks")  # augmented: only validation comes from the cache
        img("resnet_last_stage_noaug_nocache", "last_n_blocks", augment=False, feature_cache=False)
        img("resnet_last_stage_noaug_cache", "last_n_blocks", augment=False)
    if want("img_head"):
        img("resnet_head_nocache", "head_only", augment=False, feature_cache=False)
        img("resnet_head_cache", "head_only", augment=False)
    if want("txt_full"):
        txt("bert_full", "all", epochs=1)
    if want("txt_full_nocudnn"):  # the same run with cuDNN's attention switched off for the process
        txt("bert_full_no_cudnn_sdpa", "all", epochs=1)
    if want("txt_last"):
        txt("bert_last_block_nocache", "last_n_blocks", feature_cache=False)
        txt("bert_last_block_cache", "last_n_blocks")
    if want("txt_head"):
        txt("bert_head_nocache", "head_only", feature_cache=False)
        txt("bert_head_cache", "head_only")

    # the anchor first: its figures survive a call that runs out of time in the runs
    anchor = {}
    anchor_path = Path(args.anchor) if args.anchor else None
    if anchor_path and anchor_path.exists():
        import torch

        if torch.cuda.is_available():
            proc = subprocess.run([sys.executable, str(anchor_path)], capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            anchor = json.loads(lines[-1]) if lines else {"error": proc.stderr[-2000:]}
            print(f"anchor: {json.dumps(anchor)}", file=sys.stderr)

    results = {}
    home = out / "home"  # one home: the decoded images and features are cached across runs, as for a user
    for name, config in runs:
        prelude = next((p for p in PRELUDES if name.endswith(p)), "")
        r = run_cli(home, config, out, name, pythonpath, prelude)
        results[name] = r
        print(
            f"{name:34s} {r['status']:9s} {r.get('sps') or 0:10.1f} samples/s (steady {r.get('steady_sps') or 0:.1f})  "
            f"wall {r['wall_s']:.0f} s  acc {r.get('val_accuracy') or 0:.3f}",
            file=sys.stderr,
        )
        for note in r.get("notes", []):
            print(f"    {note}", file=sys.stderr)

    def sps(name):
        r = results.get(name) or {}
        return r.get("steady_sps") or r.get("sps")

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    summary = {
        "resnet_full_vs_anchor": ratio(sps("resnet_full"), anchor.get("resnet50_full_img_s")),
        "resnet_last_stage_vs_anchor_layer4fc": ratio(sps("resnet_last_stage"), anchor.get("resnet50_layer4+fc_img_s")),
        "resnet_head_cache_vs_nocache": ratio(sps("resnet_head_cache"), sps("resnet_head_nocache")),
        "resnet_last_stage_cache_vs_nocache": ratio(
            sps("resnet_last_stage_noaug_cache"), sps("resnet_last_stage_noaug_nocache")
        ),
        "bert_full_vs_anchor": ratio(sps("bert_full"), anchor.get("bert_plain_samples_s")),
        "bert_full_no_cudnn_sdpa_vs_anchor": ratio(sps("bert_full_no_cudnn_sdpa"), anchor.get("bert_plain_samples_s")),
        "bert_last_block_cache_vs_nocache": ratio(sps("bert_last_block_cache"), sps("bert_last_block_nocache")),
        "bert_head_cache_vs_nocache": ratio(sps("bert_head_cache"), sps("bert_head_nocache")),
    }
    full = results.get("bert_full")
    if full and full.get("sps"):
        n_train = round(args.texts * 0.8)
        train_s = n_train / full["sps"]
        summary["bert_full_one_epoch_wall_over_train"] = round(full["wall_s"] / train_s, 2)
    for k, v in summary.items():
        print(f"{k:40s} {v}", file=sys.stderr)
    print(
        json.dumps({"benchmark": "feed_e2e", "args": vars(args), "summary": summary, "runs": results, "anchor": anchor})
    )


if __name__ == "__main__":
    main()
