"""How fast the Runs panel opens and filters on a big history: 10,000 runs (fewer metric rows than
history_scale.py, which times the store alone).

Times, each the median of ``--repeats`` fresh panels on the same file (Qt offscreen):

* open_ms:   RunsPanel(state) (marks crashed runs, reads the filter menus, one count, one page of 200)
             + show + the first paint (``grab()``)                                   (target < 300 ms)
* filter_ms: a status filter + a search text, re-queried and repainted
* sort_ms:   sorting by best metric (not indexed) and repainting
* page_ms:   one more page as the view scrolls (``fetchMore``)
* select_ms: selecting a run and painting its detail (overview)

    python benchmarks/runs_panel_scale.py                  # 10,000 runs, 200,000 step rows
    python benchmarks/runs_panel_scale.py --rows 5000000   # the issue's 5 million rows (slower to generate)

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from history_scale import generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    tmp = Path(tempfile.mkdtemp(prefix="tunedesk-runs-panel-"))
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "settings"))
    os.environ["TUNEDESK_HOME"] = str(tmp / "home")
    try:
        from tunedesk.engine.paths import database_path, home_dir

        home = home_dir()
        t0 = time.perf_counter()
        generate(database_path(home), args.runs, args.rows)
        generate_s = time.perf_counter() - t0

        from tunedesk.ui.runs.panel import RunsPanel  # import time is the window's start-up, not the panel's
        from tunedesk.ui.state import AppState

        app = QApplication.instance() or QApplication(sys.argv)
        timings: dict[str, list[float]] = {k: [] for k in ("open_ms", "filter_ms", "sort_ms", "page_ms", "select_ms")}
        for _ in range(args.repeats + 1):  # the first round warms the file cache and Qt; not counted
            state = AppState(home)
            t = time.perf_counter()
            panel = RunsPanel(state)
            panel.resize(1280, 800)
            panel.show()
            app.processEvents()
            panel.grab()
            open_ms = (time.perf_counter() - t) * 1000
            rows = panel.table_model.rowCount()

            t = time.perf_counter()
            panel.status_filter.setCurrentIndex(panel.status_filter.findData("completed"))
            panel.search.setText("sweep")
            panel.apply_filter()
            panel.grab()
            filter_ms = (time.perf_counter() - t) * 1000
            matched = panel.table_model.total
            panel.search.clear()
            panel.status_filter.setCurrentIndex(0)
            panel.apply_filter()

            t = time.perf_counter()
            from tunedesk.ui.runs.table import COL

            panel.table_model.sort(COL["Best"])
            panel.grab()
            sort_ms = (time.perf_counter() - t) * 1000

            t = time.perf_counter()
            panel.table_model.fetchMore()
            page_ms = (time.perf_counter() - t) * 1000

            t = time.perf_counter()
            panel.select_runs([panel.table_model.rows[0]["id"]])
            panel.grab()
            select_ms = (time.perf_counter() - t) * 1000

            for key, value in zip(timings, (open_ms, filter_ms, sort_ms, page_ms, select_ms)):
                timings[key].append(value)
            panel.close()
            panel.deleteLater()
            app.processEvents()
        result = {
            "benchmark": "runs_panel_scale",
            "runs": args.runs,
            "step_rows": args.rows,
            "generate_s": round(generate_s, 1),
            "first_page_rows": rows,
            "filter_matches": matched,
        }
        result["first_open_ms"] = round(timings["open_ms"][0], 1)  # cold: Qt fonts and SQLite pages not warm yet
        for key, values in timings.items():
            result[key] = round(statistics.median(values[1:]), 1)
        result["open_target_ms"] = 300
        result["open_ok"] = result["open_ms"] < 300
        print(json.dumps(result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
