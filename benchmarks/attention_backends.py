"""Which scaled-dot-product attention backend should a padded text batch run on? Steps per second of
BERT-base fine-tuning (bf16 autocast, fused AdamW, batch 64) for three kinds of batch and three backend
choices, in one process.

Batches:
  fixed    every text 128 tokens, no padding (the anchor loop's batches: transformers drops the mask)
  padded   width 128, texts of 80-128 tokens (a mask with zeros)
  widths   batch widths cycling through 96, 104, ..., 128 (TuneDesk's feed on a GPU: cut to the longest
           text, rounded up to 8), texts shorter than the width (a mask with zeros)
Backends (``torch.nn.attention.sdpa_kernel``):
  default  torch's own priority order
  no-cudnn flash, memory-efficient and math only (cuDNN's attention builds a plan per new shape and
           spends ~1 ms of host time per call in it, ``benchmarks/step_gap.py``)
  efficient memory-efficient only

    python benchmarks/attention_backends.py                 # on a GPU
    python benchmarks/attention_backends.py --device cpu --small   # checks itself on a CPU

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import torch  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

BACKENDS: dict[str, list[SDPBackend] | None] = {
    "default": None,
    "no-cudnn": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
}


def batches(kind: str, bs: int, seq: int, vocab: int, device: str, n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    widths = list(range(seq - 32, seq + 1, 8)) if kind == "widths" else [seq]
    for i in range(n):
        width = widths[i % len(widths)]
        ids = torch.randint(1000, vocab, (bs, width), generator=g)
        mask = torch.ones(bs, width, dtype=torch.long)
        if kind != "fixed":
            low = max(width - 48, 8) if kind == "padded" else max(width - 7, 1)
            lengths = torch.randint(low, width + 1, (bs,), generator=g)
            lengths[0] = width  # the longest text sets the width, as in the feed
            mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
            ids = ids * mask
        out.append(
            {
                "input_ids": ids.to(device),
                "attention_mask": mask.to(device),
                "labels": torch.randint(0, 4, (bs,), generator=g).to(device),
            }
        )
    return out


def run_case(
    model: torch.nn.Module,
    data: list[dict],
    ctx: Callable[[], AbstractContextManager],
    device: str,
    warm: int,
    steps: int,
) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=device == "cuda")
    dtype = torch.bfloat16
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def stream() -> Iterator[dict]:
        i = 0
        while True:
            yield data[i % len(data)]
            i += 1

    it = stream()

    def step() -> None:
        b = next(it)
        with ctx(), torch.autocast(device, dtype=dtype):
            loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warm):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="a tiny BERT and few steps (a check, not a figure)")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    from transformers import BertConfig, BertForSequenceClassification

    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if args.small:
        cfg = BertConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            num_labels=4,
            vocab_size=3000,
        )
        bs, seq, steps, warm = 8, 40, 4, 2
    else:
        cfg = BertConfig(num_labels=4)  # BERT-base
        bs, seq, steps, warm = 64, 128, args.steps, 10
    cfg._attn_implementation = "sdpa"
    model = BertForSequenceClassification(cfg).to(args.device)
    model.train()
    result: dict[str, object] = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch": bs,
    }
    print(f"{'batches':<8} {'backend':<10} {'ms/step':>8} {'samples/s':>10}")
    for kind in ("fixed", "padded", "widths"):
        data = batches(kind, bs, seq, cfg.vocab_size, args.device, 5 if kind == "widths" else 4)
        for name, backends in BACKENDS.items():
            ctx: Callable[[], AbstractContextManager] = (
                nullcontext if backends is None else (lambda b=backends: sdpa_kernel(b))
            )
            try:
                dt = run_case(model, data, ctx, args.device, warm, steps)
            except RuntimeError as exc:  # a backend that cannot run this input
                print(f"{kind:<8} {name:<10} {'-':>8} {str(exc).splitlines()[0][:60]}")
                result[f"{kind}_{name}_ms"] = None
                continue
            print(f"{kind:<8} {name:<10} {1000 * dt:8.2f} {bs / dt:10.0f}")
            result[f"{kind}_{name}_ms"] = round(1000 * dt, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
