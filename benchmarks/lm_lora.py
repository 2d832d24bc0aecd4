"""Language-model fine-tuning through the engine: speed and peak memory of full fine-tuning and the LoRA
presets, against the Layers area's memory estimate (``lora.estimate_memory``).

    python benchmarks/lm_lora.py                  # on a CUDA GPU: a ~370M-parameter Llama, seq 1024, bf16
    python benchmarks/lm_lora.py --tiny           # anywhere (CPU): a 4-layer model, to check the script

Each mode is one real run (``runner.execute``: data packing, LoRA wrapping through PEFT, autocast,
AdamW, the evaluation and sample replies at the end) of a model built from a config with random
weights, on a random-word corpus. Reported per mode: training samples/s and tokens/s as the engine
measures them, torch's peak allocated memory during the run, and the estimate without the CUDA
context (the Layers area adds that on top). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # tests.engine.test_causal_lm_fixtures: the word tokenizer

import torch  # noqa: E402

MODES = {
    "full": None,
    "lora_attention": ("lora_attention", {}),
    "lora_attention_last_4": ("lora_attention_last_n", {"last_n": 4}),
    "lora_all_linear": ("lora_all_linear", {}),
    "lora_all_linear+ckpt": ("lora_all_linear", {}),
}


def build_model(folder: Path, tiny: bool) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.fixtures.causal_lm import word_tokenizer

    tok = word_tokenizer()
    size = (
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4)
        if tiny
        else dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=16)
    )
    config = LlamaConfig(
        vocab_size=32000,
        num_key_value_heads=size["num_attention_heads"],
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        **size,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def write_corpus(path: Path, tokens: int) -> Path:
    from tests.fixtures.causal_lm import all_words

    rng = random.Random(0)
    words = all_words()
    lines = (" ".join(rng.choice(words) for _ in range(40)) for _ in range(tokens // 40 + 1))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_mode(name: str, model: Path, corpus: Path, home: Path, args) -> dict:
    from tunedesk.engine.config import DataSpec, FreezeSpec, HyperParams, ModelSpec, RunConfig
    from tunedesk.engine.lm import lora
    from tunedesk.engine.run.runner import execute
    from tunedesk.engine.structure import build_meta_model

    preset = MODES[name]
    freeze = (
        FreezeSpec(preset="all")
        if preset is None
        else lora.preset_spec(preset[0], rank=16, alpha=32, dropout=0.05, **preset[1])
    )
    ckpt = name.endswith("+ckpt")
    h = HyperParams(
        epochs=1,
        batch_size=args.batch,
        max_length=args.seq,
        max_steps=args.steps,
        log_every=5,
        warmup_ratio=0.0,
        gradient_checkpointing=ckpt,
        prompts=["where is my parcel"],
        sample_max_new_tokens=8,
    )
    config = RunConfig(
        task="causal_lm",
        model=ModelSpec(str(model)),
        data=DataSpec(kind="text_corpus", path=str(corpus), val_fraction=0.02),
        freeze=freeze,
        hparams=h,
        device=args.device,
        precision=args.precision,
        seed=1,
    )
    meta = build_meta_model(model, "causal_lm")
    cuda = args.device.startswith("cuda")
    est = lora.estimate_memory(
        meta.model,
        freeze,
        batch_size=args.batch,
        precision=args.precision,
        sequence_length=args.seq,
        cuda=cuda,
        gradient_checkpointing=ckpt,
    )
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    result = execute(config, home=home)
    wall = time.perf_counter() - t
    if result.status != "completed":
        raise SystemExit(f"{name}: {result.status}: {result.reason} {result.hint}")
    peak = torch.cuda.max_memory_allocated() if cuda else None
    estimate = est.total - est.overhead
    row = {
        "mode": name,
        "samples_per_s": round(result.samples_per_second, 2),
        "tokens_per_s": round(result.samples_per_second * args.seq),
        "wall_s": round(wall, 1),
        "estimate_gib": round(estimate / 2**30, 2),
        "peak_gib": round(peak / 2**30, 2) if peak else None,
        "estimate_over_peak": round(estimate / peak, 2) if peak else None,
        "val_loss": round(result.metrics["val_loss"], 3),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args()
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    args.batch = args.batch or (2 if args.tiny else 8)
    args.seq = args.seq or (64 if args.tiny else 1024)
    args.steps = args.steps or (4 if args.tiny else 30)
    work = Path(tempfile.mkdtemp(prefix="tunedesk-lm-bench-"))
    model = build_model(work / "llama", args.tiny)
    corpus = write_corpus(work / "corpus.txt", int(args.batch * args.seq * (args.steps + 2) * 1.1))
    params = sum(
        p.numel()
        for p in __import__("safetensors.torch", fromlist=["load_file"])
        .load_file(str(model / "model.safetensors"))
        .values()
    )
    rows = [run_mode(m, model, corpus, work / f"home-{i}", args) for i, m in enumerate(args.modes.split(","))]
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(
        json.dumps(
            {
                "benchmark": "lm_lora",
                "device": device,
                "torch": torch.__version__,
                "params": params,
                "batch": args.batch,
                "seq": args.seq,
                "steps": args.steps,
                "precision": args.precision,
                "rows": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
