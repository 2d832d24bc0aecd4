"""The main window: a sidebar of areas, each a panel, a menu bar and a status bar. No logic of its own.

Optional panel hooks the window calls (all duck-typed, all optional):
  ``menu_actions() -> dict[str, list[QAction]]``  actions for the "File" / "View" menus (and their shortcuts)
  ``restore_settings(settings)`` / ``save_settings(settings)``  remembered selections (QSettings)
  ``shutdown(timeout_ms) -> bool``  stop background threads on close; False if one is still busy
  ``stop_and_wait()``  stop a training run (train panel)

torch and transformers are never imported here at module or construction time: ``load_engine``
imports them in a background thread after the window is visible, then emits ``AppState.engineReady``.
"""

from __future__ import annotations

import importlib
import logging
import platform
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QScrollArea,
    QStackedWidget,
    QWidget,
)

from tunedesk.engine.errors import TuneDeskError
from tunedesk.ui.background import BackgroundTask, keep_until_finished, run_in_background, wait_all
from tunedesk.ui.resources import icon
from tunedesk.ui.state import AppState

log = logging.getLogger(__name__)

# (key, title, module, class, shortcut)
PANELS = [
    ("models", "Models", "tunedesk.ui.models.panel", "ModelsPanel", "Ctrl+1"),
    ("layers", "Layers", "tunedesk.ui.layer_tree", "LayerTreePanel", "Ctrl+2"),
    ("datasets", "Datasets", "tunedesk.ui.datasets.panel", "DatasetsPanel", "Ctrl+3"),
    ("train", "Train", "tunedesk.ui.training.panel", "TrainingPanel", "Ctrl+4"),
    ("runs", "Runs", "tunedesk.ui.runs.panel", "RunsPanel", "Ctrl+5"),
]
PANEL_ICONS = {"layers": "freeze.svg"}  # default: <key>.svg
MENUS = ("File", "View", "Help")
KEYS = [p[0] for p in PANELS]


def app_settings() -> QSettings:
    """The app's QSettings; honours ``QSettings.setDefaultFormat``/``setPath`` (tests point them at a temp dir)."""
    return QSettings(QSettings.defaultFormat(), QSettings.Scope.UserScope, "TuneDesk", "TuneDesk")


def load_engine_modules(_ctx: object) -> tuple[str, str]:
    """Import torch and transformers and describe the devices (in a background thread):
    (status-bar text, tooltip listing every device)."""
    try:
        import torch  # noqa: F401 - the slow part, on purpose here

        from tunedesk.engine.catalog import params

        # The model scan may be importing transformers for a parameter count right now: the
        # catalog serialises that first import with this lock, so take it too.
        with params._build_lock:
            import transformers  # noqa: F401

        from tunedesk.engine.devices import describe_devices, list_devices
    except Exception as exc:
        log.exception("could not load the engine")
        raise TuneDeskError(
            f"torch or transformers failed to import: {type(exc).__name__}: {exc}",
            "reinstall TuneDesk's dependencies: pip install -e . (never another torch build)",
        ) from exc
    return describe_devices(), "\n".join(label for _, label in list_devices())


