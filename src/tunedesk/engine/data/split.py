"""Label checks and the train/validation split.

The split is stratified by hand (a few lines; scikit-learn is not a dependency) so that every class
appears in validation when it can, and is deterministic for a seed so a run can be reproduced.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

from tunedesk.engine.errors import ConfigError, DataError

__all__ = ["check_labels", "stratified_split", "singleton_classes"]


def check_labels(labels: Sequence[str], source: str) -> list[str]:
    """Sorted unique label names; DataError when there is nothing to learn (no examples, one class)."""
    counts = Counter(labels)
    if not counts:
        raise DataError(f"{source} has no examples", "add labelled examples: at least 2 classes with examples each")
    if len(counts) == 1:
        ((label, n),) = counts.items()
        raise DataError(
            f"{source} has only one class ({label!r}, {n} example{'s' if n != 1 else ''})",
            "a classifier needs at least 2 classes with examples each; add examples of the other classes "
            "or check that the label column is the right one",
        )
    return sorted(counts)


def singleton_classes(labels: Sequence[str]) -> list[str]:
    """Classes with a single example: they go to training only, so they are never validated.
    Callers show a warning naming them."""
    return sorted(label for label, n in Counter(labels).items() if n == 1)


def stratified_split(labels: Sequence[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split example indices into (train, validation), both sorted.

    Per class: ``round(n * val_fraction)`` examples go to validation, but at least 1 when the class
    has 2 or more examples and never all of them; a class with 1 example stays in train.
    ``val_fraction == 0`` means no validation set. Same labels + fraction + seed -> same split
    (Python's ``random.Random`` with an integer seed is stable across versions and platforms).
    """
    if not (isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction < 1.0) or math.isnan(val_fraction):
        raise ConfigError(
            "data.val_fraction",
            f"must be at least 0 and below 1 (got {val_fraction})",
            "use e.g. 0.2 to keep 20% of each class for validation, or 0 for no validation set",
        )
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    rng = random.Random(seed)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(by_class):  # sorted: the split must not depend on row order of first appearance
        idx = by_class[label]
        n = len(idx)
        if val_fraction == 0 or n < 2:
            train.extend(idx)
            continue
        n_val = min(max(math.floor(n * val_fraction + 0.5), 1), n - 1)
        rng.shuffle(idx)
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return sorted(train), sorted(val)
