"""Starting data-parallel runs through torchrun, here or on a cluster's own launcher.

``launch_local`` runs ``python -m torch.distributed.run --standalone`` with one worker per GPU (or CPU
process with gloo) and turns what happens into a ``RunResult``: the run's outcome as rank 0 recorded it,
or, when a worker died, a failed run record with a sentence saying so. ``node_commands`` and
``slurm_script`` only write the command lines for a cluster: its launcher runs them, not TuneDesk.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunedesk.engine.config import RunConfig
from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.run.distributed import RESULT_FILE_ENV, STOP_FILE_ENV, DistContext, stop_file_requested
from tunedesk.engine.run.events import Control
from tunedesk.engine.run.runner import RunResult, accept, home_dir, open_store

WORKER_MODULE = "tunedesk.engine.launch"


def check_processes(n: int, gpus: bool) -> None:
    if n < 1:
        raise TuneDeskError(f"--{'gpus' if gpus else 'nproc'} must be at least 1 (got {n})", "give 1 or more")
    if gpus:
        import torch

        have = torch.cuda.device_count()
        if have < n:
            raise TuneDeskError(
                f"{n} GPUs asked for, but this machine has {have}",
                f"use --gpus {have}" if have > 1 else "train on one device without --gpus",
            )


def torchrun_args(nproc: int, *, nodes: int = 1, rdzv: str | None = None, run_id: str = "tunedesk") -> list[str]:
    """torchrun's own options: standalone on one machine, a c10d rendezvous across nodes."""
    if nodes <= 1 and rdzv is None:
        return ["--standalone", "--nnodes=1", f"--nproc-per-node={nproc}"]
    return [
        f"--nnodes={nodes}",
        f"--nproc-per-node={nproc}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rdzv}",
        f"--rdzv-id={run_id}",
    ]


def worker_args(config_file: Path | None, *, home: Path | None = None, resume: int | None = None) -> list[str]:
    args = ["-m", WORKER_MODULE]
    if config_file is not None:
        args.append(str(config_file))
    if resume is not None:
        args += ["--resume", str(resume)]
    if home is not None:
        args += ["--home", str(home)]
    return args


