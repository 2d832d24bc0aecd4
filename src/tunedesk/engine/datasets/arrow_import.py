"""Imports from Parquet/Arrow sources and Hugging Face datasets caches (see ``tunedesk.engine.data.arrow``).

Same contract as the other importers (``importers.run_import`` drives them): rows streamed in record
batches, per-row problems in the report, class numbers turned into their ``ClassLabel`` names, and
images stored as bytes written once into the content-addressed ``images/`` folder next to the
database, from where the usual image inspection (hashes, sizes, corrupt files) reads them.
"""

from __future__ import annotations

from collections.abc import Callable

from tunedesk.engine.data.arrow import ArrowSource
from tunedesk.engine.data.report import DataReport
from tunedesk.engine.errors import DataError

IMAGES_FOLDER = "images"  # next to the database: <home>/images/ab/ab12....png (data.arrow.image_rows)


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
    cols = source.columns_for(wanted)
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
                report.add(f"label is not a single value: got {type(row.get(lc or '')).__name__}", row_no)
                continue
            keep_text(report, text or "", label, row_no, lc is not None)
        say(row_no, source.num_rows, f"reading {source.display}: {row_no:,} rows")
    if row_no == 0:
        raise DataError(f"{source.display} has no rows", "choose a data set with one example per row")
    return report
