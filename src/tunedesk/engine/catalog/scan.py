"""Scanning: every model on this machine, from the sources the other modules of this package read."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Generator, Iterator
from functools import partial
from pathlib import Path

from tunedesk.engine import paths
from tunedesk.engine.catalog.entry import CatalogRoots, ModelEntry
from tunedesk.engine.catalog.folders import inspect_folder, read_config
from tunedesk.engine.catalog.hf_cache import list_repos, repo_entry
from tunedesk.engine.catalog.packages import find_package_models
from tunedesk.engine.catalog.params import CountStore, count_config
from tunedesk.engine.catalog.torch_hub import iter_checkpoints
from tunedesk.engine.catalog.user_paths import iter_user_path, load_user_paths

log = logging.getLogger(__name__)

COUNT_CACHE_FILE = "parameter_counts.json"


def _existing_unique(candidates: list[Path]) -> list[Path]:
    out: list[Path] = []
    seen: set[Path] = set()
    for candidate in candidates:
        try:
            resolved = candidate.expanduser().resolve()
            if resolved.is_dir() and resolved not in seen:
                seen.add(resolved)
                out.append(resolved)
        except OSError:
            continue
    return out


def default_roots(home: Path | None = None) -> CatalogRoots:
    """Where models usually are: the environment's HF/torch caches, the user's added paths.

    ``home`` is the TuneDesk home override (as for ``paths.home_dir``), not the user's home folder.
    """
    env = os.environ
    user_home = Path.home()
    xdg = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else user_home / ".cache"
    hf: list[Path] = []
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        if env.get(var):
            hf.append(Path(env[var]))
    if env.get("HF_HOME"):
        hf.append(Path(env["HF_HOME"]) / "hub")
    hf += [xdg / "huggingface" / "hub", user_home / ".cache" / "huggingface" / "hub"]
    torch_dirs: list[Path] = []
    if env.get("TORCH_HOME"):
        torch_dirs.append(Path(env["TORCH_HOME"]) / "hub" / "checkpoints")
    torch_dirs += [xdg / "torch" / "hub" / "checkpoints", user_home / ".cache" / "torch" / "hub" / "checkpoints"]
    tunedesk_home = paths.home_dir(home)
    return CatalogRoots(
        hf_caches=_existing_unique(hf),
        torch_hub_dirs=_existing_unique(torch_dirs),
        user_paths=load_user_paths(home),
        scan_packages=True,
        cache_file=tunedesk_home / "cache" / COUNT_CACHE_FILE,
    )


def count_parameters(folder_or_config: Path | str | dict) -> int | None:
    """Exact parameter count of a Hugging Face model from its config (folder, config.json or dict).

    Built on the meta device, never from weights; None when transformers cannot build it (needs
    remote code, unknown model type, unreadable config). Memoised by config file path + mtime and by
    config content.
    """
    if isinstance(folder_or_config, dict):
        return count_config(folder_or_config)[0]
    path = Path(folder_or_config)
    if path.is_dir():
        path = path / "config.json"
    cfg, _problem = read_config(path)
    if cfg is None:
        return None
    return count_config(cfg, path)[0]


def _guarded(make: Callable[[], ModelEntry], entry_id: str, name: str, path: Path, source: str) -> ModelEntry:
    """Run one entry's inspection; an unexpected error becomes that entry's problem, not a failed scan."""
    try:
        return make()
    except Exception as exc:
        log.exception("could not inspect %s", path)
        return ModelEntry(
            id=entry_id,
            name=name,
            path=str(path),
            source=source,
            problem=f"could not be inspected ({type(exc).__name__}: {exc})",
        )


def _guarded_iter(items: Callable[[], Iterator[ModelEntry]], path: Path, source: str) -> Iterator[ModelEntry]:
    try:
        yield from items()
    except Exception as exc:
        log.exception("could not scan %s", path)
        yield ModelEntry(
            id=f"folder:{path}",
            name=path.name,
            path=str(path),
            source=source,
            problem=f"could not be scanned ({type(exc).__name__}: {exc})",
        )


def _produce(roots: CatalogRoots, count_params: bool, store: CountStore | None) -> Generator[ModelEntry]:
    if roots.scan_packages:
        try:
            packages = find_package_models()
        except Exception:
            log.exception("could not list installed model packages")
            packages = []
        for pkg in packages:
            yield _guarded(
                partial(
                    inspect_folder,
                    pkg.folder,
                    entry_id=pkg.entry_id,
                    name=pkg.name,
                    source="package",
                    count_params=count_params,
                    store=store,
                ),
                pkg.entry_id,
                pkg.name,
                pkg.folder,
                "package",
            )
    for cache in roots.hf_caches:
        try:
            repos = list_repos(Path(cache))
        except OSError as exc:
            yield ModelEntry(
                id=f"folder:{cache}",
                name=str(cache),
                path=str(cache),
                source="hf_cache",
                problem=f"cannot read the Hugging Face cache: {exc.strerror or exc}",
            )
            continue
        for repo in repos:
            repo_id = repo.name[len("models--") :].replace("--", "/", 1)
            yield _guarded(
                partial(repo_entry, repo, count_params=count_params, store=store),
                f"hf:{repo_id}",
                repo_id,
                repo,
                "hf_cache",
            )
    for hub in roots.torch_hub_dirs:
        yield from _guarded_iter(
            partial(iter_checkpoints, Path(hub), source="torch_hub", count_params=count_params, store=store),
            Path(hub),
            "torch_hub",
        )
    for user_path in roots.user_paths:
        yield from _guarded_iter(
            partial(iter_user_path, Path(user_path), count_params=count_params, store=store),
            Path(user_path),
            "user_folder",
        )


def scan(
    roots: CatalogRoots | None = None,
    on_entry: Callable[[ModelEntry], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    count_params: bool = True,
) -> list[ModelEntry]:
    """Every model on this machine, in discovery order (packages, HF caches, torch hub, user paths).

    ``on_entry`` gets each entry as soon as it is ready (runs on the calling thread); ``cancel`` is
    polled before each entry and stops the scan early, returning what was found so far. The same
    folder reached twice (e.g. a user path inside an HF cache) is listed once; a repeated id gets
    ``@<path>`` appended. With ``count_params=False`` parameters stay None and problems that only
    transformers can tell (remote code, unknown model type) are not reported: a quick listing.
    Exceptions raised by ``on_entry`` propagate.
    """
    roots = roots if roots is not None else default_roots()
    store = CountStore(roots.cache_file) if roots.cache_file is not None else None
    found: list[ModelEntry] = []
    seen_paths: set[str] = set()
    seen_ids: set[str] = set()
    producer = _produce(roots, count_params, store)
    try:
        while not (cancel is not None and cancel()):
            entry = next(producer, None)
            if entry is None:
                break
            real = os.path.realpath(entry.path)
            if real in seen_paths:
                continue
            seen_paths.add(real)
            if entry.id in seen_ids:
                entry.id = f"{entry.id}@{entry.path}"
            seen_ids.add(entry.id)
            found.append(entry)
            if on_entry is not None:
                on_entry(entry)
    finally:
        producer.close()
        if store is not None:
            store.save()
    return found


def entries_to_json(entries: list[ModelEntry]) -> str:
    """``tunedesk models --json`` output: a JSON list of entry dicts."""
    return json.dumps([e.to_dict() for e in entries], indent=2)
