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

from tunedesk.engine.datasets import edits, flags
from tunedesk.engine.datasets.cleaning import (
    CleaningOptions,
    CleaningReport,
    check_files,
    duplicate_groups,
    refresh_flags,
)
from tunedesk.engine.datasets.edits import Edit, apply_edit
from tunedesk.engine.datasets.flags import FLAG_BY_KEY, FLAGS, FlagInfo, flags_for_kind
from tunedesk.engine.datasets.hashing import inspect_image, normalise_text
from tunedesk.engine.datasets.importers import (
    IMPORT_KINDS,
    CancelToken,
    ImportCancelled,
    ImportResult,
    ImportSpec,
    import_path,
    run_import,
)
from tunedesk.engine.datasets.preview import TablePreview, preview_table
from tunedesk.engine.datasets.splits import METHODS, assign_splits, plan_split, split_dataset
from tunedesk.engine.datasets.store import KINDS, SPLITS, DatasetInfo, DatasetStore, Item, VersionInfo
from tunedesk.engine.datasets.thumbnails import make_thumbnail, thumbnail_dir
from tunedesk.engine.datasets.versions import (
    VersionExamples,
    load_chat_version,
    load_corpus_version,
    load_version_examples,
    version_database,
)

__all__ = [
    "FLAGS", "FLAG_BY_KEY", "IMPORT_KINDS", "KINDS", "METHODS", "SPLITS",
    "CancelToken", "CleaningOptions", "CleaningReport", "DatasetInfo", "DatasetStore", "Edit", "FlagInfo",
    "ImportCancelled", "ImportResult", "ImportSpec", "Item", "TablePreview", "VersionExamples", "VersionInfo",
    "apply_edit", "assign_splits", "check_files", "duplicate_groups", "edits", "flags", "flags_for_kind",
    "import_path", "inspect_image", "load_chat_version", "load_corpus_version", "load_version_examples",
    "make_thumbnail", "normalise_text", "plan_split", "preview_table", "refresh_flags", "run_import",
    "split_dataset", "thumbnail_dir", "version_database",
]  # fmt: skip
