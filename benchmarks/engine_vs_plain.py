"""The engine's training loop against a plain hand-written PyTorch loop doing the same work.

Same model, data, batch size, precision, optimizer (AdamW, fused on CUDA), schedule and gradient
clipping, in the same process, alternating engine and plain runs; the median of each is compared.
Prints a JSON line last: {"benchmark": "engine_vs_plain", "engine_sps": ..., "plain_sps": ..., "ratio": ...}.

    python benchmarks/engine_vs_plain.py                       # CPU: tiny BERT
    python benchmarks/engine_vs_plain.py --model bert-base --batch 64 --seq 128 --precision bf16
    python benchmarks/engine_vs_plain.py --model resnet50 --batch 256 --precision bf16 --frozen
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tunedesk.engine import freezing
from tunedesk.engine.config import DataSpec, FreezeSpec, HyperParams, ModelSpec, RunConfig
from tunedesk.engine.devices import select_device, select_precision
from tunedesk.engine.run.events import EventBus
from tunedesk.engine.run.training import Trainer
from tunedesk.engine.tasks.base import PreparedData, to_device


class SyntheticText(torch.utils.data.Dataset):
    def __init__(self, n: int, seq: int, vocab: int, labels: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, vocab, (n, seq), generator=g)
        self.labels = torch.randint(0, labels, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


class SyntheticImages(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int, labels: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(min(n, 512), 3, size, size, generator=g)
        self.labels = torch.randint(0, labels, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i % len(self.x)], "labels": self.labels[i]}


def build(args, tmp: Path):
    from tunedesk.engine import tasks

    labels = [f"c{i}" for i in range(args.labels)]
    if args.model in ("tiny-bert", "bert-base", "minilm"):
        from transformers import BertConfig

        folder = tmp / args.model
        if args.model == "tiny-bert":
            cfg = BertConfig(
                vocab_size=1000,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=128,
                max_position_embeddings=256,
            )
        elif args.model == "minilm":
            cfg = BertConfig(
                vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
            )
        else:
            cfg = BertConfig()  # bert-base-uncased shape
        cfg.save_pretrained(folder)
        task_name, spec = "text_classification", ModelSpec(str(folder), pretrained=False)
        n = args.batch * (args.steps + 2)
        train = SyntheticText(n, args.seq, cfg.vocab_size, args.labels)
        val = SyntheticText(args.batch, args.seq, cfg.vocab_size, args.labels)
    else:
        task_name, spec = "image_classification", ModelSpec(args.model, source="torchvision", pretrained=False)
        n = args.batch * (args.steps + 2)
        train = SyntheticImages(n, args.image_size, args.labels)
        val = SyntheticImages(args.batch, args.image_size, args.labels)
    task = tasks.get(task_name)
    config = RunConfig(
        task=task_name,
        model=spec,
        data=DataSpec(kind="text_table" if task_name == "text_classification" else "image_folder", path="-"),
        freeze=FreezeSpec(preset="last_n_blocks", last_n=1) if args.frozen else FreezeSpec(preset="all"),
        hparams=HyperParams(
            epochs=1,
            batch_size=args.batch,
            learning_rate=1e-5,
            max_length=args.seq,
            image_size=args.image_size,
            log_every=args.log_every,
            max_steps=args.steps,
            num_workers=args.workers,
            warmup_ratio=0.1,
        ),
        device=args.device,
        precision=args.precision,
        seed=0,
    )
    loaded = (
        task.build_model(config, labels)
        if task_name == "image_classification"
        else __import__("tunedesk.engine.models", fromlist=["x"]).build_hf_classifier(spec, labels)
    )
    data = PreparedData(
        train=train, val=val, collate=None, label_names=labels, name="synthetic", fingerprint="-", summary="synthetic"
    )
    plan = freezing.resolve(loaded.model, config.freeze, loaded.head_paths)
    return config, task, loaded, data, plan


WARMUP_STEPS = 10  # both loops are timed from here to the end (steady state)


def engine_run(config, task, loaded, data, plan, out: Path) -> float:
    """Steady-state samples/s from the engine's own step events (each follows a host sync)."""
    logged = []
    bus = EventBus(lambda e: logged.append(e) if e.kind == "StepLogged" else None)
    trainer = Trainer(config, task, loaded, data, plan, out, bus, learning_rate=1e-5)
    finished = trainer.run()
    if finished.status != "completed":
        raise SystemExit(f"engine run {finished.status}: {finished.reason}")
    first = next(e for e in logged if e.step >= WARMUP_STEPS)
    last = logged[-1]
    return (last.step - first.step) * config.hparams.batch_size / (last.elapsed - first.elapsed)


