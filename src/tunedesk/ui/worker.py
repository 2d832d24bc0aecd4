"""The bridge between a training run and the GUI thread: the run worker, run in the background
(``ui.background``) by the Train area's controller, and the learning-rate finder's background function.

A worker never touches widgets. Engine events cross to the GUI as Qt signals carrying the engine's
own plain event dataclasses (numbers and strings only). Step events can arrive hundreds of times a
second on a GPU, so they do not become signals: the listener appends them to a ``StepBuffer`` that
the panel drains on a timer (at most 20 times a second). Rare events (started, epoch ended,
checkpoint, log line, finished) are signals.

Errors: a ``TuneDeskError`` before the run exists (bad config, missing data, model that will not
load) becomes ``startFailed(message, hint, field)``; a failure once the run exists arrives as
``runFinished`` with status ``failed`` (the engine records it); anything unexpected is caught and
re-emitted as ``startFailed`` too, so the app stays usable.

Tests may call ``run()`` directly (synchronously, in the test's thread): the signals then reach
their slots directly. "Try it" predictions (``predict``) run as their own background calls after the run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from tunedesk.engine.errors import ConfigError, DataError, ModelError, TuneDeskError
from tunedesk.engine.run.events import (
    CheckpointSaved,
    Control,
    EpochEnded,
    Event,
    LogMessage,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepLogged,
)
from tunedesk.ui.background import TaskContext, error_parts


class StepBuffer:
    """Step events from the training thread, drained by the GUI thread in batches. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[StepLogged] = []
        self.total = 0  # steps pushed since creation (read by tests and the benchmark)

    def push(self, event: StepLogged) -> None:
        with self._lock:
            self._items.append(event)
            self.total += 1

    def drain(self) -> list[StepLogged]:
        with self._lock:
            items, self._items = self._items, []
        return items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass(frozen=True)
class PreparedInfo:
    """What preparation found, for the setup summary (plain values only)."""

    learning_rate: float
    head_learning_rate: float | None
    lr_explanation: str
    freeze_summary: str
    trainable_params: int
    total_params: int
    label_names: list[str] = field(default_factory=list)
    data_summary: str = ""
    warnings: list[str] = field(default_factory=list)
    task: str = ""


def _info(prep: Any) -> PreparedInfo:
    return PreparedInfo(
        prep.learning_rate,
        prep.head_learning_rate,
        prep.lr_explanation,
        prep.freeze_summary,
        prep.plan.trainable_params,
        prep.plan.total_params,
        list(prep.data.label_names),
        getattr(prep.data, "summary", ""),
        list(prep.warnings),
        prep.config.task,
    )


def _error_parts(exc: BaseException) -> tuple[str, str, str]:
    """(message, hint, setup field it concerns) for an error of a run's start."""
    message, hint = error_parts(exc)
    if isinstance(exc, ConfigError):
        field_name = exc.field
    elif isinstance(exc, DataError):
        field_name = "data.path"
    elif isinstance(exc, ModelError):
        field_name = "model.name_or_path"
    else:
        field_name = ""
    return message, hint, field_name


