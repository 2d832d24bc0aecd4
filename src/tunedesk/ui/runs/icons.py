"""Icons from resources/icons, cached (missing files give an empty icon, never an error)."""

from __future__ import annotations

from PySide6.QtGui import QIcon

_cache: dict[str, QIcon] = {}


def icon(name: str) -> QIcon:
    if name not in _cache:
        try:
            from tunedesk.ui.app import resource

            path = resource("icons", name)
            _cache[name] = QIcon(str(path)) if path.is_file() else QIcon()
        except (FileNotFoundError, OSError):
            _cache[name] = QIcon()
    return _cache[name]
