"""One run in detail: a header with its actions, then tabs (overview, curves, classes, freeze map,
configuration, log, files). Actions are signals; the panel carries them out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.store import RunStore, history
from tunedesk.ui.background import TaskGroup
from tunedesk.ui.runs import format as fmt
from tunedesk.ui.runs.tabs import ClassesTab, ConfigView, CurvesTab, FilesView, FreezeMapView, LogView, hint_label

log = logging.getLogger("tunedesk.ui.runs")


def set_role(label: QLabel, role: str) -> None:
    label.setProperty("role", role)
    label.style().unpolish(label)
    label.style().polish(label)


class OverviewTab(QWidget):
    """Facts about the run, its error if any, and the editable name, tags and notes."""

    saveRequested = Signal(str, list, str)  # name, tags, notes

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.facts: dict[str, QLabel] = {}
        self.run_id: int | None = None
        grid = QGridLayout()
        grid.setHorizontalSpacing(18)
        grid.setVerticalSpacing(4)
        fields = [
            ("model", "Model"),
            ("data", "Data"),
            ("trains", "Trains"),
            ("hparams", "Hyperparameters"),
            ("device", "Device"),
            ("started", "Started"),
            ("duration", "Duration"),
            ("speed", "Speed"),
            ("best", "Best validation"),
            ("final", "Final metrics"),
            ("checkpoints", "Checkpoints"),
            ("identity", "Content hashes"),
        ]
        for i, (key, title) in enumerate(fields):
            name = QLabel(title)
            set_role(name, "hint")
            value = QLabel()
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setWordWrap(True)
            row, col = i % 6, (i // 6) * 2
            grid.addWidget(name, row, col, Qt.AlignmentFlag.AlignTop)
            grid.addWidget(value, row, col + 1, Qt.AlignmentFlag.AlignTop)
            self.facts[key] = value
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        set_role(self.error, "error")
        self.name = QLineEdit()
        self.tags = QLineEdit()
        self.tags.setPlaceholderText("comma separated, e.g. baseline, keep")
        self.notes = QPlainTextEdit()
        self.notes.setPlaceholderText("What did you try, and what did you learn?")
        self.notes.setMaximumHeight(80)
        self.save = QPushButton("Save name, tags and notes")
        self.save.setEnabled(False)
        for edit in (self.name, self.tags):
            edit.textEdited.connect(lambda _t: self.save.setEnabled(True))
        self.notes.textChanged.connect(lambda: self.save.setEnabled(True))
        self.save.clicked.connect(self._save)
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Tags", self.tags)
        form.addRow("Notes", self.notes)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.save)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(grid)
        layout.addWidget(self.error)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        layout.addWidget(line)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addStretch(1)

    def show_run(self, run: dict[str, Any], checkpoints: dict[str, Any]) -> None:
        config = history.run_config(run)
        h = config.get("hparams") or {}
        res = history.resolved(run)
        f = self.facts
        f["model"].setText(
            f"{fmt.short_model(run.get('model_name'))}  <span style='color:gray'>"
            f"({(res.architecture or run.get('task') or '')})</span>"
        )
        f["model"].setToolTip(run.get("model_path") or "")
        f["data"].setText(
            fmt.dataset_text(run) + (f" — {len(res.label_names or [])} classes" if res.label_names else "")
        )
        share = history.share_text(run.get("trainable_params"), run.get("total_params"))
        f["trains"].setText(
            f"{run.get('freeze_summary') or share} ({run.get('trainable_params') or 0:,} of "
            f"{run.get('total_params') or 0:,})"
        )
        lr = res.learning_rate or h.get("learning_rate")
        head_lr = res.head_learning_rate
        new_layers = "LoRA adapters" if run.get("task") == "causal_lm" else "new head"
        lr_more = f" ({new_layers} {fmt.lr_text(head_lr)})" if head_lr and head_lr != lr else ""
        f["hparams"].setText(
            f"lr {fmt.lr_text(lr)}{lr_more} · {h.get('epochs') or 'auto'} epochs · batch {h.get('batch_size') or res.batch_size or 'auto'} · "
            f"{h.get('schedule', '')} schedule · seed {config.get('seed')}"
        )
        f["device"].setText(" · ".join(x for x in (run.get("device"), run.get("precision")) if x))
        f["started"].setText(fmt.local_time(run.get("started_at") or run.get("created_at"), seconds=True))
        f["duration"].setText(fmt.duration(run.get("duration_s")) or "—")
        sps = run.get("samples_per_second")
        f["speed"].setText(f"{sps:.1f} samples/s" if sps else "—")
        f["best"].setText(fmt.best_text(run) or "—")
        final = run.get("final_metrics") or {}
        f["final"].setText(
            " · ".join(
                f"{fmt.metric_label(k).removeprefix('validation ')} {v:.3f}"
                for k, v in final.items()
                if isinstance(v, float) and k != "epoch"
            )
            or "—"
        )
        f["checkpoints"].setText(
            ", ".join(f"{k} (step {c.get('step')})" for k, c in sorted(checkpoints.items())) or "none"
        )
        f["identity"].setText(f"model {run.get('model_hash') or '?'} · data {run.get('dataset_hash') or '?'}")
        error = run.get("error")
        self.error.setVisible(bool(error))
        if error:
            self.error.setText(
                f"{run['status']}: {error}" + (f"\nHint: {run['error_hint']}" if run.get("error_hint") else "")
            )
        if run["id"] == self.run_id and self.save.isEnabled():
            return  # a live refresh of the run being edited: keep the unsaved name, tags and notes
        self.run_id = run["id"]
        self.name.setText(run.get("name") or "")
        self.tags.setText(", ".join(run.get("tags") or []))
        self.notes.blockSignals(True)
        self.notes.setPlainText(run.get("notes") or "")
        self.notes.blockSignals(False)
        self.save.setEnabled(False)

    def _save(self) -> None:
        tags = [t.strip() for t in self.tags.text().split(",") if t.strip()]
        self.saveRequested.emit(self.name.text().strip(), tags, self.notes.toPlainText())
        self.save.setEnabled(False)


class RunDetail(QWidget):
    cloneRequested = Signal(int)
    resumeRequested = Signal(int)
    exportRequested = Signal(int)
    deleteRequested = Signal(int)
    edited = Signal(int, dict)  # run id, changed fields (name / tags / notes)
    failed = Signal(str, str)

    TABS = ("Overview", "Curves", "Classes", "Freeze map", "Configuration", "Log", "Files")  # + LM: samples, try it

    def __init__(
        self,
        store: Callable[[], RunStore],
        calls: TaskGroup,
        parent: QWidget | None = None,
        *,
        home: str | Path | None = None,
    ) -> None:
        super().__init__(parent)
        self._store = store
        self._calls = calls
        self.home = home
        self.chat: Any = None  # language-model runs: the "Try it" chat box, built on first use
        self.run: dict[str, Any] | None = None
        self.checkpoints: dict[str, Any] = {}
        self._shown: set[int] = set()
        self._layouts: dict[int, Any] = {}

        self.title = QLabel()
        set_role(self.title, "title")
        self.title.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.title.setMinimumWidth(60)  # its full width when there is room; long names clip
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status = QLabel()
        self.subtitle = hint_label()
        self.clone_button = QPushButton("Clone into training")
        self.clone_button.setToolTip("Open this run's settings in the Train panel to run it again or vary it")
        self.resume_button = QPushButton("Resume")
        self.export_button = QPushButton("Export…")
        self.delete_button = QPushButton("Delete…")
        from tunedesk.ui.resources import icon

        for button, name in (
            (self.clone_button, "new.svg"),
            (self.resume_button, "resume.svg"),
            (self.export_button, "export.svg"),
        ):
            button.setIcon(icon(name))
        self.clone_button.clicked.connect(lambda: self._emit(self.cloneRequested))
        self.resume_button.clicked.connect(lambda: self._emit(self.resumeRequested))
        self.export_button.clicked.connect(lambda: self._emit(self.exportRequested))
        self.delete_button.clicked.connect(lambda: self._emit(self.deleteRequested))
        head = QHBoxLayout()
        titles = QVBoxLayout()
        line = QHBoxLayout()
        line.addWidget(self.title)
        line.addSpacing(10)
        line.addWidget(self.status)
        line.addStretch(1)
        titles.addLayout(line)
        titles.addWidget(self.subtitle)
        head.addLayout(titles, 1)
        for b in (self.clone_button, self.resume_button, self.export_button, self.delete_button):
            head.addWidget(b, 0, Qt.AlignmentFlag.AlignTop)

        self.overview = OverviewTab()
        self.overview.saveRequested.connect(self._save_edits)
        self.curves = CurvesTab()
        self.classes = ClassesTab()
        self.freeze = FreezeMapView()
        self.config = ConfigView()
        self.log_view = LogView()
        self.files = FilesView()
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        for widget, title in zip(
            (self.overview, self.curves, self.classes, self.freeze, self.config, self.log_view, self.files), self.TABS
        ):
            self.tabs.addTab(widget, title)
        from tunedesk.ui.lm.samples_view import SampleGenerationsView

        self.samples = SampleGenerationsView()  # language-model runs: the sample replies, epoch by epoch
        self.tabs.addTab(self.samples, "Sample replies")
        self.try_holder = QWidget()  # language-model runs: chat with the run's model
        self.try_layout = QVBoxLayout(self.try_holder)
        self.try_layout.setContentsMargins(8, 8, 8, 8)
        self.tabs.addTab(self.try_holder, "Try it")
        self.tabs.currentChanged.connect(self._fill_tab)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.addLayout(head)
        layout.addWidget(self.tabs, 1)

    # ---- showing a run -------------------------------------------------------------------------

    def show_run(self, run_id: int) -> None:
        store = self._store()
        try:
            self.run = store.get_run(run_id)
        except TuneDeskError as exc:
            self.failed.emit(exc.message, exc.hint)
            return
        self.checkpoints = store.checkpoints(run_id)
        run = self.run
        self.title.setText(f"#{run['id']}  {run.get('name') or ''}")
        colour = fmt.STATUS_COLOURS.get(run["status"], "#7d8896")
        self.status.setText(f"<span style='color:{colour}; font-weight:bold'>● {run['status']}</span>")
        self.subtitle.setText(
            f"{fmt.short_model(run.get('model_name'))} on {fmt.dataset_text(run)} · "
            f"{run.get('freeze_summary') or ''} · best {fmt.best_text(run) or '—'}"
        )
        ok, why = history.can_resume(run, self.checkpoints)
        self.resume_button.setEnabled(ok)
        self.resume_button.setToolTip(("Continue from the last checkpoint: " + why) if ok else f"Cannot resume: {why}")
        self.resume_button.setVisible(run["status"] in history.RESUMABLE_STATUSES)
        has_best = "best" in self.checkpoints
        self.export_button.setEnabled(has_best)
        self.export_button.setToolTip(
            "Export the best weights (Hugging Face folder, torchvision weights or ONNX)"
            if has_best
            else "No best checkpoint: the run ended before its first validation"
        )
        active = history.is_active(run)
        self.delete_button.setEnabled(not active)
        self.delete_button.setToolTip("Stop the run first" if active else "Delete the run and its files")
        self._shown = set()
        is_lm = run.get("task") == "causal_lm"
        self.tabs.setTabVisible(self.tabs.indexOf(self.classes), not is_lm)  # a language model has no classes
        self.tabs.setTabVisible(self.tabs.indexOf(self.samples), is_lm)
        self.tabs.setTabVisible(self.tabs.indexOf(self.try_holder), is_lm)
        self._fill_tab(self.tabs.currentIndex())

    def refresh(self) -> None:
        if self.run is not None:
            self.show_run(self.run["id"])

    def _fill_tab(self, index: int) -> None:
        run = self.run
        if run is None or index in self._shown:
            return
        self._shown.add(index)
        store = self._store()
        widget = self.tabs.widget(index)
        try:
            if widget is self.overview:
                self.overview.show_run(run, self.checkpoints)
            elif widget is self.curves:
                self.curves.show_run(run, store)
            elif widget is self.classes:
                self.classes.show_run(run, store)
            elif widget is self.freeze:
                self._show_freeze(run)
            elif widget is self.config:
                self.config.show_run(run)
            elif widget is self.log_view:
                self.log_view.show_run(run, store)
            elif widget is self.files:
                self.files.show_run(run)
            elif widget is self.samples:
                self.samples.load_samples(store.samples(run["id"]))
            elif widget is self.try_holder:
                self._show_chat(run)
        except TuneDeskError as exc:
            self.failed.emit(exc.message, exc.hint)

    def _show_chat(self, run: dict[str, Any]) -> None:
        """The chat box over this run's model; the conversation stays while the same run is shown."""
        if self.chat is None:
            from tunedesk.ui.lm.chat_widget import ChatTryItWidget

            self.chat = ChatTryItWidget(self.home)
            self.try_layout.addWidget(self.chat)
        if history.is_active(run):
            self.chat.set_run(None, why="This run is still training: try it when it has finished")
        elif not history.has_model(self.checkpoints):
            self.chat.set_run(None, why="This run saved no model to talk to (it ended before its first checkpoint)")
        elif self.chat.run_id != run["id"]:
            self.chat.set_run(run["id"], chat=history.lm_chat(run))

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Stop the chat box's thread (the window is closing)."""
        return self.chat is None or self.chat.shutdown(timeout_ms)

    def _show_freeze(self, run: dict[str, Any]) -> None:
        """The recorded trainable names at once; then the model built on the meta device (in a thread)
        in the layer tree, read-only, with the run's plan (or a module list with counts)."""
        rid = run["id"]
        found = self._layouts.get(rid)
        self.freeze.show_run(run, found[0] if found else None)
        if found is not None:
            self._show_tree(run, found[1])
            return

        def build() -> Any:
            from tunedesk.engine.run.rebuild import meta_model

            loaded = meta_model(run)
            if loaded is None:
                return None
            layout = (
                [n for n, _ in loaded.model.named_parameters()],
                {n: int(p.numel()) for n, p in loaded.model.named_parameters()},
            )
            try:
                from tunedesk.engine.structure import ModelTree

                tree = ModelTree.from_loaded(loaded)
            except Exception:  # noqa: BLE001 - the module list is the fallback
                tree = None
            return layout, tree

        def done(found: Any) -> None:
            if found is None:
                return
            if len(self._layouts) >= 16:  # meta models are small, but keep only the recent ones
                self._layouts.pop(next(iter(self._layouts)))
            self._layouts[rid] = found
            if self.run is not None and self.run["id"] == rid:
                self.freeze.show_run(self.run, found[0])
                self._show_tree(self.run, found[1])

        self._calls.start(lambda _ctx: build(), name="building the layer tree", on_result=done)

    def _show_tree(self, run: dict[str, Any], tree: Any) -> None:
        if tree is None:
            return
        try:
            spec = history.clone_config(run).freeze
        except TuneDeskError:
            return
        self.freeze.show_tree(tree, spec)

    # ---- actions --------------------------------------------------------------------------------

    def _emit(self, signal: Any) -> None:
        if self.run is not None:
            signal.emit(self.run["id"])

    def _save_edits(self, name: str, tags: list, notes: str) -> None:
        if self.run is None:
            return
        rid = self.run["id"]
        store = self._store()
        try:
            if name and name != self.run.get("name"):
                store.rename(rid, name)
            store.set_tags(rid, tags)
            store.set_notes(rid, notes)
            self.run = store.get_run(rid)
        except TuneDeskError as exc:
            self.failed.emit(exc.message, exc.hint)
            return
        self.title.setText(f"#{rid}  {self.run.get('name') or ''}")
        self.edited.emit(rid, {"name": self.run["name"], "tags": self.run["tags"], "notes": self.run.get("notes")})
