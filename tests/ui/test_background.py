"""The one helper for background work: results, errors, progress, cancel and wait-on-quit."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QObject, QThread

from tunedesk.engine.errors import DataError
from tunedesk.ui import background
from tunedesk.ui.background import assert_gui_thread, gui_thread, run_in_background, wait_all


class Calls:
    """Records each callback with the thread it ran on."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, bool]] = []

    def __getattr__(self, name: str):
        def record(*args):
            self.calls.append((name, args, threading.current_thread() is threading.main_thread()))

        return record

    def names(self) -> list[str]:
        return [n for n, _, _ in self.calls]

    def of(self, name: str) -> list[tuple]:
        return [a for n, a, _ in self.calls if n == name]


def start(fn, calls: Calls, **kw) -> background.BackgroundTask:
    return run_in_background(
        fn,
        on_result=calls.result,
        on_error=calls.error,
        on_progress=calls.progress,
        on_finished=calls.finished,
        **kw,
    )


def test_result_and_progress_arrive_on_the_gui_thread_in_order(qtbot):
    ran_on: list[bool] = []
    calls = Calls()

    def work(ctx):
        ran_on.append(threading.current_thread() is threading.main_thread())
        for i in (1, 2, 2, 3):  # the repeated 2 is sent once
            ctx.progress(i, 3, "counting")
        return "done"

    task = start(work, calls, name="counting")
    qtbot.waitUntil(lambda: task.done, timeout=10_000)
    assert ran_on == [False]  # the function ran in its own thread
    assert calls.names() == ["progress", "progress", "progress", "result", "finished"]
    assert [a[0] for a in calls.of("progress")] == [1, 2, 3]
    assert calls.of("result") == [("done",)]
    assert all(on_gui for _, _, on_gui in calls.calls)
    assert task.error is None and task.exception is None
    assert not task.is_running()
    assert task not in background.running_tasks()


def test_a_tunedesk_error_arrives_as_message_and_hint_on_the_gui_thread(qtbot):
    calls = Calls()

    def work(ctx):
        raise DataError("tickets.csv has no column 'label'", "choose the label column in the import dialog")

    task = start(work, calls)
    qtbot.waitUntil(lambda: task.done, timeout=10_000)
    assert calls.of("error") == [("tickets.csv has no column 'label'", "choose the label column in the import dialog")]
    assert calls.names() == ["error", "finished"]
    assert all(on_gui for _, _, on_gui in calls.calls)
    assert isinstance(task.exception, DataError)  # e.g. to find the setup field it concerns


def test_an_unexpected_error_is_reported_as_an_internal_error_with_a_hint(qtbot, caplog):
    calls = Calls()

    def work(ctx):
        raise RuntimeError("disk on fire")

    task = start(work, calls, name="saving a version")
    qtbot.waitUntil(lambda: task.done, timeout=10_000)
    ((message, hint),) = calls.of("error")
    assert message == "internal error while saving a version: RuntimeError: disk on fire"
    assert "bug in TuneDesk" in hint
    assert "disk on fire" in caplog.text  # the traceback is in the log


def test_cancel_stops_the_function_calls_the_hooks_and_delivers_no_result(qtbot):
    calls = Calls()
    started = threading.Event()
    hooked = threading.Event()

    def work(ctx):
        ctx.on_cancel(hooked.set)
        started.set()
        while True:
            ctx.check()  # raises Cancelled once cancelled
            ctx.cancel_event.wait(0.01)

    task = start(work, calls)
    assert started.wait(10)
    assert task.is_running()
    task.cancel()
    assert hooked.is_set()  # called at once, from the cancelling thread
    assert task.wait(10_000)
    qtbot.waitUntil(lambda: task.done, timeout=10_000)
    assert task.cancelled
    assert calls.names() == ["finished"]


def test_a_hook_registered_after_cancel_runs_at_once():
    ctx = background.TaskContext(lambda values: None)
    ctx.cancel()
    seen = []
    ctx.on_cancel(lambda: seen.append(1))
    assert seen == [1] and ctx.cancelled
    with pytest.raises(background.Cancelled):
        ctx.check()


def test_wait_all_cancels_and_waits_and_keeps_a_thread_that_will_not_stop(qtbot):
    polite_started, stubborn_started, release = threading.Event(), threading.Event(), threading.Event()

    def polite(ctx):
        polite_started.set()
        ctx.cancel_event.wait(60)
        return "stopped"

    def stubborn(ctx):  # like `import torch`: cannot be interrupted
        stubborn_started.set()
        release.wait(60)

    a, b = run_in_background(polite), run_in_background(stubborn)
    assert polite_started.wait(10) and stubborn_started.wait(10)
    try:
        assert wait_all(300) is False  # the stubborn one is still running
        assert a.cancelled and not a.is_running()
        assert b.is_running() and background.threads_still_running()
    finally:
        release.set()
    assert b.wait(10_000)
    qtbot.waitUntil(lambda: a.done and b.done, timeout=10_000)
    assert a not in background.running_tasks() and b not in background.running_tasks()


def test_callbacks_stop_when_the_owner_is_deleted(qtbot):
    owner = QObject()
    calls = Calls()
    go = threading.Event()

    def work(ctx):
        go.wait(10)
        return 1

    task = start(work, calls, parent=owner)
    owner.deleteLater()
    qtbot.wait(50)  # the owner (and the task's QObject with it) is gone
    go.set()
    assert task.wait(10_000)
    qtbot.wait(100)
    assert calls.calls == []
    run_in_background(lambda ctx: None)  # starting another sweeps the orphan out
    assert task not in background._tasks


def test_a_moved_object_lives_in_the_thread_while_it_runs_and_comes_back(qtbot):
    obj = QObject()
    seen: list[object] = []
    release = threading.Event()  # the work waits until the test has looked: a fast machine cannot race ahead

    def work(ctx):
        seen.append(obj.thread())
        release.wait(10)

    task = run_in_background(work, move=obj)
    assert obj.thread() is task.thread_
    release.set()
    qtbot.waitUntil(lambda: task.done, timeout=10_000)
    assert seen == [task.thread_]
    assert obj.thread() is QThread.currentThread()


def test_gui_thread_handlers_fail_in_a_worker_thread():
    assert_gui_thread()  # the test runs on the GUI thread

    @gui_thread
    def handler():
        return "drawn"

    assert handler() == "drawn"
    errors: list[BaseException] = []

    def in_worker():
        try:
            handler()
        except AssertionError as exc:
            errors.append(exc)

    t = threading.Thread(target=in_worker)
    t.start()
    t.join()
    assert len(errors) == 1


def test_a_task_group_keeps_its_calls_until_they_finish_and_waits_for_them(qtbot):
    group = background.TaskGroup()
    go = threading.Event()
    results: list[int] = []
    for n in (1, 2):
        group.start(lambda ctx, n=n: go.wait(10) and n, on_result=results.append)
    assert group.busy and len(group.tasks) == 2
    assert group.wait_all(100) is False  # still waiting for `go`
    go.set()
    assert group.wait_all(10_000)
    qtbot.waitUntil(lambda: not group.tasks, timeout=10_000)
    assert sorted(results) == [1, 2] and not group.busy
