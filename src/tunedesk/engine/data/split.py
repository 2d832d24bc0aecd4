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

__all__ = ["check_labels", "stratified_split", "split_warnings"]


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


FEW_VALIDATION = 30  # below this, one validation example is more than 3 points of accuracy
FEW_TRAINING = 5  # per class
IMBALANCE = 10  # a class with a tenth of the largest one's examples or fewer


def split_warnings(
    labels: Sequence[str], train_idx: Sequence[int], val_idx: Sequence[int], given: bool = False
) -> list[str]:
    """What the user should know about the labels and the split before training: labels typed two ways,
    a validation set so small that each example is several points of accuracy, classes with next to no
    training examples, heavily imbalanced classes, classes never validated (a class of one example
    stays in training). Empty when all is well."""
    warnings = []
    n_val = len(val_idx)
    if 0 < n_val < FEW_VALIDATION:
        warnings.append(
            f"only {n_val} validation example{'s' if n_val != 1 else ''}: each one is {100 / n_val:.0f} points of "
            "accuracy, so the scores and the best epoch are rough; "
            + (
                "more validation examples make them reliable"
                if given  # the data's own split (a stored version, train/ and val/ folders)
                else "more labelled data (or a larger data.val_fraction) makes them reliable"
            )
        )
    warnings += look_alike_labels(labels)
    train_counts = Counter(labels[i] for i in train_idx)
    val_counts = Counter(labels[i] for i in val_idx)
    classes = sorted(set(labels))
    few = [c for c in classes if train_counts[c] < FEW_TRAINING]
    if few:
        listed = _some([f"{c!r} ({train_counts[c]})" for c in few], len(classes))
        warnings.append(
            f"few training examples for {listed}: a class needs about 10 or more for the model to learn "
            "it; add examples of these classes"
        )
    present = [c for c in classes if train_counts[c] >= FEW_TRAINING]  # the few are named above
    if len(present) >= 2:
        largest = max(train_counts[c] for c in present)
        rare = [c for c in present if train_counts[c] * IMBALANCE <= largest]
        if rare:
            total = sum(train_counts.values())
            listed = _some([f"{c!r} ({train_counts[c] / total:.1%})" for c in rare], len(classes))
            warnings.append(
                f"imbalanced classes: {listed} of the training examples, against {largest:,} for the largest; "
                "accuracy can look good while these are rarely predicted: watch macro-F1 and the confusion matrix, "
                "and add examples of them if you can"
            )
    if n_val:
        unvalidated = [c for c in classes if not val_counts[c]]
        if unvalidated:
            listed = _some([repr(c) for c in unvalidated], len(classes))
            warnings.append(
                f"no validation example of {listed}: {'its' if len(unvalidated) == 1 else 'their'} accuracy "
                "is not measured (a class needs 2 or more examples to be in both splits)"
            )
    return warnings


def _some(names: list[str], n_classes: int, limit: int = 8) -> str:
    """Up to ``limit`` class names (already formatted); with more, how many of the classes they are."""
    listed = ", ".join(names[:limit])
    return f"{len(names)} of the {n_classes} classes: {listed} ..." if len(names) > limit else listed


def look_alike_labels(labels: Sequence[str]) -> list[str]:
    """Labels that differ only in case or in spaces, hyphens and underscores ('Cat' / 'cat',
    'sci-fi' / 'sci fi'): usually one class typed two ways, which splits its examples in two and makes
    the model tell them apart."""
    counts = Counter(labels)
    groups: dict[str, list[str]] = {}
    for label in sorted(counts):
        key = "".join(ch for ch in label.casefold() if ch.isalnum())
        groups.setdefault(key or label, []).append(label)
    out = []
    for same in groups.values():
        if len(same) > 1:
            listed = ", ".join(f"{label!r} ({counts[label]})" for label in same)
            out.append(
                f"the labels {listed} differ only in case or punctuation: if they mean one class, merge them "
                "(Datasets area: select both classes, Merge) or fix the file; otherwise the model learns to tell them apart"
            )
    return out[:5]
