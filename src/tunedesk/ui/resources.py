"""Files shipped with the app (icons, style sheet), found without importing the window or torch."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QIcon, QPalette
from PySide6.QtWidgets import QApplication

_icons: dict[str, QIcon] = {}


def resource(*parts: str) -> Path:
    from tunedesk.engine.paths import resources_dir

    return resources_dir().joinpath(*parts)


def icon(name: str) -> QIcon:
    """resources/icons/<name> (e.g. "play.svg"), cached; a missing file gives an empty icon, never an error."""
    if name not in _icons:
        try:
            path = resource("icons", name)
            _icons[name] = QIcon(str(path)) if path.is_file() else QIcon()
        except OSError:
            _icons[name] = QIcon()
    return _icons[name]


def app_palette() -> QPalette:
    """The application's palette (a default one before a QApplication exists)."""
    app = QApplication.instance()
    return app.palette() if isinstance(app, QApplication) else QPalette()
