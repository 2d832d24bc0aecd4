"""The engine never imports Qt: it must run headless, in the CLI and in CI."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ENGINE = pathlib.Path(__file__).resolve().parents[2] / "src" / "tunedesk" / "engine"
FORBIDDEN = re.compile(r"^\s*(from|import)\s+(PySide6|PyQt5|PyQt6|shiboken6|pyqtgraph|tunedesk\.ui)\b", re.MULTILINE)


def test_no_engine_module_imports_qt_in_its_source():
    offenders = [
        str(p.relative_to(ENGINE)) for p in ENGINE.rglob("*.py") if FORBIDDEN.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_importing_every_engine_module_loads_no_qt():
    code = (
        "import importlib, pkgutil, sys, tunedesk.engine as e\n"
        "for m in pkgutil.walk_packages(e.__path__, 'tunedesk.engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'shiboken6', 'pyqtgraph')"
        " or n.startswith('tunedesk.ui')]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
