"""Why is a TuneDesk step slower than an expert's plain loop? The two side by side under ``torch.profiler``.

For one case, runs a window of optimizer steps of a real run through ``runner.execute`` (the app's path)
and the same number of steps of a hand-written loop on the same model, batch and sequence, and prints
for each: wall ms per step, GPU kernel ms per step (busy time), kernels and host syncs per step, and the
kernels whose time differs most between the two. A wall time well above the kernel time means the GPU
waits for the host (syncs, Python); extra kernel time means the engine computes something the loop does
not.

    python benchmarks/step_gap.py --case lm --out /tmp/gap      # Llama (8B-shaped layers), bf16 LoRA
    python benchmarks/step_gap.py --case bert --out /tmp/gap    # BERT-base from a CSV vs the anchor loop
    python benchmarks/step_gap.py --case head --out /tmp/gap    # BERT head from cached features

On a CPU (``--device cpu --small``) it checks itself with tiny models: the host-op counts still compare.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def anatomy(prof: Any, steps: int, seconds: float, out: Path, name: str) -> dict:
    """Per-step figures of a profiled window, and the kernel table written to OUT/NAME-kernels.txt."""
    averages = prof.key_averages()
    kernels: dict[str, float] = {}
    n_kernels = 0
    syncs = collections.Counter()
    aten = 0
    for e in averages:
        if e.device_type.name == "CUDA":
            kernels[e.key] = kernels.get(e.key, 0.0) + e.self_device_time_total / 1000.0  # ms
            n_kernels += e.count
        elif e.key.startswith(SYNC_CALLS):
            syncs[e.key] += e.count
        if e.key.startswith("aten::"):
            aten += e.count
    table = averages.table(sort_by="self_device_time_total" if kernels else "self_cpu_time_total", row_limit=40)
    (out / f"{name}-kernels.txt").write_text(table, encoding="utf-8")
    return {
        "ms_per_step": round(1000 * seconds / steps, 3),
        "gpu_ms_per_step": round(sum(kernels.values()) / steps, 3),
        "kernels_per_step": round(n_kernels / steps, 1),
        "aten_ops_per_step": round(aten / steps, 1),
        "syncs_per_step": {k: round(v / steps, 2) for k, v in syncs.items()},
        "_kernels": {k: v / steps for k, v in kernels.items()},
    }


def compare(engine: dict, plain: dict) -> list[dict]:
    a, b = engine.pop("_kernels"), plain.pop("_kernels")
    names = set(a) | set(b)
    rows = sorted(
        ({"kernel": k[:90], "engine_ms": a.get(k, 0.0), "plain_ms": b.get(k, 0.0)} for k in names),
        key=lambda r: -abs(r["engine_ms"] - r["plain_ms"]),
    )
    return [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows[:15]]


class Window:
    """Opens the profiler when step START is logged and closes it STEPS logged steps later."""

    profiled = True  # --no-profile: wall time only (the profiler slows the host, which both loops wait on)

    def __init__(self, start: int, steps: int) -> None:
        self.start, self.steps = start, steps
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self.prof = profile(activities=acts)
        self.t0 = self.t1 = 0.0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def at(self, step: int) -> None:
        if step == self.start:
            self._sync()
            if self.profiled:
                self.prof.start()
            self.t0 = time.perf_counter()
        elif step == self.start + self.steps and self.t0:
            self._sync()
            self.t1 = time.perf_counter()
            if self.profiled:
                self.prof.stop()

    def listener(self, event: Any) -> None:
        if event.kind == "StepLogged":
            self.at(event.step)


# --variant KEY=VALUE[,KEY=VALUE...]: more engine windows with these hyperparameters changed (same case)
VARIANTS: list[str] = []
VARIANT_WINDOWS: dict[str, Window] = {}


def _hparam(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def engine_window(config: Any, home: Path, start: int, steps: int) -> Window:
    import copy
    import shutil

    from tunedesk.engine.run.runner import execute

    config.hparams.log_every = 1
    w = None
    for variant in ["", *VARIANTS]:
        cfg = copy.deepcopy(config)
        for pair in filter(None, variant.split(",")):
            key, _, value = pair.partition("=")
            setattr(cfg.hparams, key.strip(), _hparam(value.strip()))
        v = Window(start, steps)
        result = execute(cfg, home=home, listeners=[v.listener])
        shutil.rmtree(home, ignore_errors=True)  # the next variant starts as fresh as the first
        if not v.t1:
            raise SystemExit(f"the engine's run ended ({result.status}: {result.reason}) before the window closed")
        if variant:
            VARIANT_WINDOWS[variant] = v
        else:
            w = v
    assert w is not None
    return w


def plain_window(step_fn: Any, start: int, steps: int) -> Window:
    w = Window(start, steps)
    for i in range(1, start + steps + 1):
        step_fn(i)
        w.at(i)
    return w


def plain_step(loss_of: Any, params: list[torch.Tensor], lr: float, device: torch.device, clip: bool) -> Any:
    """One hand-written step (autocast in bf16 on a GPU, fused AdamW, optional clipping) and a host read
    of the summed loss, as the engine's steps are logged in the window (one host read each)."""
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=cuda)
    dtype = torch.bfloat16 if cuda else None
    loss_sum = torch.zeros((), device=device)

    def step(_i: int) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_of()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_sum.add_(loss.detach())
        float(loss_sum)

    return step


