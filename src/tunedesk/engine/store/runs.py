"""RunStore: the run history in one SQLite file (``paths.database_path(home)``), through sqlite-utils.

Threads: a RunStore owns ONE sqlite3 connection, opened with ``check_same_thread=True`` and bound to
the thread that created it. Every thread that touches the history (UI thread, CLI, the recorder's
writer thread) opens its own ``RunStore(path)``: opening is cheap (a few pragmas and one query once
the schema is current). WAL mode lets readers run while the recorder writes; the busy timeout makes
concurrent writers wait instead of failing at once.

Times are ISO 8601 UTC strings with milliseconds (``2025-01-31T12:00:00.123+00:00``), so ordering
text orders time. NaN floats are stored by SQLite as NULL.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError

from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.store.connection import DEFAULT_BUSY_TIMEOUT_S, open_database, owner_alive, this_process
from tunedesk.engine.store.migrations import schema_version, utc_now
from tunedesk.engine.store.queries import (
    LIGHT_COLUMNS,
    RUN_STATUSES,
    STEP_COLUMNS,
    check_status,
    order_by,
    thinned_step_metrics,
    where_clause,
)
from tunedesk.engine.store.resolved import RESOLVED_KEY, ResolvedRun

__all__ = ["CHECKPOINT_KINDS", "FINISHED_STATUSES", "LIGHT_COLUMNS", "RUN_STATUSES", "UNFINISHED_STATUSES", "RunStore"]

FINISHED_STATUSES = ("completed", "failed", "stopped", "interrupted")
UNFINISHED_STATUSES = ("queued", "running")
CHECKPOINT_KINDS = ("best", "last")
RESUMABLE_STATUSES = ("stopped", "interrupted", "failed")

# Decoded name -> stored JSON column.
JSON_FIELDS = {
    "config": "config_json",
    "trainable_names": "trainable_names_json",
    "final_metrics": "final_metrics_json",
    "tags": "tags_json",
}
RUN_COLUMNS = (
    "name", "status", "task", "model_name", "model_path", "model_hash", "dataset_name", "dataset_hash",
    "dataset_version", "config_json", "trainable_params", "total_params", "trainable_names_json",
    "freeze_summary", "total_steps", "created_at", "started_at", "finished_at", "duration_s", "best_metric",
    "best_metric_name", "final_metrics_json", "samples_per_second", "error", "error_hint", "output_dir",
    "device", "precision", "tags_json", "notes", "parent_run_id", "pid", "owner_token", "owner_started",
)  # fmt: skip


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


class RunStore:
    """Read and write the run history. One instance per thread (see the module docstring)."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._owner = threading.get_ident()
        self._db: Database | None = open_database(self.path, busy_timeout_s)

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def db(self) -> Database:
        """The sqlite-utils Database; only from the thread that opened this store."""
        if self._db is None:
            raise RuntimeError("this RunStore is closed")
        if threading.get_ident() != self._owner:
            raise RuntimeError(
                "a RunStore is bound to the thread that opened it; open another RunStore(path) in this thread"
            )
        return self._db

    @property
    def schema_version(self) -> int:
        return schema_version(self.db)

    def close(self) -> None:
        if self._db is not None:
            if threading.get_ident() == self._owner:
                self._db.close()
            self._db = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_run(self, run_id: int) -> None:
        if self.db.execute("SELECT 1 FROM runs WHERE id = ?", [run_id]).fetchone() is None:
            raise _not_found(run_id)

    # -- runs -------------------------------------------------------------------------------
    def create_run(
        self,
        *,
        config: Mapping[str, Any] | Any,
        name: str,
        task: str,
        model_name: str,
        model_path: str,
        model_hash: str | None,
        dataset_name: str,
        dataset_hash: str | None,
        dataset_version: str | None = None,
        trainable_names: Sequence[str] = (),
        trainable_params: int = 0,
        total_params: int = 0,
        freeze_summary: str = "",
        output_dir: str = "",
        device: str = "",
        precision: str = "",
        parent_run_id: int | None = None,
        resolved: ResolvedRun | None = None,
    ) -> int:
        """Record a new run as ``queued``, owned by this process (pid, start time, a new token); return its
        id. ``resolved``: what the engine decided at the start (stored with the configuration, read by
        ``resolved(run)``)."""
        if hasattr(config, "to_dict"):
            config = config.to_dict()
        config = dict(config)
        if resolved is not None:
            config[RESOLVED_KEY] = resolved.to_dict()
        record = {
            "name": name,
            "status": "queued",
            "task": task,
            "model_name": model_name,
            "model_path": str(model_path),
            "model_hash": model_hash,
            "dataset_name": dataset_name,
            "dataset_hash": dataset_hash,
            "dataset_version": dataset_version,
            "config_json": _dumps(config),
            "trainable_params": int(trainable_params),
            "total_params": int(total_params),
            "trainable_names_json": _dumps(list(trainable_names)),
            "freeze_summary": freeze_summary,
            "created_at": utc_now(),
            "output_dir": str(output_dir),
            "device": device,
            "precision": precision,
            "parent_run_id": parent_run_id,
            **_owner_fields(),
        }
        table = self.db.table("runs")
        table.insert(record)
        return int(cast(int, table.last_pk))

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Set run columns. ``config``/``trainable_names``/``final_metrics`` are JSON-encoded, ``tags`` go
        through set_tags; ``status`` is validated."""
        if "tags" in fields:
            self.set_tags(run_id, fields.pop("tags"))
        updates: dict[str, Any] = {}
        for key, value in fields.items():
            if key in JSON_FIELDS:
                updates[JSON_FIELDS[key]] = _dumps(value)
            elif key == "tags_json":
                raise ValueError("update tags with set_tags(run_id, tags)")
            elif key in RUN_COLUMNS:
                updates[key] = value
            else:
                raise ValueError(f"runs has no column {key!r}")
        if "status" in updates:
            check_status(updates["status"])
        if not updates:
            self._require_run(run_id)
            return
        try:
            self.db.table("runs").update(run_id, updates)
        except NotFoundError:
            raise _not_found(run_id) from None

    def set_status(self, run_id: int, status: str, error: str | None = None, error_hint: str | None = None) -> None:
        """Change status; stamps started_at on ``running`` and finished_at/duration on a final status."""
        check_status(status)
        run = self._light(run_id)
        updates: dict[str, Any] = {"status": status}
        if error is not None:
            updates["error"] = error
        if error_hint is not None:
            updates["error_hint"] = error_hint
        now = utc_now()
        if status in UNFINISHED_STATUSES:
            pid, started = this_process()  # this process will train it: not "interrupted" for others
            updates.update(pid=pid, owner_started=started)
            if run["finished_at"]:  # queued again to resume: the old ending no longer applies
                updates.update(finished_at=None, duration_s=None)
                updates.setdefault("error", None)
                updates.setdefault("error_hint", None)
        if status == "running" and not run["started_at"]:
            updates["started_at"] = now
        if status in FINISHED_STATUSES and not run["finished_at"]:
            updates["finished_at"] = now
            if run["started_at"] and run["duration_s"] is None:
                updates["duration_s"] = _seconds_between(run["started_at"], now)
        self.db.table("runs").update(run_id, updates)

    def rename(self, run_id: int, name: str) -> None:
        self.update_run(run_id, name=name)

    def set_notes(self, run_id: int, notes: str) -> None:
        self.update_run(run_id, notes=notes)

    def set_tags(self, run_id: int, tags: Iterable[str]) -> None:
        """Replace the run's tags (trimmed, de-duplicated, order kept)."""
        clean: list[str] = []
        for tag in tags:
            tag = str(tag).strip()
            if tag and tag not in clean:
                clean.append(tag)
        db = self.db
        with db.atomic():
            if db.execute("UPDATE runs SET tags_json = ? WHERE id = ?", [_dumps(clean), run_id]).rowcount == 0:
                raise _not_found(run_id)
            db.execute("DELETE FROM run_tags WHERE run_id = ?", [run_id])
            if clean:
                db.conn.executemany("INSERT INTO run_tags (run_id, tag) VALUES (?, ?)", [(run_id, t) for t in clean])

    def get_run(self, run_id: int) -> dict[str, Any]:
        """The full row with JSON decoded into config, trainable_names, final_metrics and tags."""
        try:
            row = self.db.table("runs").get(run_id)
        except NotFoundError:
            raise _not_found(run_id) from None
        return _decode_run(row)

    def _light(self, run_id: int) -> dict[str, Any]:
        columns = ("id", "status", "started_at", "finished_at", "duration_s", "pid", "owner_started", "owner_token")
        row = self.db.execute(f"SELECT {', '.join(columns)} FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise _not_found(run_id)
        return dict(zip(columns, row))

    # -- ownership ---------------------------------------------------------------------------
    def is_live(self, run_id: int) -> bool:
        """Whether a live process owns this unfinished run (it is training or about to)."""
        run = self._light(run_id)
        return run["status"] in UNFINISHED_STATUSES and owner_alive(run["pid"], run["owner_started"])

    def claim(self, run_id: int, from_statuses: Sequence[str] = RESUMABLE_STATUSES) -> str:
        """Take a finished run over to train it again (resume): one compare-and-set, so of two processes
        claiming at once exactly one wins. Returns the owner token; raises TuneDeskError for the loser.

        A run left ``running`` by a dead process (or by one whose pid was since reused) is first marked
        interrupted, so it can be claimed.
        """
        self.mark_interrupted(run_ids=[run_id])
        pid, started = this_process()
        token = secrets.token_hex(8)
        marks = ", ".join("?" * len(from_statuses))
        cursor = self.db.execute(
            "UPDATE runs SET status = 'queued', owner_token = ?, pid = ?, owner_started = ?, finished_at = NULL,"
            f" duration_s = NULL, error = NULL, error_hint = NULL WHERE id = ? AND status IN ({marks})",
            [token, pid, started, run_id, *from_statuses],
        )
        self.db.conn.commit()
        if cursor.rowcount == 1:
            return token
        run = self._light(run_id)
        if run["status"] in UNFINISHED_STATUSES:
            who = "this TuneDesk" if run["pid"] == pid else f"another TuneDesk process (pid {run['pid']})"
            raise TuneDeskError(
                f"run {run_id} is already being trained by {who}",
                "wait for it to finish, or stop it there first; `tunedesk runs list` shows its status",
            )
        raise TuneDeskError(
            f"run {run_id} is {run['status']}, so there is nothing to resume",
            "only stopped, interrupted or failed runs can be resumed",
        )

    def release(self, run_id: int, token: str, before: Mapping[str, Any]) -> bool:
        """Give a claimed run back as it was (``before``: its row before the claim), e.g. when preparing
        its resume failed; only if ``token`` still owns it."""
        check_status(before["status"])
        cursor = self.db.execute(
            "UPDATE runs SET status = ?, error = ?, error_hint = ?, finished_at = ?, duration_s = ?"
            " WHERE id = ? AND owner_token = ? AND status IN ('queued', 'running')",
            [before["status"], before.get("error"), before.get("error_hint"), before.get("finished_at"),
             before.get("duration_s"), run_id, token],
        )  # fmt: skip
        self.db.conn.commit()
        return cursor.rowcount == 1

    def list_runs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        search: str | None = None,
        model: str | None = None,
        dataset: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        order: str = "created_at desc",
    ) -> list[dict[str, Any]]:
        """Light rows (no config, trainable names, final metrics or notes), ``tags`` decoded.

        ``search`` matches (case-insensitively) name, model, data set, task, notes, tags and
        freeze summary, or the run id (``42`` / ``#42``). ``order``: "<column> [asc|desc]".
        """
        where, args = where_clause(status, search, model, dataset, tag)
        sql = f"SELECT {', '.join(LIGHT_COLUMNS)} FROM runs WHERE {where} ORDER BY {order_by(order)}"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            args += [-1 if limit is None else int(limit), int(offset)]
        cursor = self.db.execute(sql, args)
        rows = []
        for values in cursor.fetchall():
            row = dict(zip(LIGHT_COLUMNS, values))
            row["tags"] = _loads(row.pop("tags_json"), [])
            rows.append(row)
        return rows

    def count_runs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        search: str | None = None,
        model: str | None = None,
        dataset: str | None = None,
        tag: str | None = None,
    ) -> int:
        where, args = where_clause(status, search, model, dataset, tag)
        return int(self.db.execute(f"SELECT COUNT(*) FROM runs WHERE {where}", args).fetchone()[0])

    def filter_sql(
        self,
        *,
        status: str | Sequence[str] | None = None,
        search: str | None = None,
        model: str | None = None,
        dataset: str | None = None,
        tag: str | None = None,
    ) -> tuple[str, list[Any]]:
        """The WHERE clause (over ``runs``) and arguments that list_runs/count_runs use, for queries
        that select other columns (the runs panel reads a few config fields per page)."""
        return where_clause(status, search, model, dataset, tag)

    def delete_run(self, run_id: int) -> dict[str, Any]:
        """Delete the run and (cascade) everything recorded for it; return the row so the caller can
        remove its files (``output_dir``). Runs resumed from it keep existing (parent_run_id -> NULL)."""
        db = self.db
        with db.atomic():
            run = self.get_run(run_id)
            if run["status"] in UNFINISHED_STATUSES and owner_alive(run["pid"], run["owner_started"]):
                raise TuneDeskError(
                    f"run {run_id} is training right now (pid {run['pid']}), so it cannot be deleted",
                    "stop it first (the Stop button, or Ctrl-C where it runs), then delete it",
                )
            db.execute("DELETE FROM runs WHERE id = ?", [run_id])
        return run

    def mark_interrupted(self, *, all_unfinished: bool = False, run_ids: Sequence[int] | None = None) -> list[int]:
        """Runs left ``running``/``queued`` by a process that is gone become ``interrupted``.

        Gone: no process has the pid, or the one that has it started at another time (a reused pid).
        Call at app/CLI start. With ``all_unfinished=True`` every unfinished run is marked, alive pid
        or not (only when the caller knows no other TuneDesk process is training). ``run_ids``: only these.
        """
        db = self.db
        sql = "SELECT id, pid, owner_started, started_at FROM runs WHERE status IN ('running', 'queued')"
        args: list[Any] = []
        if run_ids is not None:
            sql += f" AND id IN ({', '.join('?' * len(run_ids))})"
            args = [int(r) for r in run_ids]
        rows = db.execute(sql, args).fetchall()
        stale = [(rid, started) for rid, pid, owner, started in rows if all_unfinished or not owner_alive(pid, owner)]
        if not stale:
            return []
        now = utc_now()
        with db.atomic():
            for rid, started in stale:
                # The process may have died long before anyone noticed: end the run at its last step,
                # not now, so its duration is the time it actually trained.
                last = db.execute(
                    "SELECT elapsed FROM step_metrics WHERE run_id = ? ORDER BY step DESC LIMIT 1", [rid]
                ).fetchone()
                duration = float(last[0]) if last and last[0] is not None else None
                finished = now
                if started and duration is not None:
                    finished = (datetime.fromisoformat(started) + timedelta(seconds=duration)).isoformat(
                        timespec="milliseconds"
                    )
                db.execute(
                    "UPDATE runs SET status = 'interrupted', finished_at = COALESCE(finished_at, ?),"
                    " duration_s = COALESCE(duration_s, ?),"
                    " error = COALESCE(error, 'the run stopped unexpectedly (TuneDesk was closed or crashed)'),"
                    " error_hint = COALESCE(error_hint, 'resume it from its last checkpoint, or start it again')"
                    " WHERE id = ? AND status IN ('running', 'queued')",
                    [finished, duration, rid],
                )
        return [rid for rid, _ in stale]

    # -- metrics ----------------------------------------------------------------------------
    def add_step_metrics(self, run_id: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert step rows in one transaction (a repeated step replaces the older row). Keys that are not
        step_metrics columns are ignored; ``step`` is required."""
        if not rows:
            return
        values = [(run_id, *(row.get(c) for c in STEP_COLUMNS)) for row in rows]
        db = self.db
        with db.atomic():
            db.conn.executemany(
                f"INSERT OR REPLACE INTO step_metrics (run_id, {', '.join(STEP_COLUMNS)}) "
                f"VALUES (?, {', '.join('?' * len(STEP_COLUMNS))})",
                values,
            )

    def truncate_metrics_after(self, run_id: int, step: int) -> None:
        """Before resuming from a checkpoint at ``step``: drop step rows, evaluations and samples recorded
        after it (they are recorded again). Logs and checkpoints stay."""
        self._require_run(run_id)
        db = self.db
        with db.atomic():
            for table in ("step_metrics", "epoch_metrics", "samples"):
                db.execute(f"DELETE FROM {table} WHERE run_id = ? AND step > ?", [run_id, step])

    def step_metrics(
        self,
        run_id: int,
        every: int = 1,
        *,
        since_step: int | None = None,
        max_points: int | None = None,
    ) -> list[dict[str, Any]]:
        """A run's step rows by step, downsampled for charts.

        ``every=n`` keeps every n-th row plus the last; ``max_points`` raises ``every`` so about that
        many rows come back (use it for long runs: 200k steps are 200k dicts); ``since_step`` returns
        only rows after that step (live charts). Steps logged at a regular interval (the normal case)
        are picked by primary-key lookups, so thinning a 200k-step run costs ~2k lookups, not a scan;
        irregular steps are thinned exactly after reading them all.
        """
        return thinned_step_metrics(self.db, run_id, every, since_step=since_step, max_points=max_points)

    def add_epoch_metrics(
        self,
        run_id: int,
        epoch: int,
        step: int,
        metrics: Mapping[str, float],
        confusion: Sequence[Sequence[int]] | None = None,
        label_names: Sequence[str] | None = None,
        per_class: Mapping[str, Mapping[str, float]] | None = None,
        is_best: bool = False,
    ) -> int:
        table = self.db.table("epoch_metrics")
        table.insert(
            {
                "run_id": run_id,
                "epoch": int(epoch),
                "step": int(step),
                "metrics_json": _dumps(dict(metrics)),
                "confusion_json": _dumps([list(r) for r in confusion or []]),
                "label_names_json": _dumps(list(label_names or [])),
                "per_class_json": _dumps({k: dict(v) for k, v in (per_class or {}).items()}),
                "is_best": 1 if is_best else 0,
            }
        )
        return int(cast(int, table.last_pk))

    def epoch_metrics(self, run_id: int) -> list[dict[str, Any]]:
        rows = self.db.table("epoch_metrics").rows_where("run_id = ?", [run_id], order_by="epoch, step, id")
        return [
            {
                "epoch": r["epoch"],
                "step": r["step"],
                "metrics": _loads(r["metrics_json"], {}),
                "confusion": _loads(r["confusion_json"], []),
                "label_names": _loads(r["label_names_json"], []),
                "per_class": _loads(r["per_class_json"], {}),
                "is_best": bool(r["is_best"]),
            }
            for r in rows
        ]

    # -- checkpoints, logs, samples ---------------------------------------------------------
    def set_checkpoint(self, run_id: int, kind: str, path: str, step: int, epoch: int) -> None:
        """One row per kind per run: a newer 'best' or 'last' replaces the previous one."""
        if kind not in CHECKPOINT_KINDS:
            raise ValueError(f"checkpoint kind must be one of {CHECKPOINT_KINDS} (got {kind!r})")
        self.db.table("checkpoints").upsert(
            {"run_id": run_id, "kind": kind, "path": str(path), "step": step, "epoch": epoch, "created_at": utc_now()},
            pk=("run_id", "kind"),
        )

    def checkpoints(self, run_id: int) -> dict[str, dict[str, Any]]:
        rows = self.db.table("checkpoints").rows_where("run_id = ?", [run_id], order_by="kind")
        return {r["kind"]: {k: r[k] for k in ("path", "step", "epoch", "created_at")} for r in rows}

    def add_log(self, run_id: int, level: str, message: str, ts: str | None = None) -> None:
        self.db.table("run_logs").insert({"run_id": run_id, "ts": ts or utc_now(), "level": level, "message": message})

    def logs(self, run_id: int, *, since_id: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Log lines oldest first; ``since_id`` returns only newer lines (tailing)."""
        where, args = "run_id = ?", [run_id]
        if since_id is not None:
            where += " AND id > ?"
            args.append(since_id)
        return list(self.db.table("run_logs").rows_where(where, args, order_by="id", limit=limit))

    def add_sample(self, run_id: int, step: int, epoch: int, prompt: str, text: str, ts: str | None = None) -> None:
        self.db.table("samples").insert(
            {
                "run_id": run_id,
                "step": step,
                "epoch": epoch,
                "prompt": prompt,
                "text": text,
                "created_at": ts or utc_now(),
            }
        )

    def samples(self, run_id: int) -> list[dict[str, Any]]:
        return list(self.db.table("samples").rows_where("run_id = ?", [run_id], order_by="id"))


def _owner_fields() -> dict[str, Any]:
    pid, started = this_process()
    return {"pid": pid, "owner_started": started, "owner_token": secrets.token_hex(8)}


def _not_found(run_id: int) -> TuneDeskError:
    return TuneDeskError(f"run {run_id} not found", hint="`tunedesk runs` lists the runs")


def _decode_run(row: dict[str, Any]) -> dict[str, Any]:
    """JSON columns decoded; ``config`` is the configuration as given and ``resolved`` what the engine
    resolved (stored together, see ``store.resolved``)."""
    defaults: dict[str, Any] = {"config": {}, "trainable_names": [], "final_metrics": {}, "tags": []}
    for name, column in JSON_FIELDS.items():
        row[name] = _loads(row.pop(column, None), defaults[name])
    if not isinstance(row["config"], dict):
        row["config"] = {}
    row["resolved"] = row["config"].pop(RESOLVED_KEY, None) or {}
    return row


def _seconds_between(start: str, end: str) -> float | None:
    try:
        return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)
    except (TypeError, ValueError):
        return None
