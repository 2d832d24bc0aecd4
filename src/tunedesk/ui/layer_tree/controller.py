"""The Layers area's controller: the freeze plan, its undo history, and the model tree it applies to.

The plan (``FreezeSpec``) is the only state: every control is drawn from it and every edit produces a
new one, which goes to ``AppState.set_freeze`` for the training panel. A plan set by someone else
(the runs panel re-opening a run) is shown without being sent back. The model is built on the meta
device in the background: no weights are read, so even an 8B model shows in a fraction of a second.
The controller tells the panel what to draw through ``LayersView``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtCore import QObject, QSettings

from tunedesk.engine.config import FreezeSpec
from tunedesk.engine.errors import TuneDeskError
from tunedesk.ui.background import TaskGroup, gui_thread

if TYPE_CHECKING:
    from tunedesk.engine.structure import ModelTree

log = logging.getLogger("tunedesk.ui.layer_tree")

Edit = Callable[[Any, FreezeSpec], FreezeSpec]  # (ModelTree, plan) -> new plan


def build_tree(entry: Any, inputs: dict[str, Any]) -> Any:
    """The meta model's ``ModelTree`` with the default plan (in a background thread: no weights are read).

    ``inputs`` are the summary's current settings: the first summary measures a CNN's activations and
    traces the feature cache for that input size (about a second for an 8B model), here rather than on
    the GUI thread."""
    from tunedesk.engine import structure

    loaded = structure.build_meta_model(entry)
    tree = structure.ModelTree.from_loaded(loaded)
    tree.apply(FreezeSpec())
    tree.summary(**inputs)
    tree.cache_trace(inputs["sequence_length"], inputs["image_size"])  # for plans that freeze a prefix
    return tree


class LayersView(Protocol):
    """What the controller asks of the Layers panel: drawing only."""

    def show_empty(self) -> None: ...
    def show_loading(self, name: str) -> None: ...
    def show_build_error(self, message: str, hint: str) -> None: ...
    def show_model(self, tree: ModelTree, spec: FreezeSpec, name: str) -> None: ...
    def tree_shown(self) -> None: ...
    def show_plan(self, spec: FreezeSpec, can_undo: bool) -> None: ...
    def show_problem(self, message: str, hint: str) -> None: ...
    def show_summary(self, summary: Any, spec: FreezeSpec) -> None: ...
    def clear_summary(self) -> None: ...
    def show_devices(self, devices: list[tuple[str, str]], wanted: str | None) -> None: ...
    def summary_inputs(self) -> dict[str, Any]: ...
    def image_size(self) -> int: ...
    def model_tree(self) -> ModelTree | None: ...
    def set_tree(self, tree: ModelTree | None, spec: FreezeSpec) -> None: ...
    def apply_spec(self, spec: FreezeSpec) -> None: ...
    def edit_tree(self, make: Edit) -> None: ...


class LayersController(QObject):
    """``LayersController(state, view)``: follows the selected model and the plan; edits go to ``set_freeze``."""

    def __init__(self, state: Any, view: LayersView, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.view = view
        self._spec: FreezeSpec = copy.deepcopy(state.freeze) if state.freeze is not None else FreezeSpec()
        self._emitted: object = None
        self._undo: list[FreezeSpec] = []
        self._token = 0
        self.builds = TaskGroup(self)
        self._entry: Any = None
        self._memory_cache: dict[str, int | None] = {}
        self._devices_ready = False

    # ---- the model ------------------------------------------------------------------------------

    def show_entry(self, entry: Any) -> None:
        """Build and show a catalog entry's tree (in the background); None shows the empty state."""
        self._token += 1
        self._entry = entry
        if entry is None:
            self.view.set_tree(None, self._spec)
            self.view.show_empty()
            return
        self.view.show_loading(getattr(entry, "name", None) or str(entry))
        token, inputs = self._token, {**self.view.summary_inputs(), "image_size": self.view.image_size()}
        self.builds.start(
            lambda _ctx: build_tree(entry, inputs),
            name="building the layer tree",
            on_result=lambda tree: self._built(token, tree),
            on_error=lambda message, hint: self._failed(token, message, hint),
        )

    def wait_idle(self, timeout_ms: int = 60000) -> None:
        """Wait for running builds (tests, shutdown)."""
        self.builds.wait_all(timeout_ms)

    @gui_thread
    def _built(self, token: int, tree: Any) -> None:
        if token == self._token:  # else a newer selection superseded this build
            self.show_tree(tree)

    @gui_thread
    def _failed(self, token: int, message: str, hint: str) -> None:
        if token == self._token:
            self.view.show_build_error(message, hint)

    def show_tree(self, tree: Any) -> None:
        """Show an already built ``ModelTree`` with the current plan (pruned to this model)."""
        from tunedesk.engine import structure

        self.ensure_devices()
        spec = structure.prune(tree, self._spec)
        try:
            self.view.set_tree(tree, spec)
        except TuneDeskError as exc:  # a plan that cannot apply to this model: start from the default
            self.view.show_problem(
                f"the current plan does not fit this model ({exc.message}); showing the default plan", exc.hint
            )
            spec = FreezeSpec(lr_multipliers={}, lora=copy.deepcopy(spec.lora))
            self.view.set_tree(tree, spec)
        self._undo.clear()
        name = getattr(self._entry, "name", None) or (tree.loaded.path if tree.loaded else "")
        self.view.show_model(tree, spec, name)
        self._set_spec(spec, announce=spec != self.state.freeze, push_undo=False)
        self.view.tree_shown()

    # ---- the plan ---------------------------------------------------------------------------------

    def spec(self) -> FreezeSpec:
        return copy.deepcopy(self._spec)

    def _set_spec(self, spec: FreezeSpec, *, announce: bool, push_undo: bool) -> None:
        if push_undo and spec != self._spec:
            self._undo.append(copy.deepcopy(self._spec))
            del self._undo[:-100]
        self._spec = copy.deepcopy(spec)
        self.view.show_plan(self._spec, bool(self._undo))
        self.refresh_summary()
        if announce:
            out = copy.deepcopy(spec)
            self._emitted = out
            self.state.set_freeze(out)

    def edited(self, spec: FreezeSpec) -> None:
        """A plan edit made in the tree (a checkbox, an LR cell, a preset or filter button)."""
        self._set_spec(spec, announce=True, push_undo=True)

    def external_spec(self, spec: Any) -> None:
        """A plan set elsewhere (a re-opened run): show it, do not send it back."""
        if spec is self._emitted or spec is None:
            return
        self._spec = copy.deepcopy(spec)
        if self.view.model_tree() is None:
            return  # applied when the model's tree is built
        try:
            self.view.apply_spec(self._spec)
        except TuneDeskError as exc:
            self.view.show_problem(f"the plan from elsewhere does not apply to this model: {exc.message}", exc.hint)
            return
        self._undo.clear()
        self.view.show_plan(self._spec, False)
        self.refresh_summary()

    def undo(self) -> None:
        tree = self.view.model_tree()
        if not self._undo or tree is None:
            return
        previous = self._undo.pop()
        self.view.apply_spec(previous)
        self._set_spec(previous, announce=True, push_undo=False)

    def _edit(self, make: Edit) -> None:
        if self.view.model_tree() is not None:
            self.view.edit_tree(make)  # the tree applies it and answers with ``edited``

    def preset(self, preset: str, last_n: int) -> None:
        from tunedesk.engine import structure

        self._edit(lambda tree, spec: structure.set_preset(spec, preset, last_n))

    def toggle_modifier(self, token: str) -> None:
        """The box shows whether the plan freezes them all; a click flips exactly that."""
        from tunedesk.engine import structure

        tree = self.view.model_tree()
        if tree is None:
            return
        frozen = structure.token_state(tree, token) != 2
        self._edit(lambda tree, spec: structure.set_modifier(spec, token, frozen, tree))
        self.view.show_plan(self._spec, bool(self._undo))

    def train_batchnorm_stats(self, train: bool) -> None:
        def make(tree: Any, spec: FreezeSpec) -> FreezeSpec:
            new = copy.deepcopy(spec)
            new.train_batchnorm_stats = train
            return new

        self._edit(make)

    def apply_matches(self, text: str, train: bool) -> None:
        from tunedesk.engine import structure

        pattern = structure.glob_for(text, self.view.model_tree())
        if pattern:
            self._edit(lambda tree, spec: structure.apply_glob(tree, spec, pattern, train))

    def lora_edited(self, spec: FreezeSpec) -> None:
        self._edit(lambda tree, _spec: copy.deepcopy(spec))

    def params_matching(self, pattern: str) -> int:
        tree = self.view.model_tree()
        if tree is None or not pattern:
            return 0
        ranges = tree.index.match(pattern, tree.head_paths) or []
        hit = {i for s, e in ranges for i in range(s, e)}
        return sum(tree.index.sizes[i] for i in hit)

    # ---- summary --------------------------------------------------------------------------------------

    def ensure_devices(self) -> None:
        if self._devices_ready:
            return
        try:
            from tunedesk.engine.devices import list_devices

            devices = list_devices()
        except Exception:
            log.exception("could not list devices")
            devices = [("cpu", "CPU")]
        wanted = QSettings("TuneDesk", "TuneDesk").value("layers/device", None)
        self.view.show_devices(devices, wanted if isinstance(wanted, str) else None)
        self._devices_ready = True

    def _available(self, device: str) -> int | None:
        if device not in self._memory_cache:
            try:
                from tunedesk.engine.devices import device_memory

                self._memory_cache[device] = device_memory(device)
            except Exception:  # noqa: BLE001
                self._memory_cache[device] = None
        return self._memory_cache[device]

    def inputs_changed(self) -> None:
        self._memory_cache.pop(self.view.summary_inputs()["device"], None)  # re-read free memory on a device switch
        self.refresh_summary()

    def refresh_summary(self) -> None:
        tree = self.view.model_tree()
        if tree is None or tree.plan is None:
            self.view.clear_summary()
            return
        args = self.view.summary_inputs()
        summary = tree.summary(available=self._available(args["device"]), **args)
        self.view.show_summary(summary, self._spec)
