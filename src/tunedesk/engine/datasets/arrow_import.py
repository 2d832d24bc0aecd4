"""Imports from Parquet/Arrow sources and Hugging Face datasets caches (see ``tunedesk.engine.data.arrow``).

Same contract as the other importers (``importers.run_import`` drives them): rows streamed in record
batches, per-row problems in the report, class numbers turned into their ``ClassLabel`` names, and
images stored as bytes written once into the content-addressed ``images/`` folder next to the
database, from where the usual image inspection (hashes, sizes, corrupt files) reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunedesk.engine.data.arrow import ArrowSource, image_file
from tunedesk.engine.data.report import DataReport
from tunedesk.engine.data.text import _missing_columns_error
from tunedesk.engine.errors import DataError

IMAGES_FOLDER = "images"  # next to the database: <home>/images/ab/ab12....png


def _columns(source: ArrowSource, wanted: list[tuple[str, str, str]]) -> list[str]:
    """The actual column names for (field, wanted name, what) triples; DataError naming what is missing."""
    found, missing = [], []
    for field_name, name, what in wanted:
        col = source.column(name) if name else None
        if col is None:
            missing.append((field_name, name, what))
        found.append(col)
    if missing:
        raise _missing_columns_error(source.path, source.columns, missing, "column")
    return found


def import_text(
    say: Callable[..., None],
    keep_text: Callable[[DataReport, str, str, int, bool], None],
    source: ArrowSource,
    text_column: str,
    label_column: str,
) -> DataReport:
    """Texts (and labels) of a columnar source; ``keep_text(report, text, label, row, labelled)`` stores one."""
    report = DataReport(source=str(source.path), encoding="utf-8")
    wanted = [("text_column", text_column, "text")]
    if label_column:
        wanted.append(("label_column", label_column, "label"))
    cols = _columns(source, wanted)
    tc, lc = cols[0], (cols[1] if label_column else None)
    if tc == lc:
        raise DataError(f"the text and label columns are both {tc!r}", "choose two different columns")
    row_no = 0
    for batch in source.batches([c for c in (tc, lc) if c]):
        for row in batch:
            row_no += 1
            report.rows_read += 1
            text = row.get(tc)
            if text is not None and not isinstance(text, str):
                report.add(f"text is not a string: got {type(text).__name__}", row_no)
                continue
            label = source.label_of(lc, row.get(lc)) if lc else ""
            if label is None:
                report.add(f"label is not a single value: got {type(row.get(lc)).__name__}", row_no)
                continue
            keep_text(report, text or "", label, row_no, lc is not None)
        say(row_no, source.num_rows, f"reading {source.display}: {row_no:,} rows")
    if row_no == 0:
        raise DataError(f"{source.display} has no rows", "choose a data set with one example per row")
    return report


def image_todo(
    say: Callable[..., None],
    source: ArrowSource,
    image_column: str,
    label_column: str,
    folder: Path,
    report: DataReport,
) -> list[tuple[str, str]]:
    """(label, file) per row; image bytes are written into ``folder`` (content-addressed) on the way."""
    wanted = [("file_column", image_column, "image")]
    if label_column:
        wanted.append(("label_column", label_column, "label"))
    cols = _columns(source, wanted)
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
                report.add(f"label is not a single value: got {type(row.get(lc)).__name__}", row_no)
                continue
            path = image_file(row.get(ic), folder, base)
            if path is None:
                report.add("no image in this row", row_no)
                continue
            if lc and not label:
                report.add("blank label: imported without a label", row_no, "warning")
            todo.append((label, path))
        say(row_no, source.num_rows, f"unpacking images: {row_no:,} of {source.num_rows:,}")
    if not todo:
        raise DataError(f"{source.display} holds no images in the column {ic!r}", "choose the image column")
    return todo
