"""Columnar data: Parquet files and Hugging Face ``datasets`` caches (Arrow files), read with pyarrow.

A source is a ``.parquet`` / ``.arrow`` file, a folder of them, or a data set folder in the local
Hugging Face datasets cache (``~/.cache/huggingface/datasets/<name>/<config>/<version>/<hash>/`` with
``dataset_info.json`` and ``<name>-<split>[-NNNNN-of-NNNNN].arrow`` files in Arrow's stream format).
Rows are streamed in record batches, so a large file is never held in memory.

Column roles follow the ``datasets`` features stored with the data (``ClassLabel`` names turn label
numbers back into class names, ``Image`` columns hold ``{"bytes", "path"}``); without them a column
of binary values (or of structs with ``bytes``) is an image column. Images stored as bytes are written
once into a content-addressed folder (``<hash>.<ext>``) so the rest of TuneDesk, which reads images
from files, sees ordinary files; the same bytes always get the same file, so versions stay valid.

pyarrow is an optional extra (``pip install 'tunedesk[parquet]'``): it is a 40 MB library that CSV,
JSONL and image folders do not need. Without it, these sources raise a DataError saying what to install.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunedesk.engine.data.report import DataReport
from tunedesk.engine.errors import DataError

ARROW_SUFFIXES = (".parquet", ".arrow")
PYARROW_HINT = "pip install pyarrow  (or pip install 'tunedesk[parquet]')"
INFO_FILE = "dataset_info.json"
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)


def is_arrow_source(path: str | Path) -> bool:
    """A Parquet/Arrow file, a folder holding them, or a Hugging Face datasets cache folder."""
    p = Path(path).expanduser()
    if p.is_file():
        return p.suffix.lower() in ARROW_SUFFIXES
    if not p.is_dir():
        return False
    if (p / INFO_FILE).is_file():
        return True
    try:
        return any(e.name.lower().endswith(ARROW_SUFFIXES) and e.is_file() for e in os.scandir(p))
    except OSError:
        return False


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError as exc:
        raise DataError(
            "reading Parquet and Arrow files needs the pyarrow package, which is not installed", PYARROW_HINT
        ) from exc
    return pyarrow


@dataclass
class ArrowSource:
    """One columnar data set: its files, columns, the role of each column and the class names."""

    path: Path
    files: list[Path]
    columns: list[str]
    roles: dict[str, str]  # column -> "text" | "label" | "image" | "number" | "other"
    class_names: dict[str, list[str]] = field(default_factory=dict)  # ClassLabel columns
    num_rows: int = 0
    splits: dict[str, int] = field(default_factory=dict)  # HF cache: split -> rows

    @property
    def display(self) -> str:
        return self.path.name or str(self.path)

    def column(self, wanted: str) -> str | None:
        """The column named ``wanted`` (exact, else case-insensitive)."""
        if wanted in self.columns:
            return wanted
        folded = {c.casefold(): c for c in self.columns}
        return folded.get(wanted.casefold())

    def batches(self, columns: list[str], batch_size: int = 1024) -> Iterator[list[dict[str, Any]]]:
        """Rows of the chosen columns, a list of dicts per record batch, file after file."""
        pa = _pyarrow()
        for f in self.files:
            try:
                if f.suffix.lower() == ".parquet":
                    pf = pa.parquet.ParquetFile(str(f))
                    for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
                        yield batch.to_pylist()
                else:
                    with _open_ipc(pa, f) as reader:
                        for batch in reader:
                            yield batch.select(columns).to_pylist()
            except (OSError, pa.ArrowException) as exc:
                raise DataError(f"cannot read {f.name}: {exc}", "the file may be incomplete: copy it again") from exc

    def columns_for(self, wanted: list[tuple[str, str, str]]) -> list[str]:
        """The actual names for (setting, wanted name, what) triples; DataError naming what is missing."""
        found: list[str] = []
        missing: list[str] = []
        for setting, name, what in wanted:
            col = self.column(name) if name else None
            if col is None:
                missing.append(f"{setting} {name!r} ({what})")
            else:
                found.append(col)
        if missing:
            raise DataError(
                f"{self.display} has no column {' and no column '.join(missing)}",
                f"its columns are: {', '.join(repr(c) for c in self.columns)}; choose the right ones",
            )
        return found

    def label_of(self, column: str, value: Any) -> str | None:
        """A label cell as text (class numbers become their ClassLabel names); None when not a single value."""
        if value is None:
            return ""
        names = self.class_names.get(column)
        if names is not None and isinstance(value, int) and not isinstance(value, bool):
            return names[value] if 0 <= value < len(names) else ("" if value < 0 else str(value))
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value).strip()
        return None


class _open_ipc:  # noqa: N801 - used as a context manager, reads like a function
    """An Arrow IPC reader: the stream format (``datasets`` writes it), else the file format."""

    def __init__(self, pa: Any, path: Path) -> None:
        self.pa, self.path = pa, path
        self.source: Any = None

    def __enter__(self) -> Any:
        self.source = self.pa.memory_map(str(self.path), "r")
        try:
            return self.pa.ipc.open_stream(self.source)
        except self.pa.ArrowInvalid:
            return _FileBatches(self.pa.ipc.open_file(self.source))

    def __exit__(self, *exc: object) -> None:
        self.source.close()


class _FileBatches:
    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def __iter__(self) -> Iterator[Any]:
        for i in range(self.reader.num_record_batches):
            yield self.reader.get_batch(i)


def _files_of(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in ARROW_SUFFIXES)
    # a datasets cache folder also holds cache-*.arrow files of map()/filter() results: not the data
    return [p for p in files if not p.name.startswith("cache-")]


def _features(pa: Any, path: Path, first: Path) -> dict[str, Any]:
    """The ``datasets`` features: dataset_info.json of a cache folder, else the schema's metadata."""
    info = path / INFO_FILE if path.is_dir() else None
    if info is not None and info.is_file():
        try:
            data = json.loads(info.read_text(encoding="utf-8"))
            if isinstance(data.get("features"), dict):
                return data["features"]
        except (OSError, ValueError):
            pass
    schema = _schema(pa, first)
    meta = (schema.metadata or {}).get(b"huggingface")
    if meta:
        try:
            data = json.loads(meta)
            features = (data.get("info") or {}).get("features")
            if isinstance(features, dict):
                return features
        except ValueError:
            pass
    return {}


