"""Reading a saved version back: what training (``tasks/stored.py``) and the language-model task use.

A version is immutable (see ``DatasetStore.save_version``), so a run that names one trains on exactly
the items, labels and split that were saved, whatever was edited since.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tunedesk.engine.datasets.store import DatasetStore, VersionInfo
from tunedesk.engine.errors import DataError

_KIND_WORDS = {
    "text": "labelled texts",
    "image": "labelled images",
    "text_corpus": "a text corpus",
    "chat": "chat conversations",
}


def version_database(location: str | os.PathLike[str] | None = None) -> Path:
    """The database holding versions: ``location`` may be a TuneDesk home folder or a database file
    (``.db``); anything else (empty, or the data file a configuration named before
    ``--dataset-version`` replaced it) means the current home (``TUNEDESK_HOME`` or the user data folder)."""
    from tunedesk.engine.paths import database_path, home_dir

    p = Path(location).expanduser() if location else None
    if p is None or not (p.is_dir() or p.suffix.lower() in (".db", ".sqlite", ".sqlite3")):
        return database_path(home_dir())
    if p.is_dir():
        p = database_path(p)
    if not p.is_file():
        raise DataError(
            f"no TuneDesk database at {p}",
            "leave data.path empty to use the current TuneDesk home, or point it at the home folder",
        )
    return p


TASK_FOR_KIND = {
    "text": "text_classification",
    "image": "image_classification",
    "text_corpus": "causal_lm",
    "chat": "causal_lm",
}


def task_for_version(ref: str, location: str | os.PathLike[str] | None = None) -> str:
    """The task that trains on version ``ref`` (text or image classification, or causal_lm), so a
    panel handed a version id can pick the task without knowing what the data set holds."""
    return TASK_FOR_KIND[version_kind(ref, location)]


def version_kind(ref: str, location: str | os.PathLike[str] | None = None) -> str:
    """What version ``ref`` holds: text, image, text_corpus or chat (DataError when it does not exist)."""
    with DatasetStore(version_database(location)) as store:
        return store.get_version(ref).kind


@dataclass
class VersionExamples:
    """Usable items of a version, in order, with the split when the version has one."""

    version: VersionInfo
    items: list[str]  # texts, or absolute image paths
    labels: list[str]
    split: list[str] | None  # None: the version was saved before any split
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.version.dataset_name} ({self.version.id})"

    def summary(self) -> str:
        v = self.version
        parts = [f"data set version {v.id} (hash {v.content_hash[:12]}): {len(self.items)} of {v.item_count} items"]
        if self.split is not None:
            parts.append(f"{self.split.count('train')} train / {self.split.count('val')} validation (stored split)")
        return "; ".join(parts)


def load_version_examples(ref: str, kind: str, location: str | os.PathLike[str] | None = None) -> VersionExamples:
    """Labelled examples of version ``ref`` (id or hash prefix). ``kind``: "text" or "image".

    Left out, each with a warning: unlabelled items, empty texts, image files that are gone. Items
    saved without a split go to training when the rest has one.
    """
    with DatasetStore(version_database(location)) as store:
        version = store.get_version(ref)
        if version.kind != kind:
            raise DataError(
                f"data set version {version.id} holds {_KIND_WORDS.get(version.kind, version.kind)}, "
                f"not {_KIND_WORDS[kind]}",
                f"pick a version of a {'text' if kind == 'text' else 'image'} data set, or change the task",
            )
        rows = store.version_rows(version.id)
    items, labels, splits = [], [], []
    unlabelled = empty = missing = 0
    for _, label, where, _, path, text in rows:
        if not label:
            unlabelled += 1
            continue
        if kind == "text":
            if not text or not text.strip():
                empty += 1
                continue
            items.append(text)
        else:
            if not path or not os.path.exists(path):
                missing += 1
                continue
            items.append(path)
        labels.append(label)
        splits.append(where)
    warnings = []
    if unlabelled:
        warnings.append(f"{unlabelled} items without a label were left out")
    if empty:
        warnings.append(f"{empty} empty texts were left out")
    if missing:
        warnings.append(f"{missing} image files were moved or deleted since version {version.id} was saved: left out")
    if not items:
        raise DataError(
            f"data set version {version.id} has no usable items",
            "label items in the Datasets area and save a new version",
        )
    split: list[str] | None = splits
    if not any(s in ("train", "val") for s in splits):
        split = None
        warnings.append(f"version {version.id} was saved without a split: using data.val_fraction and the seed")
    else:
        unassigned = splits.count("")
        if unassigned:
            warnings.append(f"{unassigned} items of version {version.id} have no split: they train")
            split = [s or "train" for s in splits]
    return VersionExamples(version, items, labels, split, warnings)


def load_corpus_version(
    ref: str, location: str | os.PathLike[str] | None = None
) -> tuple[VersionInfo, list[str], list[str]]:
    """(version, passages, split per passage) of a text-corpus version, for the language-model task."""
    with DatasetStore(version_database(location)) as store:
        version = store.get_version(ref)
        if version.kind != "text_corpus":
            raise DataError(f"data set version {version.id} is not a text corpus", "import .txt files as a corpus")
        rows = store.version_rows(version.id)
    kept = [(text, split) for _, _, split, _, _, text in rows if text and text.strip()]
    return version, [t for t, _ in kept], [s for _, s in kept]


def load_chat_version(
    ref: str, location: str | os.PathLike[str] | None = None
) -> tuple[VersionInfo, list[list[dict[str, str]]], list[str]]:
    """(version, conversations, split per conversation) of a chat version; each conversation is a
    list of {"role", "content"} messages."""
    with DatasetStore(version_database(location)) as store:
        version = store.get_version(ref)
        if version.kind != "chat":
            raise DataError(f"data set version {version.id} is not a chat data set", "import chat JSONL")
        rows = store.version_rows(version.id)
    chats, splits = [], []
    for _, _, split, _, _, text in rows:
        try:
            chats.append(json.loads(text or "")["messages"])
            splits.append(split)
        except (TypeError, ValueError, KeyError):
            continue
    return version, chats, splits
