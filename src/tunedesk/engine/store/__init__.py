"""The run history: one SQLite file, numbered migrations, one RunStore per thread.

``from tunedesk.engine.store import RunStore`` is the public entry point; the schema's migrations live
in ``tunedesk.engine.store.migrations``.
"""

from tunedesk.engine.store.connection import DEFAULT_BUSY_TIMEOUT_S, open_database, owner_alive, pid_alive
from tunedesk.engine.store.migrations import MIGRATIONS, apply_migrations, utc_now
from tunedesk.engine.store.runs import (
    CHECKPOINT_KINDS,
    FINISHED_STATUSES,
    RUN_STATUSES,
    UNFINISHED_STATUSES,
    RunStore,
)

__all__ = [
    "CHECKPOINT_KINDS",
    "DEFAULT_BUSY_TIMEOUT_S",
    "FINISHED_STATUSES",
    "MIGRATIONS",
    "RUN_STATUSES",
    "UNFINISHED_STATUSES",
    "RunStore",
    "apply_migrations",
    "open_database",
    "owner_alive",
    "pid_alive",
    "utc_now",
]
