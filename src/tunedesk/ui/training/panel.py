"""The Train area: set a run up, start it, watch it live, steer it, try the result.

The panel draws; ``TrainController`` (controller.py) holds the run's state and talks to the engine,
and calls the panel's drawing methods (``TrainView``). A timer drains the run's step buffer (through
the controller) and redraws the plots (at most 4 times a second, only when something changed, paced
by what a redraw costs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction
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

from tunedesk.ui.resources import icon
from tunedesk.ui.training.controller import CHAT_LATER, TrainController
from tunedesk.ui.training.monitor import LogPane, RunMonitor
from tunedesk.ui.training.results import EvaluationView, TryItBox
from tunedesk.ui.training.setup_form import SetupForm, set_role


class TrainingPanel(QWidget):
    """The Train area, constructed as ``TrainingPanel(state)``; its state is ``self.controller``."""

    REDRAW_MS = 100  # the timer: drains the step buffer 10 times a second (the UI rules allow up to 20)
    MIN_PLOT_INTERVAL_S = 0.25  # plots redraw at most 4 times a second ...
    PLOT_DUTY = 0.01  # ... and spend about 1 % of the GUI thread's CPU on it (paint measured inside paintEvent) ...
    MAX_PLOT_INTERVAL_S = 1.0  # ... but redraw at least once a second

    def __init__(self, state: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.plots: Any = None  # LivePlots, built once pyqtgraph may be imported
        self.error_dialog: QMessageBox | None = None
        self.lr_dialog: Any = None
        self._ticks = 0
        self._next_plot_at = 0.0

        self.form = SetupForm()
        self.form.editLayers.connect(lambda: self.state.showPanel.emit("layers"))
        self._build()
        self.controller = TrainController(state, self, parent=self)
        self.form.findLearningRate.connect(self.open_lr_finder)
        self.start_button.clicked.connect(self.controller.start)
        self.pause_button.clicked.connect(self.controller.pause)
        self.unpause_button.clicked.connect(self.controller.unpause)
        self.stop_button.clicked.connect(self.controller.stop)
        self.continue_button.clicked.connect(self.controller.continue_last)
        self.try_it.predictRequested.connect(self.controller.predict)
        self.timer = QTimer(self)
        self.timer.setInterval(self.REDRAW_MS)
        self.timer.timeout.connect(self._tick)

        state.modelSelected.connect(self.form.set_model_entry)
        state.datasetSelected.connect(self.form.set_data_spec)
        state.freezeChanged.connect(self.form.set_freeze)
        state.configRequested.connect(self.controller.load_config)
        state.engineReady.connect(self.engine_ready)
        state.resumeRequested.connect(self.controller.resume_run)
        if state.model is not None:
            self.form.set_model_entry(state.model)
        if state.data is not None:
            self.form.set_data_spec(state.data)
        if state.freeze is not None:
            self.form.set_freeze(state.freeze)
        self.show_mode("idle", False)

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
        self.start_button = QPushButton(icon("play.svg"), "Start")
        self.start_button.setDefault(True)
        self.pause_button = QPushButton(icon("pause.svg"), "Pause")
        self.unpause_button = QPushButton(icon("resume.svg"), "Resume")
        self.stop_button = QPushButton(icon("stop.svg"), "Stop")
        self.stop_button.setToolTip("Finish the current step, save a resumable checkpoint and stop")
        self.continue_button = QPushButton(icon("resume.svg"), "Continue run")
        self.continue_button.setToolTip("Resume the stopped run from its last checkpoint")
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

    # ---- drawing (TrainView: the controller calls these) --------------------------------------------

    def show_mode(self, mode: str, can_continue: bool) -> None:
        """idle / preparing / running / paused / stopping: which controls make sense."""
        active = mode != "idle"
        self.start_button.setVisible(not active)
        self.start_button.setEnabled(not active)
        self.pause_button.setVisible(mode in ("running", "preparing", "stopping"))
        self.pause_button.setEnabled(mode == "running")
        self.unpause_button.setVisible(mode == "paused")
        self.stop_button.setVisible(active)
        self.stop_button.setEnabled(mode in ("running", "paused", "preparing"))
        self.continue_button.setVisible(can_continue)
        self.form.setEnabled(not active)
        self.open_button.setEnabled(not active)
        self.form.find_lr_button.setEnabled(not active)

    def say(self, text: str) -> None:
        self.status.setText(text)

    def log_line(self, text: str, level: str = "info") -> None:
        self.log.add(text, level)

    def prepare_for_run(self, fresh: bool, task: str, message: str) -> None:
        """Clear what the last run left (all of it for a new run; a resumed one keeps its curves)."""
        self.ensure_plots()
        if fresh:
            self.evaluation.clear()
            self.plots.clear()
        self.monitor.reset()
        self.log.clear()
        self.log.add(message.rstrip("…"))
        self.set_try_task(task)
        self.samples.clear()
        self.tabs.setTabVisible(self.tabs.indexOf(self.samples), task == "causal_lm")
        self.try_it.set_available(False, "Available when the run has finished: it uses the run's best checkpoint.")
        if self.chat is not None:
            self.chat.set_run(None, why=CHAT_LATER)
        self.tabs.setCurrentWidget(self.log)
        self.run_label.setText("")

    def set_try_task(self, task: str) -> None:
        """The "Try it" tab: the classify box for classifiers, a chat box for language models."""
        self.try_it.set_task(task)
        if task == "causal_lm" and self.chat is None:
            from tunedesk.ui.lm.chat_widget import ChatTryItWidget

            self.chat = ChatTryItWidget(self.state.home)
            self.chat.set_run(None, why=CHAT_LATER)
            self.try_stack.addWidget(self.chat)
        self.try_stack.setCurrentWidget(self.chat if task == "causal_lm" else self.try_it)

    def show_steps(self, steps: list[Any], smoothed_loss: float | None) -> None:
        self.monitor.update_steps(steps, smoothed_loss)

    def current_step(self) -> int:
        return int(self.monitor.step)

    def show_gpu_utilisation(self, percent: int | None) -> None:
        self.monitor.set_gpu_utilisation(percent)

    def show_run_started(self, ev: Any) -> None:
        self.monitor.started(ev)
        self.run_label.setText(f"run #{ev.run_id} · {ev.device} · {ev.precision}")

    def show_epoch(self, ev: Any, best_epoch: int | None, final: bool = False) -> None:
        self.evaluation.show_epoch(ev, best_epoch, final=final)

    def show_epoch_ended(self, ev: Any) -> None:
        self.monitor.epoch_ended(ev)

    def show_sample(self, ev: Any) -> None:
        self.samples.add_event(ev)
        if ev.epoch == 0:
            self.tabs.setCurrentWidget(self.samples)

    def show_run_finished(self, ev: Any, tab: str | None) -> None:
        self.monitor.finished(ev)
        if tab is not None:
            self.tabs.setCurrentWidget(self.samples if tab == "samples" else self.evaluation)

    def redraw_plots(self) -> None:
        if self.plots is not None:
            self.plots.redraw()

    def start_updates(self) -> None:
        self.timer.start()

    def stop_updates(self) -> None:
        self.timer.stop()

    def offer_try(self, available: bool, why: str) -> None:
        self.try_it.set_available(available, why)

    def offer_chat(self, run_id: int | None, chat: bool = True, why: str = "") -> None:
        self.set_try_task("causal_lm")
        self.chat.set_run(run_id, chat=chat, why=why)

    def show_prediction(self, inputs: list[str], scores: list[dict[str, float]]) -> None:
        self.try_it.show_result(inputs, scores)

    def show_prediction_error(self, message: str, hint: str) -> None:
        self.try_it.show_error(message, hint)

    def show_error_box(self, title: str, message: str, hint: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        if hint:
            box.setInformativeText(hint)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        self.error_dialog = box
        box.open()

    # ---- engine ready, plots ------------------------------------------------------------------

    @Slot()
    def engine_ready(self) -> None:
        """torch is imported: list the devices and build the plots."""
        self.controller.list_devices()
        self.ensure_plots()

    def ensure_plots(self) -> Any:
        if self.plots is None:
            from tunedesk.ui.training.plots import LivePlots

            self.plots = LivePlots(self.controller.curves)
            self.plot_layout.removeWidget(self.plot_placeholder)
            self.plot_placeholder.deleteLater()
            self.plot_layout.addWidget(self.plots)
            self.plots.redraw(force=True)
        return self.plots

    # ---- configuration files --------------------------------------------------------------------

    def _open_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a run configuration", str(self.state.home), "Run configurations (*.json *.toml);;All files (*)"
        )
        if path:
            self.open_config_file(path)

    def open_config_file(self, path: str | Path) -> bool:
        return self.controller.open_config_file(path)

    def _save_config(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the run configuration", str(self.state.home / "run.toml"), "TOML (*.toml);;JSON (*.json)"
        )
        if path:
            self.save_config_file(path)

    def save_config_file(self, path: str | Path) -> bool:
        return self.controller.save_config_file(path)

    # ---- closing ----------------------------------------------------------------------------------

    def stop_and_wait(self, timeout: float = 300.0) -> bool:
        """Stop a run cleanly (checkpoint saved, run marked stopped) and wait; the window calls it on close."""
        if self.lr_dialog is not None:
            self.lr_dialog.stop()
        finished = self.controller.stop_and_wait(timeout)
        if "tunedesk.ui.training.lr_dialog" in sys.modules:
            from tunedesk.ui.training.lr_dialog import wait_for_background

            finished = wait_for_background(int(timeout * 1000)) and finished
        return finished

    def shutdown(self, timeout_ms: int = 300_000) -> bool:
        """Stop everything this panel started (window close, tests); False when a thread is still busy."""
        done = self.stop_and_wait(timeout_ms / 1000)
        if self.chat is not None:
            done = self.chat.shutdown(timeout_ms) and done
        self.controller.closing = False
        return done

    # ---- the timer: steps, plots, clocks ---------------------------------------------------------

    @Slot()
    def _tick(self) -> None:
        self.controller.drain()
        self._maybe_redraw()
        self._ticks += 1
        if self._ticks % max(1, 1000 // self.REDRAW_MS) == 0:
            self.monitor.tick(self.controller.mode in ("running", "stopping"))
            self.controller.poll_gpu()

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

    # ---- learning-rate finder, try it -----------------------------------------------------------

    @Slot()
    def open_lr_finder(self, num_steps: int = 100) -> Any:
        config = self.controller.config_for_finder()
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
