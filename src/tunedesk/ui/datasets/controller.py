"""The Datasets area's controller: the data set shown, edits with undo, and the slow work behind
imports, cleaning, splits and versions.

Every change to the data is an engine ``Edit`` pushed on a QUndoStack (Ctrl+Z / Ctrl+Shift+Z):
applying an edit returns its inverse, which is all an undo needs. Slow work runs in the background
(``ui.background``), each call with its own ``DatasetStore`` (stores are bound to their thread);
the GUI thread keeps one store for reading pages of the table and applying small edits. The
controller tells the panel what to draw through the methods of ``DatasetsView``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtCore import QCoreApplication, QObject, QTimer, Slot
from PySide6.QtGui import QUndoStack

from tunedesk.engine.datasets.flags import FLAGS
from tunedesk.engine.errors import TuneDeskError
from tunedesk.ui.background import BackgroundTask, TaskContext, gui_thread, run_in_background
from tunedesk.ui.datasets.commands import EditCommand

if TYPE_CHECKING:  # the engine's data set code (sqlite-utils, Pillow) loads after the window shows
    from tunedesk.engine.datasets import DatasetInfo, DatasetStore, Edit, ImportResult, ImportSpec, VersionInfo

Progress = Callable[[int, int, str], None]
Work = Callable[[Progress, Any], Any]  # (progress, CancelToken) -> result, in the background


class _Lazy:
    """``E.relabel(...)`` imports ``engine.datasets.edits`` on first use (after the window shows)."""

    def __getattr__(self, name: str) -> Any:
        from tunedesk.engine.datasets import edits

        return getattr(edits, name)


E = _Lazy()


def open_store(path: Any) -> DatasetStore:
    from tunedesk.engine.datasets import DatasetStore

    return DatasetStore(path)


def _run(ctx: TaskContext, work: Work) -> Any:
    """A data set job in its thread: ``progress`` raises ``ImportCancelled`` once the job is cancelled."""
    from tunedesk.engine.datasets.importers import CancelToken

    token = CancelToken()
    ctx.on_cancel(token.cancel)

    def progress(done: int, total: int, message: str) -> None:
        token.check()
        ctx.progress(int(done), int(total), message)

    return work(progress, token)


class DatasetsView(Protocol):
    """What the controller asks of the Datasets panel: drawing only."""

    def show_message(self, text: str, role: str = "hint") -> None: ...
    def show_error(self, message: str, hint: str = "") -> None: ...
    def show_datasets(
        self, datasets: list[DatasetInfo], versions: dict[int, list[VersionInfo]], current: int | None
    ) -> bool: ...
    def show_dataset(self, info: DatasetInfo | None, store: DatasetStore | None) -> None: ...
    def show_side(self, info: DatasetInfo, counts: dict[str, dict[str, int]]) -> None: ...
    def show_version(self, latest: VersionInfo | None, changed: bool) -> None: ...
    def show_flags(self, counts_by_bit: dict[int, int], total: int) -> None: ...
    def show_flags_status(self, text: str) -> None: ...
    def items_changed(self, ids: list[int] | None) -> None: ...
    def flags_changed(self) -> None: ...
    def show_task(self, name: str | None) -> None: ...
    def show_task_progress(self, done: int, total: int, message: str) -> None: ...
    def set_import_enabled(self, on: bool) -> None: ...


class DatasetsController(QObject):
    def __init__(self, state: Any, view: DatasetsView, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.view = view
        self.store: DatasetStore | None = None
        self.info: DatasetInfo | None = None
        self.versions: list[VersionInfo] = []
        self.undo_stack = QUndoStack(self)
        self.jobs: set[BackgroundTask] = set()
        self.task_job: BackgroundTask | None = None  # the one job with a progress bar (import, split, version, files)
        self.flags_job: BackgroundTask | None = None
        self._edits = 0  # edits applied; a flag refresh that started before the last edit runs again
        self.extra_copies: list[int] = []
        self.content_hash: str | None = None  # of the data set as it is now (from the last flag check)
        self.flags_timer = QTimer(self, singleShot=True, interval=400)
        self.flags_timer.timeout.connect(self.refresh_flags)

    # ---- store and data set list -----------------------------------------------------------------
    def open_store(self) -> None:
        if self.store is not None:
            return
        try:
            self.store = open_store(self.state.database)
            self.store.cleanup_interrupted_imports()
        except TuneDeskError as exc:
            self.view.show_error(exc.message, exc.hint)
            self.view.set_import_enabled(False)
            return
        self.refresh_datasets()

    def refresh_datasets(self, select: int | None = None) -> None:
        if self.store is None:
            return
        current = select if select is not None else (self.info.id if self.info else None)
        datasets = self.store.list_datasets()
        versions_by_set: dict[int, list[VersionInfo]] = {}
        for v in self.store.list_versions():
            if v.dataset_id is not None:
                versions_by_set.setdefault(v.dataset_id, []).append(v)
        if not self.view.show_datasets(datasets, versions_by_set, current):
            self.load_dataset(None)

    def choose(self, dataset_id: int | None) -> None:
        """The user picked a data set (or one of its versions) in the list."""
        if dataset_id is not None and (self.info is None or self.info.id != dataset_id):
            self.load_dataset(dataset_id)

    def load_dataset(self, dataset_id: int | None) -> None:
        self.undo_stack.clear()
        self.extra_copies = []
        self.content_hash = None
        if dataset_id is None or self.store is None:
            self.info = None
            self.view.show_dataset(None, None)
            return
        try:
            self.info = self.store.get_dataset(dataset_id)
        except TuneDeskError as exc:
            self.view.show_error(exc.message, exc.hint)
            return
        self.versions = self.store.list_versions(self.info.id)
        self.view.show_dataset(self.info, self.store)
        self.update_side()
        self.refresh_flags()
        if self.info.kind == "image":
            self._check_files()

    def update_side(self) -> None:
        if self.info is None or self.store is None:
            return
        info = self.info = self.store.get_dataset(self.info.id)
        self.view.show_side(info, self.store.class_counts(info.id))
        self._update_version()

    def _update_version(self) -> None:
        latest = self.versions[0] if self.versions else None
        changed = latest is not None and self.content_hash is not None and self.content_hash != latest.content_hash
        self.view.show_version(latest, changed)

    # ---- edits and undo ----------------------------------------------------------------------------
    def _apply(self, edit: Edit) -> Edit:
        """Apply an edit to the current data set and bring the views up to date; returns its inverse."""
        assert self.store is not None and self.info is not None
        inverse = E.apply_edit(self.store, self.info.id, edit)
        self._edits += 1
        self.view.items_changed(E.affected_ids(edit))
        self.content_hash = None  # known again after the next check
        self.update_side()
        self.flags_timer.start()
        return inverse

    def do_edit(self, edit: Edit) -> bool:
        """Apply an edit and put it on the undo stack; a refused edit shows why and changes nothing."""
        if self.info is None or self.store is None:
            return False
        try:
            inverse = self._apply(edit)
        except TuneDeskError as exc:
            self.view.show_error(exc.message, exc.hint)
            return False
        self.undo_stack.push(EditCommand(self._guarded_apply, inverse))
        self.view.show_message("")
        return True

    def _guarded_apply(self, edit: Edit) -> Edit:
        try:
            return self._apply(edit)
        except TuneDeskError as exc:  # e.g. the database is locked by another program
            self.view.show_error(exc.message, exc.hint)
            return edit

    def edit(self, make: Callable[[], Edit]) -> bool:
        """Build an edit (a refused one shows why) and apply it."""
        try:
            edit = make()
        except TuneDeskError as exc:
            self.view.show_error(exc.message, exc.hint)
            return False
        return self.do_edit(edit)

    def relabel(self, ids: list[int], label: str) -> None:
        if ids:
            self.edit(lambda: E.relabel(ids, label))

    def delete_items(self, ids: list[int]) -> None:
        if ids and self.do_edit(E.delete_items(ids)):
            self.state.statusMessage.emit(f"deleted {len(ids):,} items (Ctrl+Z brings them back)")

    def add_class(self, name: str) -> None:
        self.edit(lambda: E.add_class(name))

    def rename_class(self, old: str, new: str) -> None:
        self.edit(lambda: E.rename_class(old, new))

    def merge_classes(self, names: list[str], target: str) -> None:
        self.edit(lambda: E.merge_classes(names, target))

    def delete_class(self, name: str, delete_items: bool) -> None:
        self.edit(lambda: E.delete_class(name, delete_items=delete_items))

    def class_size(self, name: str) -> int:
        return len(self.store.ids_of_label(self.info.id, name)) if self.store and self.info else 0

    def delete_dataset(self) -> None:
        if self.info is None or self.store is None:
            return
        self.store.delete_dataset(self.info.id)
        self.info = None
        self.refresh_datasets()

    # ---- cleaning -----------------------------------------------------------------------------------
    @Slot()
    def refresh_flags(self) -> None:
        """Recompute flags in the background; runs again if edits happened meanwhile."""
        if self.info is None:
            return
        if self.flags_job is not None:
            self.flags_timer.start()  # one at a time: try again shortly
            return
        from tunedesk.engine.datasets import refresh_flags

        db, ds, edits_then = self.state.database, self.info.id, self._edits

        def work(progress: Progress, token: Any) -> tuple[Any, ...]:
            with open_store(db) as store:
                return ds, edits_then, refresh_flags(store, ds), store.dataset_content_hash(ds)

        self.view.show_flags_status("checking…")
        self.flags_job = self._start("checking for problems", work, self._flags_done, self._flags_failed)

    @gui_thread
    def _flags_done(self, result: tuple[Any, ...]) -> None:
        self.flags_job = None
        ds, edits_then, report, content_hash = result
        if self.info is None or ds != self.info.id:
            return
        if edits_then != self._edits:
            self.flags_timer.start()
            return
        self.content_hash = content_hash
        self._update_version()
        self.extra_copies = report.extra_copies
        self.view.show_flags({f.bit: report.counts.get(f.key, 0) for f in FLAGS}, report.total)
        self.view.flags_changed()

    @gui_thread
    def _flags_failed(self, message: str, hint: str) -> None:
        self.flags_job = None
        self.view.show_flags_status(f"checking failed: {message}")

    def _check_files(self) -> None:
        """Image data sets: find files moved or deleted since the import (shown as missing)."""
        from tunedesk.engine.datasets import check_files

        assert self.info is not None
        db, ds = self.state.database, self.info.id

        def work(progress: Progress, token: Any) -> tuple[int, dict[str, int]]:
            with open_store(db) as store:
                return ds, check_files(store, ds, lambda d, t: progress(d, t, "checking image files"))

        def done(result: tuple[int, dict[str, int]]) -> None:
            ds_done, counts = result
            if (
                self.info is not None
                and ds_done == self.info.id
                and (counts["missing"] or counts["changed"] or counts["back"])
            ):
                self.refresh_flags()
                if counts["missing"]:
                    self.view.show_message(
                        f"{counts['missing']:,} image files were moved or deleted since the import: "
                        "they are flagged as missing",
                        "warning",
                    )

        self._start("checking image files", work, done, lambda m, h: None)

    # ---- split and versions -----------------------------------------------------------------------
    def split(self, method: str, val_fraction: float, seed: int) -> None:
        if self.info is None:
            return
        from tunedesk.engine.datasets import plan_split

        db, ds = self.state.database, self.info.id

        def work(progress: Progress, token: Any) -> tuple[int, Edit]:
            progress(0, 0, "planning the split (duplicate groups stay together)")
            with open_store(db) as store:
                return ds, plan_split(store, ds, method, val_fraction, seed)

        def done(result: tuple[int, Edit]) -> None:
            ds_done, edit = result
            if self.info is not None and ds_done == self.info.id and self.do_edit(edit):
                self.state.statusMessage.emit(edit.text)

        self._start_task("splitting", work, done)

    def save_version(self, then: Callable[[VersionInfo], None] | None = None) -> None:
        if self.info is None:
            return
        db, ds, edits_then = self.state.database, self.info.id, self._edits

        def work(progress: Progress, token: Any) -> VersionInfo:
            progress(0, 0, "saving a version")
            with open_store(db) as store:
                return store.save_version(ds)

        def done(version: VersionInfo) -> None:
            self.undo_stack.setClean()
            self.content_hash = version.content_hash if self._edits == edits_then else None
            if self.store is not None and self.info is not None:
                self.versions = self.store.list_versions(self.info.id)
            self.refresh_datasets()
            self.update_side()
            word = "unchanged since" if version.reused else "saved"
            self.view.show_message(
                f"Version <b>{version.id}</b> {word} (hash <code>{version.content_hash[:12]}</code>)", "hint"
            )
            if then is not None:
                then(version)

        self._start_task("saving a version", work, done)

    def use_for_training(self, chosen_version: str | None) -> None:
        """Hand a version to the training panel: ``chosen_version`` (selected in the list), else the
        latest (saved now when the data changed since)."""
        from tunedesk.engine.config import DataSpec

        def select(version: VersionInfo) -> None:
            self.state.select_data(DataSpec(kind="dataset_version", dataset_version=version.id))
            self.state.statusMessage.emit(f"training will use data set version {version.id}")
            self.state.showPanel.emit("train")

        if chosen_version and self.store is not None:
            select(self.store.get_version(chosen_version))
        else:
            self.save_version(then=select)

    # ---- import --------------------------------------------------------------------------------
    def start_import(self, spec: ImportSpec) -> BackgroundTask | None:
        from tunedesk.engine.datasets import run_import

        db = self.state.database

        def work(progress: Progress, token: Any) -> ImportResult:
            with open_store(db) as store:
                return run_import(store, spec, progress, token)

        def done(result: ImportResult) -> None:
            self.refresh_datasets(select=result.dataset_id)
            issues = result.report.skipped + result.report.warnings
            text = f"Imported {result.items:,} items in {result.seconds:.1f} s"
            if issues:
                text += f"; {result.report.summary()}"
            self.view.show_message(text, "warning" if result.report.skipped else "hint")
            self.state.statusMessage.emit(f"imported {result.name}: {result.items:,} items")

        return self._start_task("importing", work, done)

    # ---- jobs ----------------------------------------------------------------------------------
    def _start(
        self,
        name: str,
        work: Work,
        on_done: Callable[[Any], None],
        on_failed: Callable[[str, str], None],
        on_progress: Progress | None = None,
        on_finished: Callable[[], None] | None = None,
    ) -> BackgroundTask:
        def finished() -> None:
            self.jobs.discard(task)
            if on_finished is not None:
                on_finished()

        task = run_in_background(
            lambda ctx: _run(ctx, work),
            name=name,
            on_result=on_done,
            on_error=on_failed,
            on_progress=on_progress,
            on_finished=finished,
            parent=self,
        )
        self.jobs.add(task)
        return task

    def _start_task(self, name: str, work: Work, on_done: Callable[[Any], None]) -> BackgroundTask | None:
        if self.task_job is not None:
            self.view.show_message(f"Wait for {self.task_job.name} to finish (or cancel it)", "warning")
            return None
        self.view.show_task(name)
        self.view.set_import_enabled(False)
        self.view.show_message("")

        def finished() -> None:
            self.task_job = None
            self.view.show_task(None)
            self.view.set_import_enabled(True)

        self.task_job = self._start(name, work, on_done, self.view.show_error, self.view.show_task_progress, finished)
        return self.task_job

    def cancel_task(self) -> None:
        if self.task_job is not None:
            self.task_job.cancel()
            self.view.show_task_progress(0, 0, "cancelling…")

    def stop_and_wait(self) -> None:
        """Cancel running jobs, wait for their threads, and deliver what they sent on the way out
        (the window is closing). Results left queued when the application object goes away take
        PySide down at exit, so they are flushed here while everything is still alive."""
        self.flags_timer.stop()
        for task in list(self.jobs):
            task.cancel()
            task.wait(10000)
        QCoreApplication.sendPostedEvents()
        self.flags_timer.stop()  # a flushed result may have asked for another check
