"""Before the first step of a text run: reading the table, tokenising, and the padded token tensors.

A one-epoch run on a GPU is judged by its wall time against its training time (issue 13), and on a
big CSV what comes before the first step is mostly these three. This times each on the texts of
``feed_e2e.py`` (80-120 words, word-level vocabulary) with a BERT tokenizer:

- ``read``: ``read_text_table`` (encoding detection, CSV parsing, the report);
- ``tokenise, 1 core``: the fast tokenizer with TOKENIZERS_PARALLELISM "false" (what the command
  line did before 2026-12-07 for the whole run);
- ``tokenise``: ``text_classification.tokenize`` (chunks, every core for the length of each call);
- ``tensors``: ``TokenTensors`` (the feed's padded int64 arrays, one scatter per key).

    python benchmarks/text_prepare.py                # 32,000 texts, as feed_e2e.py's GPU case
    python benchmarks/text_prepare.py --texts 4000   # a quick try

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _best_of(repeat: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=32000)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs of each part")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "tunedesk-text-prepare"))
    args = ap.parse_args(argv)

    from feed_e2e import make_text_model, make_texts
    from tunedesk.engine.data.tensors import TokenTensors
    from tunedesk.engine.data.text import read_text_table
    from tunedesk.engine.tasks import text_classification as tc

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = make_texts(out / f"texts-{args.texts}.csv", args.texts)
    tokenizer = tc.load_tokenizer(str(make_text_model(out / "bert", "tiny")))

    read_s, (examples, _report) = _best_of(args.repeat, lambda: read_text_table(csv_path))
    texts = [e.text for e in examples]

    def one_core():
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        return tokenizer(texts, truncation=True, max_length=args.max_length)

    single_s, _ = _best_of(args.repeat, one_core)
    tok_s, enc = _best_of(args.repeat, lambda: tc.tokenize(tokenizer, texts, args.max_length))
    tensors_s, tensors = _best_of(args.repeat, lambda: TokenTensors(enc, [0] * len(texts)))
    tokens = int(tensors.lengths.sum())

    figures = {
        "texts": len(texts),
        "tokens": tokens,
        "cores": os.cpu_count(),
        "read_s": round(read_s, 3),
        "tokenise_one_core_s": round(single_s, 3),
        "tokenise_s": round(tok_s, 3),
        "tensors_s": round(tensors_s, 3),
    }
    print(f"{len(texts):,} texts, {tokens:,} tokens, {os.cpu_count()} cores")
    for name, key in (
        ("read", "read_s"),
        ("tokenise, 1 core", "tokenise_one_core_s"),
        ("tokenise", "tokenise_s"),
        ("tensors", "tensors_s"),
    ):
        secs = figures[key]
        print(f"  {name:<18} {secs:7.2f} s  {len(texts) / max(secs, 1e-9):>10,.0f} texts/s")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
