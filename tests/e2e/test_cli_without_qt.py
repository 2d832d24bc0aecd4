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
