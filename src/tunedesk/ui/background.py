"""Background work for every panel: one function in its own thread, its outcome back on the GUI thread.

``run_in_background(fn, on_result=..., on_error=..., on_progress=..., on_finished=...)`` runs
``fn(ctx)`` in a new QThread and returns a ``BackgroundTask``. The function never touches a widget;
it may call ``ctx.progress(*values)`` (delivered to ``on_progress``; a repeat of the last values is
dropped), read ``ctx.cancelled`` / call ``ctx.check()`` (raises ``Cancelled``) and register
``ctx.on_cancel(callback)`` (e.g. a training control's ``request_stop``). What it returns goes to
``on_result``; a ``TuneDeskError`` goes to ``on_error(message, hint)``; any other exception is logged
and reported as an internal error with a hint, so the app keeps working. Every callback runs on the
GUI thread (checked), ``on_finished`` last. ``task.cancel()`` asks the function to stop.

Closing the app: ``wait_all(timeout_ms)`` cancels every running task and waits for its thread. A
thread that does not end in time (inside ``import torch``) is kept alive until it does, because Qt
aborts the process when a running QThread is destroyed; ``threads_still_running()`` tells the app to
end the process without waiting for it.

Read superqt's ``_qthreading`` and Orange's ``concurrent`` for the ideas: errors re-delivered on the
main thread, cancel through the progress path, handlers that assert they run on the GUI thread.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, Slot

from tunedesk.engine.errors import TuneDeskError

log = logging.getLogger("tunedesk.ui.background")

F = TypeVar("F", bound=Callable[..., Any])


def on_gui_thread() -> bool:
    app = QCoreApplication.instance()
    return app is None or QThread.currentThread() is app.thread()


def assert_gui_thread() -> None:
    """Fail loudly when a handler that draws or changes UI state runs in a worker thread."""
    assert on_gui_thread(), f"called from the worker thread {QThread.currentThread().objectName()!r}"


def gui_thread(method: F) -> F:
    """Decorator for completion handlers: they must run on the GUI thread."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        assert_gui_thread()
        return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def error_parts(exc: BaseException, doing: str = "") -> tuple[str, str]:
    """(message, hint) for the user: a TuneDeskError's own, else an internal error (logged)."""
    if isinstance(exc, TuneDeskError):
        return exc.message, exc.hint
    log.error("unexpected error%s", f" while {doing}" if doing else "", exc_info=exc)
    return (
        f"internal error{f' while {doing}' if doing else ''}: {type(exc).__name__}: {exc}",
        "this is a bug in TuneDesk; the log has the details, and the app keeps working",
    )


class Cancelled(Exception):
    """Raised by ``TaskContext.check()`` once the task is cancelled: the task ends with no result."""


