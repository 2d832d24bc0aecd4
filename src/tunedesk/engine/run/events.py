"""Small typed events out of the training loop, and the control object it reads each step.

Events carry plain numbers and strings, never tensors, so they can cross threads and be stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    run_id: int | None

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    total_steps: int
    steps_per_epoch: int
    epochs: int
    trainable_params: int
    total_params: int
    device: str
    precision: str
    learning_rate: float
    start_step: int = 0


@dataclass(frozen=True)
class StepLogged(Event):
    step: int
    epoch: int
    loss: float
    learning_rate: float
    samples_per_second: float
    elapsed: float
    gpu_memory_mb: float | None = None
    gpu_peak_memory_mb: float | None = None


@dataclass(frozen=True)
class EpochEnded(Event):
    epoch: int
    step: int
    metrics: dict[str, float]  # val_loss, val_accuracy, val_macro_f1, train_loss ...
    confusion: list[list[int]] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    is_best: bool = False


@dataclass(frozen=True)
class CheckpointSaved(Event):
    path: str
    which: str  # "best" or "last"
    step: int
    epoch: int


@dataclass(frozen=True)
class LogMessage(Event):
    level: str  # info / warning / error
    message: str


@dataclass(frozen=True)
class SampleGenerated(Event):
    """Causal LM only: a generation for a user prompt at an evaluation."""

    step: int
    epoch: int
    prompt: str
    text: str


@dataclass(frozen=True)
class RunFinished(Event):
    status: str  # completed / failed / stopped
    reason: str = ""
    hint: str = ""
    best_metric: float | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    samples_per_second: float = 0.0
    steps: int = 0
    duration: float = 0.0
    summary: str = ""  # what the run's length came to ("auto: stopped after epoch 9, best epoch 7 (...)")
    internal: bool = False  # failed by a bug in TuneDesk (not by the data, settings or machine)


Listener = Callable[[Event], None]


class Control:
    """Read by the loop every step; written by the UI or CLI from any thread."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self.stop_reason = ""

    def request_stop(self, reason: str = "stopped by the user") -> None:
        self.stop_reason = reason
        self._stop.set()
        self._running.set()  # wake a paused loop so it can stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self, poll: float = 0.1) -> float:
        """Block while paused; return the seconds spent paused (excluded from throughput)."""
        if self._running.is_set():
            return 0.0
        start = time.perf_counter()
        while not self._running.wait(poll):
            pass
        return time.perf_counter() - start


class EventBus:
    """Fan events out to listeners; a failing listener never kills the run."""

    def __init__(self, *listeners: Listener) -> None:
        self._listeners: list[Listener] = list(listeners)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until listeners that buffer (the history writer) have written what they received."""
        for listener in list(self._listeners):
            flush = getattr(listener, "flush", None)
            if callable(flush):
                try:
                    flush(timeout)
                except Exception:
                    import logging

                    logging.getLogger("tunedesk").exception("flushing an event listener failed")

    def emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                import logging

                logging.getLogger("tunedesk").exception("event listener failed on %s", event.kind)
