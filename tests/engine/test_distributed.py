"""Data-parallel runs through torchrun on CPU processes (gloo): real 2-process runs of a tiny BERT."""

from __future__ import annotations

import threading
import time

import pytest

from tests.fixtures.data import tiny_text_config
from tunedesk.engine.run.sampling import EpochBatches


def test_rank_shards_are_disjoint_and_together_the_one_process_epoch():
    one = list(EpochBatches(21, 8, seed=3))
    shards = [EpochBatches(21, 8, seed=3, rank=r, world=2) for r in range(2)]
    per_rank = [list(s) for s in shards]
    assert all(len(p) == len(one) == s.batches_per_epoch for p, s in zip(per_rank, shards, strict=True))
    for i, batch in enumerate(one):
        assert per_rank[0][i] + per_rank[1][i] == batch
        assert not set(per_rank[0][i]) & set(per_rank[1][i])


@pytest.fixture(scope="module")
def no_dropout_bert(tiny_bert_dir, tmp_path_factory):
    """The tiny BERT without dropout, so one and two processes draw no different random masks."""
    import shutil

    from transformers import BertConfig

    folder = tmp_path_factory.mktemp("bert-no-dropout")
    shutil.copytree(tiny_bert_dir, folder, dirs_exist_ok=True)
    config = BertConfig.from_pretrained(folder)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(folder)
    return folder


def _config(model, data, **h):
    config = tiny_text_config(model, data, **(dict(epochs=2, batch_size=8, log_every=1) | h))
    config.hparams.num_workers = 0
    return config


def test_two_processes_match_one_and_rank_zero_alone_records(tmp_path, no_dropout_bert, text_csv):
    from tunedesk.engine.launch import launch_local
    from tunedesk.engine.run.runner import open_store

    home = tmp_path / "home"
    one = launch_local(1, _config(no_dropout_bert, text_csv), home=home)
    two = launch_local(2, _config(no_dropout_bert, text_csv), home=home)
    assert one.status == two.status == "completed", (one.reason, two.reason)
    for key in ("val_loss", "val_accuracy", "val_macro_f1"):
        assert two.metrics[key] == pytest.approx(one.metrics[key], abs=1e-4), key
    store = open_store(home)
    try:
        assert [r["id"] for r in store.list_runs()] == [2, 1]
        history = store.get_run(2)
        assert history["status"] == "completed"
        epochs = store.epoch_metrics(2)
        assert [e["epoch"] for e in epochs] == [1, 2]  # one writer: no row twice
        steps = [m["step"] for m in store.step_metrics(2)]
        assert steps == sorted(set(steps)) and steps
    finally:
        store.close()


def test_stop_on_two_processes_resumes_on_one_to_the_same_result(tmp_path, no_dropout_bert, text_csv):
    from tunedesk.engine.launch import launch_local
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute, open_store, resume

    home = tmp_path / "home"
    control = Control()
    control.request_stop("stopped by the test")  # seen before the first step: the run stops at step 1
    stopped = launch_local(2, _config(no_dropout_bert, text_csv), home=home, control=control)
    assert stopped.status == "stopped", stopped.reason
    with open_store(home) as store:
        assert store.checkpoints(stopped.run_id)["last"]["step"] == 1
    resumed = resume(stopped.run_id, home=home)
    straight = execute(_config(no_dropout_bert, text_csv), home=home)
    assert resumed.status == straight.status == "completed"
    assert resumed.metrics["val_loss"] == pytest.approx(straight.metrics["val_loss"], abs=1e-4)


def _running(home) -> bool:
    from tunedesk.engine.run.runner import open_store

    if not (home / "tunedesk.db").is_file():
        return False
    with open_store(home) as store:
        return bool(store.list_runs(status="running"))


def test_a_killed_worker_fails_the_run_with_a_sentence(tmp_path, no_dropout_bert, text_csv):
    import os
    import signal

    import psutil

    from tunedesk.engine.launch import launch_local
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import open_store

    home = tmp_path / "home"
    control = Control()  # stops the run should the kill miss, so the test cannot hang
    outcome = {}
    runner = threading.Thread(
        target=lambda: outcome.update(
            r=launch_local(2, _config(no_dropout_bert, text_csv, epochs=40), home=home, control=control)
        )
    )
    runner.start()
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline and runner.is_alive():
        time.sleep(0.5)
        for proc in psutil.Process().children(recursive=True):
            try:
                env = proc.environ()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if env.get("RANK") == "1" and _running(home):  # in the training loop
                os.kill(proc.pid, signal.SIGKILL)
                killed = proc.pid
                break
    if killed is None:
        control.request_stop()
    runner.join(300)
    assert killed is not None
    result = outcome["r"]
    assert result.status == "failed"
    assert "a worker process ended unexpectedly" in result.reason
    with open_store(home) as store:
        run = store.get_run(result.run_id)
    assert run["status"] == "failed" and "worker process ended unexpectedly" in run["error"]


def test_cluster_launch_prints_node_commands_and_writes_an_sbatch_script(tmp_path, capsys, tiny_bert_dir, text_csv):
    from tunedesk.cli import main

    config_file = tmp_path / "run.toml"
    tiny_text_config(tiny_bert_dir, text_csv).save(config_file)
    assert main(["train", str(config_file), "--nodes", "2", "--rdzv", "node1:29500", "--gpus", "4"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("torchrun")]
    assert len(lines) == 2 and lines[0] == lines[1]
    assert "--nnodes=2" in lines[0] and "--nproc-per-node=4" in lines[0]
    assert "--rdzv-endpoint=node1:29500" in lines[0] and f"-m tunedesk.engine.launch {config_file}" in lines[0]
    script = tmp_path / "job.sbatch"
    assert main(["train", str(config_file), "--nodes", "3", "--gpus", "8", "--slurm", str(script)]) == 0
    text = script.read_text(encoding="utf-8")
    assert "#SBATCH --nodes=3" in text and "srun torchrun" in text and "--nproc-per-node=8" in text
    assert main(["train", str(config_file), "--nodes", "2", "--rdzv", "node1"]) == 2  # not HOST:PORT
    assert "is not HOST:PORT" in capsys.readouterr().err
