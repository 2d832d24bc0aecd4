"""How long a run trains: the "auto" budget, early stopping, and the schedule that suits them.

``epochs`` left empty ("auto") trains until the validation metric stops improving, within a budget
derived from the data size: at least ``auto_min_steps`` optimizer steps (small data sets need several
passes) and at most ``auto_max_epochs`` epochs (never fewer than 3). The best weights are kept.

The schedule for such a run cannot be a cosine over a length nobody knows yet: "plateau" warms up,
holds the rate, and halves it after each evaluation that does not improve the metric (the run then
stops after ``patience`` such evaluations in a row). benchmarks/default_quality.py compares it with a
cosine over the budget (docs/benchmarks.md).

Everything here is plain state that goes into the checkpoint, so a stopped run resumes to the same
result as one that never stopped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from tunedesk.engine.config import HyperParams

MIN_AUTO_EPOCHS = 3
PLATEAU_FACTOR = 0.5  # the rate after an evaluation without improvement


@dataclass
class TrainingLength:
    """The resolved length of a run: how many epochs at most, and whether early stopping ends it."""

    epochs: int  # the most epochs the run trains (the budget, or the epochs set by the user)
    auto: bool  # epochs chosen by TuneDesk
    early_stopping: bool
    patience: int
    min_delta: float
    schedule: str  # the resolved schedule: cosine, linear, constant or plateau
    warmup_steps: int
    total_steps: int
    explanation: str  # one sentence: what the budget is and why

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_length(h: HyperParams, steps_per_epoch: int, n_train: int) -> TrainingLength:
    """Resolve epochs / early stopping / schedule for ``steps_per_epoch`` optimizer steps per epoch."""
    steps_per_epoch = max(1, steps_per_epoch)
    auto = h.epochs is None
    if h.epochs is None:
        need = math.ceil(h.auto_min_steps / steps_per_epoch)
        epochs = min(h.auto_max_epochs, max(MIN_AUTO_EPOCHS, need))
        why = (
            f"auto: at most {epochs} epochs of {steps_per_epoch} steps for {n_train:,} training examples "
            f"(budget: at least {h.auto_min_steps:,} optimizer steps, at most {h.auto_max_epochs} epochs)"
        )
    else:
        epochs = h.epochs
        why = f"{epochs} epoch(s) of {steps_per_epoch} steps (set by you)"
    early = auto if h.early_stopping is None else bool(h.early_stopping)
    if early:
        why += (
            f"; stops early after {h.patience} evaluation(s) without improvement"
            + (f" of at least {h.min_delta:g}" if h.min_delta else "")
            + ", keeping the best weights"
        )
    total = steps_per_epoch * epochs
    if h.max_steps:
        total = min(total, h.max_steps)
    schedule = h.schedule if h.schedule != "auto" else ("plateau" if early else "cosine")
    # A run that may stop early warms up over the part of the budget it is sure to train, and for at
    # most one epoch: on small data sets a long warm-up is most of the run.
    warmup = int(h.warmup_ratio * min(total, h.auto_min_steps)) if early else int(h.warmup_ratio * total)
    if early:
        warmup = min(warmup, steps_per_epoch)
    return TrainingLength(epochs, auto, early, h.patience, h.min_delta, schedule, warmup, total, why)


def make_scheduler(optimizer: Any, length: TrainingLength) -> Any:
    if length.schedule == "plateau":
        return PlateauSchedule(optimizer, length.warmup_steps)
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, WarmupDecay(length.schedule, length.warmup_steps, max(length.total_steps, 1)))


class WarmupDecay:
    """The factor of the peak rate at a step: linear warm-up, then cosine to 0, linear to 0 or constant,
    the same curves as transformers' cosine / linear / constant_with_warmup schedules. Written here
    because importing those pulls in transformers' trainer (and with it peft and bitsandbytes, seconds
    of start-up and, on a CPU, bitsandbytes' offline warnings) for three formulas."""

    def __init__(self, kind: str, warmup_steps: int, total_steps: int) -> None:
        if kind not in ("cosine", "linear", "constant"):
            raise ValueError(f"unknown schedule {kind!r}")
        self.kind, self.warmup_steps, self.total_steps = kind, warmup_steps, total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        if self.kind == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


class PlateauSchedule:
    """Linear warm-up, then the peak rate times ``scale``; ``plateau()`` halves ``scale``.

    A plain object with the scheduler interface the loop uses (``step``, ``get_last_lr``,
    ``state_dict``, ``load_state_dict``) so its scale is part of the checkpoint.
    """

    def __init__(self, optimizer: Any, warmup_steps: int) -> None:
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for g, lr in zip(optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = lr
        self.last_step = 0
        self.scale = 1.0
        self._apply()

    def _factor(self) -> float:
        warm = min(1.0, (self.last_step + 1) / (self.warmup_steps + 1)) if self.warmup_steps else 1.0
        return warm * self.scale

    def _apply(self) -> None:
        f = self._factor()
        for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr * f

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def plateau(self, factor: float = PLATEAU_FACTOR) -> None:
        self.scale *= factor
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "scale": self.scale, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self.scale = float(state["scale"])
        self.warmup_steps = int(state.get("warmup_steps", self.warmup_steps))
        self._apply()


@dataclass
class EarlyStopping:
    """Counts evaluations without improvement of the primary metric; part of the checkpoint."""

    metric: str
    higher_is_better: bool
    patience: int
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = 0
    bad_evals: int = 0
    stopped_epoch: int = 0

    def update(self, value: float | None, epoch: int) -> bool:
        """Record one evaluation; True when it improved on the best by more than ``min_delta``."""
        if value is None or not math.isfinite(value):
            self.bad_evals += 1
            return False
        if self.best is None:
            improved = True
        elif self.higher_is_better:
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_evals = value, epoch, 0
        else:
            self.bad_evals += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_evals >= self.patience

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EarlyStopping:
        return cls(**data)


def metric_words(metric: str) -> str:
    """``val_accuracy`` -> ``validation accuracy``."""
    name = metric[4:] if metric.startswith("val_") else metric
    return ("validation " if metric.startswith("val_") else "") + name.replace("_", " ")


def outcome(length: TrainingLength, stopper: EarlyStopping | None, epochs_done: int, stopped_early: bool) -> str:
    """The sentence that says what happened, e.g. "auto: stopped after epoch 9, best epoch 7 (validation
    accuracy did not improve for 2 epochs)"."""
    head = "auto" if length.auto else f"{length.epochs} epoch(s)"
    if stopper is None:
        return f"{head}: trained {epochs_done} epoch(s)"
    words = metric_words(stopper.metric)
    if stopped_early:
        return (
            f"{head}: stopped after epoch {epochs_done}, best epoch {stopper.best_epoch} "
            f"({words} did not improve for {stopper.bad_evals} epoch{'s' if stopper.bad_evals != 1 else ''})"
        )
    if stopper.best_epoch == epochs_done:
        return (
            f"{head}: trained all {epochs_done} epoch(s) of the budget; the last was the best ({words} still improved)"
        )
    return (
        f"{head}: trained all {epochs_done} epoch(s) of the budget, best epoch {stopper.best_epoch} "
        f"({words} did not improve for {stopper.bad_evals} epoch(s), fewer than the patience of {stopper.patience})"
    )
