"""Numbered schema migrations for the run history database.

Each migration is a plain function ``(db) -> None`` appended to ``MIGRATIONS``; its number is its
position (1-based) and its name is the function's name. Migrations run once, in order, each in its
own ``BEGIN IMMEDIATE`` transaction together with its ``_migrations`` row, so a crash or a second
process opening the same file never applies one twice. Never edit a migration that has shipped:
append a new one. A migration writes plain SQL DDL so the schema it produces never changes with
library versions.

To add one (e.g. data sets)::

    def m002_datasets(db: Database) -> None:
        _run(db, "CREATE TABLE datasets (...)", "CREATE INDEX ...")

    MIGRATIONS = [m001_run_history, m002_datasets]
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database

from tunedesk.engine.errors import TuneDeskError

Migration = Callable[[Database], None]

MIGRATIONS_TABLE = "_migrations"


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds: fixed width, so text order is time order."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _run(db: Database, *statements: str) -> None:
    for sql in statements:
        db.execute(sql)


def m001_run_history(db: Database) -> None:
    """Runs and everything recorded while they train."""
    _run(
        db,
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids name run folders
            name TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'queued',
            task TEXT NOT NULL DEFAULT '',
            model_name TEXT NOT NULL DEFAULT '',
            model_path TEXT NOT NULL DEFAULT '',
            model_hash TEXT,
            dataset_name TEXT NOT NULL DEFAULT '',
            dataset_hash TEXT,
            dataset_version TEXT,
            trainable_params INTEGER NOT NULL DEFAULT 0,
            total_params INTEGER NOT NULL DEFAULT 0,
            freeze_summary TEXT NOT NULL DEFAULT '',
            total_steps INTEGER,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            duration_s REAL,
            best_metric REAL,
            best_metric_name TEXT,
            samples_per_second REAL,
            error TEXT,
            error_hint TEXT,
            output_dir TEXT NOT NULL DEFAULT '',
            device TEXT NOT NULL DEFAULT '',
            precision TEXT NOT NULL DEFAULT '',
            tags_json TEXT NOT NULL DEFAULT '[]',
            notes TEXT NOT NULL DEFAULT '',
            parent_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
            pid INTEGER,
            -- Big JSON last: SQLite stores a row's columns in order, so the light columns that list,
            -- filter and search read stay on the row's first page, ahead of any overflow pages.
            final_metrics_json TEXT NOT NULL DEFAULT '{}',
            config_json TEXT NOT NULL DEFAULT '{}',
            trainable_names_json TEXT NOT NULL DEFAULT '[]'
        )
        """,
        "CREATE INDEX idx_runs_created ON runs(created_at)",
        "CREATE INDEX idx_runs_started ON runs(started_at)",
        "CREATE INDEX idx_runs_status ON runs(status, created_at)",
        "CREATE INDEX idx_runs_model ON runs(model_name, created_at)",
        "CREATE INDEX idx_runs_dataset ON runs(dataset_name, created_at)",
        "CREATE INDEX idx_runs_parent ON runs(parent_run_id)",
        # Tags live in runs.tags_json (what get_run returns) and, for indexed filtering, here.
        """
        CREATE TABLE run_tags (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            tag TEXT NOT NULL,
            PRIMARY KEY (run_id, tag)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX idx_run_tags_tag ON run_tags(tag, run_id)",
        # Millions of rows: clustered on (run_id, step) so one run's curve is one range read.
        """
        CREATE TABLE step_metrics (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            epoch INTEGER,
            loss REAL,
            learning_rate REAL,
            samples_per_second REAL,
            elapsed REAL,
            gpu_memory_mb REAL,
            gpu_peak_memory_mb REAL,
            PRIMARY KEY (run_id, step)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE epoch_metrics (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            epoch INTEGER NOT NULL,
            step INTEGER NOT NULL,
            metrics_json TEXT NOT NULL DEFAULT '{}',
            confusion_json TEXT NOT NULL DEFAULT '[]',
            label_names_json TEXT NOT NULL DEFAULT '[]',
            per_class_json TEXT NOT NULL DEFAULT '{}',
            is_best INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX idx_epoch_metrics_run ON epoch_metrics(run_id, epoch, step)",
        """
        CREATE TABLE checkpoints (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            step INTEGER,
            epoch INTEGER,
            created_at TEXT NOT NULL,
            PRIMARY KEY (run_id, kind)
        )
        """,
        """
        CREATE TABLE run_logs (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            ts TEXT NOT NULL,
            level TEXT NOT NULL DEFAULT 'info',
            message TEXT NOT NULL DEFAULT ''
        )
        """,
        "CREATE INDEX idx_run_logs_run ON run_logs(run_id, id)",
        """
        CREATE TABLE samples (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step INTEGER,
            epoch INTEGER,
            prompt TEXT NOT NULL DEFAULT '',
            text TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX idx_samples_run ON samples(run_id, id)",
    )


def m002_datasets(db: Database) -> None:
    """Data sets edited in the Datasets area, and their immutable versions (what runs train on).

    Items keep the text (or the absolute path of an image: images stay where they are), the label,
    the split, a content hash (exact duplicates, version hashes), a near hash (normalised text or a
    perceptual image hash: near duplicates) and a bit set of cleaning flags. A version copies its
    items into ``dataset_version_items``: later edits never change what a past run trained on.
    Triggers refuse updates of a version's content.
    """
    _run(
        db,
        """
        CREATE TABLE datasets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids name versions (ds3-v2)
            name TEXT NOT NULL,
            kind TEXT NOT NULL,                    -- text | image | text_corpus | chat
            status TEXT NOT NULL DEFAULT 'ready',  -- importing | ready
            source TEXT NOT NULL DEFAULT '',       -- the imported file or folder
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            item_count INTEGER NOT NULL DEFAULT 0,
            pid INTEGER,                           -- the importing process, while status = importing
            split_json TEXT NOT NULL DEFAULT '{}', -- the last split's settings
            import_json TEXT NOT NULL DEFAULT '{}' -- import options and report
        )
        """,
        "CREATE INDEX idx_datasets_name ON datasets(name)",
        """
        CREATE TABLE dataset_classes (
            dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (dataset_id, name)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE dataset_items (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: undoing a delete restores the same ids
            dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            label TEXT NOT NULL DEFAULT '',        -- '' = not labelled yet
            split TEXT NOT NULL DEFAULT '',        -- train | val | '' (not assigned)
            flags INTEGER NOT NULL DEFAULT 0,
            content_hash TEXT NOT NULL DEFAULT '',
            near_hash TEXT NOT NULL DEFAULT '',
            path TEXT,
            source_line INTEGER,
            width INTEGER,
            height INTEGER,
            size_bytes INTEGER,
            mtime REAL,
            text TEXT                              -- last: long texts overflow without slowing the rest
        )
        """,
        "CREATE INDEX idx_dataset_items_position ON dataset_items(dataset_id, position)",
        "CREATE INDEX idx_dataset_items_label ON dataset_items(dataset_id, label)",
        # Duplicate search groups by these: an index scan instead of sorting every item.
        "CREATE INDEX idx_dataset_items_hash ON dataset_items(dataset_id, content_hash)",
        "CREATE INDEX idx_dataset_items_near ON dataset_items(dataset_id, near_hash)",
        """
        CREATE TABLE dataset_versions (
            id TEXT PRIMARY KEY,                   -- ds<dataset id>-v<number>
            dataset_id INTEGER REFERENCES datasets(id) ON DELETE SET NULL,
            number INTEGER NOT NULL,
            dataset_name TEXT NOT NULL,
            kind TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            item_count INTEGER NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            classes_json TEXT NOT NULL DEFAULT '[]',
            split_json TEXT NOT NULL DEFAULT '{}'  -- settings and per-class counts per split
        )
        """,
        "CREATE INDEX idx_dataset_versions_dataset ON dataset_versions(dataset_id, number)",
        "CREATE INDEX idx_dataset_versions_hash ON dataset_versions(content_hash)",
        """
        CREATE TABLE dataset_version_items (
            version_id TEXT NOT NULL REFERENCES dataset_versions(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            item_id INTEGER,
            label TEXT NOT NULL DEFAULT '',
            split TEXT NOT NULL DEFAULT '',
            content_hash TEXT NOT NULL DEFAULT '',
            path TEXT,
            text TEXT,
            PRIMARY KEY (version_id, position)
        )
        """,
        """
        CREATE TRIGGER dataset_versions_immutable
        BEFORE UPDATE OF id, number, dataset_name, kind, content_hash, created_at, item_count, classes_json,
                         split_json ON dataset_versions
        BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable: save a new version instead'); END
        """,
        """
        CREATE TRIGGER dataset_version_items_immutable BEFORE UPDATE ON dataset_version_items
        BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable: save a new version instead'); END
        """,
    )


def m003_run_ownership(db: Database) -> None:
    """Who trains a run: a token per claim and the owner process's start time, so that a process that
    later got the same pid is not taken for the owner (see ``RunStore.claim``)."""
    _run(
        db,
        "ALTER TABLE runs ADD COLUMN owner_token TEXT",
        "ALTER TABLE runs ADD COLUMN owner_started REAL",  # seconds since the epoch, as psutil gives it
    )


# Append only. Position + 1 is the migration number stored in ``_migrations``.
MIGRATIONS: list[Migration] = [m001_run_history, m002_datasets, m003_run_ownership]


def schema_version(db: Database) -> int:
    """Highest applied migration number (0 for a new file)."""
    if not db[MIGRATIONS_TABLE].exists():
        return 0
    row = db.execute(f"SELECT MAX(number) FROM {MIGRATIONS_TABLE}").fetchone()
    return int(row[0] or 0)


def apply_migrations(db: Database, path: Path | str = "", migrations: list[Migration] | None = None) -> list[int]:
    """Bring the schema up to date; return the numbers applied now (empty when already current).

    Refuses a database written by a newer TuneDesk instead of guessing at its schema.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    known = len(migrations)
    current = schema_version(db)
    _refuse_newer(current, known, path)
    if current == known:
        return []
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        "number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    done: list[int] = []
    for number in range(current + 1, known + 1):
        migration = migrations[number - 1]
        conn: sqlite3.Connection = db.conn
        conn.execute("BEGIN IMMEDIATE")  # take the write lock first: another process may migrate too
        try:
            now = schema_version(db)
            _refuse_newer(now, known, path)
            if now >= number:  # someone else applied it while we waited for the lock
                conn.execute("COMMIT")
                continue
            migration(db)
            db.table(MIGRATIONS_TABLE).insert({"number": number, "name": migration.__name__, "applied_at": utc_now()})
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        done.append(number)
    return done


def _refuse_newer(current: int, known: int, path: Path | str) -> None:
    if current > known:
        where = f" {path}" if path else ""
        raise TuneDeskError(
            f"the run history database{where} was written by a newer TuneDesk "
            f"(schema {current}; this version knows up to {known})",
            hint="update TuneDesk, or set TUNEDESK_HOME (or --home) to another folder",
        )
