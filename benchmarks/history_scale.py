"""How the run history behaves with years of use: 10,000 runs and 5 million step-metric rows.

Generates the history in a temporary folder (bulk executemany in one transaction per table), then
times what the UI does on every start and filter, each on a freshly opened RunStore:

* open_and_list_ms: RunStore(path) + list_runs(limit=200) + count_runs()          (target < 300 ms)
* filter_ms:        list_runs + count_runs with status + search text
* one_run_metrics_ms: step_metrics(run, max_points=2000) of the longest run (downsampled ``every``)

    python benchmarks/history_scale.py                      # full size (a minute or two to generate)
    python benchmarks/history_scale.py --runs 1000 --rows 500000

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tunedesk.engine.paths import database_path
from tunedesk.engine.store import RunStore

MODELS = [
    ("all-MiniLM-L6-v2", "text_classification"), ("bert-base-uncased", "text_classification"),
    ("distilroberta-base", "text_classification"), ("resnet18", "image_classification"),
    ("resnet50", "image_classification"), ("efficientnet_b0", "image_classification"),
    ("gpt2", "causal_lm"), ("Qwen2.5-0.5B", "causal_lm"),
]  # fmt: skip
DATASETS = ["support-tickets", "reviews", "flowers", "x-rays", "invoices", "chat-logs", "poems", "emails",
            "defects", "birds", "contracts", "recipes"]  # fmt: skip
STATUSES = ["completed"] * 70 + ["failed"] * 12 + ["stopped"] * 10 + ["interrupted"] * 5 + ["queued"] * 3
TAGS = ["baseline", "paper", "keep", "sweep", "lr-test", "v2"]
WORDS = ["quick", "retry", "final", "lr sweep", "frozen", "full", "small batch", "long", "ablation", "check"]


def _names(rng: random.Random, n: int) -> list[str]:
    return [
        f"encoder.layer.{i // 6}.{rng.choice(['attention.self.query', 'attention.output.dense', 'intermediate.dense', 'output.dense'])}.{rng.choice(['weight', 'bias'])}"
        for i in range(n)
    ]


def generate(path: Path, runs: int, rows: int, seed: int = 7) -> tuple[int, int]:
    """Fill the history; return (id of the longest run, its row count)."""
    RunStore(path).close()  # schema via the real migrations
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB while loading
    t0 = datetime(2022, 1, 1, tzinfo=UTC)
    run_rows, tag_rows = [], []
    for i in range(1, runs + 1):
        model, task = rng.choice(MODELS)
        dataset = rng.choice(DATASETS)
        status = rng.choice(STATUSES)
        created = t0 + timedelta(minutes=i * 90 + rng.randint(0, 60))
        started = None if status == "queued" else created + timedelta(seconds=rng.randint(1, 30))
        duration = None if started is None else rng.uniform(30, 7200)
        finished = None if started is None else started + timedelta(seconds=duration)
        tags = rng.sample(TAGS, rng.choice([0, 0, 0, 1, 1, 2]))
        total = rng.choice([22_700_000, 110_000_000, 11_700_000, 124_000_000, 494_000_000])
        run_rows.append((
            i, f"{dataset} {rng.choice(WORDS)} #{i}", status, task, model, f"/models/{model}", f"{rng.getrandbits(64):016x}",
            dataset, f"{rng.getrandbits(64):016x}", rng.choice([None, "v1", "v2", "v3"]), total // rng.randint(2, 50), total,
            f"{rng.randint(1, 100)}% - last {rng.randint(1, 4)} blocks + head", 1000,
            created.isoformat(timespec="milliseconds"),
            started and started.isoformat(timespec="milliseconds"),
            finished and finished.isoformat(timespec="milliseconds"),
            duration, rng.random(), "val_macro_f1", rng.uniform(20, 900),
            "CUDA out of memory" if status == "failed" else None,
            "lower the batch size" if status == "failed" else None,
            f"/home/u/TuneDesk/runs/{i}", rng.choice(["cuda:0", "cpu", "mps"]), rng.choice(["bf16", "fp16", "fp32"]),
            json.dumps(tags), "" if rng.random() < 0.9 else "looks promising, try lower lr", None, None,
            json.dumps({"val_macro_f1": rng.random(), "val_loss": rng.random()}),
            json.dumps({"task": task, "model": {"name_or_path": model}, "hparams": {"learning_rate": 1e-4, "epochs": 3,
                        "batch_size": 32}, "data": {"path": f"/data/{dataset}.csv"}, "padding": "x" * 600}),
            json.dumps(_names(rng, rng.randint(20, 200))),
        ))  # fmt: skip
        tag_rows.extend((i, t) for t in tags)
    cols = (
        "id, name, status, task, model_name, model_path, model_hash, dataset_name, dataset_hash, dataset_version,"
        " trainable_params, total_params, freeze_summary, total_steps, created_at, started_at, finished_at,"
        " duration_s, best_metric, best_metric_name, samples_per_second, error, error_hint, output_dir, device,"
        " precision, tags_json, notes, parent_run_id, pid, final_metrics_json, config_json, trainable_names_json"
    )
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * 33)})", run_rows)
    conn.executemany("INSERT INTO run_tags (run_id, tag) VALUES (?, ?)", tag_rows)
    conn.execute("COMMIT")

    # Step rows: one long run (10% of rows, at most 200k), the rest spread evenly.
    long_run = runs
    long_rows = min(rows // 10, 200_000) if runs > 1 else rows
    rest = rows - long_rows
    per_run, extra = divmod(rest, max(1, runs - 1))

    def step_rows():
        for run_id in range(1, runs + 1):
            n = long_rows if run_id == long_run else per_run + (1 if run_id <= extra else 0)
            loss = 2.5
            for s in range(1, n + 1):
                loss *= 0.9995
                yield (run_id, s, s // 500, loss, 1e-4, 120.0, s * 0.05, 2048.0, 3000.0)

    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO step_metrics (run_id, step, epoch, loss, learning_rate, samples_per_second, elapsed,"
        " gpu_memory_mb, gpu_peak_memory_mb) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        step_rows(),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    conn.close()
    return long_run, long_rows


def _timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=5_000_000, help="step-metric rows in total")
    ap.add_argument("--repeat", type=int, default=5, help="timings are the median of this many tries")
    ap.add_argument("--dir", type=Path, help="keep the generated history here instead of a temp folder")
    args = ap.parse_args(argv)

    home = args.dir or Path(tempfile.mkdtemp(prefix="tunedesk-history-"))
    home.mkdir(parents=True, exist_ok=True)
    path = database_path(home)
    try:
        t = time.perf_counter()
        if path.exists():
            path.unlink()
        long_run, long_rows = generate(path, args.runs, args.rows)
        gen_s = time.perf_counter() - t
        size_mb = path.stat().st_size / 2**20
        print(f"generated {args.runs} runs, {args.rows} step rows in {gen_s:.1f}s ({size_mb:.0f} MiB)", flush=True)

        def open_and_list():
            with RunStore(path) as store:
                return len(store.list_runs(limit=200)), store.count_runs()

        def filtered():
            with RunStore(path) as store:
                return len(store.list_runs(status="completed", search="tickets", limit=200)), store.count_runs(
                    status="completed", search="tickets"
                )

        with RunStore(path) as store:  # one open store, as the UI keeps it

            def one_run():
                return len(store.step_metrics(long_run, max_points=2000))

            metrics_ms, n_points = _timed(one_run, args.repeat)
            every_ms, _ = _timed(lambda: len(store.step_metrics(long_run, every=100)), args.repeat)
            small_ms, _ = _timed(lambda: len(store.step_metrics(1)), args.repeat)
            tag_ms, _ = _timed(lambda: len(store.list_runs(tag="paper", limit=200)), args.repeat)
            get_ms, _ = _timed(lambda: store.get_run(long_run), args.repeat)

        first_open_ms, _ = _timed(open_and_list, 1)
        open_ms, (listed, total) = _timed(open_and_list, args.repeat)
        filter_ms, (f_listed, f_total) = _timed(filtered, args.repeat)
        details = {
            "first_open_and_list_ms": round(first_open_ms, 1),
            "listed": listed, "total": total, "filter_matches": f_total,
            "one_run_rows": long_rows, "one_run_points": n_points, "one_run_every100_ms": round(every_ms, 1),
            "small_run_all_rows_ms": round(small_ms, 2), "tag_filter_ms": round(tag_ms, 2),
            "get_run_ms": round(get_ms, 2), "generate_s": round(gen_s, 1), "db_mib": round(size_mb),
        }  # fmt: skip
        print(json.dumps(details), flush=True)
        print(
            json.dumps(
                {
                    "benchmark": "history_scale",
                    "runs": args.runs,
                    "metric_rows": args.rows,
                    "open_and_list_ms": round(open_ms, 1),
                    "filter_ms": round(filter_ms, 1),
                    "one_run_metrics_ms": round(metrics_ms, 1),
                    "target_open_and_list_ms": 300,
                    "ok": open_ms < 300,
                }
            )
        )
    finally:
        if args.dir is None:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
