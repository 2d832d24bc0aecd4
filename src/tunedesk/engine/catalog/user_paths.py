"""Folders and files the user added by hand, kept in ``user_models.json`` in the TuneDesk home."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tunedesk.engine import paths
from tunedesk.engine.catalog.entry import ModelEntry
from tunedesk.engine.catalog.folders import inspect_folder, looks_like_model_folder
from tunedesk.engine.catalog.hf_cache import PREFIX, list_repos, repo_entry
from tunedesk.engine.catalog.params import CountStore
from tunedesk.engine.catalog.torch_hub import CHECKPOINT_SUFFIXES, NOT_TORCHVISION, checkpoint_entry
from tunedesk.engine.errors import ModelError

log = logging.getLogger(__name__)

USER_MODELS_FILE = "user_models.json"
MAX_DEPTH = 3  # user folder / group / model: deeper trees are data, not model collections


def user_models_file(home: Path | None = None) -> Path:
    return paths.home_dir(home) / USER_MODELS_FILE


def load_user_paths(home: Path | None = None) -> list[Path]:
    """The user's added paths; a missing or corrupt file reads as none (it is re-written on the next add)."""
    file = user_models_file(home)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", file, exc)
        return []
    items = data.get("paths") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return []
    return [Path(p) for p in items if isinstance(p, str) and p]


def _save(paths_: list[Path], home: Path | None) -> None:
    file = user_models_file(home)
    fd, tmp = tempfile.mkstemp(prefix=".user_models-", suffix=".json", dir=file.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"paths": [str(p) for p in paths_]}, fh, indent=2)
    os.replace(tmp, file)


def add_user_path(path: str | os.PathLike[str], home: Path | None = None) -> Path:
    """Remember a folder (of models) or a weight file; returns the absolute path stored."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise ModelError(f"{resolved} does not exist", "pick an existing model folder or weight file")
    if resolved.is_file() and not resolved.name.lower().endswith(CHECKPOINT_SUFFIXES):
        raise ModelError(
            f"{resolved.name} is not a weights file ({', '.join(CHECKPOINT_SUFFIXES)})",
            "add the model's folder (config.json and weights), or its weights file",
        )
    current = load_user_paths(home)
    if resolved not in current:
        _save(current + [resolved], home)
    return resolved


def remove_user_path(path: str | os.PathLike[str], home: Path | None = None) -> None:
    """Forget a path (the files are not touched); forgetting an unknown path does nothing."""
    target = Path(path).expanduser()
    absolute = target.resolve() if target.exists() else Path(os.path.abspath(target))
    current = load_user_paths(home)
    kept = [p for p in current if p not in (target, absolute)]
    if len(kept) != len(current):
        _save(kept, home)


def _file_entry(path: Path, count_params: bool, store: CountStore | None) -> ModelEntry:
    unknown = (
        NOT_TORCHVISION
        if path.name.endswith((".pth", ".pt", ".ckpt"))
        else "no config.json next to this weight file, so its architecture is unknown"
    )
    return checkpoint_entry(
        path,
        source="user_file",
        entry_id=f"file:{path}",
        count_params=count_params,
        store=store,
        unknown_problem=unknown,
    )


def _folder_entry(path: Path, count_params: bool, store: CountStore | None) -> ModelEntry:
    name = path.name
    parts = path.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith(PREFIX):
        name = parts[-3][len(PREFIX) :].replace("--", "/", 1)  # a snapshot inside some HF cache
    return inspect_folder(
        path, entry_id=f"folder:{path}", name=name, source="user_folder", count_params=count_params, store=store
    )


def iter_user_path(path: Path, *, count_params: bool = True, store: CountStore | None = None) -> Iterator[ModelEntry]:
    """Entries under one user path: a model folder, a folder of models (or an HF cache), or a file."""
    path = Path(os.path.abspath(path.expanduser()))
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except OSError as exc:
        yield ModelEntry(
            id=f"folder:{path}",
            name=path.name,
            path=str(path),
            source="user_folder",
            problem=f"cannot be read: {exc.strerror or exc}",
        )
        return
    if not exists:
        yield ModelEntry(
            id=f"folder:{path}",
            name=path.name,
            path=str(path),
            source="user_folder",
            problem="not found (moved or deleted?)",
        )
        return
    if not is_dir:
        if (path.parent / "config.json").exists():
            yield _folder_entry(path.parent, count_params, store)
        else:
            yield _file_entry(path, count_params, store)
        return
    found = False
    for entry in _walk(path, 0, set(), count_params, store):
        found = True
        yield entry
    if not found:
        yield ModelEntry(
            id=f"folder:{path}",
            name=path.name,
            path=str(path),
            source="user_folder",
            problem="no models found here (no config.json or weight files)",
        )


def _walk(
    folder: Path, depth: int, visited: set[tuple[int, int]], count_params: bool, store: CountStore | None
) -> Iterator[ModelEntry]:
    try:
        st = folder.stat()
        key = (st.st_dev, st.st_ino)
        if key in visited:
            return  # a symlink loop or a second link to the same folder
        visited.add(key)
        children = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        if depth == 0:
            yield ModelEntry(
                id=f"folder:{folder}",
                name=folder.name,
                path=str(folder),
                source="user_folder",
                problem=f"cannot read folder: {exc.strerror or exc}",
            )
        return  # an unreadable subfolder of a collection is skipped: it may not be a model at all
    names = {c.name for c in children}
    if looks_like_model_folder(names):
        yield _folder_entry(folder, count_params, store)
        return
    if any(n.startswith(PREFIX) for n in names):
        try:
            repos = list_repos(folder)
        except OSError:
            repos = []
        for repo in repos:
            yield repo_entry(repo, count_params=count_params, store=store)
        return
    for child in children:
        if child.name.startswith("."):
            continue
        try:
            child_is_dir = child.is_dir()
        except OSError:
            continue
        if child_is_dir:
            if depth < MAX_DEPTH:
                yield from _walk(Path(child.path), depth + 1, visited, count_params, store)
        elif child.name.endswith(CHECKPOINT_SUFFIXES):
            yield _file_entry(Path(child.path), count_params, store)


def scan_path(path: Path, *, count_params: bool = True) -> list[ModelEntry]:
    """Entries for a folder the user picked (possibly holding several model folders) or a weight file."""
    return list(iter_user_path(Path(path), count_params=count_params))
