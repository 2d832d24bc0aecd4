"""Queries over the run history for the runs panel and CLI: pages, filter choices, clone, delete.

Everything here reads or writes through a ``RunStore`` the caller opened in its own thread; nothing
imports torch, so the runs panel can use it before the engine is loaded.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunedesk.engine.config import RunConfig
from tunedesk.engine.shares import percent
from tunedesk.engine.store import RUN_STATUSES, RunStore
from tunedesk.engine.store.connection import owner_alive
from tunedesk.engine.store.queries import LIGHT_COLUMNS
from tunedesk.engine.store.resolved import RESOLVED_KEY, resolved

PAGE_SIZE = 200

# Config fields each table row shows, read with json_extract so list pages never decode whole configs.
_LR = (
    f"COALESCE(json_extract(config_json, '$.{RESOLVED_KEY}.learning_rate'), "
    "json_extract(config_json, '$.hparams.learning_rate'))"
)
EXTRA_FIELDS = {
    "learning_rate": _LR,
    "epochs": "json_extract(config_json, '$.hparams.epochs')",
    "batch_size": (  # auto: the batch the run resolved
        "COALESCE(json_extract(config_json, '$.hparams.batch_size'), "
        f"json_extract(config_json, '$.{RESOLVED_KEY}.batch_size'))"
    ),
    "notes": "notes",
}

# Sort keys the panel offers -> SQL expression. The first (created_at) is indexed.
SORT_KEYS = {
    "created_at": "created_at",
    "id": "id",
    "name": "name COLLATE NOCASE",
    "model_name": "model_name COLLATE NOCASE",
    "dataset_name": "dataset_name COLLATE NOCASE",
    "trainable_share": "CAST(trainable_params AS REAL) / NULLIF(total_params, 0)",
    "learning_rate": _LR,
    "epochs": EXTRA_FIELDS["epochs"],
    "batch_size": EXTRA_FIELDS["batch_size"],
    "best_metric": "best_metric",
    "duration_s": "duration_s",
    "status": "status",
    "tags": "tags_json",
}

RESUMABLE_STATUSES = ("stopped", "interrupted", "failed")


@dataclass(frozen=True)
class RunFilter:
    """What the runs table shows: free text plus exact status / model / data set / tag."""

    search: str = ""
    status: str | None = None
    model: str | None = None
    dataset: str | None = None
    tag: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return {
            "search": self.search or None,
            "status": self.status or None,
            "model": self.model or None,
            "dataset": self.dataset or None,
            "tag": self.tag or None,
        }


@dataclass
class FilterChoices:
    statuses: list[str] = field(default_factory=lambda: list(RUN_STATUSES))
    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


def page(
    store: RunStore,
    flt: RunFilter = RunFilter(),
    *,
    sort: str = "created_at",
    descending: bool = True,
    limit: int = PAGE_SIZE,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """One page of table rows: the store's light columns + learning rate, epochs, batch size, notes."""
    if sort not in SORT_KEYS:
        raise ValueError(f"cannot sort runs by {sort!r}; use one of {sorted(SORT_KEYS)}")
    where, args = store.filter_sql(**flt.kwargs())
    direction = "DESC" if descending else "ASC"
    columns = list(LIGHT_COLUMNS) + list(EXTRA_FIELDS)
    select = ", ".join(list(LIGHT_COLUMNS) + [f"{expr} AS {name}" for name, expr in EXTRA_FIELDS.items()])
    order = SORT_KEYS[sort]
    # NULLs last in both directions, then id for a stable order across pages; created_at and id are
    # never NULL and indexed, so the default order reads a page without sorting the whole history.
    nulls_last = "" if sort in ("created_at", "id") else f"({order}) IS NULL, "
    sql = (
        f"SELECT {select} FROM runs WHERE {where} "
        f"ORDER BY {nulls_last}{order} {direction}, id {direction} LIMIT ? OFFSET ?"
    )
    rows = []
    for values in store.db.execute(sql, [*args, int(limit), int(offset)]).fetchall():
        row = dict(zip(columns, values))
        try:
            row["tags"] = json.loads(row.pop("tags_json") or "[]")
        except ValueError:
            row["tags"] = []
        rows.append(row)
    return rows


def count(store: RunStore, flt: RunFilter = RunFilter()) -> int:
    return store.count_runs(**flt.kwargs())


