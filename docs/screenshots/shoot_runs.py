"""Screenshots of the Runs area: the history with one run in detail (runs.png) and two runs compared
(compare.png).

    python docs/screenshots/shoot_runs.py [--out docs/screenshots] [--dark] [--epochs 3]

Fine-tunes the bundled demo model (all-MiniLM-L6-v2) on part of the demo tickets in a temporary
TuneDesk home, four times with different freeze plans and learning rates (one of them stopped half
way, so it shows as resumable), then opens the real RunsPanel offscreen on that history.
CPU only; a few minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _shots import HERE, settle, wait

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def train_runs(home: Path, epochs: int) -> list[int]:
    """Four real runs on the demo data; returns their ids."""
    from tunedesk.cli import demo_config
    from tunedesk.engine.config import FreezeRule, FreezeSpec
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute, open_store

    plans = [
        ("head only", FreezeSpec(preset="head_only"), 2e-3, None),
        ("last 2 blocks + head", FreezeSpec(preset="last_n_blocks", last_n=2), 2e-4, None),
        ("all but embeddings", FreezeSpec(preset="all", rules=[FreezeRule("@embeddings", False)]), 1e-4, None),
        ("last 2 blocks, lr 5e-4", FreezeSpec(preset="last_n_blocks", last_n=2), 5e-4, 0.6),
    ]
    ids = []
    for name, freeze, lr, stop_share in plans:
        config = demo_config("cpu", epochs)
        config.name = name
        config.freeze = freeze
        config.hparams.learning_rate = lr
        config.hparams.max_length = 40
        config.hparams.log_every = 2
        config.data.max_items = 240
        control = Control()
        listeners = []
        if stop_share is not None:

            def stop(event, share=stop_share) -> None:
                if event.kind == "RunStarted":
                    stop.at = int(event.total_steps * share)
                elif event.kind == "StepLogged" and event.step >= getattr(stop, "at", 10**9):
                    control.request_stop("stopped by the user")

            listeners.append(stop)
        t0 = time.monotonic()
        result = execute(config, home=home, control=control, listeners=listeners)
        print(
            f"run {result.run_id} {name}: {result.status} "
            f"acc {result.metrics.get('val_accuracy', 0):.3f} ({time.monotonic() - t0:.0f} s)",
            flush=True,
        )
        ids.append(result.run_id)
    store = open_store(home)
    try:
        store.set_tags(ids[1], ["keep", "baseline"])
        store.set_notes(ids[1], "Two blocks are enough: within a point of full fine-tuning at a third of the cost.")
        store.set_tags(ids[2], ["full"])
    finally:
        store.close()
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--dark", action="store_true", help="a dark palette (saves runs-dark.png, compare-dark.png)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--home", type=Path, help="reuse a home that already has the runs (skips training)")
    parser.add_argument("--tab", default="Curves", help="the detail tab shown in runs.png (Overview, Freeze map, ...)")
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="tunedesk-shoot-runs-")) / "home"
    os.environ["TUNEDESK_HOME"] = str(home)
    ids = train_runs(home, args.epochs) if args.home is None else None

    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QMainWindow

    from tunedesk.ui.resources import resource
    from tunedesk.ui.runs.panel import RunsPanel
    from tunedesk.ui.runs.table import COL
    from tunedesk.ui.state import AppState

    app = QApplication.instance() or QApplication(sys.argv)
    app.setStyle("Fusion")
    if args.dark:
        sys.path.insert(0, str(HERE))
        from shoot_models import dark_palette

        app.setPalette(dark_palette())
    app.setStyleSheet(resource("style", "app.qss").read_text(encoding="utf-8"))
    state = AppState(home)
    frame = QMainWindow()  # a window-sized frame, as in the app (the sidebar is not part of the panel)
    panel = RunsPanel(state)
    frame.setCentralWidget(panel)
    frame.resize(1280, 860)
    frame.show()
    settle(app)
    if ids is None:
        ids = sorted(panel.table_model.rows[i]["id"] for i in range(panel.table_model.rowCount()))
    panel.view.sortByColumn(COL["Best"], Qt.SortOrder.DescendingOrder)
    settle(app)
    suffix = "-dark" if args.dark else ""

    # runs.png: the history sorted by best score, the kept baseline in detail (its curves).
    panel.select_runs([ids[1]])
    detail = panel.detail
    detail.tabs.setCurrentIndex(detail.TABS.index(args.tab))
    if args.tab == "Freeze map":
        wait(app, lambda: detail.freeze.stack.currentWidget() is not detail.freeze.view, 120, "the layer tree")
    settle(app, 30)
    tab = "" if args.tab == "Curves" else "-" + args.tab.lower().replace(" ", "-")
    out = args.out / f"runs{tab}{suffix}.png"
    panel.grab().save(str(out))
    print(f"saved {out}")

    # compare.png: head only vs last 2 blocks + head, loss by step, freeze diff from the full layout.
    panel.select_runs([ids[0], ids[1]])
    view = panel.compare_view
    wait(app, lambda: view.exact_layout, 120, "the model layout for the freeze diff")
    view.metric_combo.setCurrentIndex(view.metric_combo.findData("loss"))
    settle(app, 30)
    out = args.out / f"compare{suffix}.png"
    panel.grab().save(str(out))
    print(f"saved {out}")
    print(f"history kept in {home} (reuse it with --home)")
    panel.calls.wait_all()


if __name__ == "__main__":
    main()
