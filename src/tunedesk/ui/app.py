"""Start the desktop app: show the window first, import torch and transformers afterwards.

Environment switches (smoke tests, screenshots, measurements):
  ``TUNEDESK_QUIT_AFTER_MS=N``    close the window N ms after it shows
  ``TUNEDESK_REPORT_STARTUP=1``   print ``TUNEDESK_SHOWN <s>`` (first paint), ``TUNEDESK_PANELS_BUILT <s>``
                                  (every panel exists) and ``TUNEDESK_ENGINE_READY <s>`` (torch loaded) to
                                  standard error, in seconds since the process started
"""

from __future__ import annotations

import os
import sys
import time

_IMPORTED_AT = time.perf_counter()


def process_age() -> float:
    """Seconds since this process started (the kernel's start time, so interpreter start-up counts too)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        start = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in ticks since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - measuring must never stop the app
        return time.perf_counter() - _IMPORTED_AT


def _report(what: str) -> None:
    print(f"{what} {process_age():.3f}", file=sys.stderr, flush=True)


def run_app(argv: list[str] | None = None) -> int:
    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from tunedesk.engine.paths import home_dir
    from tunedesk.ui.background import threads_still_running
    from tunedesk.ui.main_window import MainWindow
    from tunedesk.ui.resources import resource

    report = os.environ.get("TUNEDESK_REPORT_STARTUP") == "1"
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(argv or sys.argv)
    app.setApplicationName("TuneDesk")
    app.setOrganizationName("TuneDesk")
    app.setApplicationDisplayName("TuneDesk")
    app.setDesktopFileName("tunedesk")  # matches packaging/tunedesk.desktop (Wayland icon and grouping)
    icon = resource("icons", "tunedesk.png")
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    qss = resource("style", "app.qss")
    if qss.is_file():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))
    window = MainWindow(home_dir(), defer_panels=True)  # the other panels are built after the first paint

    class FirstPaint(QObject):
        """After the window's first paint: report it, then start the heavy imports."""

        def __init__(self) -> None:
            super().__init__(window)
            self.done = False

        def eventFilter(self, obj: QObject, event: QEvent) -> bool:
            if event.type() == QEvent.Type.Paint:
                self.fire()
            return False

        def fire(self) -> None:
            if not self.done:
                self.done = True
                window.removeEventFilter(self)
                QTimer.singleShot(0, shown)

    def shown() -> None:
        if report:
            _report("TUNEDESK_SHOWN")
        window.finish_startup()
        if report:
            _report("TUNEDESK_PANELS_BUILT")
        window.load_engine()  # torch and transformers load in a background thread
        quit_after = os.environ.get("TUNEDESK_QUIT_AFTER_MS")
        if quit_after:
            QTimer.singleShot(int(quit_after), window.close)

    if report:
        window.state.engineReady.connect(lambda: _report("TUNEDESK_ENGINE_READY"))
    first_paint = FirstPaint()
    window.installEventFilter(first_paint)
    QTimer.singleShot(3000, first_paint.fire)  # a window manager that never exposes it: load anyway
    window.show()
    code = app.exec()
    if window.busy_at_exit or window.engine_loading() or threads_still_running():
        # A thread is inside an import that cannot be interrupted (torch); everything is saved,
        # so end the process now instead of waiting for it (and never destroy a running QThread).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
