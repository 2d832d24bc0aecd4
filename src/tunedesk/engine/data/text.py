"""Read labelled text tables (CSV, TSV, JSON Lines) into examples, with a report of every row left out.

Files are streamed: rows are decoded and parsed line by line, and only the kept examples are held
in memory. Line numbers are physical lines in the file (1-based) so users can jump to them in an
editor; for a CSV record with quoted newlines it is the line where the record starts.

``iter_table_records`` is the lower layer (raw records, no validation): the dataset editor can
import from it directly.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunedesk.engine.data.arrow import is_arrow_source, open_source
from tunedesk.engine.data.encoding import detect_encoding, first_decode_error, missing_bom, normalize_encoding
from tunedesk.engine.data.report import DataReport
from tunedesk.engine.errors import DataError

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
JSONL_SUFFIXES = (".jsonl", ".jsonlines", ".json-lines", ".ndjson")
TABLE_SUFFIXES = tuple(CSV_SUFFIXES) + JSONL_SUFFIXES

_LONG_RECORD_LINES = 100  # a record spanning more physical lines than this smells of a stray quote
_JSONL_KEY_PROBE = 1000  # objects looked at before deciding a JSONL column does not exist
_FIELD_LIMIT = 64 << 20  # csv's default 128 KiB per field is too small for long documents


@dataclass(slots=True)
class TextExample:
    text: str
    label: str
    line: int  # physical line in the source file where the record starts (1-based)


def _display(path: Path) -> str:
    return path.name or str(path)


def _table_format(path: Path) -> str:
    """'csv' or 'jsonl' from the suffix; DataError with a hint for anything else."""
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".json":
        hint = (
            'TuneDesk reads JSON Lines: one object per line, like {"text": "...", "label": "..."}; '
            "save the file as .jsonl"
        )
    elif suffix in (".txt", ".text", ""):
        hint = "save the table as .csv (comma-separated) or .tsv (tab-separated) with a header row"
    elif suffix in (".xlsx", ".xls", ".ods", ".numbers"):
        hint = "export the sheet from your spreadsheet program as CSV UTF-8 (.csv)"
    else:
        hint = "use a .csv, .tsv, .jsonl or .parquet file with one example per row"
    raise DataError(f"{_display(path)}: unsupported file type {suffix or '(no suffix)'!r}", hint)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(
            f"data file not found: {path}",
            "check the path; if the file is on a removable or network drive, make sure it is connected",
        )
    if path.is_dir():
        raise DataError(
            f"{path} is a folder, not a table file",
            "choose the .csv/.tsv/.jsonl file inside it, or use the image folder data kind for "
            "a folder with one sub-folder of images per class",
        )
    if not path.is_file():
        raise DataError(f"{path} is not a regular file", "choose a .csv, .tsv or .jsonl file")


def _refuse_binary(path: Path, encoding: str) -> None:
    """A file that is not text at all (an image, an archive, a model) renamed or picked by mistake."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError:
        return  # the reader reports it
    text = head.decode(encoding, errors="replace")
    if not text:
        return
    bad = sum(1 for ch in text if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r\f") or 127 <= ord(ch) < 160)
    if bad / len(text) > 0.05:
        raise DataError(
            f"{_display(path)} is not a text table: it holds binary data ({bad} control or undecodable "
            f"characters in its first {len(head)} bytes)",
            "choose the .csv/.tsv/.jsonl file with your examples; a spreadsheet must be exported as CSV first",
        )


def _resolve_encoding(path: Path, encoding: str | None) -> tuple[str, bool, bool]:
    """(encoding, confident, forced)."""
    if encoding and encoding.lower() != "auto":
        return given_encoding(path, encoding), True, True
    try:
        enc, confident = detect_encoding(path)
    except OSError as e:
        raise DataError(f"cannot read {_display(path)}: {e.strerror or e}", "check the file permissions") from None
    return enc, confident, False


def given_encoding(path: Path, encoding: str) -> str:
    """The encoding a user set for ``path``, normalised; a DataError for an unknown name, or for plain
    "utf-16" / "utf-32" on a file without a byte-order mark (its byte order is unknown)."""
    try:
        enc = normalize_encoding(encoding)
    except LookupError:
        raise DataError(
            f"unknown encoding {encoding!r}",
            "use a Python codec name such as utf-8, cp1252, latin-1 or utf-16, or leave the encoding "
            "empty to detect it",
        ) from None
    _refuse_missing_bom(path, enc)
    return enc


def _refuse_missing_bom(path: Path, encoding: str) -> None:
    try:
        missing = missing_bom(path, encoding)
    except OSError as e:
        raise DataError(f"cannot read {_display(path)}: {e.strerror or e}", "check the file permissions") from None
    if missing:
        raise DataError(
            f"{_display(path)} has no byte-order mark, which the given encoding {encoding!r} needs to know "
            "the byte order",
            f'if the file is {encoding.upper()} without a mark, set encoding="{encoding}-le" (Windows) or '
            f'"{encoding}-be"; otherwise leave the encoding empty to detect it',
        )


def _decode_error(path: Path, encoding: str, forced: bool) -> DataError:
    where = ""
    try:
        found = first_decode_error(path, encoding)
    except (OSError, LookupError):
        found = None
    if found is not None:
        offset, line, bad = found
        where = f": byte 0x{bad[:1].hex().upper()} at line {line} (byte offset {offset})"
    if encoding.replace("_", "-").startswith("utf-8"):
        fix = 'the file is probably not UTF-8: set encoding="cp1252" (Windows/Excel exports)'
    elif encoding in ("cp1252", "windows-1252"):
        fix = 'set encoding="latin-1" or the encoding the file was saved with'
    else:
        fix = 'set encoding="utf-8" or "cp1252", whichever the file was saved with'
    how = "given" if forced else "detected"
    return DataError(
        f"cannot decode {_display(path)} as {encoding} ({how} encoding){where}",
        f"{fix}, or re-save the file as UTF-8",
    )


def _sniff_delimiter(path: Path, encoding: str, default: str) -> str:
    """A '.csv' from a European Excel is often ';'-separated: look at the header line only."""
    if default != ",":
        return default
    with open(path, encoding=encoding, newline="") as f:
        for raw in f:
            if raw.strip():
                if "," not in raw:
                    for d in (";", "\t", "|"):
                        if d in raw:
                            return d
                return default
    return default


def iter_table_records(path: Path, encoding: str, fmt: str, report: DataReport) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(start_line, end_line, record)`` for each non-blank record.

    CSV: the first record is the header (a list of column names, BOM and spaces stripped), then
    lists of fields. JSONL: parsed values (usually dicts); lines that are not valid JSON are
    recorded in ``report`` and not yielded. Blank lines are ignored silently.
    Raises UnicodeDecodeError from the underlying file: callers turn it into a DataError.
    """
    if fmt == "csv":
        delimiter = _sniff_delimiter(path, encoding, CSV_SUFFIXES.get(path.suffix.lower(), ","))
        if csv.field_size_limit() < _FIELD_LIMIT:
            csv.field_size_limit(_FIELD_LIMIT)
        with open(path, encoding=encoding, newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            prev = 0
            header_seen = False
            try:
                for row in reader:
                    start = prev + 1
                    prev = end = reader.line_num
                    if not (row and "".join(row).strip()):
                        continue  # blank line, or only delimiters (",,,")
                    if not header_seen:
                        header_seen = True
                        row = [c.strip() for c in row]
                        row[0] = row[0].lstrip("\ufeff").strip()
                    yield start, end, row
            except csv.Error as e:
                raise DataError(
                    f"{_display(path)} line {prev + 1}: cannot parse CSV ({e})",
                    "check that quotes in that row are balanced; quote fields that contain the delimiter",
                ) from None
    else:
        with open(path, encoding=encoding) as f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1:
                    raw = raw.lstrip("\ufeff")
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError as e:
                    report.rows_read += 1
                    report.add(f"invalid JSON: {e.msg} at column {e.colno}", lineno)
                    continue
                yield lineno, lineno, value


def _as_str(value: Any) -> str | None:
    """A JSON scalar as text; None for objects/arrays (not usable as text or label)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


# The names real data sets give their text and label columns (SST-2 "sentence", IMDB exports "review" /
# "sentiment", AG News "description" / "class" ...), in order of preference
TEXT_NAMES = (
    "text",
    "sentence",
    "content",
    "message",
    "body",
    "review",
    "comment",
    "question",
    "utterance",
    "description",
    "document",
    "title",
)
LABEL_NAMES = ("label", "labels", "class", "category", "target", "intent", "tag", "topic", "sentiment", "y")


def usual_column(columns: list[str], wanted: str, report: DataReport, what: str) -> str:
    """``wanted`` itself where the data has it, or was chosen by the user. Where the default ("text",
    "label") is missing, the first usual name the data has, said in the report; else ``wanted``
    (and the reader's error lists the columns)."""
    default, names = ("text", TEXT_NAMES) if what == "text" else ("label", LABEL_NAMES)
    if wanted != default or _find_column(columns, wanted) is not None:
        return wanted
    folded = {c.casefold(): c for c in reversed(columns)}
    for name in names[1:]:
        if name in folded:
            found = folded[name]
            setting = f"{what}_column"
            report.add(
                f"no {default!r} column: the {what} is read from {found!r} (set {setting} to choose another)",
                action="warning",
            )
            return found
    return wanted


def note_duplicate_columns(header: list[str], chosen: dict[str, int | None], report: DataReport) -> None:
    """A chosen column whose name appears more than once: the first is read; say so, it may be the wrong one."""
    for setting, index in chosen.items():
        if index is not None and header.count(header[index]) > 1:
            report.add(
                f"{header.count(header[index])} columns are named {header[index]!r}: the first (column "
                f"{index + 1}) is read; rename the others in the file if {setting} should be another",
                action="warning",
            )


def _find_column(columns: list[str], wanted: str) -> int | None:
    if wanted in columns:
        return columns.index(wanted)
    folded = [c.casefold() for c in columns]
    if folded.count(wanted.casefold()) == 1:
        return folded.index(wanted.casefold())
    return None


def _shown(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:37] + "...")


