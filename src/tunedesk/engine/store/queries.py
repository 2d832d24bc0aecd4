"""How the run history is searched and read back for charts: the filter clause shared by the run list,
its count and the Runs panel's own queries; the ORDER BY whitelist; and the thinning of long step
curves into a few thousand points. ``RunStore`` (``store.runs``) calls these; they hold no state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

RUN_STATUSES = ("queued", "running", "completed", "failed", "stopped", "interrupted")
# What list_runs returns: no config / trainable names / final metrics / notes.
LIGHT_COLUMNS = (
    "id", "name", "status", "task", "model_name", "dataset_name", "dataset_version", "trainable_params",
    "total_params", "freeze_summary", "created_at", "started_at", "finished_at", "duration_s", "best_metric",
    "best_metric_name", "samples_per_second", "error", "error_hint", "output_dir", "device", "precision",
    "tags_json", "parent_run_id",
)  # fmt: skip
ORDER_COLUMNS = frozenset(LIGHT_COLUMNS) - {"tags_json", "error", "error_hint", "output_dir"}
STEP_COLUMNS = (
    "step", "epoch", "loss", "learning_rate", "samples_per_second", "elapsed", "gpu_memory_mb",
    "gpu_peak_memory_mb",
)  # fmt: skip


def check_status(status: str) -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {RUN_STATUSES} (got {status!r})")


def where_clause(
    status: str | Sequence[str] | None,
    search: str | None,
    model: str | None,
    dataset: str | None,
    tag: str | None,
) -> tuple[str, list[Any]]:
    """The WHERE clause over ``runs`` and its arguments, for the filters of list_runs and count_runs."""
    clauses: list[str] = []
    args: list[Any] = []
    if status:
        statuses = [status] if isinstance(status, str) else list(status)
        for s in statuses:
            check_status(s)
        clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
        args.extend(statuses)
    if model:
        clauses.append("model_name = ?")
        args.append(model)
    if dataset:
        clauses.append("dataset_name = ?")
        args.append(dataset)
    if tag:
        clauses.append("id IN (SELECT run_id FROM run_tags WHERE tag = ?)")
        args.append(tag)
    if search and search.strip():
        text = search.strip()
        like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        fields = ("name", "model_name", "dataset_name", "task", "notes", "tags_json", "freeze_summary")
        parts = [f"{f} LIKE ? ESCAPE '\\'" for f in fields]
        args.extend([like] * len(fields))
        number = text.lstrip("#")
        if number.isdigit():
            parts.append("id = ?")
            args.append(int(number))
        clauses.append("(" + " OR ".join(parts) + ")")
    return (" AND ".join(clauses) or "1"), args


def order_by(order: str) -> str:
    parts = (order or "created_at desc").split()
    column = parts[0].lower()
    direction = parts[1].lower() if len(parts) > 1 else "asc"
    if column not in ORDER_COLUMNS or direction not in ("asc", "desc") or len(parts) > 2:
        raise ValueError(
            f"cannot order runs by {order!r}; use '<column> [asc|desc]' with one of {sorted(ORDER_COLUMNS)}"
        )
    return f"{column} {direction.upper()}, id {direction.upper()}"


def thinned_step_metrics(
    db: Database,
    run_id: int,
    every: int = 1,
    *,
    since_step: int | None = None,
    max_points: int | None = None,
) -> list[dict[str, Any]]:
    """A run's step rows by step, thinned as ``RunStore.step_metrics`` describes."""
    where = "run_id = ?"
    args: list[Any] = [run_id]
    if since_step is not None:
        where += " AND step > ?"
        args.append(since_step)
    cols = ", ".join(STEP_COLUMNS)
    select_all = f"SELECT {cols} FROM step_metrics WHERE {where} ORDER BY step"
    every = max(1, int(every))
    if every == 1 and not max_points:
        return [dict(zip(STEP_COLUMNS, r)) for r in db.execute(select_all, args).fetchall()]

    head = [r[0] for r in db.execute(f"SELECT step FROM step_metrics WHERE {where} ORDER BY step LIMIT 2", args)]
    tail = [r[0] for r in db.execute(f"SELECT step FROM step_metrics WHERE {where} ORDER BY step DESC LIMIT 2", args)]
    if not head:
        return []
    first, last = head[0], tail[0]
    spacing = head[1] - head[0] if len(head) == 2 else 1
    if len(head) == 2 and spacing > 0 and tail[0] - tail[1] == spacing and (last - first) % spacing == 0:
        count = (last - first) // spacing + 1
        if max_points:
            every = max(every, -(-count // max(1, int(max_points))))
        wanted = list(range(first, last + 1, spacing * every))
        if wanted[-1] != last:
            wanted.append(last)
        rows = db.execute(
            f"SELECT {cols} FROM step_metrics WHERE {where} AND step IN (SELECT value FROM json_each(?)) ORDER BY step",
            [*args, json.dumps(wanted)],
        ).fetchall()
        if len(rows) >= 0.9 * len(wanted):  # a few missing steps are just gaps in the curve
            return [dict(zip(STEP_COLUMNS, r)) for r in rows]
    all_rows = db.execute(select_all, args).fetchall()
    if max_points:
        every = max(every, -(-len(all_rows) // max(1, int(max_points))))
    rows = all_rows[::every]
    if rows[-1] is not all_rows[-1]:
        rows.append(all_rows[-1])
    return [dict(zip(STEP_COLUMNS, r)) for r in rows]
