"""Resume equivalence on CPU with the tiny BERT: a run stopped (or killed) and resumed from its last
checkpoint logs the same per-step losses as the same run trained without interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.data import tiny_text_config

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5


def _losses(home: Path, run_id: int) -> dict[int, float]:
    from tunedesk.engine.run.runner import open_store

    store = open_store(home)
    try:
        return {r["step"]: r["loss"] for r in store.step_metrics(run_id)}
    finally:
        store.close()


def _epochs(home: Path, run_id: int) -> list[dict]:
    from tunedesk.engine.run.runner import open_store

    store = open_store(home)
    try:
        return store.epoch_metrics(run_id)
    finally:
        store.close()


def _assert_same_curve(reference: dict[int, float], resumed: dict[int, float], after: int) -> None:
    assert sorted(resumed) == sorted(reference), "the resumed run logged different steps"
    diffs = {s: abs(reference[s] - resumed[s]) for s in reference if s > after}
    assert diffs, "no steps after the interruption to compare"
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] < TOLERANCE, (
        f"step {worst}: loss {resumed[worst]!r} resumed vs {reference[worst]!r} uninterrupted"
    )


def _config(tiny_bert_dir: Path, text_csv: Path, **overrides):
    # log every step: the per-step curve is what must match; dropout stays on (BERT's default 0.1).
    return tiny_text_config(tiny_bert_dir, text_csv, log_every=1, **overrides)


def test_stopped_mid_epoch_then_resumed_matches_uninterrupted(home, tiny_bert_dir, text_csv):
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute, open_store, resume

    config = _config(tiny_bert_dir, text_csv, epochs=2)
    reference = execute(config)
    assert reference.status == "completed", reference.reason

    stop_at = 6  # inside the first epoch (10 optimizer steps per epoch)
    control = Control()

    def stopper(event) -> None:
        if event.kind == "StepLogged" and event.step == stop_at:
            control.request_stop("test stop")

    stopped = execute(config, listeners=[stopper], control=control)
    assert stopped.status == "stopped"
    store = open_store(home)
    assert store.checkpoints(stopped.run_id)["last"]["step"] == stop_at
    assert store.get_run(stopped.run_id)["status"] == "stopped"
    store.close()

    resumed = resume(stopped.run_id)
    assert resumed.status == "completed", resumed.reason
    assert resumed.run_id == stopped.run_id  # the same run continues

    _assert_same_curve(_losses(home, reference.run_id), _losses(home, stopped.run_id), after=stop_at)
    ref_epochs = _epochs(home, reference.run_id)
    res_epochs = _epochs(home, stopped.run_id)
    assert [e["epoch"] for e in res_epochs] == [e["epoch"] for e in ref_epochs] == [1, 2]
    for a, b in zip(ref_epochs, res_epochs):
        assert b["metrics"]["val_loss"] == pytest.approx(a["metrics"]["val_loss"], abs=TOLERANCE)
        assert b["confusion"] == a["confusion"]
    store = open_store(home)
    run = store.get_run(stopped.run_id)
    assert run["status"] == "completed" and run["finished_at"] and run["error"] is None
    store.close()


def _tunedesk(*args: str, home: Path, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, TUNEDESK_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "tunedesk", *args], env=env, capture_output=True, text=True, timeout=300, **kwargs
    )


def test_killed_training_process_is_interrupted_then_resumed_from_the_cli(home, tiny_bert_dir, text_csv, tmp_path):
    from tunedesk.engine.run.runner import execute, open_store

    config = _config(tiny_bert_dir, text_csv, epochs=3)
    cfg_path = config.save(tmp_path / "cfg.json")
    env = dict(os.environ, TUNEDESK_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunedesk", "train", str(cfg_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_id = None
    deadline = time.monotonic() + 240
    try:
        # Kill -9 as soon as the first epoch's resumable checkpoint is recorded.
        while time.monotonic() < deadline and proc.poll() is None:
            if (home / "tunedesk.db").exists():
                store = open_store(home)
                try:
                    rows = store.list_runs(limit=1)
                    if rows and "last" in store.checkpoints(rows[0]["id"]):
                        run_id = rows[0]["id"]
                        os.kill(proc.pid, signal.SIGKILL)
                        break
                finally:
                    store.close()
            time.sleep(0.01)
    finally:
        if proc.poll() is None and run_id is None:
            proc.kill()
        proc.wait(timeout=60)  # reap it: a zombie's pid still looks alive
    assert run_id is not None, f"the run never saved a checkpoint: {proc.stderr.read()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL

    listed = _tunedesk("runs", "list", "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    run = next(r for r in json.loads(listed.stdout.strip().splitlines()[-1]) if r["id"] == run_id)
    assert run["status"] == "interrupted"

    resumed = _tunedesk("runs", "resume", str(run_id), "--json", home=home)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["run_id"] == run_id and result["status"] == "completed"

    reference = execute(config)  # the same run, never interrupted (in this process)
    assert reference.status == "completed"
    store = open_store(home)
    checkpoint_step = store.checkpoints(run_id)["last"]["step"]
    store.close()
    _assert_same_curve(_losses(home, reference.run_id), _losses(home, run_id), after=0)
    assert checkpoint_step == max(_losses(home, run_id))


def test_a_partly_frozen_run_checkpoints_only_what_trains_and_resumes_to_the_same_result(
    home, tiny_bert_dir, text_csv, tmp_path
):
    """The resumable checkpoint leaves the frozen pretrained weights out (a resume reads them from the
    model files again, checked by fingerprint): the same curve as an uninterrupted run, a smaller file,
    and a clear message when the model files changed in between."""
    import shutil

    from safetensors import safe_open

    from tunedesk.engine.config import FreezeSpec
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute, open_store, resume

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model_dir)
    config = _config(model_dir, text_csv, epochs=2)
    config.freeze = FreezeSpec(preset="last_n_blocks", last_n=1)
    reference = execute(config)
    assert reference.status == "completed", reference.reason

    def stopped_at_step_6():
        control = Control()

        def stopper(event) -> None:
            if event.kind == "StepLogged" and event.step == 6:
                control.request_stop("test stop")

        run = execute(config, listeners=[stopper], control=control)
        assert run.status == "stopped"
        return run

    stopped = stopped_at_step_6()
    store = open_store(home)
    last = Path(store.checkpoints(stopped.run_id)["last"]["path"])
    best_file = Path(store.checkpoints(reference.run_id)["best"]["path"]) / "model.safetensors"
    store.close()
    with safe_open(str(last / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    assert "bert.encoder.layer.1.attention.self.query.weight" in saved  # the last block trains
    assert "classifier.weight" in saved  # the new head
    assert "bert.encoder.layer.0.attention.self.query.weight" not in saved  # frozen, from the model files
    assert "bert.embeddings.word_embeddings.weight" not in saved
    assert (last / "model.safetensors").stat().st_size < best_file.stat().st_size / 2

    resumed = resume(stopped.run_id)
    assert resumed.status == "completed", resumed.reason
    _assert_same_curve(_losses(home, reference.run_id), _losses(home, stopped.run_id), after=6)

    # the model files change between stop and resume: the frozen weights would no longer be the run's
    again = stopped_at_step_6()
    from safetensors.torch import load_file, save_file

    weights = load_file(str(model_dir / "model.safetensors"))
    weights = {k: v + 0.5 if "layer.0." in k else v for k, v in weights.items()}
    save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    result = resume(again.run_id)
    assert result.status == "failed"
    assert "model files changed" in (result.reason or "")
    store = open_store(home)
    kept = Path(store.checkpoints(again.run_id)["last"]["path"])
    store.close()
    assert (kept / "model.safetensors").is_file() and (kept / "training_state.pt").is_file()  # nothing lost