class TaskContext:
    """What the background function gets: progress out, cancellation in. Thread-safe."""

    def __init__(self, emit_progress: Callable[[tuple[Any, ...]], None]) -> None:
        self._emit = emit_progress
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []
        self._last: tuple[Any, ...] | None = None

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        """For engine functions that take ``cancel=event.is_set``."""
        return self._event

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()

    def progress(self, *values: Any) -> None:
        """Report progress; the same plain values (numbers, text) twice in a row are sent once."""
        if all(v is None or isinstance(v, (int, float, str)) for v in values):
            if values == self._last:
                return
            self._last = values
        self._emit(values)

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (from the cancelling thread) when the task is cancelled; at once if it is already."""
        with self._lock:
            if not self._event.is_set():
                self._hooks.append(hook)
                return
        hook()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:  # a failing hook must not stop the others
                log.exception("a cancel hook failed")


class _TaskThread(QThread):
    """Runs the function; its signals are emitted from the new thread and queued to the task."""

    progressed = Signal(object)  # tuple of values
    succeeded = Signal(object)
    failed = Signal(str, str)  # message, hint

    def __init__(self, fn: Callable[[TaskContext], Any], name: str, move: QObject | None) -> None:
        super().__init__()
        self.setObjectName(name or "background")
        self.fn = fn
        self.name = name
        self.move = move
        self.context = TaskContext(self.progressed.emit)
        self.exception: BaseException | None = None

    def run(self) -> None:
        try:
            result = self.fn(self.context)
        except Cancelled:
            pass
        except Exception as exc:  # noqa: BLE001 - delivered as message + hint
            self.exception = exc
            self.failed.emit(*error_parts(exc, self.name))
        else:
            self.succeeded.emit(result)
        finally:
            app = QCoreApplication.instance()
            if self.move is not None and app is not None:
                self.move.moveToThread(app.thread())  # back to the GUI thread, from the thread it lived in


class BackgroundTask(QObject):
    """The GUI-thread side of one background call. Keep it to ``cancel()`` or ``wait()``."""

    finished = Signal()  # after on_finished (tests, hosts)

    def __init__(
        self,
        fn: Callable[[TaskContext], Any],
        *,
        name: str = "",
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[str, str], None] | None = None,
        on_progress: Callable[..., None] | None = None,
        on_finished: Callable[[], None] | None = None,
        move: QObject | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.name = name or "background work"  # says what failed: "internal error while <name>: ..."
        self.on_result, self.on_error, self.on_progress, self.on_finished = (
            on_result,
            on_error,
            on_progress,
            on_finished,
        )
        self.thread_ = _TaskThread(fn, name, move)
        self.done = False  # on_finished has run
        self.error: tuple[str, str] | None = None
        self.thread_.progressed.connect(self._progressed)
        self.thread_.succeeded.connect(self._succeeded)
        self.thread_.failed.connect(self._failed)
        self.thread_.finished.connect(self._thread_finished)
        if move is not None:
            move.moveToThread(self.thread_)

    # ---- control (GUI thread) ------------------------------------------------------------------------

    def start(self, priority: QThread.Priority = QThread.Priority.InheritPriority) -> BackgroundTask:
        _register(self)
        self.thread_.start(priority)
        return self

    @property
    def context(self) -> TaskContext:
        return self.thread_.context

    @property
    def cancelled(self) -> bool:
        return self.thread_.context.cancelled

    @property
    def exception(self) -> BaseException | None:
        """The exception the function raised (None when it returned), for callers that need more
        than message + hint (e.g. which setup field a ConfigError concerns)."""
        return self.thread_.exception

    def cancel(self) -> None:
        self.thread_.context.cancel()

    def is_running(self) -> bool:
        try:
            return self.thread_.isRunning()
        except RuntimeError:  # the C++ thread is gone: it ended
            return False

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Wait for the thread to end (the callbacks come later, from the event loop); True when it did."""
        try:
            return bool(self.thread_.wait(max(0, int(timeout_ms))))
        except RuntimeError:
            return True

    # ---- from the thread (queued onto the GUI thread) ------------------------------------------------

    @Slot(object)
    def _progressed(self, values: tuple[Any, ...]) -> None:
        assert_gui_thread()
        if self.on_progress is not None:
            self.on_progress(*values)

    @Slot(object)
    def _succeeded(self, result: Any) -> None:
        assert_gui_thread()
        if self.on_result is not None:
            self.on_result(result)

    @Slot(str, str)
    def _failed(self, message: str, hint: str) -> None:
        assert_gui_thread()
        self.error = (message, hint)
        if self.on_error is not None:
            self.on_error(message, hint)

    @Slot()
    def _thread_finished(self) -> None:
        assert_gui_thread()
        self.thread_.wait()  # ``finished`` is sent just before the thread really ends
        _unregister(self)
        if self.done:
            return
        self.done = True
        try:
            if self.on_finished is not None:
                self.on_finished()
        finally:
            self.finished.emit()


