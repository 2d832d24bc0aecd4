"""What the Datasets panel does: edits with undo, cleaning, split, versions, import, and the worker
jobs behind the slow ones. A mixin of ``DatasetsPanel`` (kept apart to keep each file readable): it
uses the panel's widgets and state, set up in ``panel.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Slot
from PySide6.QtWidgets import QInputDialog, QMessageBox

from tunedesk.engine.datasets.flags import FLAGS
from tunedesk.engine.errors import TuneDeskError
from tunedesk.ui.datasets.commands import EditCommand
from tunedesk.ui.datasets.jobs import Job, start_job, wait_job

if TYPE_CHECKING:
    from tunedesk.engine.datasets import DatasetStore, Edit, ImportResult, ImportSpec, VersionInfo


class _Lazy:
    """``E.relabel(...)`` imports ``engine.datasets.edits`` on first use (after the window shows)."""

    def __getattr__(self, name: str) -> Any:
        from tunedesk.engine.datasets import edits

        return getattr(edits, name)


E = _Lazy()


def open_store(path: Any) -> DatasetStore:
    from tunedesk.engine.datasets import DatasetStore

    return DatasetStore(path)


class PanelActions:
    # ---- edits and undo ----------------------------------------------------------------------------
    def _apply(self, edit: Edit) -> Edit:
        """Apply an edit to the current data set and bring the views up to date; returns its inverse."""
        assert self.store is not None and self.info is not None
        inverse = E.apply_edit(self.store, self.info.id, edit)
        self._edits += 1
        ids = E.affected_ids(edit)
        if ids is None or self.model.filters:
            self.model.reload()
        else:
            self.model.refresh_items(ids)
        self.content_hash = None  # known again after the next check
        self.update_side()
        self._flags_timer.start()
        return inverse

    def do_edit(self, edit: Edit) -> bool:
        """Apply an edit and put it on the undo stack; a refused edit shows why and changes nothing."""
        if self.info is None or self.store is None:
            return False
        try:
            inverse = self._apply(edit)
        except TuneDeskError as exc:
            self.show_error(exc.message, exc.hint)
            return False
        self.undo_stack.push(EditCommand(self._guarded_apply, inverse))
        self.show_message("")
        return True

    def _guarded_apply(self, edit: Edit) -> Edit:
        try:
            return self._apply(edit)
        except TuneDeskError as exc:  # e.g. the database is locked by another program
            self.show_error(exc.message, exc.hint)
            return edit

    def selected_ids(self) -> list[int]:
        rows = sorted(i.row() for i in self.table.selectionModel().selectedRows())
        return [i for r in rows if (i := self.model.id_at(r)) is not None]

    def _label_edited(self, item_id: int, label: str) -> None:
        try:
            edit = E.relabel([item_id], label)
        except TuneDeskError as exc:
            self.show_error(exc.message, exc.hint)
            return
        self.do_edit(edit)

    def relabel_selection(self, label: str) -> None:
        ids = self.selected_ids()
        if not ids:
            return
        try:
            edit = E.relabel(ids, label)
        except TuneDeskError as exc:
            self.show_error(exc.message, exc.hint)
            return
        self.do_edit(edit)

    def delete_selection(self) -> None:
        ids = self.selected_ids()
        if ids and self.do_edit(E.delete_items(ids)):
            self.state.statusMessage.emit(f"deleted {len(ids):,} items (Ctrl+Z brings them back)")

    def add_class(self) -> None:
        name, ok = QInputDialog.getText(self, "Add class", "Name of the new class:")
        if ok and name.strip():
            self._try(lambda: E.add_class(name))

    def rename_class(self, old: str) -> None:
        name, ok = QInputDialog.getText(self, "Rename class", f"New name for {old!r}:", text=old)
        if ok and name.strip() and name.strip() != old:
            self._try(lambda: E.rename_class(old, name))

    def merge_classes(self, names: list[str]) -> None:
        target, ok = QInputDialog.getItem(self, "Merge classes", f"Merge {', '.join(names)} into:", names, 0, True)
        if ok and target.strip():
            self._try(lambda: E.merge_classes(names, target))

    def delete_class(self, name: str) -> None:
        n = len(self.store.ids_of_label(self.info.id, name)) if self.store and self.info else 0
        box = QMessageBox(
            QMessageBox.Icon.Question, "Delete class", f"Delete the class {name!r}? It has {n:,} items.", parent=self
        )
        keep = box.addButton("Keep items, unlabelled", QMessageBox.ButtonRole.AcceptRole)
        drop = box.addButton("Delete its items too", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        if box.clickedButton() in (keep, drop):
            self._try(lambda: E.delete_class(name, delete_items=box.clickedButton() is drop))

    def _try(self, make: Callable[[], Edit]) -> None:
        try:
            edit = make()
        except TuneDeskError as exc:
            self.show_error(exc.message, exc.hint)
            return
        self.do_edit(edit)

    # ---- cleaning -----------------------------------------------------------------------------------
    @Slot()
    def refresh_flags(self) -> None:
        """Recompute flags in a worker; runs again if edits happened meanwhile."""
        if self.info is None:
            return
        if self.flags_job is not None:
            self._flags_timer.start()  # one at a time: try again shortly
            return
        from tunedesk.engine.datasets import refresh_flags

        db, ds, edits_then = self.state.database, self.info.id, self._edits

        def work(progress, token):
            with open_store(db) as store:
                return ds, edits_then, refresh_flags(store, ds), store.dataset_content_hash(ds)

        self.cleaning_box.status.setText("checking…")
        self.flags_job = self._start(Job("checking for problems", work), self._flags_done, self._flags_failed)

    def _flags_done(self, result: tuple) -> None:
        self.flags_job = None
        ds, edits_then, report, content_hash = result
        if self.info is None or ds != self.info.id:
            return
        if edits_then != self._edits:
            self._flags_timer.start()
            return
        self.content_hash = content_hash
        self._update_version_box()
        self.extra_copies = report.extra_copies
        by_bit = {f.bit: report.counts.get(f.key, 0) for f in FLAGS}
        self.cleaning_box.set_counts(by_bit, report.total)
        self.model.refresh_items(None)
        if self.model.filters.get("flags"):
            self.model.reload()
            self._update_count()

    def _flags_failed(self, message: str, hint: str) -> None:
        self.flags_job = None
        self.cleaning_box.status.setText(f"checking failed: {message}")

    def select_flagged(self, bit: int) -> None:
        """Show the items carrying this flag and select them all."""
        index = self.flag_filter.findData(bit)
        self.label_filter.setCurrentIndex(0)
        self.split_filter.setCurrentIndex(0)
        self.search.clear()
        self.flag_filter.setCurrentIndex(index)
        self.apply_filters()
        self.table.selectAll()
        self.table.setFocus()

    def select_extra_copies(self, bit: int) -> None:
        """Show the duplicate items and select all but the first of each group."""
        self.select_flagged(bit)
        self.select_ids(self.extra_copies)

    def select_ids(self, ids: list[int]) -> None:
        rows = sorted(r for i in ids if (r := self.model.row_of(i)) is not None)
        selection = QItemSelection()
        last = self.model.columnCount() - 1
        start = prev = None
        for r in rows + [None]:
            if start is not None and (r is None or r != prev + 1):
                selection.select(self.model.index(start, 0), self.model.index(prev, last))
                start = None
            if r is not None and start is None:
                start = r
            prev = r
        self.table.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        self._update_count()

    def _check_files(self) -> None:
        """Image data sets: find files moved or deleted since the import (shown as missing)."""
        from tunedesk.engine.datasets import check_files

        db, ds = self.state.database, self.info.id

        def work(progress, token):
            with open_store(db) as store:
                return ds, check_files(store, ds, lambda d, t: progress(d, t, "checking image files"))

        def done(result):
            ds_done, counts = result
            if (
                self.info is not None
                and ds_done == self.info.id
                and (counts["missing"] or counts["changed"] or counts["back"])
            ):
                self.refresh_flags()
                if counts["missing"]:
                    self.show_message(
                        f"{counts['missing']:,} image files were moved or deleted since the import: "
                        "they are flagged as missing",
                        "warning",
                    )

        self._start(Job("checking image files", work), done, lambda m, h: None)

    # ---- split and versions -----------------------------------------------------------------------
    def split(self, method: str, val_fraction: float, seed: int) -> None:
        if self.info is None:
            return
        from tunedesk.engine.datasets import plan_split

        db, ds = self.state.database, self.info.id

        def work(progress, token):
            progress(0, 0, "planning the split (duplicate groups stay together)")
            with open_store(db) as store:
                return ds, plan_split(store, ds, method, val_fraction, seed)

        def done(result):
            ds_done, edit = result
            if self.info is not None and ds_done == self.info.id and self.do_edit(edit):
                self.state.statusMessage.emit(edit.text)

        self._start_task(Job("splitting", work), done)

    def save_version(self, then: Callable[[VersionInfo], None] | None = None) -> None:
        if self.info is None:
            return
        db, ds, edits_then = self.state.database, self.info.id, self._edits

        def work(progress, token):
            progress(0, 0, "saving a version")
            with open_store(db) as store:
                return store.save_version(ds)

        def done(version: VersionInfo):
            self.undo_stack.setClean()
            self.content_hash = version.content_hash if self._edits == edits_then else None
            if self.store is not None and self.info is not None:
                self.versions = self.store.list_versions(self.info.id)
            self.refresh_datasets()
            self.update_side()
            word = "unchanged since" if version.reused else "saved"
            self.show_message(
                f"Version <b>{version.id}</b> {word} (hash <code>{version.content_hash[:12]}</code>)", "hint"
            )
            if then is not None:
                then(version)

        self._start_task(Job("saving a version", work), done)

    def use_for_training(self) -> None:
        """Hand a version to the training panel: the one selected in the list, else the latest (saved
        now when the data changed since)."""
        from tunedesk.engine.config import DataSpec

        def select(version: VersionInfo) -> None:
            self.state.select_data(DataSpec(kind="dataset_version", dataset_version=version.id))
            self.state.statusMessage.emit(f"training will use data set version {version.id}")
            self.state.showPanel.emit("train")

        chosen = self.selected_version()
        if chosen and self.store is not None:
            select(self.store.get_version(chosen))
        else:
            self.save_version(then=select)

    def delete_dataset(self) -> None:
        if self.info is None or self.store is None:
            return
        answer = QMessageBox.question(
            self,
            "Delete data set",
            f"Delete {self.info.name!r} and its {self.info.item_count:,} items?\n"
            "Saved versions stay, so past runs can still be reproduced. Image files are not touched.",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.store.delete_dataset(self.info.id)
            self.info = None
            self.refresh_datasets()

    # ---- import --------------------------------------------------------------------------------
    def open_import_dialog(self) -> None:
        from tunedesk.ui.datasets.import_dialog import ImportDialog

        dialog = ImportDialog(self)
        if dialog.exec():
            self.start_import(dialog.spec())

    def start_import(self, spec: ImportSpec) -> Job | None:
        from tunedesk.engine.datasets import run_import

        db = self.state.database

        def work(progress, token):
            with open_store(db) as store:
                return run_import(store, spec, progress, token)

        def done(result: ImportResult):
            self.refresh_datasets(select=result.dataset_id)
            issues = result.report.skipped + result.report.warnings
            text = f"Imported {result.items:,} items in {result.seconds:.1f} s"
            if issues:
                text += f"; {result.report.summary()}"
            self.show_message(text, "warning" if result.report.skipped else "hint")
            self.state.statusMessage.emit(f"imported {result.name}: {result.items:,} items")

        return self._start_task(Job("importing", work), done)

    # ---- jobs ----------------------------------------------------------------------------------
    def _start(
        self,
        job: Job,
        on_done: Callable[[Any], None],
        on_failed: Callable[[str, str], None],
        on_progress: Callable[[int, int, str], None] | None = None,
        on_finished: Callable[[], None] | None = None,
    ) -> Job:
        self.jobs.add(job)

        def finished() -> None:
            if job.thread is not None:
                job.thread.wait(2000)
            self.jobs.discard(job)
            if on_finished is not None:
                on_finished()

        return start_job(job, self, on_done, on_failed, on_progress, finished)

    def _start_task(self, job: Job, on_done: Callable[[Any], None]) -> Job | None:
        if self.task_job is not None:
            self.show_message(f"Wait for {self.task_job.name} to finish (or cancel it)", "warning")
            return None
        self.task_job = job
        self.progress_row.show()
        self.progress_label.setText(job.name)
        self.progress.setRange(0, 0)
        self.import_button.setEnabled(False)
        self.show_message("")

        def finished() -> None:
            self.task_job = None
            self.progress_row.hide()
            self.import_button.setEnabled(True)

        def failed(message: str, hint: str) -> None:
            self.show_error(message, hint)

        return self._start(job, on_done, failed, self._task_progress, finished)

    def _task_progress(self, done: int, total: int, message: str) -> None:
        if total > 0:
            self.progress.setRange(0, 1000)
            self.progress.setValue(min(1000, int(1000 * done / total)))
        else:
            self.progress.setRange(0, 0)
        self.progress_label.setText(message)

    def cancel_task(self) -> None:
        if self.task_job is not None:
            self.task_job.cancel()
            self.progress_label.setText("cancelling…")

    def stop_and_wait(self) -> None:
        """Cancel running jobs, wait for their threads, and deliver what they sent on the way out
        (the window is closing). Results left queued when the application object goes away take
        PySide down at exit, so they are flushed here while everything is still alive."""
        from PySide6.QtCore import QCoreApplication

        self._flags_timer.stop()
        for job in list(self.jobs):
            wait_job(job, 10000)
        if self.thumbs is not None:
            self.thumbs.stop()
            self.thumbs = None
            self.model.thumbs = None
        QCoreApplication.sendPostedEvents()
        self._flags_timer.stop()  # a flushed result may have asked for another check