def _schema(pa: Any, f: Path) -> Any:
    if f.suffix.lower() == ".parquet":
        return pa.parquet.read_schema(str(f))
    with _open_ipc(pa, f) as reader:
        return reader.schema


def _role(pa: Any, arrow_type: Any, feature: Any) -> str:
    kind = feature.get("_type") if isinstance(feature, dict) else None
    if kind == "ClassLabel":
        return "label"
    if kind == "Image":
        return "image"
    t = pa.types
    if t.is_binary(arrow_type) or t.is_large_binary(arrow_type):
        return "image"
    if t.is_struct(arrow_type) and arrow_type.get_field_index("bytes") >= 0:
        return "image"
    if t.is_string(arrow_type) or t.is_large_string(arrow_type) or t.is_dictionary(arrow_type):
        return "text"
    if t.is_integer(arrow_type) or t.is_boolean(arrow_type):
        return "number"
    if t.is_floating(arrow_type):
        return "number"
    return "other"


def open_source(path: str | Path) -> ArrowSource:
    """Describe a Parquet/Arrow source (files, columns, roles, class names) without reading its rows."""
    pa = _pyarrow()
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"not found: {p}", "check the path")
    files = _files_of(p)
    if not files:
        raise DataError(
            f"{p} holds no .parquet or .arrow files",
            "choose a Parquet file, or a Hugging Face data set folder in the datasets cache",
        )
    try:
        schema = _schema(pa, files[0])
        features = _features(pa, p, files[0])
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read {files[0].name}: {exc}", "the file may be incomplete: copy it again") from exc
    columns = [f.name for f in schema]
    roles = {f.name: _role(pa, f.type, features.get(f.name)) for f in schema}
    class_names = {
        name: list(feature["names"])
        for name, feature in features.items()
        if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list)
    }
    rows = 0
    splits: dict[str, int] = {}
    for f in files:
        try:
            if f.suffix.lower() == ".parquet":
                n = pa.parquet.ParquetFile(str(f)).metadata.num_rows
            else:
                with _open_ipc(pa, f) as reader:
                    n = sum(b.num_rows for b in reader)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot read {f.name}: {exc}", "the file may be incomplete: copy it again") from exc
        rows += n
        split = _split_of(f)
        if split:
            splits[split] = splits.get(split, 0) + n
    return ArrowSource(p, files, columns, roles, class_names, rows, splits)


def _split_of(f: Path) -> str | None:
    """``imdb-train-00000-of-00002.arrow`` -> train; ``train-00000-of-00001.parquet`` -> train."""
    parts = f.stem.split("-")
    for split in ("train", "validation", "valid", "test", "unsupervised"):
        if split in parts:
            return split
    return None


def cell_text(value: Any, role: str) -> str:
    """A cell as preview text (images as a size, long texts cut)."""
    if value is None:
        return ""
    if role == "image":
        data = value.get("bytes") if isinstance(value, dict) else value
        if isinstance(data, (bytes, bytearray)):
            return f"[image, {len(data):,} bytes]"
        path = value.get("path") if isinstance(value, dict) else None
        return f"[image file {path}]" if path else "[no image]"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)[:500]
    return str(value)[:2000]


# ---- images stored as bytes ----------------------------------------------------------------------------


