"""Kill -9 at every operation of a checkpoint write (a fault-injection hook in the writer), then resume.

Each case trains the tiny BERT in a subprocess that SIGKILLs itself at one chosen file operation of
one checkpoint write. Afterwards the history must open, the run must be interrupted, and a resume
must reproduce the uninterrupted run's per-step losses exactly (CPU, fixed seed, gradient
accumulation, mid-epoch checkpoints every 2 optimizer steps), or, when no checkpoint was complete
yet, refuse clearly.
"""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.data import make_texts, tiny_text_config
from tunedesk.engine.run.checkpoint import FAULT_ENV, WRITE_OPS

pytestmark = pytest.mark.slow

TOLERANCE = 1e-6
SCRIPT = """
import sys
from tunedesk.engine.config import RunConfig
from tunedesk.engine.run.runner import execute
execute(RunConfig.load(sys.argv[1]))
"""


def _config(model_dir: Path, data: Path):
    # 10 micro-batches an epoch, 2 per optimizer step: 5 steps an epoch; a resumable checkpoint every
    # 2 steps (steps 2, 4, then 5 at the epoch's end, 7, 9, 10). Every step is logged.
    return tiny_text_config(
        model_dir, data, epochs=2, log_every=1, grad_accum_steps=2, checkpoint_every_steps=2, checkpoint_every_minutes=0
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_bert_dir):
    """The configuration and the uninterrupted run's curve (trained once for the module)."""
    from tunedesk.engine.run.runner import execute, open_store

    root = tmp_path_factory.mktemp("kills")
    data = root / "tickets.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("text", "label"), *make_texts()])
    config = _config(tiny_bert_dir, data)
    cfg_path = config.save(root / "cfg.json")
    reference = execute(config, home=root / "ref-home")
    assert reference.status == "completed", reference.reason
    store = open_store(root / "ref-home")
    try:
        losses = {r["step"]: r["loss"] for r in store.step_metrics(reference.run_id)}
        epochs = [e["metrics"]["val_loss"] for e in store.epoch_metrics(reference.run_id)]
    finally:
        store.close()
    assert sorted(losses) == list(range(1, 11))
    return cfg_path, losses, epochs


def _killed_run(cfg_path: Path, home: Path, fault: str, swap: str = "") -> int:
    env = dict(os.environ, TUNEDESK_HOME=str(home), **{FAULT_ENV: fault})
    if swap:
        env["TUNEDESK_CHECKPOINT_SWAP"] = swap
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cfg_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, f"not killed at {fault}: rc {proc.returncode}\n{proc.stderr[-2000:]}"
    conn = sqlite3.connect(home / "tunedesk.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (run_id,) = conn.execute("SELECT id FROM runs").fetchone()
    finally:
        conn.close()
    return run_id


def _status(home: Path, run_id: int) -> str:
    from tunedesk.engine.run.runner import open_store

    store = open_store(home)
    try:
        store.mark_interrupted()
        return store.get_run(run_id)["status"]
    finally:
        store.close()


def _check_resume(home: Path, run_id: int, losses: dict[int, float], epochs: list[float]) -> None:
    from tunedesk.engine.run.checkpoint import verify
    from tunedesk.engine.run.runner import open_store, resume

    result = resume(run_id, home=home)
    assert result.status == "completed", result.reason
    store = open_store(home)
    try:
        resumed = {r["step"]: r["loss"] for r in store.step_metrics(run_id)}
        resumed_epochs = [e["metrics"]["val_loss"] for e in store.epoch_metrics(run_id)]
        out = Path(store.get_run(run_id)["output_dir"])
    finally:
        store.close()
    assert sorted(resumed) == sorted(losses), "the resumed run's history lacks or repeats steps"
    worst = max(abs(resumed[s] - losses[s]) for s in losses)
    assert worst < TOLERANCE, f"resumed curve differs from the uninterrupted one by {worst}"
    assert resumed_epochs == pytest.approx(epochs, abs=TOLERANCE)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # leftovers removed
    assert verify(out / "last").step == 10 and verify(out / "best") is not None


@pytest.mark.parametrize("op", WRITE_OPS)
def test_kill_during_a_mid_epoch_checkpoint_then_resume_matches(setup, home, op):
    cfg_path, losses, epochs = setup
    swap = "rename" if op == "swap-between" else ""  # the gap between the two renames of the fallback swap
    run_id = _killed_run(cfg_path, home, f"last:2:{op}", swap)
    assert _status(home, run_id) == "interrupted"
    _check_resume(home, run_id, losses, epochs)


@pytest.mark.parametrize("op", ["swap"])
def test_kill_during_a_best_checkpoint_write_then_resume_matches(setup, home, op):
    cfg_path, losses, epochs = setup
    run_id = _killed_run(cfg_path, home, f"best:1:{op}")
    assert _status(home, run_id) == "interrupted"
    _check_resume(home, run_id, losses, epochs)


def test_kill_before_the_first_checkpoint_is_complete_is_refused_clearly(setup, home):
    from tunedesk.engine.errors import TuneDeskError
    from tunedesk.engine.run.runner import open_store, resume

    cfg_path, _, _ = setup
    run_id = _killed_run(cfg_path, home, "last:1:manifest")
    assert _status(home, run_id) == "interrupted"
    with pytest.raises(TuneDeskError, match="no complete resumable checkpoint") as err:
        resume(run_id, home=home)
    assert "start it again" in err.value.hint
    store = open_store(home)
    try:
        out = Path(store.get_run(run_id)["output_dir"])
        assert store.get_run(run_id)["status"] == "interrupted"  # the refusal changed nothing
    finally:
        store.close()
    assert not list(out.glob(".last.*"))  # the partial write was removed
