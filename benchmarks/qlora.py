"""QLoRA on an 8B-shaped Llama: peak memory, the Layers area's estimate against it, and speed against a
plain hand-written PEFT (+ bitsandbytes) loop. One JSON object per line, as each figure is measured.

    python benchmarks/qlora.py                 # CUDA GPU: 32 layers, hidden 4096, MLP 14336, vocab 128,256
    python benchmarks/qlora.py --tiny          # anywhere (CPU): a 2-layer model, bf16 LoRA only, to check it
    python benchmarks/qlora.py --parts grid    # one part: runs, plain, grid (comma-separated)

The model is built from a config with random bf16 weights and saved once (``--work``, kept between calls
on the same machine). Parts:

* ``runs``: real runs through ``runner.execute`` (the app's path: data, LoRA through PEFT, autocast,
  AdamW, evaluation, sample replies, checkpoints) with LoRA r16 on attention + MLP, batch 1, sequence
  ``--seq``, gradient checkpointing: QLoRA and bf16 LoRA. Reported: torch's peak allocation over the
  whole run, the estimate (without the CUDA context) and their ratio, the engine's tokens/s, the steady
  tokens/s (log windows after the first) and the loss every ``--log-every`` steps.
* ``fused``: the QLoRA run with the chunked loss and liger-kernel on. Last, because liger-kernel
  patches transformers' Llama classes for the rest of the process (the plain loop must not get them).
* ``plain``: the same model, adapters, batch, sequence and data through a hand-written loop (PEFT +
  bitsandbytes, autocast, fused AdamW, clipping): steady tokens/s and losses, bf16 LoRA and QLoRA.
* ``grid``: training steps (the task's forward, backward, fused AdamW step) at each of ``--grid-seq``
  with and without checkpointing, bf16 LoRA and QLoRA: measured peak, estimate and ratio.

The last line is a summary: the speed ratios against the plain loop and the verdicts on the targets.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # tests.fixtures.causal_lm: the word tokenizer

import torch  # noqa: E402

RANK, ALPHA, DROPOUT, LR, SEED = 16, 32.0, 0.05, 2e-4, 1
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


ROWS: Path | None = None  # every row is also appended here, so a later call's summary sees earlier parts


def emit(row: dict) -> dict:
    print(json.dumps(row), flush=True)
    if ROWS is not None and "mode" in row:
        with ROWS.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return row


def build_model(folder: Path, tiny: bool, device: str, layers: int | None = None) -> Path:
    """An 8B-shaped Llama with random bf16 weights (made on the GPU, seconds), saved once. ``layers``:
    fewer (or more) decoder layers of the same shape."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.fixtures.causal_lm import word_tokenizer

    if (folder / "config.json").is_file():
        return folder
    tok = word_tokenizer()
    size = (
        dict(hidden_size=64, intermediate_size=224, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        if tiny
        else dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
        )
    )
    if layers is not None:
        size["num_hidden_layers"] = layers
    config = LlamaConfig(
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        dtype="bfloat16",
        **size,
    )
    torch.manual_seed(0)
    with torch.device(device):  # made in bf16 directly: an fp32 copy of 8B parameters would need 32 GB more
        model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    del model
    free()
    tmp.rename(folder)
    return folder


