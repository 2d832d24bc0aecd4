"""Do TuneDesk's defaults give the best model the data allows? Defaults against a grid of fixed recipes.

For each calibration data set (real labelled text, see benchmarks/calibration_sets.py) it trains the
bundled all-MiniLM-L6-v2 with

- ``defaults``: a configuration that names only the model and the data (and the split), and
- a grid of fixed recipes: learning rate 1e-5, 3e-5, 1e-4, 3e-4 x 3 and 10 epochs (cosine schedule,
  everything at that one rate, no early stopping), the engine's own defaults for everything else,

all on the same split and seed, and prints each run's best validation accuracy and wall time, then a
summary per data set (is the default within 1 point of the best recipe, in no more time?) and a JSON
line last.

    python benchmarks/default_quality.py                       # everything (hours on 2 CPU cores)
    python benchmarks/default_quality.py --sets debian --only grid --results /tmp/grid.jsonl
    python benchmarks/default_quality.py --report /tmp/grid.jsonl /tmp/defaults.jsonl
    # one grid recipe only (LRxEPOCHS, a comma list)
    python benchmarks/default_quality.py --sets fortunes --only grid --recipes 3e-4x3
    # a candidate default beside the real one: the defaults with some hyperparameters changed
    python benchmarks/default_quality.py --only none --variant "short cosine:auto_min_steps=100,schedule=cosine"
    # the run's precision too (not a hyperparameter): fp32 against bf16 autocast on this CPU
    python benchmarks/default_quality.py --only none --variant "fp32:precision=fp32" --variant "bf16:precision=bf16"
    python benchmarks/default_quality.py --only none --variant "frozen words:freeze=bert.embeddings.word_embeddings"
    # two cores, two processes of one thread each, one results file:
    python benchmarks/default_quality.py --sets fortunes --only defaults,grid --part 1/2 --threads 1 --results r.jsonl &
    python benchmarks/default_quality.py --sets fortunes --only defaults,grid --part 2/2 --threads 1 --results r.jsonl

Each finished run is appended to ``--results`` as one JSON line, so parts can run in parallel or be
resumed, and ``--report`` summarises any number of such files. Wall time depends on what else the
machine runs: compare runs made side by side, and read ``cpu_s`` (this process's CPU seconds) too.
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
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

LRS = (1e-5, 3e-5, 1e-4, 3e-4)
EPOCHS = (3, 10)
VAL_FRACTION = 0.25
SEED = 42


def base_config(data_path: Path, device: str, seed: int = SEED):
    from tunedesk.engine.catalog import demo_model_path
    from tunedesk.engine.config import DataSpec, ModelSpec, RunConfig

    return RunConfig(
        task="text_classification",
        model=ModelSpec(str(demo_model_path()), source="hf"),
        data=DataSpec(kind="text_table", path=str(data_path), val_fraction=VAL_FRACTION),
        device=device,
        seed=seed,
    )


def recipes(only: str, part: str = "1/1", grid_filter: str = "") -> list[tuple[str, float | None, int | None]]:
    """The runs ``--only`` names (a comma list), and of those the share ``part`` ("K/N": every N-th from
    the K-th), so that N processes on N cores can split one measurement. ``grid_filter`` ("3e-4x3,1e-4x10")
    keeps only those grid recipes."""
    out: list[tuple[str, float | None, int | None]] = []
    wanted = set(only.split(","))
    if "all" in wanted:
        wanted |= {"defaults", "schedules", "grid"}
    if "defaults" in wanted:
        out.append(("defaults", None, None))
    if "schedules" in wanted:
        # the schedule question: auto length with a cosine over the whole budget instead of halve-on-plateau
        out.append(("defaults, cosine over budget", None, None))
    if "grid" in wanted:
        # the likely best first, so that a partial grid on a slow machine still answers the question
        likely = (1e-4, 3e-4, 3e-5, 1e-5)
        grid = [(lr, ep) for pair in zip(likely[::2], likely[1::2]) for ep in EPOCHS[::-1] for lr in pair]
        if grid_filter:
            keep = {(float(lr), int(ep)) for lr, ep in (item.split("x") for item in grid_filter.split(","))}
            grid = [(lr, ep) for lr, ep in grid if (lr, ep) in keep]
        out += [(f"lr {lr:g} x {ep} epochs", lr, ep) for lr, ep in grid]
    k, n = (int(x) for x in part.split("/"))
    return out[k - 1 :: n]


def parse_variant(text: str) -> tuple[str, dict]:
    """``"short cosine:auto_min_steps=100,schedule=cosine"`` -> (label, hparam overrides): a candidate
    default measured beside the defaults (values parsed as JSON where they can be, else strings)."""
    label, _, pairs = text.partition(":")
    overrides = {}
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value.strip()
    return f"variant {label.strip()}", overrides


def run_one(
    set_name: str,
    data_path: Path,
    label: str,
    lr: float | None,
    epochs: int | None,
    device: str,
    overrides: dict | None = None,
    seed: int = SEED,
) -> dict:
    from tunedesk.engine.run.runner import execute
    from tunedesk.engine.store import RunStore

    cfg = base_config(data_path, device, seed)
    if label == "defaults, cosine over budget":
        cfg.hparams.schedule = "cosine"
    for key, value in (overrides or {}).items():
        if key == "precision":  # the run's, not a hyperparameter: fp32, bf16 (autocast), auto
            cfg.precision = value
            continue
        if key == "freeze":  # a module path glob or token to freeze, e.g. bert.embeddings.word_embeddings
            from tunedesk.engine.config import FreezeRule

            cfg.freeze.rules.append(FreezeRule(str(value), False))
            continue
        if not hasattr(cfg.hparams, key):
            raise SystemExit(f"--variant: no hyperparameter {key!r}")
        setattr(cfg.hparams, key, value)
    if lr is not None:
        cfg.hparams.learning_rate = lr
    if epochs is not None:
        cfg.hparams.epochs = epochs
    with tempfile.TemporaryDirectory(prefix="tunedesk-quality-") as home:
        t0, c0 = time.perf_counter(), time.process_time()
        result = execute(cfg, home=home)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        store = RunStore(Path(home) / "tunedesk.db")
        try:
            epochs = store.epoch_metrics(result.run_id)
            epochs_run = len(epochs)
            record = store.get_run(result.run_id)
        finally:
            store.close()
    resolved = (record.get("config") or {}).get("_resolved", {})
    return {
        "set": set_name,
        "recipe": label,
        "seed": seed,
        "lr": resolved.get("learning_rate", lr),
        "head_lr": resolved.get("head_learning_rate"),
        "epochs_run": epochs_run,
        "status": result.status,
        "best_val_accuracy": result.best_metric,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "auto_summary": result.summary,
        "overrides": overrides or {},
        # validation accuracy after each epoch: stopping rules can be tried on it afterwards (what_if)
        "curve": [e["metrics"].get("val_accuracy", e["metrics"].get("accuracy")) for e in epochs],
    }


def what_if(row: dict, patience: int) -> tuple[int, float, float] | None:
    """(epochs, best accuracy, CPU s) had the auto run stopped after ``patience`` epochs without a new
    best. Exact while the run's schedule does not depend on the stopping rule (halve-on-plateau only
    looks at improvements), the CPU time prorated by epochs."""
    curve = [a for a in row.get("curve") or [] if a is not None]
    if not curve:
        return None
    best, best_at = -1.0, 0
    stop = len(curve)
    for e, acc in enumerate(curve, start=1):
        if acc > best:
            best, best_at = acc, e
        elif e - best_at >= patience:
            stop = e
            break
    return stop, max(curve[:stop]), row["cpu_s"] * stop / len(curve)


def _set_key(row: dict) -> str:
    """Runs on another split (``--seed``) are summarised apart: "fortunes, seed 7"."""
    seed = row.get("seed", SEED)
    return row["set"] if seed == SEED else f"{row['set']}, seed {seed}"


def report(rows: list[dict]) -> dict:
    summary = {}
    for set_name in sorted({_set_key(r) for r in rows}):
        mine = [r for r in rows if _set_key(r) == set_name]
        grid = [r for r in mine if r["recipe"].startswith("lr ") and r["best_val_accuracy"] is not None]
        defaults = [r for r in mine if r["recipe"] == "defaults"]
        print(f"\n{set_name}")
        print(f"  {'recipe':<34} {'epochs':>6} {'accuracy':>9} {'wall s':>8} {'cpu s':>8}")
        for r in sorted(mine, key=lambda r: (r["recipe"] != "defaults", r["recipe"])):
            acc = r["best_val_accuracy"]
            print(
                f"  {r['recipe']:<34} {r['epochs_run']:>6} {'' if acc is None else f'{acc:.3f}':>9} "
                f"{r['wall_s']:>8.0f} {r['cpu_s']:>8.0f}"
            )
        entry: dict = {}
        if grid:
            # ties go to the cheaper run; CPU seconds, as wall time depends on what else the machine runs
            best = max(grid, key=lambda r: (r["best_val_accuracy"], -r["cpu_s"]))
            entry["best_recipe"] = best["recipe"]
            entry["best_accuracy"] = best["best_val_accuracy"]
            entry["best_wall_s"] = best["wall_s"]
            entry["best_cpu_s"] = best["cpu_s"]
        if defaults:
            d = defaults[-1]
            entry["defaults_accuracy"] = d["best_val_accuracy"]
            entry["defaults_wall_s"] = d["wall_s"]
            entry["defaults_cpu_s"] = d["cpu_s"]
            entry["defaults_epochs"] = d["epochs_run"]
            entry["defaults_lr"] = d["lr"]
        if grid and defaults and entry["defaults_accuracy"] is not None:
            gap = 100 * (entry["best_accuracy"] - entry["defaults_accuracy"])
            entry["gap_points"] = round(gap, 1)
            entry["within_1_point"] = gap <= 1.0 + 1e-9
            entry["no_slower_cpu"] = entry["defaults_cpu_s"] <= entry["best_cpu_s"]
            print(
                f"  defaults {entry['defaults_accuracy']:.3f} in {entry['defaults_cpu_s']:.0f} CPU s vs best recipe "
                f"({best['recipe']}) {entry['best_accuracy']:.3f} in {entry['best_cpu_s']:.0f} CPU s: "
                f"{gap:+.1f} points behind"
            )
        for d in defaults[-1:]:
            for p in (1, 2, 3):
                w = what_if(d, p)
                if w is not None:
                    print(f"  what if patience {p}: {w[0]} epochs, best {w[1]:.3f}, about {w[2]:.0f} CPU s")
                    entry[f"patience_{p}"] = {"epochs": w[0], "accuracy": w[1], "cpu_s": round(w[2], 1)}
        if grid:
            # every candidate (the defaults and each variant, its last run) against the same best recipe
            candidates = {r["recipe"]: r for r in mine if not r["recipe"].startswith("lr ")}
            verdicts = {}
            for label, r in sorted(candidates.items()):
                if r["best_val_accuracy"] is None:
                    continue
                gap = 100 * (best["best_val_accuracy"] - r["best_val_accuracy"])
                ratio = r["cpu_s"] / max(best["cpu_s"], 1e-9)
                met = gap <= 1.0 + 1e-9 and ratio <= 1.0
                verdicts[label] = {"gap_points": round(gap, 1), "cpu_ratio": round(ratio, 2), "met": met}
                print(
                    f"  {label:<34} {gap:+5.1f} points, {ratio:.2f}x the best recipe's CPU s: "
                    f"{'met' if met else 'not met'}"
                )
            entry["candidates"] = verdicts
        summary[set_name] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="debian,wordnet,fortunes")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "tunedesk-calibration"))
    ap.add_argument("--only", default="all", help="a comma list of: all, defaults, grid, schedules, none")
    ap.add_argument("--recipes", default="", help="only these grid recipes, e.g. 3e-4x3,1e-4x10 (LRxEPOCHS)")
    ap.add_argument("--part", default="1/1", help="K/N: only every N-th of those runs from the K-th (parallel parts)")
    ap.add_argument("--results", help="append each run as a JSON line to this file (default: a temporary file)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=SEED, help="the split's and the run's seed (another split: robustness)")
    ap.add_argument("--report", nargs="+", metavar="JSONL", help="only summarise these results files")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:KEY=VALUE,...",
        help="also run a candidate default: the defaults with these hyperparameters changed (repeatable)",
    )
    args = ap.parse_args(argv)

    if args.report:
        rows = [json.loads(line) for f in args.report for line in Path(f).read_text().splitlines() if line.strip()]
        print(json.dumps(report(rows)))
        return 0

    import torch

    from calibration_sets import write_sets

    if args.threads:
        torch.set_num_threads(args.threads)
    results = Path(args.results or tempfile.mkstemp(prefix="default-quality-", suffix=".jsonl")[1])
    paths = write_sets(Path(args.data), args.sets.split(","))
    rows = []
    for set_name, path in paths.items():
        runs = [(label, lr, epochs, None) for label, lr, epochs in recipes(args.only, args.part, args.recipes)]
        k, n = (int(x) for x in args.part.split("/"))
        variants = [parse_variant(v) for v in args.variant][k - 1 :: n]
        runs += [(label, None, None, overrides) for label, overrides in variants]
        for label, lr, epochs, overrides in runs:
            row = run_one(set_name, path, label, lr, epochs, args.device, overrides, args.seed)
            rows.append(row)
            with open(results, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            print(
                f"{set_name:<9} {label:<24} epochs {row['epochs_run']:>2}  accuracy {row['best_val_accuracy']}  "
                f"{row['wall_s']:.0f} s {row['auto_summary']}",
                flush=True,
            )
    print(f"results: {results}")
    print(json.dumps(report(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
