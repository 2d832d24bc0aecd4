"""Import rates of the data set editor: 100,000 generated texts and 50,000 generated small images.

    python benchmarks/dataset_import.py                      # the full sizes (a few minutes)
    python benchmarks/dataset_import.py --texts 5000 --images 1000   # a quick try

Everything happens in a temporary TuneDesk home (removed at the end unless --keep). Reports, for
each kind: the import (items per second, including reading, hashing, the duplicate search and the
flags), a flag refresh, a stratified split, saving a version, and what the editor's table does on
opening (all ids in order) and scrolling (one page of 200 rows). The generated texts contain some
exact and near duplicates, the images some copies and a few damaged files, so the duplicate search
has work to do: the flag counts printed should be close to the planted ones (texts: 1 % exact and
1 % near copies; images: 0.5 % exact, 0.5 % resized copies, 0.1 % truncated). The last line is JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

WORDS = (
    "invoice refund charge payment card price receipt crash error bug login slow install update parcel "
    "delivery courier tracking late address box password email profile username delete settings name please "
    "help my the is not today again since monday order i need with urgent thanks hello team account app "
    "screen export import sync phone laptop week month yesterday"
).split()
LABELS = ("billing", "technical", "shipping", "account", "feedback")


def make_texts(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    for _i in range(n):
        r = rng.random()
        if rows and r < 0.01:
            rows.append(rows[rng.randrange(len(rows))])  # exact copy
        elif rows and r < 0.02:
            text, label = rows[rng.randrange(len(rows))]
            rows.append((text.upper() + "!", label))  # near copy
        else:
            words = rng.choices(WORDS, k=rng.randint(6, 40))
            rows.append((" ".join(words).capitalize() + f" (order {rng.randint(1000, 99999)})", rng.choice(LABELS)))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def make_images(root: Path, n: int, seed: int = 0) -> None:
    """Small PNGs (48 px): a shape in one of several colours at a random place on a grainy background,
    per class folder; 0.5 % exact copies, 0.5 % resized copies, 0.1 % cut short."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    classes = ("circle", "square", "triangle", "cross", "ring")
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    last = None
    for i in range(n):
        label = classes[i % len(classes)]
        path = root / label / f"{label}_{i:06d}.png"
        roll = rng.random()
        if last is not None and roll < 0.005:
            shutil.copyfile(last, path)  # an exact copy
            continue
        if last is not None and roll < 0.01:
            Image.open(last).resize((64, 64)).save(path)  # a near copy: the same picture, resized
            continue
        size = 48
        tint = tuple(rng.randint(150, 255) for _ in range(3))
        texture = Image.effect_noise((size, size), 48).convert("RGB")  # each picture has its own grain
        im = Image.blend(Image.new("RGB", (size, size), tint), texture, 0.35)
        d = ImageDraw.Draw(im)
        colour = tuple(rng.randint(0, 180) for _ in range(3))
        x, y, r = rng.randint(12, 36), rng.randint(12, 36), rng.randint(6, 11)
        if label == "circle":
            d.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        elif label == "square":
            d.rectangle([x - r, y - r, x + r, y + r], fill=colour)
        elif label == "triangle":
            d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
        elif label == "cross":
            d.line([x - r, y, x + r, y], fill=colour, width=4)
            d.line([x, y - r, x, y + r], fill=colour, width=4)
        else:
            d.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=3)
        im.save(path, optimize=False, compress_level=1)
        if rng.random() < 0.001:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])  # a damaged file (never copied)
        else:
            last = path


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 1e6


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def run_one(store, kind: str, spec, n: int) -> dict:
    from tunedesk.engine.datasets import edits as E
    from tunedesk.engine.datasets import plan_split, refresh_flags, run_import

    last = [0.0]

    def progress(done, total, message):
        now = time.perf_counter()
        if now - last[0] > 5:
            last[0] = now
            print(f"  {kind}: {message}", file=sys.stderr, flush=True)

    result, seconds = timed(lambda: run_import(store, spec, progress))
    ds = result.dataset_id
    out = {
        "items": result.items,
        "import_s": round(seconds, 2),
        "items_per_s": round(result.items / seconds, 1),
        "flags": {k: v for k, v in result.cleaning.counts.items() if v},
        "duplicate_groups": len(result.cleaning.groups),
    }
    _, out["refresh_flags_s"] = timed(lambda: refresh_flags(store, ds))
    edit, out["plan_split_s"] = timed(lambda: plan_split(store, ds, "stratified", 0.2, 42))
    _, out["apply_split_s"] = timed(lambda: E.apply_edit(store, ds, edit))
    version, out["save_version_s"] = timed(lambda: store.save_version(ds))
    ids, out["table_open_s"] = timed(lambda: store.item_ids(ds))
    middle = len(ids) // 2
    _, out["table_page_s"] = timed(lambda: store.items(ids[middle : middle + 200], text_limit=400))
    _, out["search_s"] = timed(lambda: store.item_ids(ds, search="refund"))
    for key in list(out):
        if key.endswith("_s") and isinstance(out[key], float):
            out[key] = round(out[key], 3)
    out["version"] = version.id
    print(
        f"{kind}: {result.items:,} items imported in {seconds:.1f} s ({out['items_per_s']:,.0f}/s); "
        f"flags {out['refresh_flags_s']:.2f} s, split {out['plan_split_s'] + out['apply_split_s']:.2f} s, "
        f"version {out['save_version_s']:.2f} s, open table {out['table_open_s']:.3f} s, "
        f"page {out['table_page_s'] * 1000:.1f} ms",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=100_000, help="generated text rows (0: skip)")
    parser.add_argument("--images", type=int, default=50_000, help="generated images (0: skip)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (prints its path)")
    args = parser.parse_args()

    from tunedesk.engine.datasets import DatasetStore, ImportSpec
    from tunedesk.engine.paths import database_path

    work = Path(tempfile.mkdtemp(prefix="tunedesk-bench-"))
    report: dict = {
        "benchmark": "dataset_import",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    try:
        store = DatasetStore(database_path(work / "home"))
        if args.texts:
            path = work / "texts.csv"
            _, gen = timed(lambda: make_texts(path, args.texts))
            print(f"generated {args.texts:,} texts ({path.stat().st_size / 1e6:.1f} MB) in {gen:.1f} s", flush=True)
            report["texts"] = run_one(store, "texts", ImportSpec("text_table", str(path)), args.texts)
        if args.images:
            root = work / "images"
            _, gen = timed(lambda: make_images(root, args.images))
            print(f"generated {args.images:,} images in {gen:.1f} s", flush=True)
            report["images"] = run_one(store, "images", ImportSpec("image_folder", str(root)), args.images)
        store.close()
        report["database_mb"] = round(database_path(work / "home").stat().st_size / 1e6, 1)
        report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
