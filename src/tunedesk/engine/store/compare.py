"""Comparing runs: which settings differ, what trained differently, and their curves side by side.

Pure functions over rows the store returns (``RunStore.get_run``), so the runs panel and tests use
them without a model. The parameters no compared run trained are learnt from the model built on the
meta device (``run.rebuild.parameter_layout``), which callers pass in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunedesk.engine.store.history import run_config
from tunedesk.engine.store.resolved import resolved

MISSING = object()  # a key one run's config does not have

STEP_METRICS = ("loss", "learning_rate", "samples_per_second")
AXES = ("step", "epoch")
# Keys that say nothing about how a run trained.
IGNORED_KEYS = ("version", "name")


# ---- configuration -------------------------------------------------------------------------------


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"hparams": {"epochs": 3}}`` -> ``{"hparams.epochs": 3}``; lists stay whole values."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            out.update(flatten(item, name + "."))
        else:
            out[name] = item
    return out


def comparable_config(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run's flattened settings plus what the engine resolved (effective learning rates) and the
    content hashes of its model and data, so "same path, different file" shows up too."""
    flat = flatten(run_config(dict(run)))
    for key in IGNORED_KEYS:
        flat.pop(key, None)
    res = resolved(run)
    if res.learning_rate is not None:
        flat["effective.learning_rate"] = res.learning_rate
    if res.head_learning_rate is not None:
        flat["effective.head_learning_rate"] = res.head_learning_rate
    if run.get("model_hash"):
        flat["model.content_hash"] = run["model_hash"]
    if run.get("dataset_hash"):
        flat["data.content_hash"] = run["dataset_hash"]
    return flat


@dataclass(frozen=True)
class ConfigDifference:
    key: str  # dotted, e.g. "hparams.learning_rate"
    values: tuple[Any, ...]  # one per run, MISSING where a run has no such key


def config_differences(runs: Sequence[Mapping[str, Any]]) -> list[ConfigDifference]:
    """Only the settings whose values are not the same in every run, in a stable order."""
    flats = [comparable_config(r) for r in runs]
    keys: list[str] = []
    for flat in flats:
        keys.extend(k for k in flat if k not in keys)
    out = []
    for key in keys:
        values = tuple(flat.get(key, MISSING) for flat in flats)
        if any(not _same(values[0], v) for v in values[1:]):
            out.append(ConfigDifference(key, values))
    return out


