"""Plot data for a run, independent of any widget: growable arrays filled from engine events.

The GUI thread drains the worker's step buffer into ``TrainingCurves`` on a timer and the plots
redraw from views of these arrays, so a 100,000-step run costs what a 100-step run does per redraw
(pyqtgraph downsamples and clips to the view). Appending is amortised O(1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def _np():
    """numpy, imported on first use (keeps it out of the window's start-up)."""
    import numpy

    return numpy


class Series:
    """A growable float64 array (doubling capacity); ``view()`` is a zero-copy slice of the filled part."""

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = max(16, capacity)
        self._data: Any = None  # allocated on first use
        self.size = 0

    def _reserve(self, extra: int) -> None:
        np = _np()
        if self._data is None:
            self._data = np.empty(max(self._capacity, extra), dtype=np.float64)
        need = self.size + extra
        if need > len(self._data):
            cap = len(self._data)
            while cap < need:
                cap *= 2
            grown = np.empty(cap, dtype=np.float64)
            grown[: self.size] = self._data[: self.size]
            self._data = grown

    def extend(self, values: Iterable[float] | np.ndarray) -> None:
        np = _np()
        arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
        self._reserve(len(arr))
        self._data[self.size : self.size + len(arr)] = arr
        self.size += len(arr)

    def append(self, value: float) -> None:
        self._reserve(1)
        self._data[self.size] = value
        self.size += 1

    def truncate(self, size: int) -> None:
        self.size = max(0, min(size, self.size))

    def view(self) -> np.ndarray:
        if self._data is None:
            return _np().empty(0, dtype="float64")
        return self._data[: self.size]

    def last(self, default: float = math.nan) -> float:
        return float(self._data[self.size - 1]) if self.size else default

    def __len__(self) -> int:
        return self.size


class TrainingCurves:
    """Everything the live plots show: step series (loss raw + EMA, learning rate) and epoch metrics."""

    EMA_BETA = 0.9

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = Series()
        self.loss = Series()
        self.ema = Series()
        self.lr = Series()
        self._ema_raw = 0.0  # EMA before bias correction
        self._ema_n = 0
        self.epochs: list[dict[str, Any]] = []  # {"epoch", "step", "metrics", "is_best"}
        self.total_steps = 0  # the run's shape (RunStarted), so plot ranges can be fixed up front
        self.total_epochs = 0
        self.version = 0  # bumped on every change; plots redraw only when it moved
        self.step_version = 0
        self.epoch_version = 0

    def set_shape(self, total_steps: int, epochs: int) -> None:
        self.total_steps, self.total_epochs = int(total_steps), int(epochs)
        self.version += 1
        self.step_version += 1
        self.epoch_version += 1

    # ---- steps ------------------------------------------------------------------------------------

    def add_steps(self, events: list[Any]) -> None:
        """Append StepLogged events (or anything with step, loss, learning_rate)."""
        if not events:
            return
        np = _np()
        n = len(events)
        steps = np.fromiter((e.step for e in events), dtype=np.float64, count=n)
        losses = np.fromiter((e.loss for e in events), dtype=np.float64, count=n)
        lrs = np.fromiter((e.learning_rate for e in events), dtype=np.float64, count=n)
        self.extend(steps, losses, lrs)

    def extend(self, steps: np.ndarray, losses: np.ndarray, lrs: np.ndarray) -> None:
        ema = _np().empty_like(losses)
        beta, raw, k = self.EMA_BETA, self._ema_raw, self._ema_n
        for i, value in enumerate(losses.tolist()):  # plain floats: fast enough for 100k in ~50 ms
            if math.isfinite(value):
                k += 1
                raw = beta * raw + (1 - beta) * value
            ema[i] = raw / (1 - beta**k) if k else math.nan
        self._ema_raw, self._ema_n = raw, k
        self.steps.extend(steps)
        self.loss.extend(losses)
        self.ema.extend(ema)
        self.lr.extend(lrs)
        self.version += 1
        self.step_version += 1

    def truncate_after(self, step: int) -> None:
        """Drop points after ``step`` (a resumed run repeats them from its checkpoint)."""
        np = _np()
        keep = int(np.searchsorted(self.steps.view(), step, side="right"))
        if keep < len(self.steps):
            for s in (self.steps, self.loss, self.ema, self.lr):
                s.truncate(keep)
            # Restart the EMA from the kept raw values' tail: recompute on the kept points.
            losses = self.loss.view().copy()
            steps, lrs = self.steps.view().copy(), self.lr.view().copy()
            for s in (self.steps, self.loss, self.ema, self.lr):
                s.truncate(0)
            self._ema_raw, self._ema_n = 0.0, 0
            self.extend(steps, losses, lrs)
        before = len(self.epochs)
        self.epochs = [e for e in self.epochs if e["step"] <= step]
        if len(self.epochs) != before:
            self.epoch_version += 1
        self.version += 1

    # ---- epochs -----------------------------------------------------------------------------------

    def add_epoch(self, epoch: int, step: int, metrics: dict[str, float], is_best: bool = False) -> None:
        """An evaluation. Without a ``train_loss`` metric, the epoch's mean logged training loss stands in,
        so training and validation loss can be compared epoch by epoch (the first sign of overfitting)."""
        metrics = dict(metrics)
        if "train_loss" not in metrics and len(self.steps):
            np = _np()
            prev = max((e["step"] for e in self.epochs if e["epoch"] < epoch), default=0)
            steps = self.steps.view()
            mask = (steps > prev) & (steps <= step)
            losses = self.loss.view()[mask]
            losses = losses[np.isfinite(losses)]
            if len(losses):
                metrics["train_loss"] = float(losses.mean())
        self.epochs = [e for e in self.epochs if e["epoch"] != epoch]
        self.epochs.append({"epoch": epoch, "step": step, "metrics": metrics, "is_best": is_best})
        self.epochs.sort(key=lambda e: e["epoch"])
        self.version += 1
        self.epoch_version += 1

    def epoch_series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = [
            (e["epoch"], e["metrics"][name]) for e in self.epochs if isinstance(e["metrics"].get(name), (int, float))
        ]
        np = _np()
        if not rows:
            return np.empty(0), np.empty(0)
        x, y = zip(*rows)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def metric_names(self) -> list[str]:
        names: list[str] = []
        for e in self.epochs:
            for k in e["metrics"]:
                if k not in names:
                    names.append(k)
        return names

    # ---- history --------------------------------------------------------------------------------

    def load_history(self, step_rows: list[dict[str, Any]], epoch_rows: list[dict[str, Any]]) -> None:
        """Fill from the run history (RunStore.step_metrics / epoch_metrics), e.g. before a resume."""
        self.reset()
        np = _np()
        if step_rows:
            self.extend(
                np.asarray([r["step"] for r in step_rows], dtype=np.float64),
                np.asarray([r["loss"] if r["loss"] is not None else math.nan for r in step_rows], dtype=np.float64),
                np.asarray(
                    [r["learning_rate"] if r["learning_rate"] is not None else math.nan for r in step_rows],
                    dtype=np.float64,
                ),
            )
        for r in epoch_rows:
            self.add_epoch(r["epoch"], r["step"], r["metrics"], r.get("is_best", False))
