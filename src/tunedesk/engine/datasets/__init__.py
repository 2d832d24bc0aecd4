"""Stored data sets: import, edit, clean, split and version labelled data (the Datasets area).

Data sets live in the run-history database (migration 2). Typical use::

    from tunedesk.engine.datasets import DatasetStore, ImportSpec, run_import, edits, refresh_flags
    with DatasetStore(database_path(home)) as store:
        result = run_import(store, ImportSpec("text_table", "tickets.csv"))
        undo = edits.apply_edit(store, result.dataset_id, edits.relabel([12], "billing"))
        split_dataset(store, result.dataset_id, "stratified", 0.2, seed=42)
        refresh_flags(store, result.dataset_id)
        version = store.save_version(result.dataset_id)     # version.id, e.g. "ds1-v1"

then train with ``DataSpec(kind="dataset_version", dataset_version=version.id)`` or
``tunedesk train CONFIG --dataset-version ds1-v1``. No Qt here.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562): the UI can import ``datasets.flags`` while the window
# opens without paying for sqlite-utils and Pillow.
_EXPORTS = {
    "cleaning": ("CleaningOptions", "CleaningReport", "check_files", "duplicate_groups", "refresh_flags"),
    "edits": ("Edit", "apply_edit"),
    "flags": ("FLAG_BY_KEY", "FLAGS", "FlagInfo", "flags_for_kind"),
    "hashing": ("inspect_image", "normalise_text"),
    "importers": (
        "IMPORT_KINDS",
        "CancelToken",
        "ImportCancelled",
        "ImportResult",
        "ImportSpec",
        "run_import",
    ),
    "preview": ("TablePreview", "preview_table"),
    "splits": ("METHODS", "assign_splits", "plan_split", "split_dataset"),
    "store": ("KINDS", "SPLITS", "DatasetInfo", "DatasetStore", "Item", "VersionInfo"),
    "thumbnails": ("make_thumbnail", "thumbnail_dir"),
    "versions": (
        "VersionExamples",
        "load_chat_version",
        "load_corpus_version",
        "load_version_examples",
        "task_for_version",
        "version_database",
        "version_kind",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + ["edits", "flags"]


def __getattr__(name: str) -> Any:
    if name in ("edits", "flags"):
        return importlib.import_module(f"{__name__}.{name}")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