def _missing_columns_error(path: Path, columns: list[str], missing: list[tuple[str, str, str]], noun: str) -> DataError:
    found = ", ".join(_shown(c) for c in columns[:12]) + (f" and {len(columns) - 12} more" if len(columns) > 12 else "")
    found = found or "none"
    names = " and ".join(f"{option} {name!r}" for option, name, _ in missing)
    fixes = "; ".join(f"set {option} to the {kind} {noun}" for option, _, kind in missing)
    return DataError(
        f"{_display(path)} has no {noun} for {names}; {noun}s found: {found}",
        f"{fixes} (one of: {found}), or rename the {noun} in the file"
        + ("; the first row must be a header naming the columns" if noun == "column" else ""),
    )


def read_text_table(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    encoding: str | None = None,
    max_items: int | None = None,
) -> tuple[list[TextExample], DataReport]:
    """Read a labelled text table. Rows that cannot be used are skipped and listed in the report;
    problems with the file as a whole raise DataError. ``max_items`` keeps the first N usable rows
    (file order) and stops reading. ``encoding=None`` detects it. Parquet/Arrow files and Hugging Face
    datasets cache folders are read through pyarrow (``data.arrow``; class numbers become their names)."""
    path = Path(path).expanduser()
    if is_arrow_source(path):
        return _read_arrow(path, text_column, label_column, max_items)
    _check_file(path)
    fmt = _table_format(path)
    if max_items is not None and max_items < 1:
        raise DataError(f"max_items must be at least 1 (got {max_items})", "leave max_items empty to use every row")
    if text_column == label_column:
        raise DataError(
            f"text_column and label_column are both {text_column!r}",
            "point text_column at the column with the text and label_column at the column with the class name",
        )
    enc, confident, forced = _resolve_encoding(path, encoding)
    _refuse_binary(path, enc)
    report = DataReport(source=os.path.abspath(path), encoding=enc, encoding_confident=confident)
    examples: list[TextExample] = []
    try:
        if fmt == "csv":
            _read_csv(path, enc, text_column, label_column, max_items, examples, report)
        else:
            _read_jsonl(path, enc, text_column, label_column, max_items, examples, report)
    except UnicodeDecodeError:
        raise _decode_error(path, enc, forced) from None
    except OSError as e:
        raise DataError(f"cannot read {_display(path)}: {e.strerror or e}", "check the file permissions") from None
    report.rows_kept = len(examples)
    if not examples:
        if report.rows_read == 0:
            raise DataError(f"{_display(path)} has no data rows", "add one example per row: its text and its label")
        first = "; ".join(str(i) for i in report.issues[:3])
        raise DataError(
            f"no usable rows in {_display(path)}: {report.summary()}",
            f"every row was skipped; fix the rows or check text_column/label_column. First problems: {first}",
        )
    return examples, report