def filter_choices(store: RunStore) -> FilterChoices:
    """Distinct models, data sets and tags for the filter menus (index-only scans)."""
    db = store.db
    models = [r[0] for r in db.execute("SELECT DISTINCT model_name FROM runs WHERE model_name != '' ORDER BY 1")]
    datasets = [r[0] for r in db.execute("SELECT DISTINCT dataset_name FROM runs WHERE dataset_name != '' ORDER BY 1")]
    tags = [r[0] for r in db.execute("SELECT DISTINCT tag FROM run_tags ORDER BY 1")]
    return FilterChoices(models=models, datasets=datasets, tags=tags)


def run_config(run: Mapping[str, Any]) -> dict[str, Any]:
    """The run's configuration as the user gave it (``RunStore.get_run`` keeps what the engine resolved
    apart, in ``resolved``: read it with ``resolved(run)``)."""
    config = dict(run.get("config") or {})
    config.pop(RESOLVED_KEY, None)
    return config


def clone_config(run: dict[str, Any]) -> RunConfig:
    """A RunConfig to train again like this run: same settings, a fresh output folder."""
    config = RunConfig.from_dict(run_config(run))
    config.output_dir = None  # never train a clone into the original run's folder
    return config


def lm_chat(run: dict[str, Any]) -> bool:
    """A language-model run trained on conversations: its "try it" sends the whole chat, through the
    chat template (a corpus run continues the text it is given)."""
    if run.get("task") != "causal_lm":
        return False
    chat = resolved(run).chat  # recorded by the engine (a data set version may hold either)
    return bool(chat) if chat is not None else (run_config(run).get("data") or {}).get("kind") == "chat_jsonl"


def has_model(checkpoints: dict[str, Any]) -> bool:
    """Whether a run saved weights to load (a best or a last checkpoint whose folder is there)."""
    return any(Path(c["path"]).is_dir() for k, c in checkpoints.items() if k in ("best", "last") and c.get("path"))


def can_resume(run: dict[str, Any], checkpoints: dict[str, Any]) -> tuple[bool, str]:
    """Whether a run can continue from its last checkpoint, and if not, why (for a tooltip)."""
    status = run.get("status")
    if status not in RESUMABLE_STATUSES:
        return False, f"the run is {status}"
    last = checkpoints.get("last")
    folder = Path(run["output_dir"]) / "last" if run.get("output_dir") else None
    if not last:
        if folder is not None and folder.is_dir():  # written, then killed before the history recorded it
            return True, "continues from its last checkpoint"
        return False, "the run stopped before its first checkpoint"
    if not Path(last["path"]).is_dir():
        return False, f"its checkpoint folder is missing: {last['path']}"
    return True, f"continues from step {last.get('step')}"


def is_active(run: dict[str, Any]) -> bool:
    """A run some live process is training right now (never delete or resume it)."""
    return run.get("status") in ("running", "queued") and owner_alive(run.get("pid"), run.get("owner_started"))


def delete_run(store: RunStore, run_id: int, home: Path | None = None) -> dict[str, Any]:
    """Delete a run from the history and its files from disk; return the deleted row.

    A folder under TuneDesk's ``runs/`` is removed whole. A folder the user chose (``output_dir`` in the
    config) only loses what TuneDesk wrote there (best/, last/, config.json), so other files survive.
    """
    run = store.delete_run(run_id)  # refuses a run a live process is training
    out = run.get("output_dir")
    if out:
        remove_run_files(Path(out), home)
    return run


# What TuneDesk writes into a run's folder (checkpoints, their interrupted writes, event files, config).
RUN_FOLDERS = ("best", "last", "tensorboard", "cache")
RUN_FILE_NAMES = ("config.json",)


def run_files(folder: Path) -> list[Path]:
    """The things in ``folder`` that a TuneDesk run wrote (a folder holding any is another run's)."""
    found = [folder / n for n in RUN_FOLDERS + RUN_FILE_NAMES if (folder / n).exists()]
    return found + sorted(folder.glob(".best.*")) + sorted(folder.glob(".last.*"))


def remove_run_files(folder: Path, home: Path | None = None) -> None:
    if not folder.is_dir():
        return
    from tunedesk.engine.paths import runs_dir

    try:
        managed = folder.resolve().parent == runs_dir(home).resolve()
    except OSError:
        managed = False
    if managed:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in run_files(folder):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink()
            except OSError:
                pass
    try:
        folder.rmdir()  # only if nothing else is left
    except OSError:
        pass


def share_text(trainable: int | None, total: int | None) -> str:
    """``12%`` / ``0.35%`` of parameters that train."""
    return percent(trainable or 0, total) if total else ""
