"""`tunedesk runs` end to end in subprocesses with a private TUNEDESK_HOME: list, show, resume, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.data import tiny_text_config

pytestmark = pytest.mark.slow


def tunedesk(*args: str, home: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, TUNEDESK_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "tunedesk", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def last_json(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def user_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and needle in lines[0], lines
    assert lines[1].startswith("hint: ")


@pytest.fixture(scope="module")
def history(tmp_path_factory, tiny_bert_dir):
    """A home with a completed run (1) and a run stopped at step 3 (2), trained in this process."""
    import csv

    from tests.fixtures.data import make_texts
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute

    base = tmp_path_factory.mktemp("cli-runs")
    data = base / "tickets.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(make_texts())
    home = base / "home"
    config = tiny_text_config(tiny_bert_dir, data, epochs=2)
    config.name = "baseline"
    done = execute(config, home=home)
    assert done.status == "completed", done.reason
    control = Control()
    config.name = "stopped early"

    def stop(event) -> None:
        if event.kind == "StepLogged" and event.step >= 3:
            control.request_stop("test")

    stopped = execute(config, home=home, control=control, listeners=[stop])
    assert stopped.status == "stopped"
    return home, done.run_id, stopped.run_id


def test_list_and_show(history):
    home, done, stopped = history
    table = tunedesk("runs", home=home)
    assert table.returncode == 0
    assert "baseline" in table.stdout and "stopped early" in table.stdout and "stopped" in table.stdout
    runs = last_json(tunedesk("runs", "list", "--json", "--status", "completed", home=home))
    assert [r["id"] for r in runs] == [done]
    show = tunedesk("runs", "show", str(stopped), home=home)
    assert show.returncode == 0 and "checkpoint last" in show.stdout and "stopped" in show.stdout


def test_resume_a_stopped_run_and_refuse_a_completed_one(history):
    home, done, stopped = history
    user_error(tunedesk("runs", "resume", str(done), home=home), "nothing to resume")
    result = last_json(tunedesk("runs", "resume", str(stopped), "--json", home=home))
    assert result["run_id"] == stopped and result["status"] == "completed"
    shown = last_json(tunedesk("runs", "show", str(stopped), "--json", home=home))
    assert shown["run"]["status"] == "completed"
    assert [e["epoch"] for e in shown["epochs"]] == [1, 2]
    steps = [s["step"] for s in shown["steps"]]
    assert steps == sorted(set(steps)) and steps[-1] == shown["run"]["total_steps"]


def test_export_and_its_mistakes(history, tmp_path):
    home, done, _ = history
    out = tmp_path / "model"
    info = last_json(tunedesk("runs", "export", str(done), str(out), "--json", home=home))
    assert info["format"] == "hf" and Path(info["path"]) == out.resolve()
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert sorted(config["label2id"]) == ["account", "billing", "shipping", "technical"]
    user_error(tunedesk("runs", "export", str(done), str(out), home=home), "is not empty")
    user_error(tunedesk("runs", "export", "99", str(tmp_path / "x"), home=home), "run 99 not found")
    if _no_onnx():
        user_error(
            tunedesk("runs", "export", str(done), str(tmp_path / "y"), "--format", "onnx", home=home),
            "needs the 'onnx' package",
        )


def _no_onnx() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnx") is None
