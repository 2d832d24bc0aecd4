"""The first rows of a table file, for the import dialog: columns, a guess at the text and label
columns, and the detected encoding (with alternatives when the guess is not certain)."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from tunedesk.engine.data import arrow
from tunedesk.engine.data.arrow import ArrowSource
from tunedesk.engine.data.report import DataReport
from tunedesk.engine.data.text import (
    LABEL_NAMES,
    TEXT_NAMES,
    _check_file,
    _decode_error,
    _resolve_encoding,
    _table_format,
    iter_table_records,
)
from tunedesk.engine.errors import DataError

ENCODING_CHOICES = ("utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16", "cp1250", "cp1251", "mac_roman")


@dataclass
class TablePreview:
    path: str
    format: str  # "csv" | "jsonl"
    encoding: str
    encoding_confident: bool
    columns: list[str]
    rows: list[list[str]]  # first rows, as text, one entry per column
    text_column: str | None  # best guess
    label_column: str | None
    size_bytes: int
    encoding_choices: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # rows of the preview that could not be read
    image_column: str | None = None  # Parquet/Arrow: a column of images (bytes), best guess
    total_rows: int | None = None  # Parquet/Arrow: known without reading the rows
    splits: dict[str, int] = field(default_factory=dict)  # Hugging Face cache: rows per split


def _guess(columns: list[str], rows: list[list[str]]) -> tuple[str | None, str | None]:
    folded = [c.casefold() for c in columns]

    def named(names: tuple[str, ...]) -> int | None:
        for n in names:
            if n in folded:
                return folded.index(n)
        return None

    ti, li = named(TEXT_NAMES), named(LABEL_NAMES)
    if ti is None and columns:
        # the column with the longest texts on average
        lengths = [sum(len(r[i]) for r in rows if i < len(r)) for i in range(len(columns))]
        ti = max(range(len(columns)), key=lambda i: (lengths[i], -i) if i != li else (-1, 0))
    if li is None and len(columns) > 1:
        # the column (other than the text) with the fewest distinct values, at least 2
        best = None
        for i in range(len(columns)):
            if i == ti:
                continue
            values = [r[i] for r in rows if i < len(r)]
            distinct = len(set(values))
            name = folded[i]
            id_like = name in ("id", "index", "#", "key", "uuid") or name.endswith(("_id", " id"))
            numeric = all(v.strip().lstrip("-").replace(".", "", 1).isdigit() for v in values if v.strip())
            score = (distinct < 2, id_like, numeric, distinct)
            if best is None or score < best[0]:
                best = (score, i)
        li = best[1] if best else None
    return (columns[ti] if ti is not None else None), (columns[li] if li is not None else None)


def guess_arrow_columns(source: ArrowSource) -> tuple[str | None, str | None, str | None]:
    """(text, label, image) column guesses for a columnar source: ClassLabel and usual names first,
    then the column roles (strings, numbers, images)."""

    def named(names: tuple[str, ...], roles: tuple[str, ...]) -> str | None:
        for n in names:
            col = source.column(n)
            if col is not None and source.roles[col] in roles:
                return col
        return None

    def id_like(col: str) -> bool:
        name = col.casefold()
        return name in ("id", "index", "idx", "key", "uuid") or name.endswith(("_id", " id"))

    image = named(("image", "img", "picture", "photo"), ("image",)) or next(
        (c for c in source.columns if source.roles[c] == "image"), None
    )
    label = next((c for c in source.columns if c in source.class_names), None)
    label = label or named(LABEL_NAMES, ("text", "number", "label"))
    text = named(TEXT_NAMES, ("text",)) or next(
        (c for c in source.columns if source.roles[c] == "text" and c != label and not id_like(c)), None
    )
    if label is None:
        label = next(
            (c for c in source.columns if c != text and source.roles[c] in ("text", "number") and not id_like(c)), None
        )
    return text, label, image


def preview_arrow(path: str | Path, max_rows: int = 50) -> TablePreview:
    """The first rows of a Parquet/Arrow source (or a Hugging Face datasets cache folder), its columns
    and guesses for the text, label and image columns."""
    source = arrow.open_source(path)
    text, label, image = guess_arrow_columns(source)
    rows: list[list[str]] = []
    for batch in source.batches(source.columns, batch_size=max_rows):
        for row in batch[: max_rows - len(rows)]:
            cells = []
            for c in source.columns:
                value = row.get(c)
                if c in source.class_names and isinstance(value, int):
                    cells.append(source.label_of(c, value) or "")
                else:
                    cells.append(arrow.cell_text(value, source.roles[c]))
            rows.append(cells)
        if len(rows) >= max_rows:
            break
    size = sum(f.stat().st_size for f in source.files)
    fmt = "parquet" if source.files[0].suffix.lower() == ".parquet" else "arrow"
    return TablePreview(
        str(source.path),
        fmt,
        "utf-8",
        True,
        source.columns,
        rows,
        text,
        label,
        size,
        image_column=image,
        total_rows=source.num_rows,
        splits=dict(source.splits),
    )


def preview_table(path: str | Path, encoding: str | None = None, max_rows: int = 50) -> TablePreview:
    """Read the first ``max_rows`` records of a CSV/TSV/JSONL file (DataError for a file that cannot
    be a table). ``encoding=None`` detects it: the whole file is streamed once to check UTF-8, so a
    several-GB file takes a few seconds; run this off the GUI thread. Parquet/Arrow sources and
    Hugging Face datasets cache folders go through ``preview_arrow``."""
    if arrow.is_arrow_source(path):
        return preview_arrow(path, max_rows)
    path = Path(path).expanduser()
    _check_file(path)
    fmt = _table_format(path)
    enc, confident, forced = _resolve_encoding(path, encoding)
    report = DataReport(source=os.path.abspath(path), encoding=enc)
    columns: list[str] = []
    rows: list[list[str]] = []
    try:
        records = iter_table_records(path, enc, fmt, report)
        if fmt == "csv":
            first = next(records, None)
            if first is None:
                raise DataError(
                    f"{path.name} is empty", "add a header row naming the columns, then one example per row"
                )
            columns = list(first[2])
            for _, _, row in itertools.islice(records, max_rows):
                rows.append([row[i] if i < len(row) else "" for i in range(len(columns))])
        else:
            objects = [v for _, _, v in itertools.islice(records, max_rows) if isinstance(v, dict)]
            keys: dict[str, None] = {}
            for obj in objects:
                for k in obj:
                    keys.setdefault(str(k), None)
            columns = list(keys)
            rows = [[_cell(obj.get(c)) for c in columns] for obj in objects]
    except UnicodeDecodeError:
        raise _decode_error(path, enc, forced) from None
    if not columns:
        raise DataError(f"{path.name} has no columns", "the first row must be a header naming the columns")
    text_col, label_col = _guess(columns, rows)
    choices = [] if confident else list(dict.fromkeys([enc, *ENCODING_CHOICES]))
    return TablePreview(
        str(path),
        fmt,
        enc,
        confident,
        columns,
        rows,
        text_col,
        label_col,
        path.stat().st_size,
        choices,
        [str(i) for i in report.issues[:10]],
    )


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, ensure_ascii=False)[:500]
    return str(value)
