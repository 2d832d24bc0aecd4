"""The Hugging Face hub cache: ``models--org--name/{refs,snapshots,blobs}``.

Snapshot files are symlinks into ``blobs/``; a download in progress (or abandoned) leaves
``blobs/<hash>.incomplete`` and no snapshot link for that file.
"""

from __future__ import annotations

import os
from pathlib import Path

from tunedesk.engine.catalog.entry import ModelEntry
from tunedesk.engine.catalog.folders import inspect_folder
from tunedesk.engine.catalog.params import CountStore

PREFIX = "models--"


def repo_id_of(folder_name: str) -> str:
    """``models--org--name`` -> ``org/name`` (``models--gpt2`` -> ``gpt2``)."""
    return folder_name[len(PREFIX) :].replace("--", "/", 1)


def folder_name_of(repo_id: str) -> str:
    return PREFIX + repo_id.replace("/", "--")


def pick_snapshot(repo_dir: Path) -> Path | None:
    """The snapshot ``refs/main`` names, else the most recently modified one."""
    snapshots = repo_dir / "snapshots"
    try:
        revision = (repo_dir / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        revision = ""
    if revision and "/" not in revision and (snapshots / revision).is_dir():
        return snapshots / revision
    try:
        candidates = [Path(e.path) for e in os.scandir(snapshots) if e.is_dir()]
    except OSError:
        return None

    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    return max(candidates, key=lambda p: (mtime(p), p.name), default=None)


def incomplete_problem(repo_dir: Path) -> str | None:
    try:
        partial = [e.name for e in os.scandir(repo_dir / "blobs") if e.name.endswith(".incomplete")]
    except OSError:
        return None
    if not partial:
        return None
    return f"download incomplete ({len(partial)} partial file{'s' if len(partial) > 1 else ''} in blobs/)"


def repo_entry(repo_dir: Path, *, count_params: bool = True, store: CountStore | None = None) -> ModelEntry:
    repo_id = repo_id_of(repo_dir.name)
    incomplete = incomplete_problem(repo_dir)
    snapshot = pick_snapshot(repo_dir)
    if snapshot is None:
        problem = incomplete or "nothing downloaded (no snapshot folder)"
        return ModelEntry(id=f"hf:{repo_id}", name=repo_id, path=str(repo_dir), source="hf_cache", problem=problem)
    return inspect_folder(
        snapshot,
        entry_id=f"hf:{repo_id}",
        name=repo_id,
        source="hf_cache",
        count_params=count_params,
        store=store,
        incomplete=incomplete,
    )


def list_repos(cache: Path) -> list[Path]:
    """The ``models--*`` folders of one cache, sorted (datasets and spaces are skipped); OSError if unreadable."""
    names = sorted(e.name for e in os.scandir(cache) if e.name.startswith(PREFIX))
    return [cache / n for n in names if (cache / n).is_dir()]
