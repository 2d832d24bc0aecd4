"""What the Train panel does with each signal of the run worker (all run in the GUI thread).

A mixin of ``TrainingPanel``: the handlers read and write the panel's widgets and state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from tunedesk.ui.training.results import metric_line

CHAT_LATER = "Available when the run has finished: chat with its fine-tuned model"


class RunEventHandlers:
    """Slots for RunWorker's signals; connected to bound methods, so Qt queues them to the GUI thread."""

    # ---- worker signals (GUI thread) ---------------------------------------------------------------

    def _on_progress(self, message: str) -> None:
        self._say(message[0].upper() + message[1:] + "…")
        self.log.add(message)

    def _on_prepared(self, info: Any) -> None:
        self.log.add(info.lr_explanation[0].upper() + info.lr_explanation[1:])
        self.log.add(
            f"layers: {info.freeze_summary} ({info.trainable_params:,} of {info.total_params:,} parameters train)"
        )
        if info.data_summary:
            self.log.add(f"data: {info.data_summary}")
        self.form.set_freeze_resolved(info.freeze_summary, info.trainable_params, info.total_params)
        self._task = info.task or self._task
        self._set_try_task(self._task)

    def _on_start_failed(self, message: str, hint: str, field: str) -> None:
        self.log.add(message + (f" — {hint}" if hint else ""), "error")
        if field and self.form.field_label(field) is not None:
            self.form.show_error(field, message, hint)
        self._say("The run did not start: " + message)
        if not self._closing:
            self._show_error("The run could not start", message, hint)

    def _on_run_started(self, ev: Any) -> None:
        self.run_id = ev.run_id
        if ev.start_step:
            self.curves.truncate_after(ev.start_step)
            self.epoch_events = [e for e in self.epoch_events if e.step <= ev.start_step]
        self.curves.set_shape(ev.total_steps, ev.epochs)
        self.monitor.started(ev)
        self._set_mode(
            "paused"
            if self.worker and self.worker.control.paused
            else "stopping"
            if self.worker and self.worker.control.stop_requested
            else "running"
        )
        self.run_label.setText(f"run #{ev.run_id} · {ev.device} · {ev.precision}")
        self._say("Training…" if not ev.start_step else f"Training, resumed at step {ev.start_step}…")
        self.log.add(
            f"run #{ev.run_id} started on {ev.device} ({ev.precision}): {ev.total_steps} steps, "
            f"{ev.epochs} epoch(s) of {ev.steps_per_epoch} steps; {ev.trainable_params:,} of "
            f"{ev.total_params:,} parameters train"
        )
        self.state.runsChanged.emit()

    def _on_epoch_ended(self, ev: Any) -> None:
        self._drain()
        self.curves.add_epoch(ev.epoch, ev.step, ev.metrics, ev.is_best)
        self.epoch_events = [e for e in self.epoch_events if e.epoch != ev.epoch] + [ev]
        self.monitor.epoch_ended(ev)
        self.evaluation.show_epoch(ev, self._best_epoch())
        self.log.add(
            f"epoch {ev.epoch}: {_plain(metric_line(ev.metrics))}" + (" (best so far)" if ev.is_best else ""),
            "ok" if ev.is_best else "info",
        )

    def _best_epoch(self) -> int | None:
        best = [e.epoch for e in self.epoch_events if e.is_best]
        return best[-1] if best else None

    def _on_checkpoint(self, ev: Any) -> None:
        what = "best weights" if ev.which == "best" else "resumable checkpoint"
        self.log.add(f"saved the {what} at step {ev.step}")

    def _on_log(self, ev: Any) -> None:
        self.log.add(ev.message, ev.level)

    def _on_sample(self, ev: Any) -> None:
        self.log.add(f"sample after epoch {ev.epoch} — {ev.prompt!r}: {ev.text}")
        self.samples.add_event(ev)
        if ev.epoch == 0:
            self.tabs.setCurrentWidget(self.samples)

    def _on_run_finished(self, ev: Any) -> None:
        self._drain()
        if self.plots is not None:
            self.plots.redraw()
        self.last_finished = ev
        self.monitor.finished(ev)
        rid = ev.run_id if ev.run_id is not None else self.run_id
        if ev.status == "completed":
            best = self._best_epoch()
            summary = _plain(metric_line(ev.final_metrics))
            self._say(f"Run #{rid} finished — {summary}")
            self.log.add(f"finished: {summary}", "ok")
            best_ev = next((e for e in reversed(self.epoch_events) if e.epoch == best), None)
            if best_ev is not None:
                self.evaluation.show_epoch(best_ev, best, final=True)
            self.tabs.setCurrentWidget(self.samples if self._task == "causal_lm" else self.evaluation)
        elif ev.status == "stopped":
            self._say(f"Run #{rid} stopped at step {ev.steps}: a checkpoint is saved, Continue run resumes it.")
            self.log.add(f"stopped at step {ev.steps} ({ev.reason})", "warning")
        else:
            self._say(f"Run #{rid} failed: {ev.reason}")
            self.log.add(f"failed: {ev.reason}" + (f" — {ev.hint}" if ev.hint else ""), "error")
            if not self._closing:
                self._show_error(
                    "The run failed",
                    ev.reason,
                    (ev.hint + "\n\n" if ev.hint else "")
                    + f"Run #{rid} is recorded as failed in the run history with this reason.",
                )
        self.state.statusMessage.emit(self.status.text())

    def _on_done(self, result: Any) -> None:
        self._drain()
        self.timer.stop()
        if self.plots is not None:
            self.plots.redraw()
        self.state.running = False
        self._set_mode("idle")
        if result is not None:
            self.run_id = result.run_id
            has_best = (Path(result.output_dir) / "best" / "model.safetensors").is_file()
            if self._task == "causal_lm":
                self._offer_chat(int(result.run_id))
            elif not has_best:
                self.try_it.set_available(
                    False, "This run saved no best checkpoint (it ended before its first validation)."
                )
            elif self._task == "image_classification":
                self.try_it.set_available(True, "Choose or drop an image: the run's best checkpoint answers.")
            else:
                self.try_it.set_available(True, "Type a text and press Predict: the run's best checkpoint answers.")
            self.state.runsChanged.emit()
            self.state.runFinished.emit(int(result.run_id))

    def _set_try_task(self, task: str) -> None:
        """The "Try it" tab: the classify box for classifiers, a chat box for language models."""
        self.try_it.set_task(task)
        if task == "causal_lm" and self.chat is None:
            from tunedesk.ui.lm.chat_widget import ChatTryItWidget

            self.chat = ChatTryItWidget(self.state.home)
            self.chat.set_run(None, why=CHAT_LATER)
            self.try_stack.addWidget(self.chat)
        self.try_stack.setCurrentWidget(self.chat if task == "causal_lm" else self.try_it)

    def _offer_chat(self, run_id: int) -> None:
        """After a language-model run: talk to its best (or, without one, its last) saved model."""
        from tunedesk.engine.store import RunStore, history

        self._set_try_task("causal_lm")
        try:
            with RunStore(self.state.database) as store:
                run, checkpoints = store.get_run(run_id), store.checkpoints(run_id)
        except Exception as exc:  # noqa: BLE001 - the chat box says why it is not available
            self.chat.set_run(None, why=f"Could not read run {run_id}: {exc}")
            return
        if not history.has_model(checkpoints):
            self.chat.set_run(
                None, why=f"Run {run_id} saved no model to talk to (it ended before its first checkpoint)"
            )
            return
        self.chat.set_run(run_id, chat=history.lm_chat(run))

    def _show_error(self, title: str, message: str, hint: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        if hint:
            box.setInformativeText(hint)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        self.error_dialog = box
        box.open()

    def _on_predicted(self, inputs: Any, scores: Any) -> None:
        self.try_it.show_result(inputs, scores)

    def _on_predict_failed(self, message: str, hint: str) -> None:
        self.try_it.show_error(message, hint)


def _plain(rich: str) -> str:
    return rich.replace("<b>", "").replace("</b>", "")
