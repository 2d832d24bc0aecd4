"""The Train area: set a run up, start it in a worker thread, watch it live, steer it, try the result.

Only the worker (tunedesk.ui.worker) touches the engine's training; this panel renders what comes
back: rare events as signals, step events drained from the worker's buffer by a timer that also
redraws the plots (at most 4 times a second, only when something changed, paced by what a redraw costs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QEventLoop, QSettings, Qt, QThread, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from tunedesk.engine.config import RunConfig
from tunedesk.engine.errors import ConfigError
from tunedesk.ui.training.curves import TrainingCurves
from tunedesk.ui.training.monitor import LogPane, RunMonitor
from tunedesk.ui.training.results import EvaluationView, TryItBox
from tunedesk.ui.training.run_events import CHAT_LATER, RunEventHandlers
from tunedesk.ui.training.setup_form import FieldError, SetupForm, lost_on_reload, set_role
from tunedesk.ui.worker import RunWorker, start_in_thread, stop_thread

RESUMABLE = ("stopped", "interrupted", "failed")


def _icon(name: str) -> QIcon:
    try:
        from tunedesk.ui.app import resource

        path = resource("icons", name)
        return QIcon(str(path)) if path.is_file() else QIcon()
    except (FileNotFoundError, OSError):
        return QIcon()


class TrainingPanel(RunEventHandlers, QWidget):
    """The Train area, constructed as ``TrainingPanel(state)``."""

    REDRAW_MS = 100  # the timer: drains the step buffer 10 times a second (the UI rules allow up to 20)
    MIN_PLOT_INTERVAL_S = 0.25  # plots redraw at most 4 times a second ...
    PLOT_DUTY = 0.01  # ... and spend about 1 % of the GUI thread's CPU on it (paint measured inside paintEvent) ...
    MAX_PLOT_INTERVAL_S = 1.0  # ... but redraw at least once a second
    _predictRequested = Signal(object)  # to the worker's thread

    def __init__(self, state: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.curves = TrainingCurves()
        self.plots: Any = None  # LivePlots, built once pyqtgraph may be imported
        self.worker: RunWorker | None = None
        self.thread_: QThread | None = None
        self.run_id: int | None = None
        self.last_finished: Any = None  # RunFinished of the last run
        self.epoch_events: list[Any] = []
        self.error_dialog: QMessageBox | None = None
        self.lr_dialog: Any = None
        self._closing = False
        self._util_ok = True
        self._ticks = 0
        self._next_plot_at = 0.0
        self._task = "text_classification"

        self.form = SetupForm()
        self.form.findLearningRate.connect(self.open_lr_finder)
        self.form.editLayers.connect(lambda: self.state.showPanel.emit("layers"))
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(self.REDRAW_MS)
        self.timer.timeout.connect(self._tick)

        state.modelSelected.connect(self.form.set_model_entry)
        state.datasetSelected.connect(self.form.set_data_spec)
        state.freezeChanged.connect(self.form.set_freeze)
        state.configRequested.connect(self.load_config)
        state.engineReady.connect(self.engine_ready)
        if hasattr(state, "resumeRequested"):
            state.resumeRequested.connect(self.resume_run)
        if state.model is not None:
            self.form.set_model_entry(state.model)
        if state.data is not None:
            self.form.set_data_spec(state.data)
        if state.freeze is not None:
            self.form.set_freeze(state.freeze)
        self._set_mode("idle")

    # ---- layout ---------------------------------------------------------------------------------

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(12, 10, 12, 8)
        outer.setSpacing(8)
        header = QHBoxLayout()
        title = QLabel("Train")
        set_role(title, "title")
        header.addWidget(title)
        self.status = QLabel("Set the run up on the left, then press Start.")
        set_role(self.status, "hint")
        # Long status texts must not widen the panel: a re-layout resizes (and re-renders) every plot.
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        header.addWidget(self.status, 1)
        self.open_button = QPushButton("Open setup…")
        self.open_button.setToolTip("Load a run configuration file (JSON or TOML)")
        self.open_button.clicked.connect(self._open_config)
        self.save_button = QPushButton("Save setup…")
        self.save_button.setToolTip("Save this setup as a run configuration file (JSON or TOML)")
        self.save_button.clicked.connect(self._save_config)
        header.addWidget(self.open_button)
        header.addWidget(self.save_button)
        outer.addLayout(header)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.setChildrenCollapsible(False)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(self.form)
        scroll.setMinimumWidth(380)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        split.addWidget(scroll)

        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(6, 0, 0, 0)
        rv.setSpacing(8)
        controls = QHBoxLayout()
        self.start_button = QPushButton(_icon("play.svg"), "Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.pause_button = QPushButton(_icon("pause.svg"), "Pause")
        self.pause_button.clicked.connect(self.pause)
        self.unpause_button = QPushButton(_icon("resume.svg"), "Resume")
        self.unpause_button.clicked.connect(self.unpause)
        self.stop_button = QPushButton(_icon("stop.svg"), "Stop")
        self.stop_button.setToolTip("Finish the current step, save a resumable checkpoint and stop")
        self.stop_button.clicked.connect(self.stop)
        self.continue_button = QPushButton(_icon("resume.svg"), "Continue run")
        self.continue_button.setToolTip("Resume the stopped run from its last checkpoint")
        self.continue_button.clicked.connect(self._continue_last)
        for b in (self.start_button, self.pause_button, self.unpause_button, self.stop_button, self.continue_button):
            controls.addWidget(b)
        controls.addStretch(1)
        self.run_label = QLabel("")
        set_role(self.run_label, "hint")
        self.run_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.run_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        controls.addWidget(self.run_label)
        rv.addLayout(controls)
        self.monitor = RunMonitor()
        rv.addWidget(self.monitor)

        vsplit = QSplitter(Qt.Orientation.Vertical)
        vsplit.setChildrenCollapsible(False)
        self.plot_holder = QWidget()
        self.plot_layout = QVBoxLayout(self.plot_holder)
        self.plot_layout.setContentsMargins(0, 0, 0, 0)
        self.plot_placeholder = QLabel("Live plots appear here once the engine has loaded.")
        self.plot_placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        set_role(self.plot_placeholder, "hint")
        self.plot_layout.addWidget(self.plot_placeholder)
        self.plot_holder.setMinimumHeight(260)
        vsplit.addWidget(self.plot_holder)
        self.tabs = QTabWidget()
        self.log = LogPane()
        self.evaluation = EvaluationView()
        self.try_it = TryItBox()
        self.try_it.predictRequested.connect(self._predict)
        self.chat: Any = None  # ChatTryItWidget, built for the first language-model run
        self.try_stack = QStackedWidget()  # classifiers: TryItBox; language models: the chat box
        self.try_stack.addWidget(self.try_it)
        self.tabs.addTab(self.log, "Log")
        self.tabs.addTab(self.evaluation, "Evaluation")
        self.tabs.addTab(self.try_stack, "Try it")
        from tunedesk.ui.lm.samples_view import SampleGenerationsView

        self.samples = SampleGenerationsView()  # language models: replies to the user's prompts, epoch by epoch
        self.tabs.addTab(self.samples, "Sample replies")
        self.tabs.setTabVisible(self.tabs.indexOf(self.samples), False)
        self.tabs.setMinimumHeight(150)
        vsplit.addWidget(self.tabs)
        vsplit.setStretchFactor(0, 3)
        vsplit.setStretchFactor(1, 2)
        vsplit.setSizes([520, 260])
        rv.addWidget(vsplit, 1)
        split.addWidget(right)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([420, 900])
        self.splitter = split
        outer.addWidget(split, 1)

    def _set_mode(self, mode: str) -> None:
        """idle / preparing / running / paused / stopping: which controls make sense."""
        self.mode = mode
        active = mode != "idle"
        self.start_button.setVisible(not active)
        self.start_button.setEnabled(not active)
        self.pause_button.setVisible(mode in ("running", "preparing", "stopping"))
        self.pause_button.setEnabled(mode == "running")
        self.unpause_button.setVisible(mode == "paused")
        self.stop_button.setVisible(active)
        self.stop_button.setEnabled(mode in ("running", "paused", "preparing"))
        last = self.last_finished
        self.continue_button.setVisible(
            not active and last is not None and last.status in RESUMABLE and self._has_last_checkpoint()
        )
        self.form.setEnabled(not active)
        self.open_button.setEnabled(not active)
        self.form.find_lr_button.setEnabled(not active)

    def _has_last_checkpoint(self) -> bool:
        result = getattr(self.worker, "result", None)
        if result is not None and result.output_dir:
            return (Path(result.output_dir) / "last" / "training_state.pt").is_file()
        return self.run_id is not None

    def _say(self, text: str) -> None:
        self.status.setText(text)

    # ---- engine ready, plots ------------------------------------------------------------------

    @Slot()
    def engine_ready(self) -> None:
        """torch is imported: list the devices and build the plots."""
        try:
            from tunedesk.engine.devices import list_devices

            self.form.set_devices(list_devices())
        except Exception as exc:  # noqa: BLE001 - the CPU entry stays
            self.log.add(f"could not list the compute devices: {exc}", "warning")
        self.ensure_plots()

    def ensure_plots(self) -> Any:
        if self.plots is None:
            from tunedesk.ui.training.plots import LivePlots

            self.plots = LivePlots(self.curves)
            self.plot_layout.removeWidget(self.plot_placeholder)
            self.plot_placeholder.deleteLater()
            self.plot_layout.addWidget(self.plots)
            self.plots.redraw(force=True)
        return self.plots

    # ---- configuration files --------------------------------------------------------------------

    @Slot(object)
    def load_config(self, config: RunConfig) -> None:
        """Show a configuration (a past run's, or a file's) in the form."""
        if self.mode != "idle":
            self.state.statusMessage.emit("A run is training: stop it before loading another setup.")
            return
        self.form.apply_config(config)
        self._say("Setup loaded: check it, then press Start.")

    def _open_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a run configuration", str(self.state.home), "Run configurations (*.json *.toml);;All files (*)"
        )
        if path:
            self.open_config_file(path)

    def open_config_file(self, path: str | Path) -> bool:
        try:
            config = RunConfig.load(path)
        except ConfigError as exc:
            self.form.show_error(exc.field, exc.message, exc.hint)
            self._say(f"Could not open {Path(path).name}.")
            return False
        self.load_config(config)
        return True

    def _save_config(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the run configuration", str(self.state.home / "run.toml"), "TOML (*.toml);;JSON (*.json)"
        )
        if path:
            self.save_config_file(path)

    def save_config_file(self, path: str | Path) -> bool:
        try:
            config = self.form.build_config()
        except FieldError as exc:
            self.form.show_error(exc.field, exc.message, exc.hint)
            return False
        try:
            config.save(path)
        except OSError as exc:
            self.form.show_error("", f"could not write {path}: {exc.strerror or exc}", "choose another folder")
            return False
        lost = lost_on_reload(config, path)
        if lost:  # e.g. TOML has no "empty": no clipping would come back as the default
            self.form.show_error(
                "", f"{Path(path).name} cannot keep {', '.join(lost)} exactly as set", "save the setup as .json instead"
            )
            self._say(f"Setup saved to {path}, with a difference — see the note under the form.")
            return False
        self._say(f"Setup saved to {path}")
        return True

    # ---- start, stop, pause, resume ---------------------------------------------------------------

    @Slot()
    def start(self) -> bool:
        """Validate the setup and start a run; False (with the message beside the field) when invalid."""
        if self.mode != "idle":
            return False
        config = self.form.validated_config()
        if config is None:
            self._say("Fix the highlighted setting, then press Start.")
            return False
        self._task = config.task
        self._begin(RunWorker(config, home=self.state.home), f"Preparing {Path(config.model.name_or_path).name}…")
        return True

    @Slot(int)
    def resume_run(self, run_id: int) -> bool:
        """Continue a stopped / interrupted / failed run from its last checkpoint, in the same record."""
        if self.mode != "idle":
            self.state.statusMessage.emit("A run is already training.")
            return False
        self._load_history(run_id)
        self._begin(RunWorker(home=self.state.home, resume_run_id=run_id), f"Resuming run {run_id}…", fresh=False)
        self.state.showPanel.emit("train")
        return True

    def _continue_last(self) -> None:
        if self.run_id is not None:
            self.resume_run(self.run_id)

    def _load_history(self, run_id: int) -> None:
        """Curves and evaluations recorded so far, so a resumed run's plots continue where they were."""
        from tunedesk.engine.store import RunStore

        try:
            with RunStore(self.state.database) as store:
                run = store.get_run(run_id)
                steps = store.step_metrics(run_id, max_points=50000)
                epochs = store.epoch_metrics(run_id)
        except Exception as exc:  # noqa: BLE001 - the run itself reports real problems
            self.log.add(f"could not read run {run_id}'s history: {exc}", "warning")
            return
        self._task = run.get("task") or self._task
        self.curves.load_history(steps, epochs)
        from tunedesk.engine.run.events import EpochEnded

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
            self.evaluation.show_epoch(ev, self._best_epoch())

    def _begin(self, worker: RunWorker, message: str, fresh: bool = True) -> None:
        self._release_worker()
        self.ensure_plots()
        if fresh:
            self.curves.reset()
            self.epoch_events = []
            self.evaluation.clear()
            self.plots.clear()
        self.monitor.reset()
        self.last_finished = None
        self.run_id = worker.resume_run_id
        self._util_ok = True
        self.log.clear()
        self.log.add(message.rstrip("…"))
        self._set_try_task(self._task)
        self.samples.clear()
        self.tabs.setTabVisible(self.tabs.indexOf(self.samples), self._task == "causal_lm")
        self.try_it.set_available(False, "Available when the run has finished: it uses the run's best checkpoint.")
        if self.chat is not None:
            self.chat.set_run(None, why=CHAT_LATER)
        self.tabs.setCurrentWidget(self.log)
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
        self._predictRequested.connect(worker.predict)
        self.state.running = True
        self._set_mode("preparing")
        self._say(message)
        self.run_label.setText("")
        self.thread_ = start_in_thread(worker, worker.run, name="tunedesk-training")
        self.timer.start()

    def _release_worker(self) -> None:
        """End the previous run's thread (it stays alive after a run to answer "try it")."""
        if self.worker is not None:
            try:
                self._predictRequested.disconnect(self.worker.predict)
            except (RuntimeError, TypeError):
                pass
            self.worker.release()
        stop_thread(self.thread_)
        self.thread_ = None
        self.worker = None

    @Slot()
    def pause(self) -> None:
        if self.worker is not None and self.mode == "running":
            self.worker.control.pause()
            self._set_mode("paused")
            self._say(f"Paused at step {self.monitor.step} — Resume continues, Stop saves a checkpoint.")
            self.log.add(f"paused at step {self.monitor.step}")

    @Slot()
    def unpause(self) -> None:
        if self.worker is not None and self.mode == "paused":
            self.worker.control.resume()
            self._set_mode("running")
            self._say("Training…")
            self.log.add("resumed")

    @Slot()
    def stop(self) -> None:
        if self.worker is not None and self.mode in ("running", "paused", "preparing"):
            self.worker.control.request_stop("stopped by the user")
            self._set_mode("stopping")
            self._say("Stopping: finishing the current step and saving a resumable checkpoint…")
            self.log.add("stop requested")

    def stop_and_wait(self, timeout: float = 300.0) -> bool:
        """Stop a run cleanly (checkpoint saved, run marked stopped) and wait; the window calls it on close."""
        self._closing = True
        if self.lr_dialog is not None:
            self.lr_dialog.stop()
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
            QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)  # deliver last signals
            self._release_worker()
        if "tunedesk.ui.training.lr_dialog" in sys.modules:
            from tunedesk.ui.training.lr_dialog import wait_for_background

            finished = wait_for_background(int(timeout * 1000)) and finished
        self.timer.stop()
        self.state.running = False
        return finished

    def shutdown(self, timeout_ms: int = 300_000) -> bool:
        """Stop everything this panel started (window close, tests); False when a thread is still busy."""
        done = self.stop_and_wait(timeout_ms / 1000)
        if self.chat is not None:
            done = self.chat.shutdown(timeout_ms) and done
        self._closing = False
        return done

    # ---- the timer: steps, plots, clocks ---------------------------------------------------------

    def _drain(self) -> list[Any]:
        if self.worker is None:
            return []
        steps = self.worker.steps.drain()
        if steps:
            self.curves.add_steps(steps)
            self.monitor.update_steps(steps, self.curves.ema.last())
        return steps

    @Slot()
    def _tick(self) -> None:
        self._drain()
        self._maybe_redraw()
        self._ticks += 1
        if self._ticks % max(1, 1000 // self.REDRAW_MS) == 0:
            self.monitor.tick(self.mode in ("running", "stopping"))
            self._poll_gpu()

    def _maybe_redraw(self) -> None:
        """Redraw the plots when due. The pace adapts to what a redraw costs (data update + paint), so
        the GUI thread, which shares the Python interpreter lock with the training loop, takes at most
        about PLOT_DUTY of it: cheap plots redraw 4 times a second, heavy ones less often (>= 1 a second)."""
        plots = self.plots
        if plots is None or not plots.isVisible():
            return
        now = time.perf_counter()
        if now < self._next_plot_at:
            return
        t = time.thread_time()
        if plots.redraw():
            cost = (time.thread_time() - t) + plots.last_paint_s
            pause = min(max(cost / self.PLOT_DUTY, self.MIN_PLOT_INTERVAL_S), self.MAX_PLOT_INTERVAL_S)
            self._next_plot_at = now + pause - 0.005

    def _poll_gpu(self) -> None:
        device = self.monitor.device
        if not (self._util_ok and device.startswith("cuda") and self.mode == "running"):
            return
        try:
            import torch

            index = int(device.split(":", 1)[1]) if ":" in device else 0
            self.monitor.set_gpu_utilisation(int(torch.cuda.utilization(index)))
        except Exception:  # noqa: BLE001 - needs pynvml / a driver that reports it
            self._util_ok = False
            self.monitor.set_gpu_utilisation(None)

    # ---- learning-rate finder, try it -----------------------------------------------------------

    @Slot()
    def open_lr_finder(self, num_steps: int = 100) -> Any:
        if self.mode != "idle":
            return None
        config = self.form.validated_config()
        if config is None:
            return None
        from tunedesk.ui.training.lr_dialog import LRFinderDialog

        self.lr_dialog = LRFinderDialog(config, self, num_steps=num_steps)
        self.lr_dialog.chosen.connect(self.form.set_learning_rate)
        self.lr_dialog.finished.connect(self._lr_dialog_closed)
        self.lr_dialog.open()
        return self.lr_dialog

    def _lr_dialog_closed(self) -> None:
        self.lr_dialog = None

    def _predict(self, inputs: list[str]) -> None:
        if self.worker is None or self.mode != "idle":
            self.try_it.show_error("No finished run to ask", "train a model first")
            return
        self._predictRequested.emit(inputs)

    # ---- window hooks ---------------------------------------------------------------------------

    def save_settings(self, settings: QSettings) -> None:
        settings.setValue("train/splitter", self.splitter.saveState())

    def restore_settings(self, settings: QSettings) -> None:
        state = settings.value("train/splitter")
        if state is not None:
            self.splitter.restoreState(state)

    def menu_actions(self) -> dict[str, list[QAction]]:
        """File menu entries for run setup files (the window adds them to its menus)."""
        open_action = QAction("Open run setup…", self)
        open_action.triggered.connect(self._open_config)
        save_action = QAction("Save run setup…", self)
        save_action.triggered.connect(self._save_config)
        return {"File": [open_action, save_action]}
