"""Screenshot of the Train area mid-run: the demo MiniLM fine-tuning on the demo tickets, plots with data.

    python docs/screenshots/shoot_training.py [--out docs/screenshots] [--dark] [--tab evaluation|log|try]

Builds the real TrainingPanel offscreen, selects the demo model, the demo data and the "last 2 blocks"
freeze plan the way the other areas do (through AppState), presses Start and grabs the panel once two
epochs are validated and the third is under way; then stops the run cleanly. Qt settings and the
TuneDesk home go to temporary folders. Saves training.png (training-dark.png with --dark).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _shots import HERE, wait

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))


def demo_entry():
    """The demo model as the Models area lists it (without a full catalog scan)."""
    from tunedesk.engine.catalog import demo_model_path, scan_path

    entries = scan_path(demo_model_path())
    entry = entries[0]
    entry.name = "all-MiniLM-L6-v2"
    return entry


def dark_palette():
    from PySide6.QtGui import QColor, QPalette

    pal = QPalette()
    for role, rgb in (
        (QPalette.ColorRole.Window, (37, 37, 40)),
        (QPalette.ColorRole.WindowText, (230, 230, 230)),
        (QPalette.ColorRole.Base, (28, 28, 30)),
        (QPalette.ColorRole.AlternateBase, (45, 45, 48)),
        (QPalette.ColorRole.Text, (230, 230, 230)),
        (QPalette.ColorRole.Button, (50, 50, 54)),
        (QPalette.ColorRole.ButtonText, (230, 230, 230)),
        (QPalette.ColorRole.Highlight, (42, 130, 218)),
        (QPalette.ColorRole.HighlightedText, (255, 255, 255)),
        (QPalette.ColorRole.Mid, (80, 80, 85)),
        (QPalette.ColorRole.PlaceholderText, (150, 150, 150)),
    ):
        pal.setColor(role, QColor(*rgb))
    return pal


def shoot(out: Path, dark: bool, tab: str, epochs_before: int, threads: int) -> Path:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tempfile.mkdtemp(prefix="tunedesk-shots-"))
    home = Path(tempfile.mkdtemp(prefix="tunedesk-shot-home-"))
    os.environ["TUNEDESK_HOME"] = str(home)

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setStyle("Fusion")
    if dark:
        app.setPalette(dark_palette())
    qss = ROOT / "resources" / "style" / "app.qss"
    if qss.is_file():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))

    import torch

    torch.set_num_threads(threads)
    from tunedesk.engine.config import DataSpec, FreezeSpec
    from tunedesk.engine.paths import resources_dir
    from tunedesk.ui.state import AppState
    from tunedesk.ui.training.panel import TrainingPanel

    state = AppState(home)
    panel = TrainingPanel(state)
    panel.setWindowTitle("TuneDesk — Train")
    panel.resize(1440, 900)
    panel.show()
    panel.engine_ready()
    state.select_model(demo_entry())
    state.select_data(DataSpec(kind="text_table", path=str(resources_dir() / "demo" / "support_tickets.csv")))
    state.set_freeze(FreezeSpec(preset="last_n_blocks", last_n=2))
    form = panel.form
    form.hparams.epochs.setValue(epochs_before + 2)
    form.hparams.batch_size.setValue(16)
    form.hparams.max_length.setValue(64)
    form.device.setCurrentIndex(max(form.device.findData("cpu"), 0))
    base = form._base
    base.hparams.log_every = 1
    base.name = "MiniLM on support tickets"
    assert panel.controller.start(), form.visible_errors()
    spe = {"n": None}

    def far_enough() -> bool:
        if panel.controller.mode == "idle":
            raise SystemExit("the run ended early: " + "\n".join(panel.log.lines()[-5:]))
        if spe["n"] is None and panel.monitor.steps_per_epoch > 1:
            spe["n"] = panel.monitor.steps_per_epoch
        return (
            len(panel.controller.curves.epochs) >= epochs_before
            and spe["n"] is not None
            and panel.monitor.step >= epochs_before * spe["n"] + spe["n"] // 3
        )

    wait(app, far_enough, 900, "the run to pass its validations")
    panel.tabs.setCurrentIndex({"log": 0, "evaluation": 1, "try": 2}[tab])
    panel.plots.redraw(force=True)
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("training-dark.png" if dark else "training.png")
    panel.grab().save(str(path))
    panel.shutdown()
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--dark", action="store_true")
    ap.add_argument("--tab", default="evaluation", choices=["log", "evaluation", "try"])
    ap.add_argument("--epochs-before", type=int, default=2, help="validated epochs before the grab")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    args = ap.parse_args()
    print(shoot(args.out, args.dark, args.tab, args.epochs_before, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
