"""Opening the history file: pragmas, migrations, friendly errors; and whether a run's process lives."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

from sqlite_utils import Database

from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.store.migrations import apply_migrations

DEFAULT_BUSY_TIMEOUT_S = 10.0


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id exists (without touching it: os.kill(pid, 0) KILLS on Windows)."""
    if not pid or pid <= 0:
        return False
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def open_database(path: Path | str, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Database:
    """Open (creating if needed) and migrate the history file; set the per-connection pragmas."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=busy_timeout_s, check_same_thread=True)
    except (OSError, sqlite3.Error) as exc:
        raise TuneDeskError(
            f"cannot open the run history database {path}: {exc}",
            hint="check that the folder exists and is writable, or set TUNEDESK_HOME to another folder",
        ) from None
    try:
        db = Database(conn, execute_plugins=False)
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        db.execute("PRAGMA foreign_keys = ON")
        db.enable_wal()
        db.execute("PRAGMA synchronous = NORMAL")
        apply_migrations(db, path)
    except TuneDeskError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise TuneDeskError(
            f"the run history database {path} cannot be used: {exc}",
            hint="if the file is damaged, move it away; TuneDesk starts a new history on the next start",
        ) from None
    return db