def _read_arrow(
    path: Path, text_column: str, label_column: str, max_items: int | None
) -> tuple[list[TextExample], DataReport]:
    source = open_source(path)
    report = DataReport(source=str(source.path), encoding="utf-8")
    text_column = usual_column(list(source.columns), text_column, report, "text")
    label_column = usual_column(list(source.columns), label_column, report, "label")
    tc, lc = source.columns_for([("text_column", text_column, "text"), ("label_column", label_column, "label")])
    examples: list[TextExample] = []
    row_no = 0
    for batch in source.batches([tc, lc]):
        for row in batch:
            if max_items is not None and len(examples) >= max_items:
                report.limit_reached = True
                report.rows_kept = len(examples)
                return examples, report
            row_no += 1
            report.rows_read += 1
            text, label = row.get(tc), source.label_of(lc, row.get(lc))
            if text is not None and not isinstance(text, str):
                report.add(f"text is not a string: got {type(text).__name__}", row_no)
            elif label is None:
                report.add(f"label is not a single value: got {type(row.get(lc)).__name__}", row_no)
            else:
                _keep(text or "", label, row_no, examples, report)
    report.rows_kept = len(examples)
    if not examples:
        raise DataError(
            f"no usable rows in {source.display}: {report.summary()}",
            "check text_column and label_column (every row was empty or unlabelled)",
        )
    return examples, report


