"""Screenshot of the Datasets area: the demo tickets with cleaning flags, the split and the balance chart.

    python docs/screenshots/shoot_datasets.py [--out docs/screenshots] [--dark] [--images]

Builds the real DatasetsPanel offscreen in a temporary TuneDesk home and imports, through the
panel's own import jobs:

* the demo texts (resources/demo/support_tickets.csv) plus a "new export" of 14 tickets with the
  problems real exports have (repeated rows, a ticket filed under two teams, case and punctuation
  variants, an empty row, a pasted e-mail thread, unlabelled rows, a one-off "legal" label), so the
  cleaning panel has something to show;
* a small generated image folder (three classes of drawn shapes, with a copied file, a resized
  copy, a tiny image and a damaged file).

Then it splits the texts (stratified, 20 %, seed 42), saves a version, relabels one ticket (so
the version box shows "edited since"), filters the table to the flagged items and selects the
extra copies. Saves datasets.png; with --images also datasets-images.png (the image data set,
flagged items with their thumbnails).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
from pathlib import Path

from _shots import settle, wait

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

HERE = Path(__file__).resolve().parent

EXTRA_TICKETS = [
    # repeated rows (the export was run twice)
    ("I was charged twice for my March invoice, please refund one of them.", "billing"),
    ("I was charged twice for my March invoice, please refund one of them.", "billing"),
    ("My parcel shows delivered but nothing arrived at my door.", "shipping"),
    ("My parcel shows delivered but nothing arrived at my door.", "shipping"),
    # the same ticket routed to two teams
    ("The app logs me out every time I change my password.", "account"),
    ("The app logs me out every time I change my password.", "technical"),
    # the same words, other case and punctuation
    ("Where can I download my receipts?", "billing"),
    ("where can i download my receipts", "billing"),
    ("WHERE CAN I DOWNLOAD MY RECEIPTS??", "billing"),
    # an empty row, a pasted e-mail thread, unlabelled rows, a label used once
    ("   ", "technical"),
    ("Re: Re: Fwd: export stops at 10,000 rows. " + "Hi team, following up on the thread below, " * 60, "technical"),
    ("Can you send the invoice to our accounts team instead of me?", ""),
    ("The courier wants a door code, how do I add it to the order?", ""),
    ("Please confirm you deleted my data under GDPR article 17.", "legal"),
]


def messy_tickets(folder: Path) -> Path:
    from tunedesk.engine.paths import resources_dir

    demo = resources_dir() / "demo" / "support_tickets.csv"
    with demo.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    rng = random.Random(7)
    for row in EXTRA_TICKETS:  # spread through the file, as in a real export
        body.insert(rng.randrange(len(body)), list(row))
    path = folder / "support_tickets.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(body)
    return path


def image_folder(folder: Path) -> Path:
    """Three classes of simple drawings with a few of the usual problems."""
    from PIL import Image, ImageDraw

    rng = random.Random(3)
    root = folder / "shapes"
    palette = [(52, 120, 198), (230, 140, 30), (60, 160, 90), (200, 60, 80), (120, 90, 180)]
    for label in ("circle", "square", "triangle"):
        (root / label).mkdir(parents=True)
        for i in range(9):
            size = 96
            im = Image.new("RGB", (size, size), (245, 245, 240))
            d = ImageDraw.Draw(im)
            c = palette[(i + len(label)) % len(palette)]
            x, y, r = rng.randint(30, 66), rng.randint(30, 66), rng.randint(16, 28)
            if label == "circle":
                d.ellipse([x - r, y - r, x + r, y + r], fill=c)
            elif label == "square":
                d.rectangle([x - r, y - r, x + r, y + r], fill=c)
            else:
                d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=c)
            im.save(root / label / f"{label}_{i:02d}.png")
    (root / "circle" / "circle_00 copy.png").write_bytes((root / "circle" / "circle_00.png").read_bytes())
    Image.open(root / "square" / "square_03.png").resize((200, 200)).save(root / "triangle" / "IMG_2041.jpg")
    Image.new("RGB", (12, 12), (200, 60, 80)).save(root / "square" / "thumb.png")
    data = (root / "triangle" / "triangle_01.png").read_bytes()
    (root / "triangle" / "triangle_99.png").write_bytes(data[: len(data) // 2])
    return root


def shoot(out: Path, dark: bool, images_too: bool = False) -> list[Path]:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication, QMainWindow

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tempfile.mkdtemp(prefix="tunedesk-shots-"))

    from tunedesk.engine.datasets import ImportSpec
    from tunedesk.engine.datasets import flags as F
    from tunedesk.ui.datasets.panel import DatasetsPanel
    from tunedesk.ui.resources import resource
    from tunedesk.ui.state import AppState

    app = QApplication.instance() or QApplication(sys.argv)
    app.setStyle("Fusion")
    if dark:
        sys.path.insert(0, str(HERE))
        from shoot_models import dark_palette

        app.setPalette(dark_palette())
    app.setStyleSheet(resource("style", "app.qss").read_text(encoding="utf-8"))
    work = Path(tempfile.mkdtemp(prefix="tunedesk-data-"))
    state = AppState(work / "home")
    panel = DatasetsPanel(state)
    frame = QMainWindow()  # a window-sized frame, as in the app (the sidebar is not part of the panel)
    frame.setCentralWidget(panel)
    frame.resize(1280, 820)
    frame.show()
    settle(app)

    def run_import(spec: ImportSpec) -> None:
        job = panel.controller.start_import(spec)
        assert job is not None
        wait(app, lambda: panel.controller.task_job is None, 120, f"importing {spec.path}")

    run_import(ImportSpec("image_folder", str(image_folder(work))))
    run_import(ImportSpec("text_table", str(messy_tickets(work)), name="support tickets"))
    wait(
        app,
        lambda: (
            panel.controller.info is not None
            and panel.controller.info.kind == "text"
            and panel.controller.flags_job is None
        ),
        60,
        "flags",
    )
    panel.split_box.val.setValue(20)
    panel.split_box.seed.setValue(42)
    panel.split_box.button.click()
    wait(app, lambda: panel.controller.task_job is None, 60, "the split")
    panel.controller.save_version()
    wait(app, lambda: panel.controller.task_job is None, 60, "the version")
    panel.select_flagged(F.LABEL_CONFLICT)
    panel.relabel_selection("account")  # the password ticket belongs to the account team
    wait(
        app,
        lambda: panel.controller.flags_job is None and not panel.controller.flags_timer.isActive(),
        60,
        "flags after the edit",
    )
    settle(app)
    any_flag = panel.flag_filter.findText("Flagged (any)")
    panel.flag_filter.setCurrentIndex(any_flag)
    panel.select_extra_copies(F.EXACT_DUPLICATE)  # to compute the groups' extra copies
    panel.flag_filter.setCurrentIndex(any_flag)  # then show every flagged item, extra copies selected
    panel.select_ids(panel.controller.extra_copies)
    settle(app, 30)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "-dark" if dark else ""
    paths = [out / f"datasets{suffix}.png"]
    panel.grab().save(str(paths[0]))

    if not images_too:
        return _finish(app, panel, frame, paths)
    images = next(i for i in range(panel.sets_model.rowCount()) if panel.sets_model.item(i).text().startswith("shapes"))
    panel.sets_view.setCurrentIndex(panel.sets_model.index(images, 0))
    wait(
        app,
        lambda: (
            panel.controller.info is not None
            and panel.controller.info.kind == "image"
            and panel.controller.flags_job is None
        ),
        60,
        "the image data set",
    )
    panel.flag_filter.setCurrentIndex(panel.flag_filter.findText("Flagged (any)"))
    wait(app, lambda: panel.thumbs is not None and not panel.thumbs._pending, 60, "thumbnails")
    settle(app, 30)
    paths.append(out / f"datasets-images{suffix}.png")
    panel.grab().save(str(paths[1]))
    return _finish(app, panel, frame, paths)


def _finish(app, panel, frame, paths: list[Path]) -> list[Path]:
    panel.stop_and_wait()
    frame.close()
    for p in paths:
        print(f"saved {p}")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--dark", action="store_true", help="a dark palette (saves datasets-dark.png)")
    parser.add_argument("--images", action="store_true", help="also shoot the image data set (datasets-images.png)")
    args = parser.parse_args()
    shoot(args.out, args.dark, args.images)


if __name__ == "__main__":
    main()
