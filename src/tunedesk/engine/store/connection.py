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


def process_start_time(pid: int | None) -> float | None:
    """When the process with this id started (seconds since the epoch), or None if there is none."""
    if not pid or pid <= 0:
        return None
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - gone, or not ours to inspect
        return None


_THIS_PROCESS: tuple[int, float | None] | None = None


def this_process() -> tuple[int, float | None]:
    """(pid, start time) of this process: what a run's owner columns record."""
    global _THIS_PROCESS
    if _THIS_PROCESS is None or _THIS_PROCESS[0] != os.getpid():  # a fork is another process
        _THIS_PROCESS = (os.getpid(), process_start_time(os.getpid()))
    return _THIS_PROCESS


def owner_alive(pid: int | None, started: float | None) -> bool:
    """Whether the process that claimed a run still lives: its pid exists AND started when it did.

    A pid alone is not enough: after a crash the system may give it to an unrelated process, and the
    run would look alive forever. Rows written before start times were recorded fall back to the pid.
    """
    if not pid_alive(pid):
        return False
    if started is None:
        return True
    now_started = process_start_time(pid)
    if now_started is None:
        return True  # exists but cannot be inspected: do not declare someone else's run dead
    return abs(now_started - float(started)) < 1.0


def open_database(path: Path | str, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Database:
    """Open (creating if needed) and migrate the history file; set the per-connection pragmas."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=busy_timeout_s, check_same_thread=True)
    except OSError as exc:
        from tunedesk.engine.errors import os_error

        raise os_error(
            exc, path.parent, "the history folder", "set TUNEDESK_HOME (or --home) to a folder you can write to"
        ) from None
    except sqlite3.Error as exc:
        raise database_error(exc, path) from None
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
    except sqlite3.Error as exc:
        conn.close()
        raise database_error(exc, path) from None
    return db


def database_error(exc: sqlite3.Error, path: Path | str) -> TuneDeskError:
    """A SQLite error on the history file as one sentence with the fix (read-only, locked, full, damaged)."""
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text:
        return TuneDeskError(
            f"the run history database {path} is read-only",
            "make the file and its folder writable, or set TUNEDESK_HOME (or --home) to another folder",
        )
    if "locked" in text or "busy" in text:
        return TuneDeskError(
            f"the run history database {path} is locked by another program",
            "close the program holding it (a database browser, a stuck TuneDesk), then try again",
        )
    if "full" in text:
        return TuneDeskError(
            f"the disk holding the run history database {path} is full",
            "free some space on that disk, or set TUNEDESK_HOME (or --home) to a folder on another disk",
        )
    if "unable to open" in text or "disk i/o" in text:
        return TuneDeskError(
            f"the run history database {path} cannot be opened ({exc})",
            "check that its folder exists and can be written, or set TUNEDESK_HOME (or --home) to another folder",
        )
    return TuneDeskError(
        f"the run history database {path} is damaged ({exc})",
        "move the file away (TuneDesk starts a new history on the next start), or restore it from a backup",
    )
