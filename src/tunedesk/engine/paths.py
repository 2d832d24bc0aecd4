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
    _make_dir(base, "the TuneDesk home folder")
    return base


def _make_dir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(path))
    except OSError as exc:
        from tunedesk.engine.errors import os_error

        raise os_error(
            exc, path, what, "set TUNEDESK_HOME (or --home) to a folder you can write to, or fix this one"
        ) from None


def database_path(home: Path | None = None) -> Path:
    return (home or home_dir()) / "tunedesk.db"


def runs_dir(home: Path | None = None) -> Path:
    path = (home or home_dir()) / "runs"
    _make_dir(path, "the runs folder")
    return path


def resources_dir() -> Path:
    """The repository's resources/ folder (demo data, icons, style sheet)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "resources"
        if (candidate / "demo").is_dir():
            return candidate
    raise FileNotFoundError("TuneDesk's resources/ folder was not found next to the installed package")
