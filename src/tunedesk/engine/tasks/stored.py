"""Training on a saved data set version (``data.kind == "dataset_version"``).

The text, image and language-model tasks call these instead of reading a file. The version's stored split is
passed per example, so training uses exactly the split that was saved (duplicate groups on one
side); a version saved before any split falls back to ``data.val_fraction`` and the seed.
``data.path`` may name the TuneDesk home or database holding the version (empty: the current home).
"""

from __future__ import annotations

from tunedesk.engine.config import RunConfig
from tunedesk.engine.datasets.versions import (
    load_chat_version,
    load_corpus_version,
    load_version_examples,
    version_kind,
)
from tunedesk.engine.errors import DataError
from tunedesk.engine.tasks.image_classification import ImageExamples
from tunedesk.engine.tasks.text_classification import TextExamples


def _limit(ex, max_items: int | None):
    if max_items is not None and len(ex.items) > max_items:
        ex.warnings.append(f"data.max_items: using the first {max_items} of {len(ex.items)} items")
        ex.items, ex.labels = ex.items[:max_items], ex.labels[:max_items]
        if ex.split is not None:
            ex.split = ex.split[:max_items]
    return ex


def load_text_version(config: RunConfig) -> TextExamples:
    d = config.data
    ex = _limit(load_version_examples(d.dataset_version or "", "text", d.path or None), d.max_items)
    return TextExamples(ex.items, ex.labels, ex.name, ex.summary(), split=ex.split, warnings=ex.warnings)


def load_image_version(config: RunConfig) -> ImageExamples:
    d = config.data
    ex = _limit(load_version_examples(d.dataset_version or "", "image", d.path or None), d.max_items)
    return ImageExamples(ex.items, ex.labels, ex.name, ex.summary(), split=ex.split, warnings=ex.warnings)


def load_lm_version(config: RunConfig):
    """A text-corpus or chat version as ``lm_data.LMExamples`` (passages as documents), with its split."""
    from tunedesk.engine.lm.data import LMExamples

    d = config.data
    ref, location = d.dataset_version or "", d.path or None
    stored_kind = version_kind(ref, location)
    if stored_kind == "chat":
        version, chats, split = load_chat_version(ref, location)
        kind, documents = "chat_jsonl", []
    elif stored_kind == "text_corpus":
        version, passages, split = load_corpus_version(ref, location)
        kind, chats, documents = "text_corpus", [], [(f"passage {i + 1}", t) for i, t in enumerate(passages)]
    else:
        raise DataError(
            f"data set version {ref} holds labelled items, not text for a language model",
            "import a text corpus (.txt) or chat JSONL in the Datasets area and train on its version",
        )
    count = len(chats) if kind == "chat_jsonl" else len(documents)
    warnings = []
    if d.max_items is not None and count > d.max_items:
        warnings.append(f"data.max_items: using the first {d.max_items} of {count} items")
        chats, documents, split = chats[: d.max_items], documents[: d.max_items], split[: d.max_items]
        count = d.max_items
    has_split = any(s in ("train", "val") for s in split)
    unit = "conversations" if kind == "chat_jsonl" else "passages"
    summary = f"data set version {version.id} (hash {version.content_hash[:12]}): {count} {unit}"
    return LMExamples(
        kind,
        f"{version.dataset_name} ({version.id})",
        summary,
        documents=documents,
        conversations=chats,
        warnings=warnings,
        split=list(split) if has_split else None,
    )
