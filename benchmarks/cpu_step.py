"""What a training step on this CPU should run: fp32 or bf16 autocast (``precision = "auto"``), and AdamW
fused or not (``devices.fused_optimizer``).

A CPU with native bf16 matrix products (AVX-512 BF16, AMX: ``devices.cpu_has_bf16``) runs bf16 autocast
faster than fp32; one without emulates it and runs slower. For a MiniLM-shaped BERT (6 layers, hidden 384)
at batch 16 x 32 tokens and a ResNet-18 at batch 16 x 128 px, both from a config, with fused AdamW as
in a run, it prints ms per optimizer step in fp32 and in bf16 (best of ``--repeats`` windows, alternating,
so the machine's load falls on both alike) and the ratio. The end-to-end check on real data is
``default_quality.py --only none --variant "fp32:precision=fp32" --variant "bf16:precision=bf16"``.

Then AdamW alone over the MiniLM shape's parameters (random gradients): the default (one parameter at
a time), ``foreach`` and ``fused``, ms per step.

With ``--image-models`` (torchvision names), each image model's step (batch 32 x 128 px unless told, fused AdamW)
in fp32 and bf16, each with contiguous (NCHW) and channels-last (NHWC) tensors: what the precision probe
(``engine/run/precision_probe.py``) and the CPU's channels-last choice are based on.

    python benchmarks/cpu_step.py --threads 1
    python benchmarks/cpu_step.py --small      # a quick check
    python benchmarks/cpu_step.py --threads 2 --image-models resnet18,mobilenet_v3_small,efficientnet_b0

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def minilm_shape(small: bool) -> torch.nn.Module:
    """A BERT classifier of all-MiniLM-L6-v2's shape (6 layers, hidden 384; ``small``: 2 x 128), 6 labels."""
    from transformers import BertConfig, BertForSequenceClassification

    layers, hidden = (2, 128) if small else (6, 384)
    cfg = BertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 32, intermediate_size=4 * hidden
    )
    cfg.num_labels = 6
    return BertForSequenceClassification(cfg)


def bert_step(small: bool) -> Callable[[bool], None]:
    model = minilm_shape(small)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as a run steps on the CPU
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (16, 32), generator=g)
    labels = torch.randint(0, 6, (16,), generator=g)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def resnet_step(small: bool) -> Callable[[bool], None]:
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as a run steps on the CPU
    side = 64 if small else 128
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, side, side, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def image_grid(
    names: list[str], small: bool, steps: int, repeats: int, result: dict[str, object], batch: int, side: int
) -> None:
    """ms per step of each model in fp32 / bf16 x NCHW / NHWC (best of the repeats, alternating)."""
    import torchvision

    batch, side = (8, 64) if small else (batch, side)
    for name in names:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, side, side, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        steps_of = {}
        for nhwc in (False, True):
            torch.manual_seed(0)
            model = torchvision.models.get_model(name, weights=None, num_classes=10)
            xs = x.contiguous(memory_format=torch.channels_last) if nhwc else x
            if nhwc:
                model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

            def step(bf16: bool, model=model, xs=xs, opt=opt) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = F.cross_entropy(model(xs), y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            for bf16 in (False, True):
                step(bf16)
                steps_of[(bf16, nhwc)] = step
        best = dict.fromkeys(steps_of, float("inf"))
        for _ in range(repeats):
            for key, step in steps_of.items():
                best[key] = min(best[key], timed(step, key[0], steps))
        ms = {f"{'bf16' if b else 'fp32'}_{'nhwc' if c else 'nchw'}": round(1000 * v, 1) for (b, c), v in best.items()}
        fastest = min(ms, key=lambda k: ms[k])
        print(f"{name:<20} " + "  ".join(f"{k} {v:7.1f}" for k, v in ms.items()) + f"   fastest: {fastest}")
        result[f"image_{name}_ms"] = ms


def timed(step: Callable[[bool], None], bf16: bool, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        step(bf16)
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--image-models", default="", help="comma list of torchvision models: only those, 4 ways each")
    ap.add_argument("--image-batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=128)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from tunedesk.engine.devices import auto_precision, cpu_has_bf16

    result: dict[str, object] = {
        "cpu_bf16": cpu_has_bf16(),
        "auto": auto_precision("cpu"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    steps, repeats = (2, 1) if args.small else (args.steps, args.repeats)
    print(f"native bf16: {result['cpu_bf16']} (auto picks {result['auto']}), {result['threads']} threads")
    if args.image_models:
        image_grid(args.image_models.split(","), args.small, steps, repeats, result, args.image_batch, args.image_size)
        print(json.dumps(result))
        return
    for name, build in (("bert_minilm_shape", bert_step), ("resnet18", resnet_step)):
        step = build(args.small)
        for bf16 in (False, True):
            step(bf16)  # allocations, oneDNN's kernel choice
        best = {False: float("inf"), True: float("inf")}
        for _ in range(repeats):
            for bf16 in (False, True):
                best[bf16] = min(best[bf16], timed(step, bf16, steps))
        fp32_ms, bf16_ms = 1000 * best[False], 1000 * best[True]
        print(f"{name:<18} fp32 {fp32_ms:8.1f} ms/step   bf16 {bf16_ms:8.1f} ms/step   bf16 {fp32_ms / bf16_ms:.2f}x")
        result[f"{name}_fp32_ms"] = round(fp32_ms, 1)
        result[f"{name}_bf16_ms"] = round(bf16_ms, 1)
    print(adamw_line(args.small, steps, repeats, result))
    print(json.dumps(result))


def adamw_line(small: bool, steps: int, repeats: int, result: dict[str, object]) -> str:
    model = minilm_shape(small)
    g = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    kinds = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    best = dict.fromkeys(kinds, float("inf"))
    optimizers = {k: torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, **kw) for k, kw in kinds.items()}
    for opt in optimizers.values():
        opt.step()  # the moments' allocation
    for _ in range(repeats):
        for name, opt in optimizers.items():
            t = time.perf_counter()
            for _ in range(steps):
                opt.step()
            best[name] = min(best[name], (time.perf_counter() - t) / steps)
    n = sum(p.numel() for p in model.parameters())
    for name, dt in best.items():
        result[f"adamw_{name}_ms"] = round(1000 * dt, 1)
    return f"AdamW over {n / 1e6:.1f}M parameters: " + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in best.items())


if __name__ == "__main__":
    main()