class MainWindow(QMainWindow):
    """``defer_panels=True`` (the app) builds only the shown panel before the first paint; ``finish_startup``
    builds the others right after it. Otherwise (tests, scripts) every panel exists when this returns."""

    def __init__(self, home: Path, parent: QWidget | None = None, defer_panels: bool = False) -> None:
        super().__init__(parent)
        self.setWindowTitle("TuneDesk")
        self.setWindowIcon(icon("tunedesk.png"))
        self.state = AppState(home, self)
        self.settings = app_settings()
        self.engine_ready = False
        self._engine_task: BackgroundTask | None = None
        self.busy_at_exit = False  # a background thread did not stop: the app exits without waiting

        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFixedWidth(150)
        self.stack = QStackedWidget()
        self.panels: dict[str, QWidget] = {}  # the panels built so far, by key
        self.panel_actions = QActionGroup(self)
        self.panel_actions.setExclusive(True)
        for key, title, _module, _cls, shortcut in PANELS:
            self.stack.addWidget(QWidget())  # placeholder until the panel is built
            panel_icon = icon(PANEL_ICONS.get(key, f"{key}.svg"))
            item = QListWidgetItem(panel_icon, title)
            item.setData(Qt.ItemDataRole.UserRole, key)
            item.setToolTip(f"{title} ({shortcut})")
            self.sidebar.addItem(item)
            action = QAction(panel_icon, title, self)
            action.setShortcut(QKeySequence(shortcut))
            action.setCheckable(True)
            action.setData(key)
            action.triggered.connect(lambda _=False, k=key: self.show_panel(k))
            self.panel_actions.addAction(action)
        self.sidebar.currentRowChanged.connect(self._on_row_changed)
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self.sidebar)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self._build_menus()
        self.device_label = QLabel("device: detecting…")
        self.device_label.setToolTip("torch loads after the window opens")
        self.home_label = QLabel(f"data: {home}")
        self.home_label.setToolTip(
            "TuneDesk's data folder: run history, checkpoints, settings of added models "
            "(set TUNEDESK_HOME or --home to change it)"
        )
        self.home_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.statusBar().addPermanentWidget(self.device_label)
        self.statusBar().addPermanentWidget(self.home_label)
        self.state.showPanel.connect(self.show_panel)
        self.state.statusMessage.connect(lambda msg: self.statusBar().showMessage(msg, 8000))

        geometry = self.settings.value("window/geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1280, 800)
        first = str(self.settings.value("window/panel", "models"))
        if first not in KEYS:
            first = "models"
        self._ensure_panel(first)
        self.show_panel(first)
        if not defer_panels:
            self.finish_startup()

    # ---- assembly --------------------------------------------------------------------------------

    def finish_startup(self) -> None:
        """Build the panels not built yet (the app calls this right after the first paint)."""
        for key in KEYS:
            self._ensure_panel(key)

    def _ensure_panel(self, key: str) -> QWidget:
        """The panel for ``key``, built (and given its settings and menu actions) on first use."""
        panel = self.panels.get(key)
        if panel is not None:
            return panel
        i = KEYS.index(key)
        _key, title, module, cls, _shortcut = PANELS[i]
        panel = self._make_panel(module, cls, title)
        self.panels[key] = panel
        placeholder = self.stack.widget(i)
        current = self.stack.currentIndex()
        self.stack.insertWidget(i, self._scrollable(panel))
        if placeholder is not None:
            self.stack.removeWidget(placeholder)
            placeholder.deleteLater()
        self.stack.setCurrentIndex(current)
        self._add_menu_actions(panel)
        hook = getattr(panel, "restore_settings", None)
        if callable(hook):
            hook(self.settings)
        return panel

    def _make_panel(self, module: str, cls: str, title: str) -> QWidget:
        try:
            mod = importlib.import_module(module)
            return getattr(mod, cls)(self.state)
        except Exception as exc:
            log.exception("could not build the %s panel", title)
            label = QLabel(f"The {title} area could not be opened: {type(exc).__name__}: {exc}")
            label.setProperty("role", "error")
            label.setWordWrap(True)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            return label

    @staticmethod
    def _scrollable(panel: QWidget) -> QScrollArea:
        """A panel in a frameless scroll area: the stack's minimum size is otherwise the largest of all
        panels' minimums, and a wide panel would keep the window from fitting a laptop screen."""
        area = QScrollArea()
        area.setFrameShape(QFrame.Shape.NoFrame)
        area.setWidgetResizable(True)
        area.setWidget(panel)
        return area

    def _build_menus(self) -> None:
        """Menus are assembled from actions: the window's own here, the panels' as they are built."""
        bar = self.menuBar()
        self.menus = {name: bar.addMenu(f"&{name}") for name in MENUS}
        self._file_separator = self.menus["File"].addSeparator()
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        self.quit_action.triggered.connect(self.close)
        self.menus["File"].addAction(self.quit_action)
        for action in self.panel_actions.actions():
            self.menus["View"].addAction(action)
        self._view_separator = self.menus["View"].addSeparator()
        self.about_action = QAction("&About TuneDesk", self)
        self.about_action.setMenuRole(QAction.MenuRole.AboutRole)
        self.about_action.triggered.connect(self.show_about)
        self.menus["Help"].addAction(self.about_action)
        self._panel_menu_actions: list[tuple[str, int, QAction]] = []  # (menu, panel rank, action)

    def _add_menu_actions(self, panel: QWidget) -> None:
        """A panel's ``menu_actions()`` go into the menus in PANELS order (File: above Quit)."""
        hook = getattr(panel, "menu_actions", None)
        if not callable(hook):
            return
        rank = next(i for i, k in enumerate(KEYS) if self.panels.get(k) is panel)
        for name, actions in hook().items():
            menu = self.menus.get(name)
            if menu is None:  # a menu the window lacks: before Help
                menu = QMenu(f"&{name}", self)
                self.menuBar().insertMenu(self.menus["Help"].menuAction(), menu)
                self.menus[name] = menu
            later = [a for n, r, a in self._panel_menu_actions if n == name and r > rank]
            before = later[0] if later else (self._file_separator if name == "File" else None)
            for action in actions:
                if before is not None:
                    menu.insertAction(before, action)
                else:
                    menu.addAction(action)
                self._panel_menu_actions.append((name, rank, action))
            self._panel_menu_actions.sort(key=lambda t: t[1])

    # ---- navigation ------------------------------------------------------------------------------

    def show_panel(self, key: str) -> None:
        if key in KEYS:
            self._ensure_panel(key)
            self.sidebar.setCurrentRow(KEYS.index(key))

    def current_panel(self) -> str | None:
        row = self.sidebar.currentRow()
        return PANELS[row][0] if 0 <= row < len(PANELS) else None

    def _on_row_changed(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        actions = self.panel_actions.actions()
        if 0 <= row < len(actions):
            actions[row].setChecked(True)

    def show_about(self) -> None:
        from PySide6 import __version__ as pyside_version

        import tunedesk

        torch_line = "torch: loading…"
        if self.engine_ready:
            import torch

            torch_line = f"torch {torch.__version__}"
        QMessageBox.about(
            self,
            "About TuneDesk",
            f"<h3>TuneDesk {tunedesk.__version__}</h3>"
            "<p>Fine-tune pre-trained models on this workstation, offline: pick a local model, choose "
            "visually which layers train, and follow every run.</p>"
            f"<p>Python {platform.python_version()} · PySide6 {pyside_version} · {torch_line}</p>"
            f"<p>Data folder: {self.state.home}</p>"
            "<p>Licence: Apache-2.0. The bundled demo model all-MiniLM-L6-v2 is Apache-2.0.</p>",
        )

    # ---- engine (torch) --------------------------------------------------------------------------

    def load_engine(self) -> None:
        """Import torch and transformers in a background thread (the window stays responsive)."""
        if self._engine_task is not None or self.engine_ready:
            return
        self._engine_task = run_in_background(
            load_engine_modules,
            name="engine-loader",
            on_result=lambda texts: self._on_engine_loaded(*texts),
            on_error=self._on_engine_failed,
            parent=self,
        )

    def engine_loading(self) -> bool:
        return self._engine_task is not None and self._engine_task.is_running()

    def _on_engine_loaded(self, text: str, tip: str) -> None:
        self.engine_ready = True
        self.device_label.setText(text)
        self.device_label.setToolTip(tip)
        self.state.engineReady.emit()

    def _on_engine_failed(self, message: str, hint: str) -> None:
        self.device_label.setText("device: unavailable")
        self.device_label.setProperty("role", "error")
        self.device_label.style().unpolish(self.device_label)
        self.device_label.style().polish(self.device_label)
        self.device_label.setToolTip(f"{message}\n{hint}")
        QMessageBox.warning(self, "TuneDesk cannot train", f"{message}\n\n{hint}")

    # ---- settings --------------------------------------------------------------------------------

    def save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        key = self.current_panel()
        if key:
            self.settings.setValue("window/panel", key)
        for panel in self.panels.values():
            hook = getattr(panel, "save_settings", None)
            if callable(hook):
                hook(self.settings)
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.state.running:
            answer = QMessageBox.question(
                self, "Stop the run?", "A run is training. Stop it (a resumable checkpoint is saved) and quit?"
            )
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            panel = self.panels.get("train")
            if panel is not None and hasattr(panel, "stop_and_wait"):
                panel.stop_and_wait()
        self.save_settings()
        for panel in self.panels.values():
            hook = getattr(panel, "shutdown", None)
            if callable(hook) and hook(3000) is False:
                self.busy_at_exit = True
        task = self._engine_task
        if task is not None and not task.wait(200):
            self.busy_at_exit = True  # still importing torch: cannot be interrupted
            keep_until_finished(task.thread_, task)
        if not wait_all(1000):  # whatever else is still running in the background
            self.busy_at_exit = True
        super().closeEvent(event)