def run_in_background(
    fn: Callable[[TaskContext], Any],
    *,
    name: str = "",
    on_result: Callable[[Any], None] | None = None,
    on_error: Callable[[str, str], None] | None = None,
    on_progress: Callable[..., None] | None = None,
    on_finished: Callable[[], None] | None = None,
    move: QObject | None = None,
    parent: QObject | None = None,
    priority: QThread.Priority = QThread.Priority.InheritPriority,
) -> BackgroundTask:
    """Start ``fn(ctx)`` in its own thread; see the module docstring. ``move``: a QObject that lives in
    the thread while it runs (back on the GUI thread after). ``parent``: when it is deleted, the
    callbacks are no longer called (the thread still runs to its end)."""
    assert_gui_thread()
    task = BackgroundTask(
        fn,
        name=name,
        on_result=on_result,
        on_error=on_error,
        on_progress=on_progress,
        on_finished=on_finished,
        move=move,
        parent=parent,
    )
    return task.start(priority)


class TaskGroup(QObject):
    """The background calls of one owner (a panel, a dialog): started with its parent as their
    parent, so callbacks stop when the owner goes; ``wait_all`` before the owner closes."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.tasks: list[BackgroundTask] = []

    def start(self, fn: Callable[[TaskContext], Any], **kwargs: Any) -> BackgroundTask:
        """``run_in_background(fn, **kwargs)``, kept in this group until it finished."""
        task = run_in_background(fn, parent=self, **kwargs)
        self.tasks.append(task)
        task.finished.connect(lambda: self.tasks.remove(task) if task in self.tasks else None)
        return task

    @property
    def busy(self) -> bool:
        return any(task.is_running() for task in self.tasks)

    def cancel_all(self) -> None:
        for task in self.tasks:
            task.cancel()

    def wait_all(self, timeout_ms: int = 30000) -> bool:
        """Wait for the calls in flight, ``timeout_ms`` in all; False when one is still running."""
        deadline = time.monotonic() + timeout_ms / 1000
        return all([task.wait(int((deadline - time.monotonic()) * 1000)) for task in list(self.tasks)])


# ---- every running task: cancel and wait on quit --------------------------------------------------------

_tasks: list[BackgroundTask] = []  # started and not yet reaped (holds them, so no running QThread is destroyed)
_outliving: list[tuple[Any, tuple[Any, ...]]] = []  # (QThread, objects it uses) kept until it ends


def _register(task: BackgroundTask) -> None:
    _sweep()
    _tasks.append(task)


def _unregister(task: BackgroundTask) -> None:
    if task in _tasks:
        _tasks.remove(task)


def _sweep() -> None:
    """Drop tasks whose owner was deleted (their finish is never delivered) once their thread ended."""
    for task in list(_tasks):
        if not shiboken6.isValid(task) and not task.is_running():
            _unregister(task)


def running_tasks() -> list[BackgroundTask]:
    return [t for t in _tasks if t.is_running()]


def wait_all(timeout_ms: int = 3000, *, cancel: bool = True) -> bool:
    """Cancel (by default) every running task and wait for them, ``timeout_ms`` in all; True when all
    ended. Threads still running are kept alive until they end (see ``keep_until_finished``)."""
    deadline = time.monotonic() + timeout_ms / 1000
    tasks = running_tasks()
    if cancel:
        for task in tasks:
            task.cancel()
    ended = True
    for task in tasks:
        if not task.wait(int((deadline - time.monotonic()) * 1000)):
            ended = False
            keep_until_finished(task.thread_, task)
    return ended


def keep_until_finished(thread: QThread, *objects: Any) -> None:
    """Keep a QThread that did not stop in time (e.g. inside ``import torch``) alive until it ends.

    Qt aborts the process when a running QThread is destroyed. The app ends the process without
    waiting when such a thread is left; other hosts (tests, scripts) wait for it at exit.
    """
    if not _outliving:
        atexit.register(_wait_outliving)
    if thread.parent() is not None:
        thread.setParent(None)
    _outliving.append((thread, objects))


def threads_still_running() -> bool:
    """A background thread (a task's, or one kept by ``keep_until_finished``) has not ended."""
    return bool(running_tasks()) or any(thread.isRunning() for thread, _ in _outliving)


def _wait_outliving() -> None:
    for thread, _ in _outliving:
        thread.wait()