def image_suffix(data: bytes, name: str | None = None) -> str:
    for magic, suffix in _MAGIC:
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if name and Path(name).suffix:
        return Path(name).suffix.lower()
    return ".png"  # unknown bytes: PIL will say it cannot decode them, and the item is flagged


def image_file(value: Any, folder: Path, base: Path | None = None) -> str | None:
    """The file behind an image cell: bytes are written once to ``folder/<sha256>.<ext>`` (atomically);
    a cell holding only a path gets that path (relative to ``base``). None for an empty cell."""
    data = value.get("bytes") if isinstance(value, dict) else value
    name = value.get("path") if isinstance(value, dict) else None
    if isinstance(data, (bytes, bytearray)) and data:
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        target = folder / digest[:2] / f"{digest}{image_suffix(data, name)}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".img-", dir=target.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        return str(target)
    if isinstance(value, str):
        name = value
    if name:
        p = Path(name).expanduser()
        return str(p if p.is_absolute() or base is None else base / p)
    return None


# ---- the Hugging Face datasets cache -----------------------------------------------------------------


@dataclass
class CachedDataset:
    name: str  # "imdb" or "org/name"
    config: str
    path: str  # the folder to import
    rows: int
    splits: dict[str, int]


def datasets_cache_dirs() -> list[Path]:
    env = os.environ
    candidates = []
    if env.get("HF_DATASETS_CACHE"):
        candidates.append(Path(env["HF_DATASETS_CACHE"]))
    if env.get("HF_HOME"):
        candidates.append(Path(env["HF_HOME"]) / "datasets")
    xdg = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    candidates += [xdg / "huggingface" / "datasets", Path.home() / ".cache" / "huggingface" / "datasets"]
    out: list[Path] = []
    for c in candidates:
        c = c.expanduser()
        if c.is_dir() and c.resolve() not in out:
            out.append(c.resolve())
    return out


def find_cached_datasets(caches: list[Path] | None = None) -> list[CachedDataset]:
    """Every prepared data set in the local Hugging Face datasets caches (folders with dataset_info.json)."""
    found: list[CachedDataset] = []
    for cache in caches if caches is not None else datasets_cache_dirs():
        for info in sorted(cache.glob("*/*/*/*/" + INFO_FILE)):
            folder = info.parent
            if not _files_of(folder):
                continue
            try:
                data = json.loads(info.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            splits = {
                str(k): int(v.get("num_examples") or 0)
                for k, v in (data.get("splits") or {}).items()
                if isinstance(v, dict)
            }
            dataset = folder.parents[2].name.replace("___", "/")
            found.append(
                CachedDataset(
                    name=str(data.get("dataset_name") or dataset),
                    config=str(data.get("config_name") or folder.parents[1].name),
                    path=str(folder),
                    rows=sum(splits.values()),
                    splits=splits,
                )
            )
    return found


def image_rows(
    say: Callable[..., None],
    source: ArrowSource,
    image_column: str,
    label_column: str,
    folder: Path,
    report: DataReport,
    names: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """(label, file) per row; image bytes are written into ``folder`` (content-addressed) on the way.
    ``names``, when given, gets for each file the words that point the user at its row ("row 4 (4.png)"):
    a content-addressed file name means nothing to them."""
    wanted = [("file_column", image_column, "image")]
    if label_column:
        wanted.append(("label_column", label_column, "label"))
    cols = source.columns_for(wanted)
    ic, lc = cols[0], (cols[1] if label_column else None)
    if source.roles[ic] not in ("image", "text"):
        raise DataError(
            f"the column {ic!r} of {source.display} holds neither images nor file names",
            f"choose the image column ({', '.join(c for c in source.columns if source.roles[c] == 'image') or 'none found'})",
        )
    todo: list[tuple[str, str]] = []
    row_no = 0
    base = source.path if source.path.is_dir() else source.path.parent
    for batch in source.batches([c for c in (ic, lc) if c], batch_size=256):
        for row in batch:
            row_no += 1
            label: Any = source.label_of(lc, row.get(lc)) if lc else ""
            if label is None:
                report.add(f"label is not a single value: got {type(row.get(lc or '')).__name__}", row_no)
                continue
            path = image_file(row.get(ic), folder, base)
            if path is None:
                report.add("no image in this row", row_no)
                continue
            if lc and not label:
                report.add("blank label: imported without a label", row_no, "warning")
            if names is not None:
                cell = row.get(ic)
                own = cell.get("path") if isinstance(cell, dict) else cell if isinstance(cell, str) else None
                names[path] = f"row {row_no}" + (f" ({own})" if own else "")
            todo.append((label, path))
        say(row_no, source.num_rows, f"unpacking images: {row_no:,} of {source.num_rows:,}")
    if not todo:
        raise DataError(f"{source.display} holds no images in the column {ic!r}", "choose the image column")
    return todo