def launch_local(
    nproc: int,
    config: RunConfig | None = None,
    *,
    resume: int | None = None,
    home: str | os.PathLike[str] | None = None,
    say: Callable[[str], None] = lambda _m: None,
    gpus: bool = False,
    control: Control | None = None,
) -> RunResult:
    """Train on ``nproc`` local workers. Ctrl-C (main thread) or ``control.request_stop()`` (any
    thread: the app's Stop) stops the run cleanly at the next logging step."""
    check_processes(nproc, gpus)
    home_path = home_dir(home)
    with open_store(home_path) as store:  # a run our workers create gets a later id than these
        before = [r["id"] for r in store.list_runs(limit=1, order="id desc")]
    with tempfile.TemporaryDirectory(prefix="tunedesk-launch-") as tmp:
        work = Path(tmp)
        config_file = None
        if config is not None:
            config = accept(config)
            if not gpus:
                config.device = "cpu"
            config_file = work / "run.json"
            config_file.write_text(config.to_json(), encoding="utf-8")
        result_file, stop_file = work / "result.json", work / "stop"
        cmd = [sys.executable, "-m", WORKER_MODULE, "--torchrun", *torchrun_args(nproc)]
        cmd += worker_args(config_file, home=home_path, resume=resume)
        env = dict(os.environ, **{RESULT_FILE_ENV: str(result_file), STOP_FILE_ENV: str(stop_file)})
        env.setdefault("OMP_NUM_THREADS", "1")
        if not gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""
        say(f"starting {nproc} {'GPU' if gpus else 'CPU'} workers under torchrun")
        # its own session: Ctrl-C reaches only this process, which asks the workers to stop together
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)

        def on_interrupt(signum: int, frame: Any) -> None:
            if stop_file.exists():
                proc.send_signal(signal.SIGTERM)
                return
            print("\nstopping at the next logging step (Ctrl-C again to abort)...", file=sys.stderr)
            stop_file.touch()

        try:
            previous = signal.signal(signal.SIGINT, on_interrupt)
        except ValueError:  # not the main thread
            previous = None
        watching = threading.Event()

        def watch() -> None:  # the app's Stop button: the workers read the stop file
            while not watching.wait(0.2):
                if control is not None and control.stop_requested:
                    stop_file.touch()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            code = proc.wait()
        finally:
            watching.set()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        outcome = _read(result_file)
    if outcome.get("status") == "error":
        raise TuneDeskError(outcome["error"], outcome.get("hint", ""))
    run_id = outcome.get("run_id", resume)
    if run_id is None:  # a worker died between the run's record and its first step
        with open_store(home_path) as store:
            fresh = store.list_runs(status=["queued", "running"], order="id desc")
            run_id = next((r["id"] for r in fresh if not before or r["id"] > before[0]), None)
    status, why = outcome.get("status"), str(outcome.get("reason", ""))
    if status in ("completed", "stopped") and code == 0 or status == "failed" and not why.startswith("internal"):
        return _result(outcome)
    reason = f"a worker process ended unexpectedly (torchrun exit code {code}), so the run was stopped"
    hint = "torchrun's lines above name the worker; resume the run with `tunedesk runs resume ID --nproc N`"
    if run_id is None:
        raise TuneDeskError(reason.replace(", so the run was stopped", " before the run started"), hint)
    store = open_store(home_path)
    try:
        run = store.get_run(int(run_id))
        if run["status"] in ("queued", "running", "failed"):
            store.set_status(int(run_id), "failed", error=reason, error_hint=hint)
        output_dir = run["output_dir"]
    finally:
        store.close()
    return RunResult(int(run_id), "failed", {}, None, 0.0, output_dir, reason, hint)


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _result(d: dict[str, Any]) -> RunResult:
    return RunResult(
        d["run_id"],
        d["status"],
        dict(d.get("metrics") or {}),
        d.get("best_metric"),
        float(d.get("samples_per_second") or 0.0),
        d.get("output_dir", ""),
        d.get("reason", ""),
        d.get("hint", ""),
        float(d.get("duration", 0.0)),
    )


# ---- a cluster's launcher ------------------------------------------------------------------------


def node_commands(config_file: Path, nodes: int, rdzv: str, nproc: int, home: str | None = None) -> list[str]:
    """The command line each node runs (the same on all: torchrun's rendezvous assigns the ranks)."""
    if nodes < 1:
        raise TuneDeskError(f"--nodes must be at least 1 (got {nodes})", "give the number of machines")
    if ":" not in rdzv:
        raise TuneDeskError(
            f"--rdzv {rdzv!r} is not HOST:PORT", "name the first node and a free port, e.g. node1:29500"
        )
    cmd = ["torchrun", *torchrun_args(nproc, nodes=nodes, rdzv=rdzv, run_id=config_file.stem)]
    cmd += worker_args(config_file.resolve(), home=Path(home) if home else None)
    line = shlex.join(cmd)
    return [f"# node {i} of {nodes}\n{line}" for i in range(nodes)]


def slurm_script(config_file: Path, nodes: int, gpus_per_node: int, home: str | None = None) -> str:
    """An sbatch script: one ``srun torchrun`` task per node, the first node as rendezvous host."""
    worker = shlex.join(worker_args(config_file.resolve(), home=Path(home) if home else None))
    return f"""#!/bin/bash
#SBATCH --job-name=tunedesk-{config_file.stem}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus_per_node}
#SBATCH --output=tunedesk-%j.log
# Written by `tunedesk train {config_file.name} --slurm`. TUNEDESK_HOME must be a folder every node
# sees (a shared file system): rank 0 records the run there.

head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun torchrun \\
    --nnodes={nodes} \\
    --nproc-per-node={gpus_per_node} \\
    --rdzv-backend=c10d \\
    --rdzv-endpoint="$head:29500" \\
    --rdzv-id="$SLURM_JOB_ID" \\
    {worker}
"""


# ---- the workers ---------------------------------------------------------------------------------


