"""Parquet files and Hugging Face datasets caches: previewed, imported (text and image bytes), trained from.

The files are written with pyarrow the way ``datasets`` writes them: ClassLabel names in the schema's
``huggingface`` metadata (Parquet) or in ``dataset_info.json`` (a cache folder of Arrow stream files).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from tests.fixtures.data import make_texts  # noqa: E402
from tunedesk.engine.data import arrow, read_text_table  # noqa: E402
from tunedesk.engine.datasets import DatasetStore, ImportSpec, preview_table, run_import  # noqa: E402
from tunedesk.engine.datasets import flags as F  # noqa: E402
from tunedesk.engine.errors import DataError  # noqa: E402
from tunedesk.engine.paths import database_path  # noqa: E402

CLASSES = ["account", "billing", "shipping", "technical"]


def hf_metadata(features: dict) -> dict[bytes, bytes]:
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


@pytest.fixture
def store(tmp_path):
    s = DatasetStore(database_path(tmp_path / "home"))
    yield s
    s.close()


@pytest.fixture
def text_parquet(tmp_path) -> tuple[Path, list[tuple[str, str]]]:
    rows = make_texts()
    table = pa.table(
        {
            "id": list(range(len(rows))),
            "sentence": [t for t, _ in rows],
            "label": [CLASSES.index(lab) for _, lab in rows],  # ClassLabel numbers
        }
    )
    features = {
        "id": {"dtype": "int64", "_type": "Value"},
        "sentence": {"dtype": "string", "_type": "Value"},
        "label": {"names": CLASSES, "_type": "ClassLabel"},
    }
    path = tmp_path / "tickets.parquet"
    pq.write_table(table.replace_schema_metadata(hf_metadata(features)), path, row_group_size=20)
    return path, rows


def png(rgb: tuple[int, int, int], size=(12, 10)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def image_parquet(tmp_path) -> tuple[Path, list[tuple[bytes, str]]]:
    rng = random.Random(0)
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    rows = []
    for i in range(12):
        label = list(colours)[i % 3]
        rgb = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in colours[label])
        rows.append((png(rgb, (12 + i, 10)), label))
    rows.append((b"not an image at all", "red"))  # a damaged image: imported and flagged
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([{"bytes": b, "path": f"img{i}.png"} for i, (b, _) in enumerate(rows)], type=image_type),
            "label": [lab for _, lab in rows],
        }
    )
    features = {"image": {"_type": "Image"}, "label": {"dtype": "string", "_type": "Value"}}
    path = tmp_path / "colours.parquet"
    pq.write_table(table.replace_schema_metadata(hf_metadata(features)), path)
    return path, rows


def test_text_parquet_preview_guesses_columns_and_names_classes(text_parquet):
    path, rows = text_parquet
    preview = preview_table(path)
    assert preview.format == "parquet" and preview.columns == ["id", "sentence", "label"]
    assert (preview.text_column, preview.label_column, preview.image_column) == ("sentence", "label", None)
    assert preview.total_rows == len(rows)
    assert preview.rows[0] == ["0", rows[0][0], rows[0][1]]  # class numbers shown as their names


def test_text_parquet_imports_with_class_names_flags_and_versions(store, text_parquet):
    path, rows = text_parquet
    result = run_import(store, ImportSpec("text_table", str(path), text_column="sentence", label_column="label"))
    assert result.kind == "text" and result.items == len(rows)
    assert [(it.text, it.label) for it in store.iter_items(result.dataset_id)] == rows
    assert store.classes(result.dataset_id) == sorted(set(CLASSES))
    version = store.save_version(result.dataset_id, "from parquet")
    assert version.item_count == len(rows)


def test_text_parquet_with_duplicates_gets_the_same_cleaning_flags(store, tmp_path):
    table = pa.table({"text": ["same words here", "same words here", "other words"], "label": ["a", "b", "a"]})
    path = tmp_path / "dups.parquet"
    pq.write_table(table, path)
    result = run_import(store, ImportSpec("text_table", str(path)))
    flags = [it.flags for it in store.iter_items(result.dataset_id)]
    assert flags[0] & F.EXACT_DUPLICATE and flags[1] & F.EXACT_DUPLICATE and not flags[2] & F.EXACT_DUPLICATE


def test_image_bytes_parquet_imports_files_with_sizes_and_labels(store, image_parquet, tmp_path):
    from PIL import Image

    path, rows = image_parquet
    preview = preview_table(path)
    assert preview.image_column == "image" and preview.label_column == "label"
    assert preview.rows[0][0].startswith("[image, ")
    result = run_import(store, ImportSpec("image_csv", str(path), file_column="image", label_column="label"))
    assert result.kind == "image" and result.items == len(rows)
    items = list(store.iter_items(result.dataset_id))
    assert [it.label for it in items] == [lab for _, lab in rows]
    images = tmp_path / "home" / "images"
    for it, (data, _) in zip(items[:-1], rows[:-1]):
        assert Path(it.path).is_relative_to(images) and Path(it.path).read_bytes() == data
        assert (it.width, it.height) == Image.open(it.path).size and it.height == 10
        assert not it.flags & F.UNREADABLE_IMAGE
    assert items[-1].flags & F.UNREADABLE_IMAGE  # the damaged bytes are kept and flagged, not dropped
    # the same bytes imported again reuse the same files: stored versions keep pointing at them
    again = run_import(store, ImportSpec("image_csv", str(path), file_column="image", label_column="label"))
    assert [it.path for it in store.iter_items(again.dataset_id)] == [it.path for it in items]


def test_a_missing_column_is_named_with_the_columns_found(store, text_parquet):
    with pytest.raises(DataError, match="sentence") as err:
        run_import(store, ImportSpec("text_table", str(text_parquet[0]), text_column="body"))
    assert "body" in str(err.value)


def test_training_reads_parquet_through_text_table(text_parquet):
    path, rows = text_parquet
    examples, report = read_text_table(path, "sentence", "label", max_items=10)
    assert [(e.text, e.label) for e in examples] == rows[:10] and report.limit_reached


def make_hf_cache(root: Path) -> Path:
    """``datasets``' cache layout: <org>___<name>/<config>/<version>/<hash>/ with Arrow stream files."""
    folder = root / "acme___tickets" / "default" / "0.0.0" / "abc123"
    folder.mkdir(parents=True)
    rows = make_texts()
    splits = {"train": rows[:80], "test": rows[80:]}
    info = {
        "dataset_name": "acme/tickets",
        "config_name": "default",
        "features": {
            "text": {"dtype": "string", "_type": "Value"},
            "label": {"names": CLASSES, "_type": "ClassLabel"},
        },
        "splits": {name: {"name": name, "num_examples": len(r)} for name, r in splits.items()},
    }
    (folder / "dataset_info.json").write_text(json.dumps(info))
    for name, part in splits.items():
        table = pa.table({"text": [t for t, _ in part], "label": [CLASSES.index(lab) for _, lab in part]})
        with pa.OSFile(str(folder / f"tickets-{name}.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            for batch in table.to_batches(max_chunksize=25):
                w.write_batch(batch)
    (folder / "cache-0123abcd.arrow").write_bytes(b"a map() cache, not data")
    return folder


def test_hf_datasets_cache_is_found_previewed_and_imported(store, tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "datasets"
    folder = make_hf_cache(cache)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    found = arrow.find_cached_datasets()
    assert [(d.name, d.config, d.path, d.rows) for d in found] == [("acme/tickets", "default", str(folder), 96)]
    assert found[0].splits == {"train": 80, "test": 16}
    preview = preview_table(folder)
    assert preview.format == "arrow" and preview.splits == {"test": 16, "train": 80}
    assert (preview.text_column, preview.label_column) == ("text", "label")
    result = run_import(store, ImportSpec("text_table", str(folder), name="tickets"))
    assert result.items == 96
    labels = {it.label for it in store.iter_items(result.dataset_id)}
    assert labels == set(CLASSES)


def test_without_pyarrow_the_error_says_what_to_install(text_parquet, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(DataError, match="pyarrow") as err:
        preview_table(text_parquet[0])
    assert "tunedesk[parquet]" in err.value.hint


def _image_table_examples(path):
    from tunedesk.engine import tasks
    from tunedesk.engine.config import DataSpec, ModelSpec, RunConfig

    config = RunConfig(
        task="image_classification",
        model=ModelSpec("resnet18", source="torchvision"),
        data=DataSpec(kind="image_table", path=str(path)),
    ).validate()
    return tasks.get("image_classification").load_examples(config)


def test_image_table_runs_read_image_bytes_and_leave_out_damaged_ones(image_parquet, home):
    path, rows = image_parquet
    examples = _image_table_examples(path)
    assert examples.labels == [lab for _, lab in rows[:-1]]  # the damaged last row is reported, not used
    assert all(Path(p).is_relative_to(home / "images") for p in examples.paths)
    assert examples.summary == "read 13 images, kept 12; 1 skipped (1 not a readable image)"


def test_image_table_problems_name_the_row_not_the_unpacked_file(tmp_path, home):
    """A damaged image in a Parquet file was reported under its content hash ('795b...png'), a row naming
    a missing file as 'file disappeared while scanning', and a blank label twice."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    def png(i: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (24, 24), (i * 20 % 256, 90, 30)).save(buf, "PNG")
        return buf.getvalue()

    cells = [{"bytes": png(i), "path": f"{i}.png"} for i in range(12)]
    cells[3] = {"bytes": b"not an image", "path": "3.png"}
    cells[4] = {"bytes": None, "path": "gone/4.png"}
    labels = ["a", "b"] * 6
    labels[5] = ""
    path = tmp_path / "photos.parquet"
    pq.write_table(pa.table({"image": cells, "label": labels}), path)
    examples = _image_table_examples(path)
    assert len(examples.paths) == 9
    warnings = examples.warnings
    assert any(w.startswith("photos.parquet row 4 (3.png): not a readable image") for w in warnings), warnings
    assert any(w.startswith("photos.parquet row 5 (gone/4.png): image file not found: ") for w in warnings)
    assert [w for w in warnings if "blank label" in w] == ["photos.parquet line 6: blank label (skipped)"]
