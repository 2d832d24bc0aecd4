"""Start the desktop app: show the window first, import torch and transformers afterwards."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resource(*parts: str) -> Path:
    from tunedesk.engine.paths import resources_dir

    return resources_dir().joinpath(*parts)


def run_app(argv: list[str] | None = None) -> int:
    from PySide6.QtCore import QTimer
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from tunedesk.engine.paths import home_dir
    from tunedesk.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(argv or sys.argv)
    app.setApplicationName("TuneDesk")
    app.setOrganizationName("TuneDesk")
    icon = resource("icons", "tunedesk.png")
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    qss = resource("style", "app.qss")
    if qss.is_file():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))
    window = MainWindow(home_dir())
    window.show()
    # Heavy imports after the first paint, so the window appears at once.
    QTimer.singleShot(0, window.load_engine)
    if os.environ.get("TUNEDESK_QUIT_AFTER_MS"):  # smoke tests and screenshots
        QTimer.singleShot(int(os.environ["TUNEDESK_QUIT_AFTER_MS"]), app.quit)
    return app.exec()
