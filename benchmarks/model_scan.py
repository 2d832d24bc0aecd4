"""How fast the Models view fills: scan a fake Hugging Face cache of 500 model folders.

The cache is generated in a temporary folder in the real hub layout (blobs + snapshot symlinks +
refs/main): tiny BERT/GPT-2/RoBERTa/Llama-style configs of varied sizes, each a fine-tuned copy of
one of ``--distinct`` base configs (different head sizes included), with tiny but valid safetensors
files, plus a few broken repos (half downloads, bad JSON, missing shards). A few hundred KB in all.

Timed, each on the same cache:

* import_seconds: importing torch + transformers and the five modeling modules once (paid by the
                  first count of a session, whatever the number of models)
* seconds:        scan() with those imported and all count caches empty             (target < 2 s)
* cold_seconds:   import_seconds + seconds: a first-ever scan in a fresh process
* rescan_seconds: scan() again in the same process (counts memoised by config file + mtime)
* warm_start_seconds: a fresh process (interpreter start included) whose scan reads the counts from
  the persistent count cache, as a TuneDesk restart does; ``warm_start_imported_torch`` says
  whether it had to import torch

    python benchmarks/model_scan.py
    python benchmarks/model_scan.py --models 2000 --distinct 100

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from tunedesk.engine import catalog  # noqa: E402

REV = "9f1c2d3e4b5a69788796a5b4c3d2e1f001122334"


def tiny_safetensors(rng: random.Random) -> bytes:
    """A valid safetensors file holding one small float32 tensor."""
    n = rng.randint(4, 32)
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(4 * n)


def base_configs(rng: random.Random, distinct: int) -> list[dict]:
    """``distinct`` architecture configs of varied sizes (BERT, RoBERTa, GPT-2, Llama styles, heads)."""
    configs = []
    while len(configs) < distinct:
        hidden = rng.choice([32, 64, 96, 128, 192, 256])
        heads = rng.choice([h for h in (2, 4, 8) if hidden % h == 0])
        layers = rng.choice([1, 2, 3, 4, 6])
        vocab = rng.choice([500, 1000, 2000, 5000])
        style = rng.choice(["bert", "bert-cls", "roberta", "gpt2", "llama"])
        if style in ("bert", "bert-cls", "roberta"):
            cfg = {
                "model_type": "roberta" if style == "roberta" else "bert",
                "hidden_size": hidden,
                "num_hidden_layers": layers,
                "num_attention_heads": heads,
                "intermediate_size": hidden * 4,
                "vocab_size": vocab,
                "max_position_embeddings": 130,
                "type_vocab_size": 2,
            }
            if style == "bert-cls":
                cfg["architectures"] = ["BertForSequenceClassification"]
                labels = rng.randint(2, 6)
                cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(labels)}
                cfg["label2id"] = {f"LABEL_{i}": i for i in range(labels)}
            else:
                cfg["architectures"] = ["RobertaModel" if style == "roberta" else "BertModel"]
        elif style == "gpt2":
            cfg = {
                "model_type": "gpt2",
                "architectures": ["GPT2LMHeadModel"],
                "n_embd": hidden,
                "n_layer": layers,
                "n_head": heads,
                "vocab_size": vocab,
                "n_positions": 256,
                "bos_token_id": 0,
                "eos_token_id": 0,
            }
        else:
            cfg = {
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": hidden,
                "num_hidden_layers": layers,
                "num_attention_heads": heads,
                "num_key_value_heads": heads,
                "intermediate_size": hidden * 3,
                "vocab_size": vocab,
                "max_position_embeddings": 512,
            }
        if cfg not in configs:
            configs.append(cfg)
    return configs


def write_repo(cache: Path, repo_id: str, files: dict[str, bytes], partial: bytes | None = None) -> None:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REV
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        os.symlink(os.path.join("..", "..", "blobs", blob.name), snapshot / name)
    if partial is not None:
        (repo / "blobs" / (hashlib.sha256(partial).hexdigest() + ".incomplete")).write_bytes(partial[:16])


def generate(cache: Path, models: int, distinct: int, seed: int = 7) -> dict[str, int]:
    rng = random.Random(seed)
    bases = base_configs(rng, distinct)
    stats = {"broken": 0}
    card = b"---\nlicense: apache-2.0\n---\n# a fine-tuned model\n"
    for i in range(models):
        cfg = dict(rng.choice(bases))
        cfg["_name_or_path"] = f"team/base-{i % 37}"
        cfg["transformers_version"] = rng.choice(["4.38.2", "4.44.0", "4.51.3"])
        repo_id = f"org{i % 23}/model-{i:04d}"
        weights = tiny_safetensors(rng)
        files = {"config.json": json.dumps(cfg, indent=2).encode(), "README.md": card}
        kind = i % 50
        if kind == 7:  # half download
            write_repo(cache, repo_id, files, partial=weights)
            stats["broken"] += 1
            continue
        if kind == 19:  # unreadable config
            files["config.json"] = b'{"model_type": "bert", '
            stats["broken"] += 1
        if kind == 31:  # sharded, one shard missing
            index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
            files["model.safetensors.index.json"] = json.dumps(index).encode()
            files["model-00001-of-00002.safetensors"] = weights
            stats["broken"] += 1
        else:
            files["model.safetensors"] = weights
        write_repo(cache, repo_id, files)
    return stats


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


WARM_CHILD = """
import json, sys, time
t = time.perf_counter()
sys.path.insert(0, {src!r})
from pathlib import Path
from tunedesk.engine import catalog
roots = catalog.CatalogRoots(hf_caches=[Path({cache!r})], scan_packages=False, cache_file=Path({counts!r}))
entries = catalog.scan(roots)
print(json.dumps({{"seconds": time.perf_counter() - t, "torch": "torch" in sys.modules,
                   "counted": sum(e.parameters is not None for e in entries)}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--distinct", type=int, default=40, help="distinct architecture configs among the models")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tunedesk-scan-"))
    try:
        cache = tmp / "hub"
        cache.mkdir()
        stats = generate(cache, args.models, args.distinct)

        t = time.perf_counter()
        import torch  # noqa: F401
        import transformers

        for cls in (
            "BertModel",
            "BertForSequenceClassification",
            "RobertaModel",
            "GPT2LMHeadModel",
            "LlamaForCausalLM",
        ):
            getattr(transformers, cls)  # transformers imports each modeling module lazily, once per process
        import_seconds = time.perf_counter() - t

        counts_file = tmp / "counts.json"
        roots = catalog.CatalogRoots(hf_caches=[cache], scan_packages=False, cache_file=counts_file)
        catalog.clear_memo()
        t = time.perf_counter()
        entries = catalog.scan(roots)
        seconds = time.perf_counter() - t

        t = time.perf_counter()
        catalog.scan(roots)
        rescan = time.perf_counter() - t

        child = WARM_CHILD.format(src=str(SRC), cache=str(cache), counts=str(counts_file))
        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
        warm = json.loads(out.stdout.strip().splitlines()[-1])

        broken = sum(1 for e in entries if e.problem)
        counted = sum(1 for e in entries if e.parameters is not None)
        print(
            f"generated {args.models} models ({args.distinct} distinct configs, {stats['broken']} broken), "
            f"{du(tmp) / 1e6:.2f} MB on disk"
        )
        print(f"listed {len(entries)}: {counted} with parameter counts, {broken} with a problem")
        print(
            f"import torch+transformers {import_seconds:.2f} s; scan {seconds:.2f} s; rescan {rescan:.3f} s; "
            f"fresh process with count cache {warm['seconds']:.2f} s (imported torch: {warm['torch']})"
        )
        assert len(entries) == args.models and broken == stats["broken"], "scan result does not match the cache"
        assert warm["counted"] == counted
        result = {
            "benchmark": "model_scan",
            "models": len(entries),
            "seconds": round(seconds, 3),
            "per_model_ms": round(1000 * seconds / max(1, len(entries)), 3),
            "distinct_configs": args.distinct,
            "import_seconds": round(import_seconds, 2),
            "cold_seconds": round(import_seconds + seconds, 2),
            "rescan_seconds": round(rescan, 3),
            "warm_start_seconds": round(warm["seconds"], 3),
            "warm_start_imported_torch": warm["torch"],
            "broken": broken,
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
