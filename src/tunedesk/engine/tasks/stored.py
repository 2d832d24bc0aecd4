"""Training on a saved data set version (``data.kind == "dataset_version"``).

The text and image tasks call these instead of reading a file. The version's stored split is
passed per example, so training uses exactly the split that was saved (duplicate groups on one
side); a version saved before any split falls back to ``data.val_fraction`` and the seed.
``data.path`` may name the TuneDesk home or database holding the version (empty: the current home).
"""

from __future__ import annotations

from tunedesk.engine.config import RunConfig
from tunedesk.engine.datasets.versions import load_version_examples
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