def _write_result(payload: dict[str, Any]) -> None:
    path = os.environ.get(RESULT_FILE_ENV)
    if path:
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        tmp.replace(path)


def _follower_train(config: Any, ctx: DistContext, resume_run: int | None) -> int:
    """Ranks 1..N-1: the same preparation and loop, nothing recorded or written."""
    from tunedesk.engine.run.events import EventBus
    from tunedesk.engine.run.runner import prepare
    from tunedesk.engine.run.training import Trainer

    try:
        prep = prepare(config)
    except TuneDeskError:
        return 2  # rank 0 meets the same mistake and reports it
    # its own input cache (decoded images): two processes must not write the same cache files
    cache = tempfile.TemporaryDirectory(prefix=f"tunedesk-rank{ctx.rank}-")
    finished = Trainer(
        prep.config,
        prep.task,
        prep.loaded,
        prep.data,
        prep.plan,
        Path(os.devnull),
        EventBus(),
        run_id=resume_run,
        learning_rate=prep.learning_rate,
        head_learning_rate=prep.head_learning_rate,
        cache_dir=Path(cache.name),
        dist=ctx,
    ).run()
    cache.cleanup()
    # a failure here alone must end the run (torchrun then stops the others), not leave rank 0 waiting
    return 0 if finished.status in ("completed", "stopped") else 1


def worker_main(argv: list[str] | None = None) -> int:
    """One torchrun worker: rank 0 runs the recorded run, the others follow it."""
    from tunedesk.engine.run import runner

    parser = argparse.ArgumentParser(prog="tunedesk-worker")
    parser.add_argument("config", nargs="?", help="run configuration (JSON), absent when resuming")
    parser.add_argument("--resume", type=int, help="run id to continue from its last checkpoint")
    parser.add_argument("--home")
    args = parser.parse_args(argv)

    class SharedControl(Control):
        """Stop asked through the launcher's stop file (read at the logging cadence by the loop)."""

        @property
        def stop_requested(self) -> bool:
            if not self._stop.is_set() and stop_file_requested():
                self.request_stop("stopped from the keyboard")
            return self._stop.is_set()

    home = runner.home_dir(args.home)
    if args.resume is not None:
        from tunedesk.engine.store.history import run_config

        store = runner.open_store(home)
        try:
            config = RunConfig.from_dict(run_config(store.get_run(args.resume)))
        finally:
            store.close()
    else:
        config = RunConfig.load(args.config)
    ctx = DistContext.from_env(config.device)
    try:
        if not ctx.is_main:
            return _follower_train(config, ctx, args.resume)

        def note_started(event: Any) -> None:
            if event.kind == "RunStarted":
                _write_result({"run_id": event.run_id})
                print(f"run {event.run_id}: {event.total_steps} steps on {event.device}", file=sys.stderr)
            elif event.kind == "LogMessage":
                print(event.message, file=sys.stderr)
            elif event.kind == "EpochEnded":
                scores = "  ".join(f"{k} {v:.4f}" for k, v in event.metrics.items() if k != "epoch")
                print(f"epoch {event.epoch}: {scores}", file=sys.stderr)

        kwargs: dict[str, Any] = dict(home=home, listeners=[note_started], control=SharedControl(), dist=ctx)
        try:
            if args.resume is not None:
                result = runner.resume(args.resume, **kwargs)
            else:
                result = runner.execute(config, **kwargs)
        except TuneDeskError as exc:
            _write_result({"status": "error", "error": exc.message, "hint": exc.hint})
            return 2
        _write_result(result.to_dict() | {"duration": result.duration, "metrics": result.metrics})
        return 0 if result.status in ("completed", "stopped") else 1
    finally:
        ctx.close()


def torchrun_main(argv: list[str]) -> int:
    """torchrun itself, its failure report cut to one line per failed worker (no traceback)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        for rank, failure in sorted(exc.failures.items()):
            how = f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"
            print(f"torchrun: worker {rank} (pid {failure.pid}) ended with {how}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--torchrun"]:  # the launcher's torchrun, with a short failure report
        sys.exit(torchrun_main(sys.argv[2:]))
    sys.exit(worker_main())
