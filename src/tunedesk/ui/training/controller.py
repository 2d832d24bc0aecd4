"""The Train area's controller: the run's state machine and every call to the engine.

``TrainController(state, view)`` starts runs (new or resumed) in the background, steers them
(pause, resume, stop), turns the run worker's signals into state (mode, run id, epochs, curves) and
tells the view what to draw through the methods of ``TrainView``. It never builds a widget.

Modes: idle -> preparing -> running <-> paused -> stopping -> idle (a run that fails to start goes
from preparing straight back to idle).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtCore import QCoreApplication, QEventLoop, QObject

from tunedesk.ui.background import BackgroundTask, TaskContext, gui_thread, run_in_background
from tunedesk.ui.training.curves import TrainingCurves
from tunedesk.ui.training.results import metric_line
from tunedesk.ui.worker import RunWorker

if TYPE_CHECKING:
    from tunedesk.engine.config import RunConfig
    from tunedesk.ui.training.setup_form import SetupForm

RESUMABLE = ("stopped", "interrupted", "failed")
CHAT_LATER = "Available when the run has finished: chat with its fine-tuned model"


class TrainView(Protocol):
    """What the controller asks of the Train panel: drawing only."""

    form: SetupForm

    def say(self, text: str) -> None: ...
    def log_line(self, text: str, level: str = "info") -> None: ...
    def show_mode(self, mode: str, can_continue: bool) -> None: ...
    def prepare_for_run(self, fresh: bool, task: str, message: str) -> None: ...
    def set_try_task(self, task: str) -> None: ...
    def show_steps(self, steps: list[Any], smoothed_loss: float | None) -> None: ...
    def current_step(self) -> int: ...
    def show_gpu_utilisation(self, percent: int | None) -> None: ...
    def show_run_started(self, ev: Any) -> None: ...
    def show_epoch(self, ev: Any, best_epoch: int | None, final: bool = False) -> None: ...
    def show_epoch_ended(self, ev: Any) -> None: ...
    def show_sample(self, ev: Any) -> None: ...
    def show_run_finished(self, ev: Any, tab: str | None) -> None: ...
    def redraw_plots(self) -> None: ...
    def start_updates(self) -> None: ...
    def stop_updates(self) -> None: ...
    def offer_try(self, available: bool, why: str) -> None: ...
    def offer_chat(self, run_id: int | None, chat: bool = True, why: str = "") -> None: ...
    def show_prediction(self, inputs: list[str], scores: list[dict[str, float]]) -> None: ...
    def show_prediction_error(self, message: str, hint: str) -> None: ...
    def show_error_box(self, title: str, message: str, hint: str) -> None: ...


def _train(ctx: TaskContext, worker: RunWorker) -> None:
    """The run, in its background thread (its outcome comes back as the worker's signals)."""
    ctx.on_cancel(lambda: worker.control.request_stop("stopped because TuneDesk was closed"))
    worker.run()


def _plain(rich: str) -> str:
    return rich.replace("<b>", "").replace("</b>", "")


class TrainController(QObject):
    """State of the Train area; the run worker's signals arrive at its methods on the GUI thread."""

    def __init__(self, state: Any, view: TrainView, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.view = view
        self.curves = TrainingCurves()
        self.mode = "idle"
        self.worker: RunWorker | None = None
        self.task: BackgroundTask | None = None  # the run's thread
        self.run_id: int | None = None
        self.last_finished: Any = None  # RunFinished of the last run
        self.epoch_events: list[Any] = []
        self.task_name = "text_classification"  # the engine task of the run shown
        self.closing = False  # errors are logged, not shown in a dialog
        self._device: str | None = None  # of the run shown
        self._util_ok = True  # the GPU reports its utilisation
        self._predicting: BackgroundTask | None = None
        self._waiting_inputs: list[str] | None = None

    # ---- modes ----------------------------------------------------------------------------------

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        last = self.last_finished
        can_continue = mode == "idle" and last is not None and last.status in RESUMABLE and self._has_last_checkpoint()
        self.view.show_mode(mode, can_continue)

    def _has_last_checkpoint(self) -> bool:
        result = getattr(self.worker, "result", None)
        if result is not None and result.output_dir:
            return (Path(result.output_dir) / "last" / "training_state.pt").is_file()
        return self.run_id is not None

    def best_epoch(self) -> int | None:
        best = [e.epoch for e in self.epoch_events if e.is_best]
        return best[-1] if best else None

    # ---- start, stop, pause, resume ---------------------------------------------------------------

    def start(self) -> bool:
        """Validate the setup and start a run; False (with the message beside the field) when invalid."""
        if self.mode != "idle":
            return False
        config = self.view.form.validated_config()
        if config is None:
            self.view.say("Fix the highlighted setting, then press Start.")
            return False
        self.task_name = config.task
        self._begin(RunWorker(config, home=self.state.home), f"Preparing {Path(config.model.name_or_path).name}…")
        return True

    def resume_run(self, run_id: int) -> bool:
        """Continue a stopped / interrupted / failed run from its last checkpoint, in the same record."""
        if self.mode != "idle":
            self.state.statusMessage.emit("A run is already training.")
            return False
        self.load_history(run_id)
        self._begin(RunWorker(home=self.state.home, resume_run_id=run_id), f"Resuming run {run_id}…", fresh=False)
        self.state.showPanel.emit("train")
        return True

    def continue_last(self) -> None:
        if self.run_id is not None:
            self.resume_run(self.run_id)

    def load_config(self, config: RunConfig) -> None:
        """Show a configuration (a past run's, or a file's) in the form; not while a run trains."""
        if self.mode != "idle":
            self.state.statusMessage.emit("A run is training: stop it before loading another setup.")
            return
        self.view.form.apply_config(config)
        self.view.say("Setup loaded: check it, then press Start.")

    def list_devices(self) -> None:
        """The compute devices for the form (once torch is imported)."""
        try:
            from tunedesk.engine.devices import list_devices

            self.view.form.set_devices(list_devices())
        except Exception as exc:  # noqa: BLE001 - the CPU entry stays
            self.view.log_line(f"could not list the compute devices: {exc}", "warning")

    def open_config_file(self, path: str | Path) -> bool:
        """Show a configuration file's setup in the form; False (with the reason) when it cannot be read."""
        from tunedesk.engine.config import RunConfig
        from tunedesk.engine.errors import ConfigError

        try:
            config = RunConfig.load(path)
        except ConfigError as exc:
            self.view.form.show_error(exc.field, exc.message, exc.hint)
            self.view.say(f"Could not open {Path(path).name}.")
            return False
        self.load_config(config)
        return True

    def save_config_file(self, path: str | Path) -> bool:
        """Save the form's setup; False (with the reason beside the form) when it could not be kept exactly."""
        from tunedesk.ui.training.setup_helpers import FieldError, lost_on_reload

        form = self.view.form
        try:
            config = form.build_config()
        except FieldError as exc:
            form.show_error(exc.field, exc.message, exc.hint)
            return False
        try:
            config.save(path)
        except OSError as exc:
            form.show_error("", f"could not write {path}: {exc.strerror or exc}", "choose another folder")
            return False
        lost = lost_on_reload(config, path)
        if lost:  # e.g. TOML has no "empty": no clipping would come back as the default
            form.show_error(
                "", f"{Path(path).name} cannot keep {', '.join(lost)} exactly as set", "save the setup as .json instead"
            )
            self.view.say(f"Setup saved to {path}, with a difference — see the note under the form.")
            return False
        self.view.say(f"Setup saved to {path}")
        return True

    def load_history(self, run_id: int) -> None:
        """Curves and evaluations recorded so far, so a resumed run's plots continue where they were."""
        from tunedesk.engine.run.events import EpochEnded
        from tunedesk.engine.store import RunStore

        try:
            with RunStore(self.state.database) as store:
                run = store.get_run(run_id)
                steps = store.step_metrics(run_id, max_points=50000)
                epochs = store.epoch_metrics(run_id)
        except Exception as exc:  # noqa: BLE001 - the run itself reports real problems
            self.view.log_line(f"could not read run {run_id}'s history: {exc}", "warning")
            return
        self.task_name = run.get("task") or self.task_name
        self.curves.load_history(steps, epochs)
        self.epoch_events = [
            EpochEnded(
                run_id,
                e["epoch"],
                e["step"],
                e["metrics"],
                e["confusion"],
                e["label_names"],
                e["per_class"],
                e["is_best"],
            )
            for e in epochs
        ]
        for ev in self.epoch_events:  # a language model's table lists them all; a classifier shows the last
            self.view.show_epoch(ev, self.best_epoch())

    def _begin(self, worker: RunWorker, message: str, fresh: bool = True) -> None:
        self._release_worker()
        if fresh:
            self.curves.reset()
            self.epoch_events = []
        self.last_finished = None
        self.run_id = worker.resume_run_id
        self._device, self._util_ok = None, True
        self.view.prepare_for_run(fresh, self.task_name, message)
        self.worker = worker
        worker.progress.connect(self._on_progress)
        worker.prepared.connect(self._on_prepared)
        worker.startFailed.connect(self._on_start_failed)
        worker.runStarted.connect(self._on_run_started)
        worker.epochEnded.connect(self._on_epoch_ended)
        worker.checkpointSaved.connect(self._on_checkpoint)
        worker.logMessage.connect(self._on_log)
        worker.sampleGenerated.connect(self._on_sample)
        worker.runFinished.connect(self._on_run_finished)
        worker.done.connect(self._on_done)
        worker.predicted.connect(self._on_predicted)
        worker.predictFailed.connect(self._on_predict_failed)
        self.state.running = True
        self._set_mode("preparing")
        self.view.say(message)
        self.task = run_in_background(lambda ctx: _train(ctx, worker), name="tunedesk-training", move=worker)
        self.view.start_updates()

    def _release_worker(self) -> None:
        """Drop the previous run's model (kept after a run to answer "try it")."""
        if self._predicting is not None:
            self._predicting.wait()
        if self.task is not None:
            self.task.wait()
        if self.worker is not None:
            self.worker.release()
        self.task = None
        self.worker = None

    def pause(self) -> None:
        if self.worker is not None and self.mode == "running":
            self.worker.control.pause()
            self._set_mode("paused")
            self.view.say(f"Paused at step {self.view.current_step()} — Resume continues, Stop saves a checkpoint.")
            self.view.log_line(f"paused at step {self.view.current_step()}")

    def unpause(self) -> None:
        if self.worker is not None and self.mode == "paused":
            self.worker.control.resume()
            self._set_mode("running")
            self.view.say("Training…")
            self.view.log_line("resumed")

    def stop(self) -> None:
        if self.worker is not None and self.mode in ("running", "paused", "preparing"):
            self.worker.control.request_stop("stopped by the user")
            self._set_mode("stopping")
            self.view.say("Stopping: finishing the current step and saving a resumable checkpoint…")
            self.view.log_line("stop requested")

    def stop_and_wait(self, timeout: float = 300.0) -> bool:
        """Stop a run cleanly (checkpoint saved, run marked stopped) and wait; True when it ended."""
        self.closing = True
        worker = self.worker
        finished = True
        if worker is not None and not worker.finished_flag.is_set():
            worker.control.request_stop("stopped because TuneDesk was closed")
            deadline = time.monotonic() + timeout
            while not worker.finished_flag.wait(0.05):
                QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)
                if time.monotonic() > deadline:
                    finished = False
                    break
        if finished:
            if self.task is not None:
                self.task.wait()
            QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)  # deliver last signals
            self._release_worker()
        self.view.stop_updates()
        self.state.running = False
        return finished

    # ---- the timer (the view calls it) ----------------------------------------------------------

    def drain(self) -> list[Any]:
        """Steps buffered by the run since the last call: into the curves, and to the view."""
        if self.worker is None:
            return []
        steps = self.worker.steps.drain()
        if steps:
            self.curves.add_steps(steps)
            self.view.show_steps(steps, self.curves.ema.last())
        return steps

    def poll_gpu(self) -> None:
        """Once a second while a run trains on a GPU: its utilisation, for the monitor."""
        device = self._device or ""
        if not (self._util_ok and device.startswith("cuda") and self.mode == "running"):
            return
        try:
            import torch

            index = int(device.split(":", 1)[1]) if ":" in device else 0
            self.view.show_gpu_utilisation(int(torch.cuda.utilization(index)))
        except Exception:  # noqa: BLE001 - needs pynvml / a driver that reports it
            self._util_ok = False
            self.view.show_gpu_utilisation(None)

    # ---- try it ---------------------------------------------------------------------------------

    def predict(self, inputs: list[str]) -> None:
        """Class scores from the finished run's best checkpoint, computed in the background."""
        worker = self.worker
        if worker is None or self.mode != "idle":
            self.view.show_prediction_error("No finished run to ask", "train a model first")
            return
        if self._predicting is not None:  # one at a time: the latest question waits for the current one
            self._waiting_inputs = list(inputs)
            return
        self._predicting = run_in_background(
            lambda _ctx: worker.predict(list(inputs)),
            name="trying the model",
            on_finished=self._predict_done,
            parent=self,
        )

    @gui_thread
    def _predict_done(self) -> None:
        self._predicting = None
        waiting, self._waiting_inputs = self._waiting_inputs, None
        if waiting is not None:
            self.predict(waiting)

    @gui_thread
    def _on_predicted(self, inputs: Any, scores: Any) -> None:
        self.view.show_prediction(inputs, scores)

    @gui_thread
    def _on_predict_failed(self, message: str, hint: str) -> None:
        self.view.show_prediction_error(message, hint)

    # ---- the run worker's signals (GUI thread) ----------------------------------------------------

    @gui_thread
    def _on_progress(self, message: str) -> None:
        self.view.say(message[0].upper() + message[1:] + "…")
        self.view.log_line(message)

    @gui_thread
    def _on_prepared(self, info: Any) -> None:
        self.view.log_line(info.lr_explanation[0].upper() + info.lr_explanation[1:])
        self.view.log_line(
            f"layers: {info.freeze_summary} ({info.trainable_params:,} of {info.total_params:,} parameters train)"
        )
        if info.data_summary:
            self.view.log_line(f"data: {info.data_summary}")
        self.view.form.set_freeze_resolved(info.freeze_summary, info.trainable_params, info.total_params)
        self.task_name = info.task or self.task_name
        self.view.set_try_task(self.task_name)

    @gui_thread
    def _on_start_failed(self, message: str, hint: str, field: str) -> None:
        self.view.log_line(message + (f" — {hint}" if hint else ""), "error")
        form = self.view.form
        if field and form.field_label(field) is not None:
            form.show_error(field, message, hint)
        self.view.say("The run did not start: " + message)
        if not self.closing:
            self.view.show_error_box("The run could not start", message, hint)

    @gui_thread
    def _on_run_started(self, ev: Any) -> None:
        self.run_id = ev.run_id
        self._device = ev.device
        if ev.start_step:
            self.curves.truncate_after(ev.start_step)
            self.epoch_events = [e for e in self.epoch_events if e.step <= ev.start_step]
        self.curves.set_shape(ev.total_steps, ev.epochs)
        self.view.show_run_started(ev)
        control = self.worker.control if self.worker is not None else None
        self._set_mode(
            "paused" if control and control.paused else "stopping" if control and control.stop_requested else "running"
        )
        self.view.say("Training…" if not ev.start_step else f"Training, resumed at step {ev.start_step}…")
        self.view.log_line(
            f"run #{ev.run_id} started on {ev.device} ({ev.precision}): {ev.total_steps} steps, "
            f"{ev.epochs} epoch(s) of {ev.steps_per_epoch} steps; {ev.trainable_params:,} of "
            f"{ev.total_params:,} parameters train"
        )
        self.state.runsChanged.emit()

    @gui_thread
    def _on_epoch_ended(self, ev: Any) -> None:
        self.drain()
        self.curves.add_epoch(ev.epoch, ev.step, ev.metrics, ev.is_best)
        self.epoch_events = [e for e in self.epoch_events if e.epoch != ev.epoch] + [ev]
        self.view.show_epoch_ended(ev)
        self.view.show_epoch(ev, self.best_epoch())
        self.view.log_line(
            f"epoch {ev.epoch}: {_plain(metric_line(ev.metrics))}" + (" (best so far)" if ev.is_best else ""),
            "ok" if ev.is_best else "info",
        )

    @gui_thread
    def _on_checkpoint(self, ev: Any) -> None:
        what = "best weights" if ev.which == "best" else "resumable checkpoint"
        self.view.log_line(f"saved the {what} at step {ev.step}")

    @gui_thread
    def _on_log(self, ev: Any) -> None:
        self.view.log_line(ev.message, ev.level)

    @gui_thread
    def _on_sample(self, ev: Any) -> None:
        self.view.log_line(f"sample after epoch {ev.epoch} — {ev.prompt!r}: {ev.text}")
        self.view.show_sample(ev)

    @gui_thread
    def _on_run_finished(self, ev: Any) -> None:
        self.drain()
        self.view.redraw_plots()
        self.last_finished = ev
        rid = ev.run_id if ev.run_id is not None else self.run_id
        tab = None
        if ev.status == "completed":
            best = self.best_epoch()
            summary = _plain(metric_line(ev.final_metrics))
            if ev.summary:  # what the length came to: "auto: stopped after epoch 9, best epoch 7 (...)"
                summary += f" — {ev.summary}"
            text = f"Run #{rid} finished — {summary}"
            self.view.log_line(f"finished: {summary}", "ok")
            best_ev = next((e for e in reversed(self.epoch_events) if e.epoch == best), None)
            if best_ev is not None:
                self.view.show_epoch(best_ev, best, final=True)
            tab = "samples" if self.task_name == "causal_lm" else "evaluation"
        elif ev.status == "stopped":
            text = f"Run #{rid} stopped at step {ev.steps}: a checkpoint is saved, Continue run resumes it."
            self.view.log_line(f"stopped at step {ev.steps} ({ev.reason})", "warning")
        else:
            text = f"Run #{rid} failed: {ev.reason}"
            self.view.log_line(f"failed: {ev.reason}" + (f" — {ev.hint}" if ev.hint else ""), "error")
            if not self.closing:
                self.view.show_error_box(
                    "The run failed",
                    ev.reason,
                    (ev.hint + "\n\n" if ev.hint else "")
                    + f"Run #{rid} is recorded as failed in the run history with this reason.",
                )
        self.view.show_run_finished(ev, tab)
        self.view.say(text)
        self.state.statusMessage.emit(text)

    @gui_thread
    def _on_done(self, result: Any) -> None:
        self.drain()
        self.view.stop_updates()
        self.view.redraw_plots()
        self.state.running = False
        self._set_mode("idle")
        if result is None:
            return
        self.run_id = result.run_id
        has_best = (Path(result.output_dir) / "best" / "model.safetensors").is_file()
        if self.task_name == "causal_lm":
            self._offer_chat(int(result.run_id))
        elif not has_best:
            self.view.offer_try(False, "This run saved no best checkpoint (it ended before its first validation).")
        elif self.task_name == "image_classification":
            self.view.offer_try(True, "Choose or drop an image: the run's best checkpoint answers.")
        else:
            self.view.offer_try(True, "Type a text and press Predict: the run's best checkpoint answers.")
        self.state.runsChanged.emit()
        self.state.runFinished.emit(int(result.run_id))

    def _offer_chat(self, run_id: int) -> None:
        """After a language-model run: talk to its best (or, without one, its last) saved model."""
        from tunedesk.engine.store import RunStore, history

        self.view.set_try_task("causal_lm")
        try:
            with RunStore(self.state.database) as store:
                run, checkpoints = store.get_run(run_id), store.checkpoints(run_id)
        except Exception as exc:  # noqa: BLE001 - the chat box says why it is not available
            self.view.offer_chat(None, why=f"Could not read run {run_id}: {exc}")
            return
        if not history.has_model(checkpoints):
            self.view.offer_chat(
                None, why=f"Run {run_id} saved no model to talk to (it ended before its first checkpoint)"
            )
            return
        self.view.offer_chat(run_id, chat=history.lm_chat(run))

    def config_for_finder(self) -> RunConfig | None:
        """The setup for the learning-rate finder: None while a run trains or when the form is invalid."""
        if self.mode != "idle":
            return None
        return self.view.form.validated_config()
