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
