"""Image folders: class layout, corrupt/truncated/tiny files skipped with reasons, errors with hints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from tunedesk.engine.data import load_image, scan_image_folder
from tunedesk.engine.errors import DataError


def make_image(path: Path, size: tuple[int, int] = (16, 12), color=(200, 30, 30), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new(mode, size, color)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, quality=90)
    else:
        img.save(path)
    return path


def data_error(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    assert info.value.hint.strip(), "every DataError needs a hint"
    return info.value


@pytest.fixture
def pets(tmp_path) -> Path:
    root = tmp_path / "pets"
    for i in range(3):
        make_image(root / "cat" / f"c{i}.png")
        make_image(root / "dog" / f"d{i}.jpg", color=(10, 200, 10))
    make_image(root / "dog" / "nested" / "d9.JPEG")  # sub-folders belong to the class; suffix any case
    (root / "cat" / "notes.txt").write_text("not an image")  # ignored silently
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (root / "cat" / "._c0.png").write_bytes(b"\0\5\x16\x07")  # macOS resource fork: ignored
    return root


def test_scan_class_folders(pets):
    ex, report = scan_image_folder(pets)
    assert [(e.label, Path(e.path).name) for e in ex] == [
        ("cat", "c0.png"),
        ("cat", "c1.png"),
        ("cat", "c2.png"),
        ("dog", "d0.jpg"),
        ("dog", "d1.jpg"),
        ("dog", "d2.jpg"),
        ("dog", "d9.JPEG"),
    ]
    assert all(os.path.isabs(e.path) for e in ex)
    assert report.issues == [] and report.summary() == "read 7 images, kept 7"


def test_corrupt_truncated_and_tiny_skipped_with_reasons(pets):
    good = make_image(pets / "cat" / "big.jpg", size=(256, 256))
    data = good.read_bytes()
    (pets / "cat" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (pets / "dog" / "garbage.jpg").write_bytes(b"this is not a jpeg at all" * 20)
    make_image(pets / "dog" / "tiny.png", size=(2, 2))
    ex, report = scan_image_folder(pets)
    names = {Path(e.path).name for e in ex}
    assert {"truncated.jpg", "garbage.jpg", "tiny.png"}.isdisjoint(names) and "big.jpg" in names
    reasons = {i.path: i.reason for i in report.issues}
    assert set(reasons) == {"cat/truncated.jpg", "dog/garbage.jpg", "dog/tiny.png"}
    assert reasons["cat/truncated.jpg"].startswith("truncated image")
    assert reasons["dog/garbage.jpg"].startswith("not a readable image")
    assert reasons["dog/tiny.png"] == "too small: 2x2 pixels (minimum 8)"
    assert all(i.action == "skipped" and i.line is None for i in report.issues)
    assert report.rows_read == 11 and report.rows_kept == 8
    assert str(next(i for i in report.issues if i.path == "dog/tiny.png")) == (
        "dog/tiny.png: too small: 2x2 pixels (minimum 8) (skipped)"
    )


def test_verify_off_keeps_everything_with_an_image_suffix(pets):
    (pets / "dog" / "garbage.jpg").write_bytes(b"junk")
    ex, report = scan_image_folder(pets, verify=False)
    assert len(ex) == 8 and not report.issues


def test_load_image_rgb_and_errors(tmp_path):
    gray = make_image(tmp_path / "g.png", mode="L", color=128)
    rgba = make_image(tmp_path / "a.png", mode="RGBA", color=(1, 2, 3, 0))
    pal = tmp_path / "p.gif"
    Image.new("P", (10, 10)).save(pal, transparency=0)
    for p, size in ((gray, (16, 12)), (rgba, (16, 12)), (pal, (10, 10))):
        img = load_image(str(p))
        assert (img.mode, img.size) == ("RGB", size)
    err = data_error(load_image, str(tmp_path / "gone.jpg"))
    assert "gone.jpg" in err.message
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    err = data_error(load_image, str(bad))
    assert "bad.jpg" in err.message
    good = make_image(tmp_path / "big.jpg", size=(256, 256))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:600])
    err = data_error(load_image, str(cut))
    assert "cut.jpg" in err.message


def test_load_image_applies_exif_rotation(tmp_path):
    p = tmp_path / "rot.jpg"
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(p, exif=exif)
    assert load_image(str(p)).size == (20, 40)


def test_folder_without_class_folders(tmp_path):
    root = tmp_path / "flat"
    make_image(root / "a.png")
    make_image(root / "b.png")
    err = data_error(scan_image_folder, root)
    assert "not sorted into class folders" in err.message and "sub-folder per class" in err.hint


def test_empty_folder_and_folders_without_images(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    err = data_error(scan_image_folder, root)
    assert "no class sub-folders" in err.message and "sub-folder per class" in err.hint
    (root / "cat").mkdir()
    (root / "dog").mkdir()
    (root / "dog" / "readme.md").write_text("hi")
    err = data_error(scan_image_folder, root)
    assert "no images found" in err.message and ".jpg" in err.hint


def test_all_images_corrupt(tmp_path):
    root = tmp_path / "broken"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        (root / cls / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    err = data_error(scan_image_folder, root)
    assert "no usable images" in err.message and "a/x.png" in err.hint


def test_missing_path_and_file_instead_of_folder(tmp_path):
    err = data_error(scan_image_folder, tmp_path / "nope")
    assert "not found" in err.message
    f = make_image(tmp_path / "one.png")
    err = data_error(scan_image_folder, f)
    assert "is a file" in err.message


def test_loose_images_and_empty_class_reported(pets):
    make_image(pets / "stray.png")
    (pets / "bird").mkdir()
    ex, report = scan_image_folder(pets)
    assert {e.label for e in ex} == {"cat", "dog"}
    got = {(i.path, i.action, i.category) for i in report.issues}
    assert ("stray.png", "skipped", "not in a class folder") in got
    assert ("bird/", "warning", "class folder has no images (ignored)") in got


@pytest.mark.timeout(20)
def test_symlink_loop_does_not_hang(pets):
    try:
        os.symlink(pets / "cat", pets / "cat" / "loop", target_is_directory=True)
        os.symlink(pets, pets / "dog" / "up", target_is_directory=True)
        os.symlink(pets, pets / "root_again", target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("symlinks not available")
    ex, report = scan_image_folder(pets)
    assert len(ex) == 7 and {e.label for e in ex} == {"cat", "dog"}
    assert any(i.path == "root_again/" and i.action == "warning" for i in report.issues)


def test_max_items_takes_classes_in_turn(tmp_path):
    root = tmp_path / "many"
    for cls in ("a", "b", "c"):
        for i in range(20):
            make_image(root / cls / f"{i:02d}.png")
    (root / "a" / "00.png").write_bytes(b"broken")  # a bad one inside the sample is replaced
    ex, report = scan_image_folder(root, max_items=6)
    assert len(ex) == 6 and sorted({e.label for e in ex}) == ["a", "b", "c"]
    assert report.limit_reached and "stopped at max_items" in report.summary()
    assert [i.path for i in report.issues] == ["a/00.png"]
    calls = []
    ex, report = scan_image_folder(root, progress=lambda done, total: calls.append((done, total)))  # thread pool
    assert len(ex) == 59 and not report.limit_reached
    assert calls[0] == (0, 60) and calls[-1] == (60, 60)
    err = data_error(scan_image_folder, root, max_items=0)
    assert "max_items" in err.message


def test_progress_callback_can_cancel(pets):
    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        scan_image_folder(pets, progress=cancel)


def test_every_common_format_decodes_to_the_same_pixels_for_training_and_prediction(tmp_path):
    """The decoded training cache (torchvision, Pillow where torchvision cannot) and ``load_image``
    (Pillow, used for predictions) must agree, for the formats users' folders hold: 16-bit grey PNG
    (Pillow alone would clip it to white), CMYK JPEG, grey + alpha, palette GIF, WebP, TIFF, BMP."""
    import numpy as np
    import torch

    from tunedesk.engine.data.decoded import _decode_one, _fit

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8))
    images = {
        "grey16.png": Image.fromarray((rng.integers(0, 65536, size=(24, 32))).astype(np.uint16)),
        "cmyk.jpg": rgb.convert("CMYK"),
        "grey-alpha.png": rgb.convert("LA"),
        "palette.gif": rgb.convert("P"),
        "photo.webp": rgb,
        "scan.tiff": rgb,
        "old.bmp": rgb,
    }
    for name, img in images.items():
        path = tmp_path / name
        img.save(path, **({"lossless": True} if name.endswith(".webp") else {}))
        trained = _decode_one(str(path), 16)
        predicted = _fit(torch.from_numpy(np.asarray(load_image(str(path))).copy()).permute(2, 0, 1), 16)
        assert trained.dtype == torch.uint8 and trained.shape == (3, 16, 16), name
        # JPEG decoders may round a colour conversion differently by a level or two
        assert (trained.int() - predicted.int()).abs().max() <= (3 if name.endswith(".jpg") else 0), name
    grey = np.asarray(load_image(str(tmp_path / "grey16.png")))
    assert 100 < grey.mean() < 156  # uniform noise over 0..65535 scaled to 0..255, not clipped to 255


def _split_layout(root: Path, parts: dict[str, int]) -> Path:
    for part, n in parts.items():
        for label, color in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
            for i in range(n):
                make_image(root / part / label / f"{i}.png", color=color)
    return root


def test_a_folder_split_into_train_and_val_keeps_its_split_and_its_classes(tmp_path):
    """pets/train/cat/... + pets/val/cat/... trained "train" against "val" as the two classes."""
    from tunedesk.engine.config import DataSpec, ModelSpec, RunConfig
    from tunedesk.engine.data.images import split_folders
    from tunedesk.engine.tasks.image_classification import ImageClassification

    root = _split_layout(tmp_path / "pets", {"train": 6, "val": 2})
    config = RunConfig(
        task="image_classification",
        model=ModelSpec("resnet18", source="torchvision", pretrained=False),
        data=DataSpec(kind="image_folder", path=str(root)),
    )
    task = ImageClassification()
    examples = task.load_examples(config)
    assert task.label_names(examples) == ["cat", "dog"]
    train, val = task.split(config, examples)
    assert (len(train), len(val)) == (12, 4)
    assert all("val" in Path(examples.paths[i]).parts for i in val)
    assert examples.warnings[0].startswith("train/ and val/ split the data already")
    # with test/ as well, val/ validates and test/ stays out; test/ alone validates
    _split_layout(root, {"test": 1})
    assert sorted(split_folders(root)) == ["test", "train", "val"]
    examples = task.load_examples(config)
    assert len(examples.paths) == 16 and "test/ is left out" in examples.warnings[0]
    only_test = _split_layout(tmp_path / "two", {"Train": 3, "TEST": 1})
    assert sorted(split_folders(only_test)) == ["test", "train"]
    # not a split layout: a class beside train/, or train/ holding images directly
    _split_layout(tmp_path / "mixed", {"train": 1, "val": 1, "other": 1})
    assert split_folders(tmp_path / "mixed") is None
    make_image(tmp_path / "flat" / "train" / "1.png")
    make_image(tmp_path / "flat" / "val" / "1.png")
    assert split_folders(tmp_path / "flat") is None


def test_a_vision_transformer_gets_the_image_size_it_was_built_for(tmp_path):
    """A ViT's position embeddings fit one input size: hparams.image_size 48 on a 32 px ViT failed the
    run with an internal error ("Input image size (48*48) doesn't match model (32*32)")."""
    import torch
    from transformers import ViTConfig, ViTModel

    from tunedesk.engine.config import DataSpec, HyperParams, ModelSpec, RunConfig
    from tunedesk.engine.run.runner import prepare

    vit = tmp_path / "tiny-vit"
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    ViTModel(config).save_pretrained(vit)
    root = _split_layout(tmp_path / "pets", {"train": 3, "val": 1})
    run = RunConfig(
        task="image_classification",
        model=ModelSpec(str(vit), source="hf"),
        data=DataSpec(kind="image_folder", path=str(root)),
        hparams=HyperParams(image_size=48),
    )
    prep = prepare(run)
    assert prep.data.train[0]["pixel_values"].shape[-2:] == (32, 32)
    assert any(w.startswith("images are 32 px, the size this model was built for") for w in prep.warnings)
    with torch.no_grad():
        prep.task.forward(prep.loaded.model.eval(), {"pixel_values": prep.data.train[0]["pixel_values"][None]})