class RunWorker(QObject):
    """Runs one training run (new or resumed), then answers "try it" predictions with its best weights."""

    progress = Signal(str)  # preparation step, in words
    prepared = Signal(object)  # PreparedInfo
    startFailed = Signal(str, str, str)  # message, hint, setup field it concerns ("" when none)
    runStarted = Signal(object)  # RunStarted
    epochEnded = Signal(object)  # EpochEnded
    checkpointSaved = Signal(object)  # CheckpointSaved
    logMessage = Signal(object)  # LogMessage
    sampleGenerated = Signal(object)  # SampleGenerated
    runFinished = Signal(object)  # RunFinished (completed / failed / stopped)
    done = Signal(object)  # RunResult, or None when the run never started
    predicted = Signal(object, object)  # inputs, list of {label: score}
    predictFailed = Signal(str, str)  # message, hint

    def __init__(
        self,
        config: Any = None,
        *,
        home: str | Path | None = None,
        resume_run_id: int | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        if config is None and resume_run_id is None:
            raise ValueError("RunWorker needs a configuration or a run to resume")
        self.config = config
        self.home = home
        self.resume_run_id = resume_run_id
        self.control = Control()
        self.steps = StepBuffer()
        self.run_id: int | None = resume_run_id
        self.result: Any = None
        self.finished_event: RunFinished | None = None
        self.finished_flag = threading.Event()  # set when run() returns (stop_and_wait waits on it)
        self._prep: Any = None
        self._predictor: tuple[Any, Any, Any] | None = None  # (task, loaded, config)

    # ---- the listener: runs in the training thread ----------------------------------------------

    def listen(self, event: Event) -> None:
        """Engine listener: steps into the buffer, everything else out as a signal."""
        kind = type(event)
        if kind is StepLogged:
            self.steps.push(event)  # type: ignore[arg-type]
        elif kind is EpochEnded:
            self.epochEnded.emit(event)
        elif kind is LogMessage:
            self.logMessage.emit(event)
        elif kind is CheckpointSaved:
            self.checkpointSaved.emit(event)
        elif kind is RunStarted:
            self.run_id = event.run_id
            self.runStarted.emit(event)
        elif kind is RunFinished:
            self.finished_event = event  # type: ignore[assignment]
            self.runFinished.emit(event)
        elif kind is SampleGenerated:
            self.sampleGenerated.emit(event)

    # ---- the run --------------------------------------------------------------------------------

    @Slot()
    def run(self) -> None:
        """Prepare and train (or resume). Never raises: every outcome is a signal."""
        from tunedesk.engine.run import runner

        result = None
        try:
            if self.resume_run_id is not None:
                self.progress.emit(f"resuming run {self.resume_run_id}")
                result = runner.resume(
                    self.resume_run_id,
                    home=self.home,
                    listeners=[self.listen],
                    control=self.control,
                    progress=self.progress.emit,
                )
            else:
                prep = runner.prepare(self.config, self.progress.emit)
                self._prep = prep
                self.prepared.emit(_info(prep))
                if self.control.stop_requested:  # stopped while preparing: nothing was recorded
                    self.startFailed.emit("the run was cancelled before it started", "", "")
                    return
                self.progress.emit("training")
                result = runner.execute(
                    self.config, home=self.home, listeners=[self.listen], control=self.control, prepared=prep
                )
            self.result = result
            self.run_id = result.run_id
        except Exception as exc:  # noqa: BLE001 - shown to the user; the app keeps running
            self.startFailed.emit(*_error_parts(exc))
        finally:
            self.finished_flag.set()
            self.done.emit(result)

    # ---- "try it": after the run, in the worker's thread ------------------------------------------

    @Slot(object)
    def predict(self, inputs: list[str]) -> None:
        """Class scores for texts (text tasks) or image paths (image tasks), from the best checkpoint."""
        try:
            task, loaded, config = self._load_predictor()
            if task.name == "image_classification":
                scores = task.predict(loaded, list(inputs), image_size=config.hparams.image_size)
            else:
                scores = task.predict(loaded, list(inputs), max_length=config.hparams.max_length)
            self.predicted.emit(list(inputs), scores)
        except Exception as exc:  # noqa: BLE001
            message, hint, _ = _error_parts(exc)
            self.predictFailed.emit(message, hint)

    def _load_predictor(self) -> tuple[Any, Any, Any]:
        if self._predictor is None:
            if self.result is None:
                raise TuneDeskError("the run has not finished yet", "wait for the run to end, then try the model")
            self._predictor = load_best_model(self.result.output_dir, self._prep, self.config)
        return self._predictor

    def release(self) -> None:
        """Drop the model held for predictions (a new run needs the memory)."""
        self._prep = None
        self._predictor = None


def load_best_model(output_dir: str | Path, prep: Any = None, config: Any = None) -> tuple[Any, Any, Any]:
    """(task, loaded model with the best weights, config) for a finished run's folder.

    Reuses the prepared model when there is one (it is already built and on the device); otherwise
    builds the architecture from the run's saved configuration and loads the best weights into it.
    """
    import json

    from safetensors.torch import load_model

    from tunedesk.engine import tasks
    from tunedesk.engine.config import RunConfig
    from tunedesk.engine.files import META_FILE, MODEL_FILE, verify

    best = Path(output_dir) / "best"
    if not (best / MODEL_FILE).is_file():
        raise TuneDeskError(
            "this run has no best checkpoint yet",
            "a best checkpoint is saved after the first validation; let the run finish an epoch",
        )
    verify(best, required=(MODEL_FILE,))  # a damaged checkpoint: a clear error, not wrong predictions
    try:
        meta = json.loads((best / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TuneDeskError(
            f"the best checkpoint's description in {best} is unreadable", "run the training again"
        ) from exc
    if prep is not None:
        task, loaded, config = prep.task, prep.loaded, prep.config
    else:
        if config is None:
            config = RunConfig.load(Path(output_dir) / "config.json")
        task = tasks.get(config.task)
        loaded = task.build_model(config, list(meta["label_names"]))
    device = next(loaded.model.parameters()).device
    load_model(loaded.model, str(best / MODEL_FILE), strict=True, device=str(device))
    loaded.model.eval()
    return task, loaded, config


def find_learning_rate(ctx: TaskContext, config: Any, num_steps: int = 100) -> Any:
    """The learning-rate range test, as a background function (``ui.background``): prepares the run's
    model and data, then tries rates. Progress: ``("message", text)`` and ``("step", step, total, lr,
    loss)``; cancelling stops the test at its next step."""
    from tunedesk.engine.run import runner
    from tunedesk.engine.run.lr_finder import find_lr

    control = Control()
    ctx.on_cancel(lambda: control.request_stop("cancelled"))
    prep = runner.prepare(config, lambda message: ctx.progress("message", message))
    ctx.progress("message", "trying learning rates")
    return find_lr(prep, num_steps=num_steps, control=control, progress=lambda *values: ctx.progress("step", *values))
