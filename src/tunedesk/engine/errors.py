"""User-facing errors: every mistake a user can make ends here, with what went wrong and how to fix it.

The CLI prints ``str(error)`` on one line and exits non-zero; the UI shows ``message`` and ``hint``
in a dialog. Anything that is *not* a TuneDeskError is a bug in TuneDesk and may show a traceback.
"""

from __future__ import annotations


class TuneDeskError(Exception):
    """A problem caused by the user's input or environment, with a hint on how to fix it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class ConfigError(TuneDeskError):
    """An invalid or incompatible run configuration value."""

    def __init__(self, field: str, message: str, hint: str = "") -> None:
        super().__init__(f"{field} {message}" if field else message, hint)
        self.field = field


class DataError(TuneDeskError):
    """A data set that cannot be used (missing, empty, unreadable, single-class...)."""


class ModelError(TuneDeskError):
    """A model that cannot be found or loaded safely."""


class TrainingError(TuneDeskError):
    """A run that failed for a reason the user can act on (out of memory, NaN loss...)."""


class StorageError(TuneDeskError):
    """A file or folder that cannot be read or written: full disk, permissions, read-only media."""


def os_error(exc: OSError, path: object, what: str, hint: str = "") -> StorageError:
    """An operating-system error on ``path`` as one sentence naming the path and the fix (never "a bug")."""
    import errno

    code = exc.errno
    where = f"{what} {path}" if what else str(path)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return StorageError(
            f"{where}: the disk is full", hint or "free some space on that disk, or choose a folder on another disk"
        )
    if code in (errno.EACCES, errno.EPERM):
        return StorageError(
            f"{where} cannot be written or read: permission denied",
            hint or "choose a folder you can write to, or change its permissions",
        )
    if code == errno.EROFS:
        return StorageError(f"{where} is on a read-only file system", hint or "choose a folder on a writable disk")
    if code in (errno.ENOTDIR, errno.EEXIST):
        from pathlib import Path

        blocker = Path(str(exc.filename or path))
        while blocker != blocker.parent and not blocker.exists():
            blocker = blocker.parent  # the nearest thing that exists is the file in the way
        return StorageError(
            f"{where} cannot be created: {blocker} is a file, not a folder",
            hint or "choose another folder, or move that file away",
        )
    return StorageError(
        f"{where} cannot be used: {exc.strerror or exc}", hint or "check that the path exists and can be written"
    )
