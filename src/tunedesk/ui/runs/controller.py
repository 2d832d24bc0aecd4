"""The Runs area's controller: the GUI thread's RunStore and what the user asks of a run (clone,
resume, delete). Errors come back as message + hint to the ``on_error`` the panel gives; the
panel asks for confirmations and draws."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.store import RunStore, history


class RunsController:
    def __init__(self, state: Any, on_error: Callable[[str, str], None]) -> None:
        self.state = state
        self.on_error = on_error
        self._store: RunStore | None = None

    def store(self) -> RunStore:
        """This (GUI) thread's RunStore, opened on first use."""
        if self._store is None:
            self._store = RunStore(self.state.database)
        return self._store

    def open_history(self) -> history.FilterChoices:
        """Runs left "running" by a crash become interrupted; the values the filter menus offer.
        Raises TuneDeskError when the history cannot be read."""
        self.store().mark_interrupted()
        return self.filter_choices()

    def filter_choices(self) -> history.FilterChoices:
        return history.filter_choices(self.store())

    def run(self, run_id: int) -> dict[str, Any] | None:
        try:
            return self.store().get_run(run_id)
        except TuneDeskError as exc:
            self.on_error(exc.message, exc.hint)
            return None

    def clone_run(self, run_id: int) -> None:
        """Its settings go to the Train area."""
        try:
            config = history.clone_config(self.store().get_run(run_id))
        except TuneDeskError as exc:
            self.on_error(exc.message, exc.hint)
            return
        self.state.configRequested.emit(config)
        self.state.showPanel.emit("train")
        self.state.statusMessage.emit(f"run #{run_id}'s settings are in the Train panel")

    def resume_run(self, run_id: int) -> None:
        """The Train area resumes it (it owns the training); we only ask."""
        self.state.resumeRequested.emit(run_id)
        self.state.showPanel.emit("train")
        self.state.statusMessage.emit(f"resuming run #{run_id} from its last checkpoint")

    def exported(self, run_id: int, path: str | Path) -> None:
        self.state.statusMessage.emit(f"exported run #{run_id} to {path}")

    def delete_run(self, run_id: int) -> bool:
        try:
            history.delete_run(self.store(), run_id, self.state.home)
        except TuneDeskError as exc:
            self.on_error(exc.message, exc.hint)
            return False
        self.state.statusMessage.emit(f"deleted run #{run_id}")
        self.state.runsChanged.emit()
        return True
