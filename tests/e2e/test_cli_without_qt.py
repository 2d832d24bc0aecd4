"""`tunedesk train` on a machine without the desktop libraries (a GPU server): the CLI path never imports Qt."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.fixtures.data import tiny_text_config

BLOCK = """
import importlib.abc, sys
class NoDesktop(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("PySide6", "pyqtgraph", "shiboken6"):
            raise ImportError(f"{name} is not installed here")
        return None
sys.meta_path.insert(0, NoDesktop())
from tunedesk.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_train_runs_without_pyside6(tmp_path, tiny_bert_dir, text_csv):
    config = tiny_text_config(tiny_bert_dir, text_csv, epochs=1)
    config.freeze.preset = "head_only"
    path = config.save(tmp_path / "run.json")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK, "--home", str(tmp_path / "home"), "train", str(path), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["status"] == "completed"
    assert "feature cache: used for training and validation" in proc.stderr  # the CLI shows how it fed the run
    assert "input: " in proc.stderr
    assert "\r" not in proc.stderr  # standard error is a pipe here: plain lines, no progress bar redraws
    assert "training: step " in proc.stderr


def test_progress_in_a_log_file_is_plain_lines_about_every_tenth_of_the_run(capsys):
    from tunedesk.cli import ProgressPrinter
    from tunedesk.engine.run.events import RunFinished, RunStarted, StepLogged

    printer = ProgressPrinter(interactive=False)
    printer(RunStarted(1, 100, 10, 10, 5, 10, "cpu", "fp32", 1e-4))
    for step in range(1, 101):
        printer(StepLogged(1, step, 1 + step // 10, 1.0 / step, 1e-4, 50.0, step * 0.1))
    printer(RunFinished(1, "completed"))
    lines = [line for line in capsys.readouterr().err.splitlines() if "step" in line]
    assert len(lines) == 10 and lines[0].startswith("training: step 10/100, loss 0.1000, 50.0 samples/s")
    assert lines[-1].startswith("training: step 100/100")