def plain_run(config, task, loaded, data, plan) -> float:
    """What a careful user would write by hand: no events, no control, loss read only at the end."""
    from transformers import get_scheduler

    h = config.hparams
    device = select_device(config.device)
    precision = select_precision(config.precision, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    model = loaded.model
    freezing.apply(model, plan)
    image = task.name == "image_classification"
    channels_last = image and device.type == "cuda"
    model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=h.weight_decay, fused=device.type == "cuda")
    sched = get_scheduler(
        "cosine", opt, num_warmup_steps=int(h.warmup_ratio * h.max_steps), num_training_steps=h.max_steps
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loader = torch.utils.data.DataLoader(
        data.train,
        batch_size=h.batch_size,
        shuffle=True,
        num_workers=h.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=h.num_workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    freezing.set_train_mode(model)
    total = torch.zeros((), device=device)
    samples = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for step, batch in enumerate(loader):
        if step >= h.max_steps:
            break
        batch = to_device(batch, device)
        if channels_last:
            batch["pixel_values"] = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = task.forward(model, batch)
            loss = task.loss(logits, batch)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        scaler.step(opt)
        scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)
        total += loss.detach()
        samples += batch["labels"].shape[0]
        if step + 1 == WARMUP_STEPS:
            float(total)  # sync, then start the clock
            t0, samples = time.perf_counter(), 0
    float(total)  # one sync at the end
    return samples / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default="tiny-bert", help="tiny-bert | minilm | bert-base | a torchvision name (resnet50)"
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--labels", type=int, default=4)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=10, help="the engine's logging cadence (one host sync each)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    ap.add_argument("--frozen", action="store_true", help="freeze everything but the last block and the head")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config, task, loaded, data, plan = build(args, tmp)
        device = select_device(config.device)
        precision = select_precision(config.precision, device)
        print(
            f"{args.model} on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
            f"{precision}, batch {args.batch}, {plan.trainable_params:,}/{plan.total_params:,} trainable",
            file=sys.stderr,
        )
        # warm-up both (allocator, cuDNN autotuning, lazy imports)
        engine_run(config, task, loaded, data, plan, tmp / "warm")
        plain_run(config, task, loaded, data, plan)
        engine, plain = [], []
        for r in range(args.repeats):
            engine.append(engine_run(config, task, loaded, data, plan, tmp / f"e{r}"))
            plain.append(plain_run(config, task, loaded, data, plan))
            print(
                f"repeat {r + 1}: engine {engine[-1]:.1f} samples/s, plain {plain[-1]:.1f} samples/s", file=sys.stderr
            )
    e, p = statistics.median(engine), statistics.median(plain)
    result = {
        "benchmark": "engine_vs_plain",
        "model": args.model,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": precision,
        "batch": args.batch,
        "seq": args.seq if task.name != "image_classification" else None,
        "image_size": args.image_size if task.name == "image_classification" else None,
        "frozen": args.frozen,
        "trainable_params": plan.trainable_params,
        "total_params": plan.total_params,
        "steps": args.steps,
        "timed_from_step": WARMUP_STEPS,
        "log_every": args.log_every,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "repeats": args.repeats,
        "engine_sps": round(e, 2),
        "plain_sps": round(p, 2),
        "ratio": round(e / p, 4) if p and not math.isnan(p) else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
