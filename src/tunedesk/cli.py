"""`tunedesk` opens the app; its sub-commands work headless: train, runs, models, demo.

A user mistake prints one clear line with a hint and exits with status 2, never a traceback.
With ``--json`` the last line of standard output is a machine-readable result.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EXIT_USER_ERROR = 2


def _epochs_arg(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of epochs or auto, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunedesk", description="Fine-tune pre-trained models on this machine, offline."
    )
    parser.add_argument(
        "--home", help="folder for TuneDesk's database and runs (default: $TUNEDESK_HOME or the user data folder)"
    )
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("train", help="fine-tune from a configuration file (JSON or TOML), headless")
    p.add_argument("config", help="run configuration file (.json or .toml)")
    p.add_argument("--json", action="store_true", help="print a JSON result as the last line")
    p.add_argument("--device", help="override the configuration's device (auto, cpu, cuda, cuda:N, mps)")
    p.add_argument("--epochs", type=_epochs_arg, help="override the number of epochs (a number, or auto)")
    p.add_argument("--dataset-version", help="train on a saved data set version instead of the configured data")
    _add_parallel_arguments(p)
    p.add_argument("--nodes", type=int, help="print the torchrun command line for each of this many machines")
    p.add_argument("--rdzv", metavar="HOST:PORT", help="with --nodes: the rendezvous (first node and a free port)")
    p.add_argument("--slurm", metavar="FILE", help="write an sbatch script running the run with srun torchrun")

    p = sub.add_parser("demo", help="fine-tune the bundled MiniLM on the bundled support-ticket data (CPU, offline)")
    p.add_argument("--json", action="store_true", help="print a JSON result as the last line")
    p.add_argument(
        "--compare-scratch",
        action="store_true",
        help="also train the same architecture from random weights with the same budget",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--epochs", type=int, default=None)

    p = sub.add_parser("runs", help="list, show, resume, export or delete past runs")
    p.add_argument("--json", action="store_true")
    rsub = p.add_subparsers(dest="runs_command")
    r = rsub.add_parser("list", help="list runs (the default)")
    r.add_argument("--json", action="store_true")
    r.add_argument("--status")
    r.add_argument("--search")
    r.add_argument("--limit", type=int, default=50)
    r = rsub.add_parser("show", help="one run with its metrics")
    r.add_argument("run_id", type=int)
    r.add_argument("--json", action="store_true")
    r = rsub.add_parser("resume", help="continue a stopped or interrupted run from its last checkpoint")
    r.add_argument("run_id", type=int)
    r.add_argument("--json", action="store_true")
    _add_parallel_arguments(r)
    r = rsub.add_parser(
        "export", help="export a run's best model (Hugging Face folder, torchvision weights, timm folder or ONNX)"
    )
    r.add_argument("run_id", type=int)
    r.add_argument("directory", help="a new or empty folder")
    r.add_argument(
        "--format",
        default="auto",
        choices=["auto", "hf", "torchvision", "timm", "onnx", "merged", "adapter", "tensorboard"],
        help="auto: hf for Hugging Face models, torchvision or timm for those, merged for language "
        "models (adapter: their LoRA adapter only); onnx needs `pip install onnx`; tensorboard: the run's "
        "curves, evaluations, settings and freeze plan as event files for `tensorboard --logdir`",
    )
    r.add_argument("--json", action="store_true")
    r = rsub.add_parser("delete", help="delete a run and its files")
    r.add_argument("run_id", type=int)
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = sub.add_parser("models", help="list the pre-trained models found on this machine")
    p.add_argument("--json", action="store_true")
    p.add_argument("--add", metavar="PATH", help="remember a folder or weights file to scan")
    return parser


def _add_parallel_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpus", type=int, help="data-parallel on this many local GPUs (torchrun, DDP)")
    p.add_argument("--nproc", type=int, help="data-parallel on this many CPU processes (torchrun, gloo)")


def _parallel(args, config=None) -> int | None:
    """--gpus/--nproc/--nodes/--slurm: the run goes through torchrun (engine.launch); None: one process."""
    from tunedesk.engine import launch

    if getattr(args, "slurm", None) or getattr(args, "nodes", None):
        nodes, per_node = args.nodes or 1, args.gpus or 1
        if args.slurm:
            Path(args.slurm).write_text(launch.slurm_script(Path(args.config), nodes, per_node), encoding="utf-8")
            print(f"wrote {args.slurm}: submit it with `sbatch {args.slurm}`")
            return 0
        if not args.rdzv:
            raise launch.TuneDeskError("--nodes needs --rdzv HOST:PORT", "name the first node and a free port")
        print("\n".join(launch.node_commands(Path(args.config), nodes, args.rdzv, per_node)))
        return 0
    if not (args.gpus or args.nproc):
        return None
    resume = getattr(args, "run_id", None)
    n = args.gpus or args.nproc
    result = launch.launch_local(
        n, config, resume=resume, gpus=bool(args.gpus), say=lambda m: print(m, file=sys.stderr)
    )
    _print_result(result, args.json)
    return 0 if result.status in ("completed", "stopped") else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.home:
        os.environ["TUNEDESK_HOME"] = str(Path(args.home).expanduser().resolve())
    from tunedesk.engine.errors import TuneDeskError

    try:
        if args.command is None:
            from tunedesk.ui.app import run_app

            return run_app()
        handler = {"train": cmd_train, "demo": cmd_demo, "runs": cmd_runs, "models": cmd_models}[args.command]
        return handler(args)
    except TuneDeskError as exc:
        return _user_error(exc.message, exc.hint, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except sqlite3.Error as exc:  # the history failed mid-command (disk full, locked, read-only)
        from tunedesk.engine.paths import database_path
        from tunedesk.engine.store.connection import database_error

        err = database_error(exc, database_path())
        return _user_error(err.message, err.hint, args)
    except OSError as exc:  # a full disk, a permission, a read-only folder: the user's machine, not a bug
        from tunedesk.engine.errors import os_error

        err = os_error(exc, exc.filename or "a file", "")
        return _user_error(err.message, err.hint, args)
    except ImportError as exc:  # a broken installation is the user's environment, not a TuneDesk bug
        print(f"error: a library TuneDesk needs could not be loaded ({exc})", file=sys.stderr)
        print("hint: reinstall TuneDesk and its dependencies: pip install --force-reinstall -e .", file=sys.stderr)
        return EXIT_USER_ERROR


def _user_error(message: str, hint: str, args: argparse.Namespace) -> int:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"status": "error", "error": message, "hint": hint}))
    return EXIT_USER_ERROR


# ---- train / demo ---------------------------------------------------------------------------------


class ProgressPrinter:
    """Turns engine events into a tqdm progress bar and log lines on standard error."""

    def __init__(self, label: str = "training", interactive: bool | None = None) -> None:
        self.label = label
        self.bar = None
        self.done = 0
        # a bar redraws itself with carriage returns: in a log file or a pipe that is one garbled line, so
        # there the steps come as plain lines, about every tenth of the run
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.total = 0
        self.next_line = 0

    def __call__(self, event: Any) -> None:
        kind = event.kind
        if kind == "RunStarted":
            if self.interactive:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=event.total_steps,
                    initial=event.start_step,
                    desc=self.label,
                    unit="step",
                    file=sys.stderr,
                    dynamic_ncols=True,
                    leave=True,
                )
            self.done = event.start_step
            self.total = event.total_steps or 0
            self.next_line = self.done + max(1, self.total // 10)
            self.write(
                f"run {event.run_id}: {event.trainable_params:,} of {event.total_params:,} parameters train "
                f"on {event.device} ({event.precision}), lr {event.learning_rate:g}"
            )
        elif kind == "StepLogged" and self.bar is not None:
            self.bar.update(event.step - self.done)
            self.done = event.step
            self.bar.set_postfix(loss=f"{event.loss:.4f}", sps=f"{event.samples_per_second:.1f}")
        elif kind == "StepLogged":
            self.done = event.step
            if event.step >= self.next_line:
                self.next_line = event.step + max(1, self.total // 10)
                of = f"/{self.total}" if self.total else ""
                self.write(
                    f"{self.label}: step {event.step}{of}, loss {event.loss:.4f}, "
                    f"{event.samples_per_second:.1f} samples/s"
                )
        elif kind == "EpochEnded":
            m = event.metrics
            if "val_perplexity" in m:  # language models
                scores = f"perplexity {m['val_perplexity']:.2f}"
            else:
                scores = f"accuracy {m.get('val_accuracy', 0):.3f}  macro-F1 {m.get('val_macro_f1', 0):.3f}"
            self.write(
                f"epoch {event.epoch}: val_loss {m.get('val_loss', 0):.4f}  {scores}{'  (best)' if event.is_best else ''}"
            )
        elif kind == "SampleGenerated":
            self.write(f"sample (epoch {event.epoch}) {event.prompt[:60]!r} -> {event.text[:120]!r}")
        elif kind == "LogMessage":  # info lines say how the input is fed and whether the feature cache is used
            self.write(f"{event.level}: {event.message}" if event.level in ("warning", "error") else event.message)
        elif kind == "RunFinished" and self.bar is not None:
            self.bar.close()

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)


def _run_with_interrupt(fn, control):
    """Ctrl-C asks the run to stop cleanly (checkpoint, status 'stopped'); a second one aborts."""

    def handler(signum, frame):
        if control.stop_requested:
            raise KeyboardInterrupt
        print("\nstopping after this step (Ctrl-C again to abort)...", file=sys.stderr)
        control.request_stop("stopped from the keyboard")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        return fn()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _print_result(result, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    acc = result.metrics.get("val_accuracy")
    line = f"run {result.run_id} {result.status}"
    if "val_perplexity" in result.metrics:
        line += f": validation loss {result.metrics['val_loss']:.4f}, perplexity {result.metrics['val_perplexity']:.2f}"
    elif acc is not None:
        line += f": validation accuracy {acc:.3f}, macro-F1 {result.metrics.get('val_macro_f1', 0):.3f}"
    line += f", {result.samples_per_second:.1f} samples/s, {result.duration:.0f} s"
    print(line)
    if result.summary:
        print(result.summary)
    if result.reason:
        print(f"{'reason' if result.status in ('completed', 'stopped') else 'error'}: {result.reason}")
    if result.hint:
        print(f"hint: {result.hint}")
    if result.status == "completed":
        print(f"best weights: {result.output_dir}/best")
    if as_json:
        payload = result.to_dict()
        payload.update(extra or {})
        print(json.dumps(payload))


def cmd_train(args) -> int:
    from tunedesk.engine.config import RunConfig
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute

    config = RunConfig.load(args.config)
    if args.device:
        config.device = args.device
    if args.epochs == "auto":
        config.hparams.epochs = None
    elif args.epochs is not None:
        config.hparams.epochs = args.epochs  # 0 or less is refused by validate(), never ignored
    if args.dataset_version:
        config.data.kind = "dataset_version"
        config.data.dataset_version = args.dataset_version
        config.data.path = ""  # the version in this TuneDesk home (the runner records its database)
    if (code := _parallel(args, config)) is not None:
        return code
    control = Control()
    printer = ProgressPrinter()
    result = _run_with_interrupt(
        lambda: execute(config, listeners=[printer], control=control, progress=printer.write), control
    )
    _print_result(result, args.json)
    return result.exit_code


def demo_config(device: str = "auto", epochs: int | None = None, pretrained: bool = True):
    """The model and the data, nothing else: the demo shows what TuneDesk's defaults do (auto length,
    the suggested learning rates, auto batch size)."""
    from tunedesk.engine.catalog import demo_model_path
    from tunedesk.engine.config import DataSpec, HyperParams, ModelSpec, RunConfig
    from tunedesk.engine.paths import resources_dir

    data = resources_dir() / "demo" / "support_tickets.csv"
    return RunConfig(
        name="demo: MiniLM routes support tickets" + ("" if pretrained else " (from scratch)"),
        task="text_classification",
        model=ModelSpec(str(demo_model_path()), source="hf", pretrained=pretrained),
        data=DataSpec(kind="text_table", path=str(data), text_column="text", label_column="label", val_fraction=0.2),
        hparams=HyperParams(epochs=epochs, log_every=5),
        device=device,
        seed=13,
    )


def cmd_demo(args) -> int:
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute

    control = Control()
    config = demo_config(args.device, args.epochs)
    printer = ProgressPrinter("fine-tuning MiniLM")
    result = _run_with_interrupt(
        lambda: execute(config, listeners=[printer], control=control, progress=printer.write), control
    )
    if not args.compare_scratch:
        _print_result(result, args.json)
        return result.exit_code
    _print_result(result, False)
    # The same defaults: the same budget rule and early stopping; a model with no pre-training has no
    # features to protect, so TuneDesk suggests a pre-training-like rate for it (3e-4, the best of 1e-4,
    # 3e-4 and 1e-3 here).
    scratch_cfg = demo_config(args.device, args.epochs, pretrained=False)
    printer2 = ProgressPrinter("training from scratch")
    scratch = _run_with_interrupt(
        lambda: execute(scratch_cfg, listeners=[printer2], control=control, progress=printer2.write), control
    )
    _print_result(scratch, False)
    pre_acc = result.metrics.get("val_accuracy") or 0.0
    scr_acc = scratch.metrics.get("val_accuracy") or 0.0
    print(
        f"pre-trained {pre_acc:.3f} vs from scratch {scr_acc:.3f}: pre-training buys {100 * (pre_acc - scr_acc):+.1f} points"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "run_id": result.run_id,
                    "status": result.status,
                    "val_accuracy": pre_acc,
                    "samples_per_second": round(result.samples_per_second, 2),
                    "pretrained": result.to_dict(),
                    "scratch": scratch.to_dict(),
                    "accuracy_gain": round(pre_acc - scr_acc, 4),
                }
            )
        )
    return result.exit_code or scratch.exit_code


# ---- runs --------------------------------------------------------------------------------------------


def cmd_runs(args) -> int:
    from tunedesk.engine.run.runner import open_store

    command = args.runs_command or "list"
    if command == "resume":
        return _cmd_resume(args)
    if command == "export":
        return _cmd_export(args)
    store = open_store()
    try:
        store.mark_interrupted()
        if command == "list":
            runs = store.list_runs(
                status=getattr(args, "status", None),
                search=getattr(args, "search", None),
                limit=getattr(args, "limit", 50),
            )
            if args.json:
                print(json.dumps(runs, default=str))
                return 0
            if not runs:
                print("no runs yet: try `tunedesk demo`")
                return 0
            print(f"{'id':>4}  {'status':<11} {'started':<19}  {'best':>6}  {'trainable':<28} name")
            for r in runs:
                best = r.get("best_metric")
                print(
                    f"{r['id']:>4}  {r['status']:<11} {(r.get('started_at') or r.get('created_at') or '')[:19]:<19}  "
                    f"{'' if best is None else f'{best:.3f}':>6}  {(r.get('freeze_summary') or '')[:28]:<28} {r.get('name') or ''}"
                )
            return 0
        if command == "show":
            run = store.get_run(args.run_id)
            epochs = store.epoch_metrics(args.run_id)
            checkpoints = store.checkpoints(args.run_id)
            if args.json:
                steps = store.step_metrics(args.run_id)
                print(
                    json.dumps({"run": run, "epochs": epochs, "steps": steps, "checkpoints": checkpoints}, default=str)
                )
                return 0
            _print_run(run, epochs, checkpoints)
            return 0
        if command == "delete":
            run = store.get_run(args.run_id)
            if not args.yes:
                answer = input(f"delete run {args.run_id} ({run.get('name')}) and its files? [y/N] ")
                if answer.strip().lower() not in ("y", "yes"):
                    print("kept")
                    return 0
            from tunedesk.engine.store.history import delete_run

            delete_run(store, args.run_id)  # refuses a live run; a folder the user chose keeps their files
            print(f"deleted run {args.run_id}")
            return 0
    finally:
        store.close()
    return 0


def _print_run(run: dict, epochs: list[dict], checkpoints: dict) -> None:
    print(f"run {run['id']}: {run.get('name')}")
    for key in (
        "status",
        "task",
        "model_name",
        "dataset_name",
        "freeze_summary",
        "device",
        "precision",
        "started_at",
        "finished_at",
        "duration_s",
        "samples_per_second",
        "best_metric",
        "error",
        "error_hint",
        "output_dir",
    ):
        if run.get(key) not in (None, ""):
            print(f"  {key:<19} {run[key]}")
    print(f"  {'trainable':<19} {run.get('trainable_params', 0):,} of {run.get('total_params', 0):,} parameters")
    if epochs:
        print("  epoch  step   val_loss  accuracy  macro-F1")
        for e in epochs:
            m = e.get("metrics") or {}
            print(
                f"  {e['epoch']:>5}  {e['step']:>5}  {m.get('val_loss', 0):9.4f}  {m.get('val_accuracy', 0):8.3f}  "
                f"{m.get('val_macro_f1', 0):8.3f}{'  best' if e.get('is_best') else ''}"
            )
    for kind, c in checkpoints.items():
        print(f"  checkpoint {kind:<5} step {c['step']}: {c['path']}")


def _cmd_resume(args) -> int:
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import resume

    if (code := _parallel(args)) is not None:
        return code
    control = Control()
    printer = ProgressPrinter(f"resuming run {args.run_id}")
    result = _run_with_interrupt(
        lambda: resume(args.run_id, listeners=[printer], control=control, progress=printer.write), control
    )
    _print_result(result, args.json)
    return result.exit_code


def _cmd_export(args) -> int:
    from tunedesk.engine.export import export_run

    result = export_run(args.run_id, Path(args.directory), fmt=args.format)
    print(f"exported run {args.run_id} ({result['format']}) to {result['path']}")
    for name in result["files"]:
        print(f"  {name}")
    if result["format"] == "tensorboard":
        print(f"view it: tensorboard --logdir {result['path']}")
    else:
        print(f"how to load it: {Path(result['path']) / 'README.md'}")
    if args.json:
        print(json.dumps(result, default=str))
    return 0


# ---- models ------------------------------------------------------------------------------------------


def cmd_models(args) -> int:
    from tunedesk.engine import catalog

    if args.add:
        catalog.add_user_path(Path(args.add).expanduser().resolve())
    entries = catalog.scan(catalog.default_roots())
    if args.json:
        print(json.dumps([e.to_dict() for e in entries]))
        return 0
    if not entries:
        print("no pre-trained models found: add a folder with `tunedesk models --add PATH`")
        return 0
    print(f"{'name':<45} {'source':<11} {'task':<22} {'params':>12} {'size':>9} {'format':<11} problem")
    for e in entries:
        params = f"{e.parameters:,}" if e.parameters else "?"
        size = f"{e.size_bytes / 2**20:.0f} MiB"
        print(
            f"{e.name[:45]:<45} {e.source:<11} {(e.task or '?'):<22} {params:>12} {size:>9} {(e.weight_format or '-'):<11} "
            f"{e.problem or ''}"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
