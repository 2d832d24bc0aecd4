"""Where TuneDesk keeps its files: everything under one home folder.

``TUNEDESK_HOME`` (or the CLI's ``--home``) overrides the platform's user data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

ENV_HOME = "TUNEDESK_HOME"


def home_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return (and create) the TuneDesk home folder."""
    if override:
        base = Path(override)
    elif os.environ.get(ENV_HOME):
        base = Path(os.environ[ENV_HOME])
    else:
        base = Path(platformdirs.user_data_dir("TuneDesk", "TuneDesk"))
    base = base.expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    return base


def database_path(home: Path | None = None) -> Path:
    return (home or home_dir()) / "tunedesk.db"


def runs_dir(home: Path | None = None) -> Path:
    path = (home or home_dir()) / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resources_dir() -> Path:
    """The repository's resources/ folder (demo data, icons, style sheet)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "resources"
        if (candidate / "demo").is_dir():
            return candidate
    raise FileNotFoundError("TuneDesk's resources/ folder was not found next to the installed package")