# ---- cases -------------------------------------------------------------------------------------------


def case_lm(args: argparse.Namespace) -> tuple[Window, Window]:
    import qlora

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    model_dir = qlora.build_model(args.work / f"llama-{args.layers}l", args.small, args.device, layers=args.layers)
    seq = args.seq or (64 if args.small else 2048)
    steps_total = args.start + args.steps + 2
    corpus = qlora.write_corpus(args.work / f"corpus-{seq}.txt", int(args.batch * seq * (steps_total + 4) * 1.15))
    q = argparse.Namespace(
        batch=args.batch, seq=seq, log_every=1, device=args.device, cuda=cuda, precision="bf16" if cuda else "fp32"
    )
    config = qlora.run_config(q, model_dir, corpus, None, False, steps_total, ckpt=not args.no_ckpt)
    config.hparams.prompts = []  # no sample replies: the window is training steps only
    eng = engine_window(config, args.work / "home-lm", args.start, args.steps)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    kwargs: dict = dict(dtype=torch.bfloat16 if cuda else torch.float32, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    model.config.use_cache = False
    if not args.no_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    torch.manual_seed(qlora.SEED)
    lcfg = LoraConfig(
        r=qlora.RANK,
        lora_alpha=qlora.ALPHA,
        lora_dropout=qlora.DROPOUT,
        target_modules=qlora.TARGETS,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lcfg).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    ids = torch.randint(0, 1000, (args.batch, seq), device=dev)
    model.train()
    step = plain_step(lambda: model(input_ids=ids, labels=ids).loss, params, qlora.LR, dev, clip=True)
    return eng, plain_window(step, args.start, args.steps)


def text_config(args: argparse.Namespace, preset: str, **hp: Any) -> Any:
    import feed_e2e
    from tunedesk.engine.config import RunConfig

    n = 600 if args.small else 32000
    texts = feed_e2e.make_texts(args.work / f"texts-{n}.csv", n)
    model = feed_e2e.make_text_model(
        args.work / f"bert-{'tiny' if args.small else 'base'}", "tiny" if args.small else "bert-base"
    )
    fa = argparse.Namespace(epochs=1, workers=None, device=args.device, precision="auto")
    cfg = feed_e2e.base_config(
        "text_classification",
        {"name_or_path": str(model)},
        {"kind": "text_table", "path": str(texts)},
        fa,
        **{"batch_size": args.batch if args.batch > 1 else 64, "max_length": 128, **hp},
    )
    cfg["freeze"] = {"preset": preset, "last_n": 1}
    return RunConfig.from_dict(cfg), model


def case_bert(args: argparse.Namespace) -> tuple[Window, Window]:
    from transformers import BertConfig, BertForSequenceClassification

    config, model_dir = text_config(args, "all")
    eng = engine_window(config, args.work / "home-bert", args.start, args.steps)
    dev = torch.device(args.device)
    cfg = BertConfig.from_pretrained(str(model_dir))
    cfg.num_labels = 4
    m = BertForSequenceClassification(cfg).to(dev)
    bs = config.hparams.batch_size if isinstance(config.hparams.batch_size, int) else 64
    ids = torch.randint(0, cfg.vocab_size, (bs, 128), device=dev)
    att = torch.ones_like(ids)
    y = torch.randint(0, 4, (bs,), device=dev)
    loss_of = lambda: m(input_ids=ids, attention_mask=att, labels=y).loss  # noqa: E731
    step = plain_step(loss_of, list(m.parameters()), 2e-5, dev, clip=False)
    return eng, plain_window(step, args.start, args.steps)


def case_head(args: argparse.Namespace) -> tuple[Window, Window]:
    config, _ = text_config(args, "head_only", batch_size=256, epochs=3)
    eng = engine_window(config, args.work / "home-head", args.start, args.steps)
    dev = torch.device(args.device)
    hidden = 64 if args.small else 768
    head = torch.nn.Linear(hidden, 4).to(dev)
    feats = torch.randn(256, hidden, device=dev)
    y = torch.randint(0, 4, (256,), device=dev)
    step = plain_step(lambda: F.cross_entropy(head(feats), y), list(head.parameters()), 1e-3, dev, clip=False)
    return eng, plain_window(step, args.start, args.steps)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=["lm", "bert", "head"], default="lm")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="tiny models (a CPU check)")
    ap.add_argument("--layers", type=int, default=8, help="lm: decoder layers of the 8B shape")
    ap.add_argument("--seq", type=int, default=0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--no-ckpt", action="store_true", help="lm: without gradient checkpointing")
    ap.add_argument("--no-profile", action="store_true", help="wall ms per step only, without the profiler")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="KEY=VALUE[,KEY=VALUE]: one more engine window with these hparams (e.g. num_workers=0)",
    )
    ap.add_argument("--start", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--work", type=Path, default=Path("/tmp/tunedesk-step-gap"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/tunedesk-step-gap/out"))
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    Window.profiled = not args.no_profile
    VARIANTS[:] = args.variant
    eng, plain = {"lm": case_lm, "bert": case_bert, "head": case_head}[args.case](args)
    if args.no_profile:
        e_ms, p_ms = (1000 * (w.t1 - w.t0) / args.steps for w in (eng, plain))
        line = {"benchmark": "step_gap", "case": args.case, "device": args.device, "profiled": False}
        line.update(engine_ms_per_step=round(e_ms, 2), plain_ms_per_step=round(p_ms, 2))
        if VARIANT_WINDOWS:
            line["variants_ms_per_step"] = {
                k: round(1000 * (w.t1 - w.t0) / args.steps, 2) for k, w in VARIANT_WINDOWS.items()
            }
        print(json.dumps({**line, "wall_ratio": round(p_ms / e_ms, 3)}))
        return 0
    e = anatomy(eng.prof, args.steps, eng.t1 - eng.t0, args.out, f"{args.case}-engine")
    p = anatomy(plain.prof, args.steps, plain.t1 - plain.t0, args.out, f"{args.case}-plain")
    diff = compare(e, p)
    for row in diff:
        print(json.dumps(row))
    for k, w in VARIANT_WINDOWS.items():
        a = anatomy(w.prof, args.steps, w.t1 - w.t0, args.out, f"{args.case}-{k}")
        print(json.dumps({"variant": k, **{n: v for n, v in a.items() if not n.startswith("_")}}))
    line = {
        "benchmark": "step_gap",
        "case": args.case,
        "device": args.device,
        "engine": e,
        "plain": p,
        "wall_ratio": round(p["ms_per_step"] / e["ms_per_step"], 3),
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
