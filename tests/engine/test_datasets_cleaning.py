"""Cleaning flags: each one on a tiny data set, with exact counts and item ids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunedesk.engine.datasets import DatasetStore, ImportSpec, check_files, refresh_flags, run_import
from tunedesk.engine.datasets import edits as E
from tunedesk.engine.datasets import flags as F
from tunedesk.engine.datasets.cleaning import CleaningOptions, analyse
from tunedesk.engine.datasets.hashing import near_images, normalise_text
from tunedesk.engine.paths import database_path


@pytest.fixture
def store(tmp_path):
    s = DatasetStore(database_path(tmp_path / "home"))
    yield s
    s.close()


def text_dataset(store, rows):
    """A text data set from (text, label) rows, without going through a file."""
    from tunedesk.engine.datasets.hashing import text_content_hash, text_near_hash

    ds = store.create_dataset("t", "text")
    store.insert_items(
        ds,
        [
            (
                i + 1,
                label,
                "",
                0,
                text_content_hash(text),
                text_near_hash(text),
                None,
                i + 2,
                None,
                None,
                None,
                None,
                text,
            )
            for i, (text, label) in enumerate(rows)
        ],
    )
    with store.write():
        store.replace_classes(ds, sorted({lab for _, lab in rows if lab}))
    return ds, store.item_ids(ds)


def flagged(store, ds, bit):
    return store.flagged_ids(ds, bit)


def test_normalisation_and_image_hash_comparison():
    assert normalise_text("  Refund,   please!! ") == normalise_text("refund please") == "refund please"
    assert normalise_text("Café—OK") == normalise_text("CAFÉ ok")
    assert normalise_text("?") != normalise_text("!")
    red, redder, green = "c81e1e" * 16, "c01e1e" * 16, "1ec81e" * 16
    a = "0" * 64 + red
    assert near_images(a, "0" * 61 + "7ff" + redder)  # 11 bits apart, colours close
    assert not near_images(a, "0" * 60 + "ffff" + red)  # 16 bits apart
    assert not near_images(a, "0" * 64 + green)  # same structure, other colour
    assert not near_images(a, "0" * 64 + red[:-6] + "1ec81e")  # one cell of another colour
    assert not near_images(a, "0" * 16 + "c81e1e")  # not an image hash


def test_text_flags_with_counts_and_ids(store):
    rows = [
        ("my invoice is wrong", "billing"),  # 0 exact dup of 1
        ("my invoice is wrong", "billing"),  # 1
        ("App crashes on start", "technical"),  # 2 near dup of 3, conflicting label
        ("app crashes on start!!", "billing"),  # 3
        ("   ", "technical"),  # 4 empty
        ("x" * 50, "technical"),  # 5 overlong (limit 40 below)
        ("where is my parcel", "shipping"),  # 6 the only shipping: rare class
        ("no label yet", ""),  # 7 unlabelled
        ("reset my password", "account"),  # 8
        ("change my email", "account"),  # 9
    ]
    ds, ids = text_dataset(store, rows)
    report = refresh_flags(store, ds, CleaningOptions(overlong_chars=40))
    assert flagged(store, ds, F.EXACT_DUPLICATE) == [ids[0], ids[1]]
    assert flagged(store, ds, F.NEAR_DUPLICATE) == [ids[2], ids[3]]
    assert flagged(store, ds, F.LABEL_CONFLICT) == [ids[2], ids[3]]
    assert flagged(store, ds, F.EMPTY_TEXT) == [ids[4]]
    assert flagged(store, ds, F.OVERLONG_TEXT) == [ids[5]]
    assert flagged(store, ds, F.RARE_CLASS) == [ids[6]]
    assert flagged(store, ds, F.UNLABELLED) == [ids[7]]
    assert flagged(store, ds, F.LEAKAGE) == []
    assert report.counts["exact_duplicate"] == 2 and report.counts["label_conflict"] == 2
    assert report.groups == [[ids[0], ids[1]], [ids[2], ids[3]]]
    assert report.extra_copies == [ids[1], ids[3]]
    assert report.rare_classes == ["shipping"] and report.total == 10
    # leakage: the two copies on both sides of the split
    E.apply_edit(store, ds, E.set_splits({ids[0]: "train", ids[1]: "val"}))
    refresh_flags(store, ds)
    assert flagged(store, ds, F.LEAKAGE) == [ids[0], ids[1]]
    # fixing the data clears the flags
    E.apply_edit(store, ds, E.delete_items([ids[1], ids[3]]))
    report = refresh_flags(store, ds, CleaningOptions(overlong_chars=40))
    for bit in (F.EXACT_DUPLICATE, F.NEAR_DUPLICATE, F.LABEL_CONFLICT, F.LEAKAGE):
        assert flagged(store, ds, bit) == []
    assert report.rare_classes == ["billing", "shipping"]  # one billing text is left
    assert flagged(store, ds, F.RARE_CLASS) == [ids[0], ids[6]]


def test_conflict_between_exact_copies_and_refresh_is_idempotent(store):
    ds, ids = text_dataset(store, [("same", "a"), ("same", "b"), ("other", "a"), ("more", "b")])
    first = refresh_flags(store, ds)
    assert flagged(store, ds, F.LABEL_CONFLICT) == ids[:2] and flagged(store, ds, F.NEAR_DUPLICATE) == []
    assert first.changed == 2
    assert refresh_flags(store, ds).changed == 0


def make_image(path: Path, colour, size=48, pattern=True, fmt=None):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), colour)
    if pattern:
        d = ImageDraw.Draw(im)
        d.rectangle([size // 4, size // 4, size // 2, size - 4], fill=(255, 255, 255))
        d.ellipse([size // 2, 2, size - 2, size // 3], fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt)
    return im


def test_image_flags(store, tmp_path):
    root = tmp_path / "imgs"
    im = make_image(root / "cat" / "a.png", (200, 40, 40))
    (root / "cat" / "a_copy.png").write_bytes((root / "cat" / "a.png").read_bytes())  # exact copy
    (root / "dog").mkdir()
    im.resize((96, 96)).save(root / "dog" / "a_big.jpg", quality=90)  # same picture, other size and format
    make_image(root / "cat" / "b.png", (40, 40, 200))
    make_image(root / "dog" / "c.png", (40, 200, 40), pattern=False)
    make_image(root / "dog" / "d.png", (10, 10, 10), size=12)
    (root / "dog" / "e.png").write_bytes(b"this is a text file with an image name")
    result = run_import(store, ImportSpec("image_folder", str(root)))
    ds = result.dataset_id
    name = {i.id: Path(i.path).name for i in store.iter_items(ds)}

    def names(bit):
        return sorted(name[i] for i in flagged(store, ds, bit))

    assert names(F.EXACT_DUPLICATE) == ["a.png", "a_copy.png"]
    assert names(F.NEAR_DUPLICATE) == ["a.png", "a_big.jpg", "a_copy.png"]
    assert names(F.LABEL_CONFLICT) == ["a.png", "a_big.jpg", "a_copy.png"]  # cat and dog
    assert names(F.TINY_IMAGE) == ["d.png"]
    assert names(F.UNREADABLE_IMAGE) == ["e.png"]
    assert result.cleaning.groups and len(result.cleaning.groups[0]) == 3
    # a moved file shows as missing; putting it back clears the flag
    moved = root / "cat" / "b.png"
    os.rename(moved, tmp_path / "b.png")
    assert check_files(store, ds)["missing"] == 1
    assert names(F.MISSING_FILE) == ["b.png"]
    refresh_flags(store, ds)
    assert names(F.MISSING_FILE) == ["b.png"]  # file flags survive a refresh
    os.rename(tmp_path / "b.png", moved)
    assert check_files(store, ds)["back"] == 1
    assert names(F.MISSING_FILE) == []


def test_near_image_search_scales_without_comparing_all_pairs():
    import random

    rng = random.Random(0)
    rows = []
    for i in range(3000):
        bits = rng.getrandbits(256)
        rows.append((i, "a", "", f"h{i}", f"{bits:064x}" + "808080" * 16, 0, 0))
    base = int(rows[0][4][:64], 16)
    changed = base ^ sum(1 << (b * 23) for b in range(10))  # 10 bits spread over the hash
    rows.append((3000, "b", "", "hx", f"{changed:064x}" + "828080" * 16, 0, 0))
    for i in range(300):  # a crowd with one identical row (a plain background): skipped, not compared
        bits = (rng.getrandbits(240) << 16) | 0xFFFF
        rows.append((3001 + i, "c", "", f"c{i}", f"{bits:064x}" + "101010" * 16, 0, 0))
    flags, groups = analyse(rows, "image")
    assert groups == [[0, 3000]]
    assert flags[0] & F.NEAR_DUPLICATE and flags[0] & F.LABEL_CONFLICT and not flags[1]


def test_simple_drawings_are_not_near_duplicates_of_each_other(tmp_path):
    """Small shapes on a plain background: different pictures, whatever dHash at 8x8 thinks."""
    from tunedesk.engine.datasets.hashing import inspect_image

    hashes = []
    from PIL import Image, ImageDraw

    shapes = [
        (30, 30, (200, 60, 80)),
        (60, 40, (200, 60, 80)),
        (40, 66, (200, 60, 80)),
        (66, 66, (200, 60, 80)),
        (30, 32, (120, 90, 180)),
    ]  # the last: nearly the first's place, another colour
    for i, (x, y, colour) in enumerate(shapes):
        im = Image.new("RGB", (96, 96), (245, 245, 240))
        ImageDraw.Draw(im).ellipse([x - 18, y - 18, x + 18, y + 18], fill=colour)
        im.save(tmp_path / f"{i}.png")
        hashes.append(inspect_image(str(tmp_path / f"{i}.png")).near_hash)
    big = Image.open(tmp_path / "0.png").resize((200, 200))
    big.save(tmp_path / "big.jpg", quality=85)
    copy = inspect_image(str(tmp_path / "big.jpg")).near_hash
    assert near_images(hashes[0], copy)
    assert not any(near_images(a, b) for k, a in enumerate(hashes) for b in hashes[k + 1 :])


def test_sixteen_bit_scans_are_neither_white_thumbnails_nor_near_duplicates_of_each_other(tmp_path):
    """Pillow's conversion clips 16-bit grey to white: every such scan would look the same (one white
    thumbnail, one near hash). They are scaled to 8 bits as the training decoder does."""
    import numpy as np
    from PIL import Image

    from tunedesk.engine.datasets.hashing import dhash_and_colour
    from tunedesk.engine.datasets.thumbnails import make_thumbnail

    ramp = np.tile(np.linspace(0, 65535, 64), (48, 1)).astype(np.uint16)
    paths = []
    for name, arr in (("left.png", ramp), ("right.png", ramp[:, ::-1].copy())):
        Image.fromarray(arr).save(tmp_path / name)
        paths.append(tmp_path / name)
    hashes = []
    for p in paths:
        with Image.open(p) as im:
            im.load()
            hashes.append(dhash_and_colour(im))
    assert not near_images(*hashes)
    thumb = make_thumbnail(str(paths[0]), "h0", tmp_path / "thumbs")
    with Image.open(thumb) as t:
        grey = np.asarray(t.convert("L"), dtype=np.float64)
    assert grey[:, :4].mean() < 30 and grey[:, -4:].mean() > 220  # the ramp, not a white square