def write_corpus(path: Path, tokens: int) -> Path:
    from tests.fixtures.causal_lm import all_words

    rng = random.Random(0)
    words = all_words()
    lines = (" ".join(rng.choice(words) for _ in range(40)) for _ in range(tokens // 40 + 1))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def lora_spec(bits: int | None):
    from tunedesk.engine.lm import lora

    spec = lora.preset_spec("lora_all_linear", rank=RANK, alpha=ALPHA, dropout=DROPOUT)
    spec.lora.base_bits = bits
    return spec


def run_config(args, model: Path, corpus: Path, bits: int | None, fused: bool, steps: int, ckpt: bool = True):
    from tunedesk.engine.config import DataSpec, HyperParams, ModelSpec, RunConfig

    h = HyperParams(
        epochs=1,
        batch_size=args.batch,
        max_length=args.seq,
        max_steps=steps,
        learning_rate=LR,
        schedule="constant",
        warmup_ratio=0.0,
        log_every=args.log_every,
        gradient_checkpointing=ckpt,
        prompts=["where is my parcel"],
        sample_max_new_tokens=4,
        fused_loss="on" if fused else "off",
        fused_kernels="on" if fused and args.cuda else "off",
    )
    return RunConfig(
        task="causal_lm",
        model=ModelSpec(str(model)),
        data=DataSpec(kind="text_corpus", path=str(corpus), val_fraction=0.02),
        freeze=lora_spec(bits),
        hparams=h,
        device=args.device,
        precision=args.precision,
        seed=SEED,
    )


def estimate(model: Path, bits: int | None, args, seq: int, ckpt: bool, fused: bool):
    from tunedesk.engine.lm import lora
    from tunedesk.engine.structure import build_meta_model

    meta = build_meta_model(model, "causal_lm")
    return lora.estimate_memory(
        meta.model,
        lora_spec(bits),
        batch_size=args.batch,
        precision=args.precision,
        sequence_length=seq,
        cuda=args.cuda,
        gradient_checkpointing=ckpt,
        fused_loss=fused,
    )


def steady(events: list) -> tuple[float | None, list[float]]:
    """Samples/s over the log windows after the first (warm-up, allocation, kernel tuning) and the losses."""
    from tunedesk.engine.run.events import StepLogged

    logged = [e for e in events if isinstance(e, StepLogged)]
    losses = [round(e.loss, 4) for e in logged]
    later = logged[1:]
    if not later:
        return None, losses
    samples = seconds = 0.0
    prev = logged[0].step
    for e in later:
        n = e.step - prev
        prev = e.step
        samples += n
        seconds += n / max(e.samples_per_second, 1e-9)
    return samples / seconds, losses


def part_runs(args, model: Path, corpus: Path, fused_part: bool = False) -> list[dict]:
    from tunedesk.engine.run.runner import execute

    rows = []
    if fused_part:  # last: liger-kernel patches Llama's classes for the rest of the process
        modes = [("qlora+fused", 4, True)] if args.cuda else [("lora+fused", None, True)]
    else:
        modes = [("qlora", 4, False), ("lora_bf16", None, False)] if args.cuda else [("lora", None, False)]
        if args.int8 and args.cuda:
            modes.append(("lora_int8", 8, False))  # freeze.lora.base_bits = 8: kept only if it measures well
    for name, bits, fused in modes:
        if name in args.skip:
            continue
        config = run_config(args, model, corpus, bits, fused, args.steps)
        est = estimate(model, bits, args, args.seq, True, fused)
        home = args.work / f"home-{name}"
        free()
        events: list = []
        t = time.perf_counter()
        result = execute(config, home=home, listeners=[events.append])
        wall = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() if args.cuda else None
        shutil.rmtree(home, ignore_errors=True)  # checkpoints of an 8B model: several GB each
        if result.status != "completed":
            rows.append(emit({"part": "runs", "mode": name, "status": result.status, "reason": result.reason}))
            continue
        sps, losses = steady(events)
        est_bytes = est.total - est.overhead
        rows.append(
            emit(
                {
                    "part": "runs",
                    "mode": name,
                    "seq": args.seq,
                    "batch": args.batch,
                    "checkpointing": True,
                    "steps": args.steps,
                    "tokens_per_s": round(result.samples_per_second * args.seq),
                    "steady_tokens_per_s": round(sps * args.seq) if sps else None,
                    "peak_gib": round(peak / 2**30, 2) if peak else None,
                    "estimate_gib": round(est_bytes / 2**30, 2),
                    "estimate_over_peak": round(est_bytes / peak, 3) if peak else None,
                    "val_loss": round(result.metrics["val_loss"], 4),
                    "losses": losses,
                    "wall_s": round(wall, 1),
                }
            )
        )
    return rows


def plain_loop(args, model_dir: Path, corpus: Path, bits: int | None) -> dict:
    """What a practitioner writes by hand: transformers + PEFT (+ bitsandbytes), autocast, fused AdamW."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from tunedesk.engine.lm import data as lm_data
    from tunedesk.engine.run.sampling import EpochBatches

    free()
    dev = torch.device(args.device)
    kwargs: dict = dict(dtype=torch.bfloat16 if args.cuda else torch.float32, local_files_only=True)
    if bits == 4:
        kwargs.update(
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            ),
            device_map={"": 0},
        )
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), trust_remote_code=False, **kwargs)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    torch.manual_seed(SEED)
    model = get_peft_model(
        model, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT, target_modules=TARGETS, task_type="CAUSAL_LM")
    ).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.01, fused=args.cuda)
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    examples = lm_data.read_corpus(corpus)
    enc = lm_data.encode_examples(tok, examples, args.seq, 0.02, SEED)
    blocks = torch.tensor([b for b in enc.train.input_ids if len(b) == args.seq], dtype=torch.long)
    sampler = EpochBatches(len(blocks), args.batch, SEED)
    order = [i for batch in sampler for i in batch]
    autocast = torch.bfloat16 if args.precision == "bf16" else None
    loss_sum = torch.zeros((), device=dev)
    losses, t0, warm_steps = [], 0.0, args.log_every
    model.train()
    for step in range(1, args.steps + 1):
        idx = order[((step - 1) * args.batch) % len(order) :][: args.batch]
        ids = blocks[idx].to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=autocast, enabled=autocast is not None):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        if step % args.log_every == 0:
            losses.append(round(float(loss_sum) / args.log_every, 4))
            loss_sum.zero_()
            if step == warm_steps:
                t0 = time.perf_counter()  # after the first window, as the engine's steady figure
    if args.cuda:
        torch.cuda.synchronize()
    timed = args.steps - warm_steps
    tps = timed * args.batch * args.seq / max(time.perf_counter() - t0, 1e-9) if timed > 0 else None
    peak = torch.cuda.max_memory_allocated() if args.cuda else None
    del model, opt, params
    free()
    return emit(
        {
            "part": "plain",
            "mode": "plain_qlora" if bits == 4 else "plain_lora",
            "seq": args.seq,
            "batch": args.batch,
            "steps": args.steps,
            "steady_tokens_per_s": round(tps) if tps else None,
            "peak_gib": round(peak / 2**30, 2) if peak else None,
            "losses": losses,
        }
    )


def part_plain(args, model: Path, corpus: Path) -> list[dict]:
    return [plain_loop(args, model, corpus, bits) for bits in ((4, None) if args.cuda else (None,))]


def part_grid(args, model: Path, corpus: Path) -> list[dict]:
    """Peak of training steps at each sequence length, with and without checkpointing, vs the estimate."""
    from tunedesk.engine import freezing
    from tunedesk.engine.lm.model import enable_checkpointing
    from tunedesk.engine.run.runner import prepare

    rows = []
    dev = torch.device(args.device)
    for bits in (None, 4) if args.cuda else (None,):
        free()
        prep = prepare(run_config(args, model, corpus, bits, False, 1, ckpt=True))
        net = prep.loaded.model.to(dev)
        freezing.apply(net, prep.plan)
        net.train()
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=LR, fused=args.cuda)
        autocast = torch.bfloat16 if args.precision == "bf16" else None
        words = len(prep.loaded.processor)  # token ids the word tokenizer makes (the model's vocabulary is larger)
        for ckpt in (True, False):
            if ckpt:
                enable_checkpointing(net)
            else:
                net.gradient_checkpointing_disable()
            for seq in args.grid_seq:
                opt.zero_grad(set_to_none=True)
                free()
                ids = torch.randint(0, words, (args.batch, seq), device=dev)
                batch = {"input_ids": ids, "labels": ids}  # corpus blocks: no padding, no mask (as LMCollate)
                try:
                    for _ in range(3):
                        with torch.autocast(dev.type, dtype=autocast, enabled=autocast is not None):
                            loss = prep.task.loss(prep.task.forward(net, batch), batch)
                        loss.backward()
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                    if args.cuda:
                        torch.cuda.synchronize()
                    peak = torch.cuda.max_memory_allocated() if args.cuda else None
                    status = "ok"
                except torch.OutOfMemoryError:
                    peak, status = None, "out of memory"
                    opt.zero_grad(set_to_none=True)
                est = estimate(model, bits, args, seq, ckpt, False)
                est_bytes = est.total - est.overhead
                rows.append(
                    emit(
                        {
                            "part": "grid",
                            "mode": "qlora" if bits == 4 else "lora_bf16" if args.cuda else "lora",
                            "seq": seq,
                            "batch": args.batch,
                            "checkpointing": ckpt,
                            "status": status,
                            "peak_gib": round(peak / 2**30, 2) if peak else None,
                            "estimate_gib": round(est_bytes / 2**30, 2),
                            "estimate_over_peak": round(est_bytes / peak, 3) if peak else None,
                            "estimate_parts_gib": {k: round(v / 2**30, 2) for k, v in est.to_dict().items()},
                        }
                    )
                )
        del prep, net, opt, params, batch, ids
        free()
    return rows


def summary(args, rows: list[dict]) -> dict:
    """Speed ratios and verdicts over this call's rows and those of earlier calls (same --work, same device)."""
    if ROWS is not None and ROWS.is_file():
        rows = [json.loads(line) for line in ROWS.read_text(encoding="utf-8").splitlines() if line.strip()]
    by = {(r["part"], r["mode"]): r for r in rows if "mode" in r}  # the latest row of each kind wins

    def ratio(a, b):
        x, y = by.get(("runs", a), {}).get("steady_tokens_per_s"), by.get(("plain", b), {}).get("steady_tokens_per_s")
        return round(x / y, 3) if x and y else None

    def curve_gap(a, b):
        x, y = by.get(a, {}).get("losses") or [], by.get(b, {}).get("losses") or []
        n = min(len(x), len(y))
        return round(max(abs(p - q) for p, q in zip(x[:n], y[:n])), 4) if n else None

    grid = {(r["mode"], r["seq"], r["checkpointing"]): r for r in rows if r.get("part") == "grid"}
    runs = [r for r in by.values() if r["part"] == "runs"]
    ratios = [r["estimate_over_peak"] for r in [*grid.values(), *runs] if r.get("estimate_over_peak")]
    head = by.get(("runs", "qlora"), {})
    out = {
        "benchmark": "qlora",
        "device": torch.cuda.get_device_name(0) if args.cuda else "cpu",
        "torch": torch.__version__,
        "qlora_peak_gib": head.get("peak_gib"),
        "qlora_peak_under_16_gib": head.get("peak_gib") is not None and head["peak_gib"] < 16,
        "lora_vs_plain": ratio("lora_bf16", "plain_lora") if args.cuda else ratio("lora", "plain_lora"),
        "qlora_vs_plain": ratio("qlora", "plain_qlora"),
        "qlora_fused_vs_plain": ratio("qlora+fused", "plain_qlora"),
        "loss_gap_fused_vs_unfused": curve_gap(("runs", "qlora+fused"), ("runs", "qlora"))
        if args.cuda
        else curve_gap(("runs", "lora+fused"), ("runs", "lora")),
        "loss_gap_engine_vs_plain": curve_gap(("runs", "qlora"), ("plain", "plain_qlora"))
        if args.cuda
        else curve_gap(("runs", "lora"), ("plain", "plain_lora")),
        "estimate_over_peak_range": [min(ratios), max(ratios)] if ratios else None,
        "estimates_within_0.9_1.15": bool(ratios) and all(0.9 <= r <= 1.15 for r in ratios),
    }
    return emit(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--grid-seq", default=None, help="sequence lengths of the grid, e.g. 512,2048,4096")
    ap.add_argument("--parts", default="runs,plain,grid,fused", help="fused last: liger patches classes")
    ap.add_argument("--skip", default="", help="run modes to leave out, e.g. lora_bf16")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tunedesk-qlora-bench"))
    ap.add_argument("--fresh", action="store_true", help="forget the rows of earlier calls")
    ap.add_argument("--int8", action="store_true", help="also a run with the base in 8 bits (LLM.int8)")
    args = ap.parse_args()
    args.cuda = args.device.startswith("cuda")
    if not args.cuda and not args.tiny:
        ap.error("the 8B-shaped model needs a CUDA GPU; use --tiny on the CPU")
    args.precision = "bf16" if args.cuda else "fp32"
    args.seq = args.seq or (64 if args.tiny else 2048)
    args.steps = args.steps or (6 if args.tiny else 100)
    args.log_every = min(args.log_every, max(args.steps // 3, 1))
    args.grid_seq = [int(s) for s in (args.grid_seq or ("32,64" if args.tiny else "512,2048,4096")).split(",")]
    args.skip = set(filter(None, args.skip.split(",")))
    args.work.mkdir(parents=True, exist_ok=True)
    global ROWS
    ROWS = args.work / f"rows-{'cpu' if not args.cuda else torch.cuda.get_device_name(0).replace(' ', '_')}.jsonl"
    if args.fresh:
        ROWS.unlink(missing_ok=True)
    t0 = time.perf_counter()
    model = build_model(args.work / ("llama-tiny" if args.tiny else "llama-8b"), args.tiny, args.device)
    corpus = write_corpus(args.work / "corpus.txt", int(args.batch * args.seq * (args.steps + 4) * 1.15))
    emit({"part": "setup", "model": str(model), "build_s": round(time.perf_counter() - t0, 1)})
    rows: list[dict] = []
    parts = {
        "runs": part_runs,
        "plain": part_plain,
        "grid": part_grid,
        "fused": lambda a, m, c: part_runs(a, m, c, fused_part=True),
    }
    for name in args.parts.split(","):
        t = time.perf_counter()
        rows += parts[name](args, model, corpus)
        emit({"part": name, "done_s": round(time.perf_counter() - t, 1)})
    summary(args, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