def _same(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return a is b
    if (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return float(a) == float(b)
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def format_value(value: Any) -> str:
    """How a setting reads in a table cell."""
    if value is MISSING:
        return "—"
    if value is None:
        return "(default)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list) and all(isinstance(r, Mapping) and "pattern" in r for r in value):
        return "; ".join(f"{'train' if r.get('train') else 'freeze'} {r['pattern']}" for r in value) or "(none)"
    if isinstance(value, (list, dict)):
        return json.dumps(value) if value else "(none)"
    return str(value)


# ---- freeze maps ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FreezeDifference:
    path: str  # the shallowest module (or parameter) where the difference is uniform; "" = whole model
    trains: tuple[bool, ...]  # per run: do its parameters train?
    params: int | None = None  # parameter count under it, when sizes are known
    names: int = 0  # parameter tensors under it


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    vectors: set[tuple[bool, ...]] = field(default_factory=set)
    params: int = 0
    names: int = 0
    known_size: bool = True


def freeze_differences(
    trainable: Sequence[Iterable[str]], all_names: Sequence[str] | None = None, sizes: Mapping[str, int] | None = None
) -> list[FreezeDifference]:
    """Modules that train in some runs and not in others, aggregated to the shallowest module whose
    parameters all differ the same way (``encoder.layer.3`` rather than its 16 tensors).

    ``trainable``: each run's trainable parameter names. ``all_names``: every parameter of the model
    (``parameter_layout``), so a module is only aggregated when nothing under it is frozen in all
    runs; without it, differences are grouped by the module that owns the parameters only.
    """
    sets = [set(names) for names in trainable]
    if len(sets) < 2:
        return []
    if all_names is None:
        return _module_differences(trainable, sets)
    order: list[str] = list(all_names)
    known = set(order)
    order.extend(n for s in sets for n in sorted(s - known))
    root = _Node()
    for name in order:
        vector = tuple(name in s for s in sets)
        size = None if sizes is None else sizes.get(name)
        node = root
        parts = name.split(".")
        for i in range(len(parts) + 1):
            node.vectors.add(vector)
            node.names += 1
            node.params += size or 0
            node.known_size &= size is not None
            if i < len(parts):
                node = node.children.setdefault(parts[i], _Node())
    out: list[FreezeDifference] = []

    def walk(node: _Node, path: str) -> None:
        if len(node.vectors) == 1:
            vector = next(iter(node.vectors))
            if len(set(vector)) > 1:
                out.append(FreezeDifference(path, vector, node.params if node.known_size else None, node.names))
            return
        for name, child in node.children.items():
            walk(child, f"{path}.{name}" if path else name)

    walk(root, "")
    return out


def _module_differences(trainable: Sequence[Iterable[str]], sets: list[set[str]]) -> list[FreezeDifference]:
    """Without the model's layout, parameters that no run trained are unknown, so differences are only
    grouped by the module that owns the parameters (grouping further up could hide a frozen sibling)."""
    modules: dict[str, dict[str, tuple[bool, ...]]] = {}
    seen: set[str] = set()
    for names in trainable:
        for name in names:
            if name not in seen:
                seen.add(name)
                modules.setdefault(name.rpartition(".")[0], {})[name] = tuple(name in s for s in sets)
    out = []
    for module, params in modules.items():
        vectors = set(params.values())
        if len(vectors) == 1:
            vector = next(iter(vectors))
            if len(set(vector)) > 1:
                out.append(FreezeDifference(module, vector, None, len(params)))
            continue
        out.extend(FreezeDifference(name, v, None, 1) for name, v in params.items() if len(set(v)) > 1)
    return out


# ---- curves ---------------------------------------------------------------------------------------


@dataclass
class Curve:
    run_id: int
    metric: str
    axis: str
    xs: list[float]
    ys: list[float]


def available_metrics(store: Any, run_ids: Sequence[int]) -> list[str]:
    """Step metrics first (training loss...), then every validation metric any of the runs logged."""
    names: list[str] = []
    have_steps = any(store.step_metrics(rid, max_points=2) for rid in run_ids)
    if have_steps:
        names.extend(STEP_METRICS)
    for rid in run_ids:
        for row in store.epoch_metrics(rid):
            for key, value in (row.get("metrics") or {}).items():
                if key != "epoch" and isinstance(value, (int, float)) and key not in names:
                    names.append(key)
    return names


def curves(
    store: Any, run_ids: Sequence[int], metric: str = "loss", axis: str = "step", max_points: int = 2000
) -> list[Curve]:
    """One curve per run: a step metric (downsampled to ``max_points``) or a validation metric, by
    optimizer step or by epoch (step metrics on the epoch axis are placed at step / steps-per-epoch)."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES} (got {axis!r})")
    out = []
    for rid in run_ids:
        xs: list[float] = []
        ys: list[float] = []
        if metric in STEP_METRICS:
            rows = store.step_metrics(rid, max_points=max_points)
            per_epoch = steps_per_epoch(store, rid) if axis == "epoch" else None
            for row in rows:
                if row.get(metric) is None:
                    continue
                xs.append(row["step"] / per_epoch if per_epoch else float(row["step"]))
                ys.append(float(row[metric]))
        else:
            for row in store.epoch_metrics(rid):
                value = (row.get("metrics") or {}).get(metric)
                if value is None:
                    continue
                xs.append(float(row["epoch"] if axis == "epoch" else row["step"]))
                ys.append(float(value))
        out.append(Curve(rid, metric, axis, xs, ys))
    return out


def steps_per_epoch(store: Any, run_id: int) -> float | None:
    """Optimizer steps per epoch: from the first evaluation, else the planned total / epochs."""
    for row in store.epoch_metrics(run_id):
        if row["epoch"] and row["step"]:
            return row["step"] / row["epoch"]
    run = store.get_run(run_id)
    epochs = ((run.get("config") or {}).get("hparams") or {}).get("epochs")
    if run.get("total_steps") and epochs:
        return run["total_steps"] / epochs
    return None


# ---- everything at once ---------------------------------------------------------------------------


@dataclass
class Comparison:
    run_ids: list[int]
    runs: list[dict[str, Any]]
    config: list[ConfigDifference]
    freeze: list[FreezeDifference]
    metrics: list[str]
    exact_layout: bool  # the freeze diff knew every parameter of the model (not only trained ones)


def compare_runs(
    store: Any, run_ids: Sequence[int], *, layout: tuple[list[str], dict[str, int]] | None = None
) -> Comparison:
    """Config and freeze-map differences and the metric names of two or more runs.

    With the ``layout`` of the runs' one model (``run.rebuild.parameter_layout``), the freeze diff also
    knows the parameters that no run trained.
    """
    runs = [store.get_run(rid) for rid in run_ids]
    all_names, sizes = layout if layout is not None else (None, None)
    freeze = freeze_differences([r.get("trainable_names") or [] for r in runs], all_names, sizes)
    return Comparison(
        list(run_ids), runs, config_differences(runs), freeze, available_metrics(store, run_ids), all_names is not None
    )
