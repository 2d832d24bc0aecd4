"""Train/validation split of a stored data set: random or stratified, with a ratio and a seed.

The unit of the split is a duplicate group (exact or near copies, see ``cleaning``), never a single
item: two copies of one text on both sides would let validation grade memorisation. Stratified
splitting reuses ``data.stratified_split`` over the groups (each group counts for its most common
label), so every class with 2+ groups gets validation examples. Unlabelled items stay unassigned.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tunedesk.engine.data.split import stratified_split
from tunedesk.engine.datasets import edits as E
from tunedesk.engine.datasets.cleaning import CleaningOptions, duplicate_groups
from tunedesk.engine.datasets.store import LABELLED_KINDS, DatasetStore
from tunedesk.engine.errors import DataError

METHODS = ("stratified", "random")


def check_split_settings(method: str, val_fraction: float, seed: int) -> None:
    if method not in METHODS:
        raise DataError(f"unknown split method {method!r}", "use stratified or random")
    if not isinstance(val_fraction, (int, float)) or math.isnan(val_fraction) or not 0.0 < val_fraction < 1.0:
        raise DataError(
            f"the validation share must be between 0 and 1 (got {val_fraction})",
            "use e.g. 0.2 to keep a fifth of the data for validation",
        )
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"the seed must be a whole number of 0 or more (got {seed!r})", "use e.g. 42")


def assign_splits(
    labels: Sequence[str],
    groups: Sequence[Sequence[int]],
    method: str = "stratified",
    val_fraction: float = 0.2,
    seed: int = 42,
    labelled: bool = True,
) -> list[str]:
    """A split ("train" / "val" / "") per item index. ``groups`` lists indexes that must stay together
    (items in no group are alone). With ``labelled``, items without a label get "" (not assigned)."""
    check_split_settings(method, val_fraction, seed)
    n = len(labels)
    grouped: set[int] = set()
    units: list[list[int]] = []
    for g in groups:
        members = [i for i in g if not labelled or labels[i]]
        if members:
            units.append(sorted(members))
        grouped.update(g)
    units += [[i] for i in range(n) if i not in grouped and (not labelled or labels[i])]
    units.sort()  # deterministic whatever order the groups came in
    out = [""] * n
    if not units:
        return out
    if method == "stratified" and labelled:
        unit_labels = [
            labels[u[0]] if len(u) == 1 else Counter(labels[i] for i in u).most_common(1)[0][0] for u in units
        ]
        # A tie in most_common keeps first-seen order, which follows item order: deterministic.
        _, val_units = stratified_split(unit_labels, val_fraction, seed)
        val_set = set(val_units)
    else:
        order = list(range(len(units)))
        random.Random(seed).shuffle(order)
        total = sum(len(u) for u in units)
        target = min(max(math.floor(total * val_fraction + 0.5), 1), total - 1) if len(units) > 1 else 0
        val_set, count = set(), 0
        for k in order:
            if count >= target:
                break
            if count + len(units[k]) > target and count > 0 and len(units[k]) > 1:
                continue  # a big group would overshoot: try the next one
            val_set.add(k)
            count += len(units[k])
    for k, unit in enumerate(units):
        side = "val" if k in val_set else "train"
        for i in unit:
            out[i] = side
    return out


def plan_split(
    store: DatasetStore,
    dataset_id: int,
    method: str = "stratified",
    val_fraction: float = 0.2,
    seed: int = 42,
    options: CleaningOptions | None = None,
) -> E.Edit:
    """The ``set_splits`` edit that splits the data set (apply it with ``edits.apply_edit``, or push
    it on the UI's undo stack). Duplicate groups stay on one side."""
    check_split_settings(method, val_fraction, seed)
    info = store.get_dataset(dataset_id)
    rows = store.conn.execute(
        "SELECT id, label FROM dataset_items WHERE dataset_id = ? ORDER BY position", (dataset_id,)
    ).fetchall()
    if not rows:
        raise DataError(f"{info.name} has no items to split", "import data first")
    labelled = info.kind in LABELLED_KINDS
    if labelled and not any(r[1] for r in rows):
        raise DataError(f"{info.name} has no labelled items", "label items before splitting")
    index = {r[0]: i for i, r in enumerate(rows)}
    groups = [[index[i] for i in g] for g in duplicate_groups(store, dataset_id, options)]
    sides = assign_splits([r[1] for r in rows], groups, method, val_fraction, seed, labelled)
    settings: dict[str, Any] = {"method": method if labelled else "random", "val_fraction": val_fraction, "seed": seed}
    pct = round(val_fraction * 100)
    return E.set_splits(
        {r[0]: s for r, s in zip(rows, sides)}, settings, f"{settings['method']} split, {pct}% validation, seed {seed}"
    )


def split_dataset(
    store: DatasetStore, dataset_id: int, method: str = "stratified", val_fraction: float = 0.2, seed: int = 42
) -> E.Edit:
    """Split and store; returns the edit that undoes it."""
    return E.apply_edit(store, dataset_id, plan_split(store, dataset_id, method, val_fraction, seed))