def _read_csv(
    path: Path,
    enc: str,
    text_column: str,
    label_column: str,
    max_items: int | None,
    examples: list[TextExample],
    report: DataReport,
) -> None:
    records = iter_table_records(path, enc, "csv", report)
    try:
        _, _, header = next(records)
    except StopIteration:
        raise DataError(
            f"{_display(path)} is empty",
            f"add a header row ({text_column},{label_column}) and one example per row below it",
        ) from None
    text_column = usual_column(header, text_column, report, "text")
    label_column = usual_column(header, label_column, report, "label")
    ti, li = _find_column(header, text_column), _find_column(header, label_column)
    missing = []
    if ti is None:
        missing.append(("text_column", text_column, "text"))
    if li is None:
        missing.append(("label_column", label_column, "label"))
    if ti is None or li is None:
        raise _missing_columns_error(path, header, missing, "column")
    note_duplicate_columns(header, {"text_column": ti, "label_column": li}, report)
    need = max(ti, li) + 1
    width = len(header)
    any_row = False
    add, append = report.add, examples.append
    for start, end, row in records:  # hot loop: kept flat on purpose (millions of rows)
        any_row = True
        if max_items is not None and len(examples) >= max_items:
            report.limit_reached = True
            return
        report.rows_read += 1
        if end - start >= _LONG_RECORD_LINES:
            add(f"possible unbalanced quote: one record spans lines {start}-{end}", start, action="warning")
        n = len(row)
        if n < need:
            add(f"too few fields: got {n}, the header has {width}", start)
            continue
        if n > width and "".join(row[width:]).strip():
            add(f"too many fields: got {n}, the header has {width}; quote texts that contain the delimiter", start)
            continue
        text, label = row[ti], row[li].strip()
        if not text or text.isspace():
            add("empty text", start)
        elif not label:
            add("blank label", start)
        else:
            append(TextExample(text, label, start))
    if not any_row:
        raise DataError(
            f"{_display(path)} has a header but no data rows",
            "add one example per row below the header: its text and its label",
        )


def _keep(text: str, label: str, line: int, examples: list[TextExample], report: DataReport) -> None:
    if not text or text.isspace():
        report.add("empty text", line)
        return
    label = label.strip()
    if not label:
        report.add("blank label", line)
        return
    examples.append(TextExample(text=text, label=label, line=line))


def _read_jsonl(
    path: Path,
    enc: str,
    text_column: str,
    label_column: str,
    max_items: int | None,
    examples: list[TextExample],
    report: DataReport,
) -> None:
    keys: dict[str, None] = {}  # ordered union of keys seen
    objects = 0
    has_text = has_label = False
    for line, _, value in iter_table_records(path, enc, "jsonl", report):
        if max_items is not None and len(examples) >= max_items:
            report.limit_reached = True
            break
        report.rows_read += 1
        if not isinstance(value, dict):
            report.add(f"not a JSON object: got {type(value).__name__}", line)
            continue
        objects += 1
        if objects == 1:  # the first object's keys decide where a default name is missing
            text_column = usual_column([str(k) for k in value], text_column, report, "text")
            label_column = usual_column([str(k) for k in value], label_column, report, "label")
        for k in value:
            if len(keys) < 50:
                keys.setdefault(str(k), None)
        has_text = has_text or text_column in value
        has_label = has_label or label_column in value
        if objects >= _JSONL_KEY_PROBE and not (has_text and has_label):
            break
        if text_column not in value or label_column not in value:
            which = text_column if text_column not in value else label_column
            report.add(f"missing field: {which!r}", line)
            continue
        text, label = _as_str(value[text_column]), _as_str(value[label_column])
        if text is None:
            report.add(f"text is not a string: got {type(value[text_column]).__name__}", line)
            continue
        if label is None:
            report.add(f"label is not a single value: got {type(value[label_column]).__name__}", line)
            continue
        _keep(text, label, line, examples, report)
    if objects and not (has_text and has_label):
        missing = []
        if not has_text:
            missing.append(("text_column", text_column, "text"))
        if not has_label:
            missing.append(("label_column", label_column, "label"))
        raise _missing_columns_error(path, list(keys), missing, "field")
    if report.rows_read == 0:
        raise DataError(
            f"{_display(path)} is empty",
            'add one JSON object per line, like {"' + text_column + '": "...", "' + label_column + '": "..."}',
        )
