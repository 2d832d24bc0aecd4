"""Import user data into a stored data set: text tables, image folders, images + a CSV of labels,
plain-text corpora and chat JSONL.

Every import streams its source (a table of several GB is never held in memory), writes items in
short batches into a new data set marked ``importing``, reports progress, can be cancelled, and on
any failure deletes that half-made data set: nothing already stored is touched. Rows that can still
be edited into shape (blank label, empty text, damaged image) are imported and flagged, and listed
in the import report; rows that cannot be stored (too few fields, a line that is not JSON) are
skipped and listed. Problems with the source as a whole raise DataError with a hint.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunedesk.engine.data.arrow import image_rows, is_arrow_source, open_source
from tunedesk.engine.data.images import IMAGE_SUFFIXES, scan_image_folder, split_folders, split_roles
from tunedesk.engine.data.report import DataReport
from tunedesk.engine.data.text import (
    _check_file,
    _decode_error,
    _find_column,
    _missing_columns_error,
    _resolve_encoding,
    _table_format,
    iter_table_records,
    note_duplicate_columns,
)
from tunedesk.engine.datasets import arrow_import
from tunedesk.engine.datasets import flags as F
from tunedesk.engine.datasets.cleaning import CleaningOptions, CleaningReport, refresh_flags
from tunedesk.engine.datasets.corpora import iter_chat_records, iter_passages, list_text_files
from tunedesk.engine.datasets.hashing import ImageInfo, inspect_image, text_content_hash, text_near_hash
from tunedesk.engine.datasets.store import DatasetStore
from tunedesk.engine.errors import DataError, TuneDeskError

BATCH = 5000  # items per write transaction (each holds the write lock for well under a second)
BATCH_CHARS = 2_000_000  # ... or fewer when the texts are long: memory stays flat whatever the file size
PROGRESS_EVERY_S = 0.1  # progress reports at most this often (a fast import sends only a few)
IMPORT_KINDS = ("text_table", "image_folder", "image_csv", "text_corpus", "chat_jsonl")
Progress = Callable[[int, int, str], None]  # (done, total, what is happening); total 0 = unknown


class ImportCancelled(TuneDeskError):
    def __init__(self) -> None:
        super().__init__("import cancelled", "nothing was saved; start the import again when you are ready")


class CancelToken:
    """Set from any thread (the UI's Cancel button); checked by the import between rows."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise ImportCancelled()


@dataclass
class ImportSpec:
    """What to import. ``kind``: text_table | image_folder | image_csv | text_corpus | chat_jsonl.

    text_table: ``path`` (.csv/.tsv/.jsonl, .parquet/.arrow or a Hugging Face datasets cache folder), ``text_column``, ``label_column`` ("" = no labels yet),
    ``encoding`` (None = detect). image_folder: ``path`` (one sub-folder per class). image_csv:
    ``path`` (a CSV of file,label), ``images_root`` (folder the file names are relative to; default
    the CSV's folder), ``file_column``, ``label_column``; a Parquet/Arrow source instead of the CSV has
    the image bytes in ``file_column``. text_corpus: ``path`` (a .txt file or a
    folder of them). chat_jsonl: ``path`` (one {"messages": [...]} object per line).
    """

    kind: str
    path: str
    name: str = ""
    text_column: str = "text"
    label_column: str = "label"
    file_column: str = "file"
    images_root: str = ""
    encoding: str | None = None

    def validate(self) -> ImportSpec:
        if self.kind not in IMPORT_KINDS:
            raise DataError(f"unknown import kind {self.kind!r}", f"use one of {', '.join(IMPORT_KINDS)}")
        if not str(self.path).strip():
            raise DataError("no file or folder chosen", "choose what to import")
        return self


@dataclass
class ImportResult:
    dataset_id: int
    name: str
    kind: str
    items: int
    report: DataReport
    cleaning: CleaningReport
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return f"imported {self.items} items into {self.name!r} in {self.seconds:.1f} s; {self.report.summary()}"


class _Context:
    """Progress, cancellation and batched writing for one import."""

    def __init__(self, store: DatasetStore, dataset_id: int, progress: Progress | None, cancel: CancelToken | None):
        self.store, self.dataset_id = store, dataset_id
        self.progress, self.cancel = progress, cancel or CancelToken()
        self.batch: list[tuple] = []
        self.batch_chars = 0
        self.position = 0
        self.labels: dict[str, None] = {}
        self._last = 0.0

    def say(self, done: int, total: int, message: str, force: bool = False) -> None:
        self.cancel.check()
        now = time.monotonic()
        if self.progress is not None and (force or now - self._last >= PROGRESS_EVERY_S):
            self._last = now
            self.progress(done, total, message)

    def add(
        self,
        *,
        label: str = "",
        flags: int = 0,
        content_hash: str = "",
        near_hash: str = "",
        path: str | None = None,
        line: int | None = None,
        text: str | None = None,
        info: ImageInfo | None = None,
        split: str = "",
    ) -> None:
        self.position += 1
        if label:
            self.labels.setdefault(label, None)
        w = h = size = mtime = None
        if info is not None:
            w, h, size, mtime = info.width, info.height, info.size_bytes, info.mtime
        self.batch.append(
            (self.position, label, split, flags, content_hash, near_hash, path, line, w, h, size, mtime, text)
        )
        if text:
            self.batch_chars += len(text)
        if len(self.batch) >= BATCH or self.batch_chars >= BATCH_CHARS:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.cancel.check()
            self.store.insert_items(self.dataset_id, self.batch)
            self.batch, self.batch_chars = [], 0


def _display(path: Path) -> str:
    return path.name or str(path)


def _estimate_lines(path: Path) -> int:
    """Physical lines in a file, estimated from its first MiB (progress bars only)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    if not head:
        return 1
    return max(1, int(size * max(head.count(b"\n"), 1) / len(head)))


# ---- entry points ------------------------------------------------------------------------------


def run_import(
    store: DatasetStore,
    spec: ImportSpec,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    options: CleaningOptions | None = None,
) -> ImportResult:
    """Import ``spec`` into a new data set of ``store``; see the module docstring."""
    spec.validate()
    start = time.monotonic()
    store.cleanup_interrupted_imports()
    path = Path(spec.path).expanduser()
    kind = {
        "text_table": "text",
        "image_folder": "image",
        "image_csv": "image",
        "text_corpus": "text_corpus",
        "chat_jsonl": "chat",
    }[spec.kind]
    name = spec.name.strip() or (path.stem if path.suffix else path.name) or "data set"
    _precheck(spec, path)
    options = options or CleaningOptions()
    dataset_id = store.create_dataset(name, kind, str(path.resolve()), {"spec": asdict(spec)}, status="importing")
    ctx = _Context(store, dataset_id, progress, cancel)
    try:
        report = _IMPORTERS[spec.kind](ctx, spec, path, options)
        ctx.flush()
        ctx.say(0, 0, "looking for duplicates and other problems", force=True)
        with store.write():
            store.replace_classes(dataset_id, sorted(ctx.labels))
        cleaning = refresh_flags(store, dataset_id, options)
        ctx.cancel.check()
        seconds = time.monotonic() - start
        issues = report.to_dict()
        issues["issues"] = issues["issues"][:200]
        store.finish_import(dataset_id, {"spec": asdict(spec), "report": issues, "seconds": round(seconds, 2)})
    except BaseException:
        try:
            store.discard_dataset(dataset_id)
        except Exception:  # noqa: BLE001 - the original error matters more; a stale import is cleaned later
            pass
        raise
    warnings = [str(i) for i in report.issues[:20]]
    if len(report.issues) > 20:
        warnings.append(f"... and {len(report.issues) - 20} more")
    return ImportResult(dataset_id, name, kind, ctx.position, report, cleaning, seconds, warnings)


def _precheck(spec: ImportSpec, path: Path) -> None:
    if spec.kind in ("text_table", "image_csv") and is_arrow_source(path):
        return  # Parquet / Arrow / a Hugging Face datasets folder: open_source checks it
    if spec.kind in ("text_table", "image_csv", "chat_jsonl"):
        _check_file(path)
        if spec.kind != "chat_jsonl":
            _table_format(path)
    elif spec.kind == "image_folder":
        if path.is_file():
            raise DataError(
                f"{path} is a file, not a folder",
                "choose the folder that holds one sub-folder of images per class, or import "
                "images with a CSV of file,label",
            )
    elif not path.exists():
        raise DataError(f"not found: {path}", "check the path")


# ---- text tables -------------------------------------------------------------------------------


def _import_text_table(ctx: _Context, spec: ImportSpec, path: Path, options: CleaningOptions) -> DataReport:
    if is_arrow_source(path):
        report = arrow_import.import_text(
            ctx.say,
            lambda report, text, label, line, labelled: _keep_text(ctx, report, text, label, line, labelled),
            open_source(path),
            spec.text_column,
            spec.label_column,
        )
        return _checked_text_report(ctx, spec, path, report)
    fmt = _table_format(path)
    enc, confident, forced = _resolve_encoding(path, spec.encoding)
    report = DataReport(source=os.path.abspath(path), encoding=enc, encoding_confident=confident)
    total = _estimate_lines(path)
    try:
        if fmt == "csv":
            _text_csv(ctx, spec, path, enc, report, total)
        else:
            _text_jsonl(ctx, spec, path, enc, report, total)
    except UnicodeDecodeError:
        raise _decode_error(path, enc, forced) from None
    except OSError as e:
        raise DataError(f"cannot read {_display(path)}: {e.strerror or e}", "check the file permissions") from None
    return _checked_text_report(ctx, spec, path, report)


def _checked_text_report(ctx: _Context, spec: ImportSpec, path: Path, report: DataReport) -> DataReport:
    report.rows_kept = ctx.position
    if ctx.position == 0:
        if report.rows_read == 0:
            raise DataError(f"{_display(path)} has no data rows", "add one example per row: its text and its label")
        first = "; ".join(str(i) for i in report.issues[:3])
        raise DataError(
            f"no usable rows in {_display(path)}: {report.summary()}",
            f"fix the rows or check the chosen columns. First problems: {first}",
        )
    if spec.label_column and not ctx.labels:
        raise DataError(
            f"the label column {spec.label_column!r} of {_display(path)} is blank on every row",
            "choose the column that holds the class names, or choose no label column to label the texts here",
        )
    return report


def _keep_text(ctx: _Context, report: DataReport, text: str, label: str, line: int, labelled: bool) -> None:
    if labelled and not label:
        report.add("blank label: imported without a label (filter 'Not labelled' to label it)", line, "warning")
    if not text.strip():
        report.add("empty text: imported and flagged", line, "warning")
    ctx.add(label=label, content_hash=text_content_hash(text), near_hash=text_near_hash(text), line=line, text=text)


def _text_csv(ctx: _Context, spec: ImportSpec, path: Path, enc: str, report: DataReport, total: int) -> None:
    records = iter_table_records(path, enc, "csv", report)
    try:
        _, _, header = next(records)
    except StopIteration:
        raise DataError(
            f"{_display(path)} is empty",
            f"add a header row ({spec.text_column},{spec.label_column or 'label'}) and one example per row below it",
        ) from None
    ti = _find_column(header, spec.text_column)
    li = _find_column(header, spec.label_column) if spec.label_column else None
    missing = []
    if ti is None:
        missing.append(("text_column", spec.text_column, "text"))
    if spec.label_column and li is None:
        missing.append(("label_column", spec.label_column, "label"))
    if missing or ti is None:
        raise _missing_columns_error(path, header, missing, "column")
    if li is not None and li == ti:
        raise DataError(f"the text and label columns are both {header[ti]!r}", "choose two different columns")
    note_duplicate_columns(header, {"text_column": ti, "label_column": li}, report)
    need = max(ti, li if li is not None else 0) + 1
    width = len(header)
    labelled = li is not None
    any_row = False
    for start, end, row in records:
        any_row = True
        report.rows_read += 1
        if report.rows_read % 512 == 0:
            ctx.say(end, total, f"reading {_display(path)}: {report.rows_read:,} rows")
        n = len(row)
        if n < need:
            report.add(f"too few fields: got {n}, the header has {width}", start)
            continue
        if n > width and "".join(row[width:]).strip():
            report.add(
                f"too many fields: got {n}, the header has {width}; quote texts that contain the delimiter", start
            )
            continue
        _keep_text(ctx, report, row[ti], row[li].strip() if labelled else "", start, labelled)
    if not any_row:
        raise DataError(
            f"{_display(path)} has a header but no data rows",
            "add one example per row below the header: its text and its label",
        )


def _scalar(value: Any) -> str | None:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def _text_jsonl(ctx: _Context, spec: ImportSpec, path: Path, enc: str, report: DataReport, total: int) -> None:
    keys: dict[str, None] = {}
    has_text = has_label = False
    objects = 0
    labelled = bool(spec.label_column)
    for line, _, value in iter_table_records(path, enc, "jsonl", report):
        report.rows_read += 1
        if report.rows_read % 512 == 0:
            ctx.say(line, total, f"reading {_display(path)}: {report.rows_read:,} rows")
        if not isinstance(value, dict):
            report.add(f"not a JSON object: got {type(value).__name__}", line)
            continue
        objects += 1
        if len(keys) < 50:
            for k in value:
                keys.setdefault(str(k), None)
        has_text = has_text or spec.text_column in value
        has_label = has_label or (labelled and spec.label_column in value)
        if objects >= 1000 and not (has_text and (has_label or not labelled)):
            break
        if spec.text_column not in value:
            report.add(f"missing field: {spec.text_column!r}", line)
            continue
        text = _scalar(value[spec.text_column])
        label = _scalar(value.get(spec.label_column)) if labelled else ""
        if text is None:
            report.add(f"text is not a string: got {type(value[spec.text_column]).__name__}", line)
            continue
        if label is None:
            report.add(f"label is not a single value: got {type(value[spec.label_column]).__name__}", line)
            continue
        _keep_text(ctx, report, text, label.strip(), line, labelled)
    if objects and not (has_text and (has_label or not labelled)):
        missing = []
        if not has_text:
            missing.append(("text_column", spec.text_column, "text"))
        if labelled and not has_label:
            missing.append(("label_column", spec.label_column, "label"))
        raise _missing_columns_error(path, list(keys), missing, "field")


# ---- images ------------------------------------------------------------------------------------


def _inspect_all(
    ctx: _Context,
    todo: list[tuple[str, str]],
    report: DataReport,
    root: Path,
    options: CleaningOptions,
    known_missing: frozenset[str] | set[str] = frozenset(),
    splits: list[str] | None = None,
) -> None:
    """Read every (label, path) in a small thread pool (decoding releases the GIL), in order;
    ``splits``, when given, is each item's split ("train", "val" or "")."""
    total = len(todo)
    workers = max(1, min(4, os.cpu_count() or 1))
    chunk = 256

    def rel(p: str) -> str:
        try:
            return os.path.relpath(p, root).replace(os.sep, "/")
        except ValueError:  # another drive on Windows
            return p

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, total, chunk):
            ctx.say(start, total, f"reading images: {start:,} of {total:,}", force=start == 0)
            part = todo[start : start + chunk]
            infos = pool.map(inspect_image, [p for _, p in part], [options.tiny_pixels] * len(part))
            for k, ((label, p), info) in enumerate(zip(part, infos)):
                report.rows_read += 1
                bits = F.PROBLEM_FLAG.get(info.problem or "", 0)
                if info.problem and p not in known_missing:
                    report.add(f"{info.detail}: imported and flagged", path=rel(p), action="warning")
                ctx.add(
                    label=label,
                    flags=bits,
                    content_hash=info.content_hash,
                    near_hash=info.near_hash,
                    path=p,
                    info=info,
                    split=splits[start + k] if splits else "",
                )
    ctx.say(total, total, f"read {total:,} images", force=True)
    report.rows_kept = ctx.position


def _import_image_folder(ctx: _Context, spec: ImportSpec, path: Path, options: CleaningOptions) -> DataReport:
    ctx.say(0, 0, f"listing the images in {_display(path)}", force=True)
    parts = split_folders(path)
    if parts:  # train/<class>/... with val/ (test/): classes from the level below, the split kept
        return _import_split_image_folder(ctx, path, parts, options)
    # verify=False: list only (layout checks, hidden files, link loops); every file is read once below.
    found, report = scan_image_folder(path, verify=False)
    root = Path(report.source)
    report.rows_read = 0  # the listing counted them; counted again as each image is read below
    _inspect_all(ctx, [(e.label, e.path) for e in found], report, root, options)
    return report


def _import_split_image_folder(
    ctx: _Context, path: Path, parts: dict[str, Path], options: CleaningOptions
) -> DataReport:
    """Each part's images with the split ``split_roles`` gives it (a test/ beside val/ is imported
    unassigned, so it stays out of training)."""
    root = Path(os.path.abspath(path))
    report = DataReport(source=str(root), unit="image")
    todo: list[tuple[str, str]] = []
    splits: list[str] = []
    for folder, role in split_roles(parts):
        found, part_report = scan_image_folder(folder, verify=False)
        for issue in part_report.issues:
            issue.path = f"{folder.name}/{issue.path}"
            report.issues.append(issue)
        todo += [(e.label, e.path) for e in found]
        splits += [role] * len(found)
    _inspect_all(ctx, todo, report, root, options, splits=splits)
    report.add(
        "the folder is split already (" + ", ".join(f"{p.name}/" for p in parts.values()) + "): classes come from the "
        "folders inside them and each image keeps its part",
        path=root.name + "/",
        action="warning",
    )
    return report


_FILE_COLUMNS = ("file", "filename", "file_name", "path", "image", "image_path", "img", "filepath", "name")


def _import_image_csv(ctx: _Context, spec: ImportSpec, path: Path, options: CleaningOptions) -> DataReport:
    if is_arrow_source(path):  # a Parquet/Arrow table whose file column holds the image bytes
        source = open_source(path)
        report = DataReport(source=str(source.path), unit="image")
        folder = ctx.store.path.parent / arrow_import.IMAGES_FOLDER
        unpacked = image_rows(ctx.say, source, spec.file_column, spec.label_column, folder, report)
        _inspect_all(ctx, unpacked, report, folder, options)
        return report
    root = Path(spec.images_root).expanduser() if spec.images_root else path.parent
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}", "choose the folder that holds the images named in the CSV")
    root = root.resolve()
    fmt = _table_format(path)
    enc, confident, forced = _resolve_encoding(path, spec.encoding)
    report = DataReport(source=str(root), encoding=enc, encoding_confident=confident, unit="image")
    todo: list[tuple[str, str]] = []
    missing: set[str] = set()
    try:
        records = iter_table_records(path, enc, fmt, report)
        if fmt == "csv":
            try:
                _, _, header = next(records)
            except StopIteration:
                raise DataError(
                    f"{_display(path)} is empty", "add a header row (file,label) and one image per row"
                ) from None
            fi = _find_column(header, spec.file_column)
            if fi is None and spec.file_column == "file":
                fi = next((i for c in _FILE_COLUMNS if (i := _find_column(header, c)) is not None), None)
            li = _find_column(header, spec.label_column) if spec.label_column else None
            missing_cols = []
            if fi is None:
                missing_cols.append(("file_column", spec.file_column, "file name"))
            if spec.label_column and li is None:
                missing_cols.append(("label_column", spec.label_column, "label"))
            if missing_cols or fi is None:
                raise _missing_columns_error(path, header, missing_cols, "column")
            rows: Iterator[tuple[int, str, str]] = (
                (start, row[fi] if fi < len(row) else "", row[li].strip() if li is not None and li < len(row) else "")
                for start, _, row in records
            )
        else:
            rows = (
                (line, str(v.get(spec.file_column, "")), str(v.get(spec.label_column, "") or "").strip())
                for line, _, v in records
                if isinstance(v, dict)
            )
        for line, name, label in rows:
            report.rows_read += 1
            name = name.strip()
            if not name:
                report.add("no file name", line)
                continue
            p = Path(name).expanduser()
            p = p if p.is_absolute() else root / p
            p_str = os.path.abspath(p)
            if not p_str.lower().endswith(IMAGE_SUFFIXES):
                report.add(f"not an image file name: {name}", line)
                continue
            if spec.label_column and not label:
                report.add("blank label: imported without a label", line, "warning")
            if not os.path.exists(p_str):
                missing.add(p_str)
                report.add(f"file not found: {name}: imported and flagged as missing", line, "warning")
            todo.append((label, p_str))
    except UnicodeDecodeError:
        raise _decode_error(path, enc, forced) from None
    report.rows_read = 0  # counted again per image below
    if not todo:
        raise DataError(f"{_display(path)} names no images", "add one row per image: its file name and its label")
    if len(missing) == len(todo):
        raise DataError(
            f"none of the {len(todo)} files named in {_display(path)} exist under {root}",
            "choose the folder the file names are relative to (images folder), or fix the file column",
        )
    _inspect_all(ctx, todo, report, root, options, missing)
    return report


# ---- language-model corpora --------------------------------------------------------------------


def _import_text_corpus(ctx: _Context, spec: ImportSpec, path: Path, options: CleaningOptions) -> DataReport:
    files = list_text_files(path)
    report = DataReport(source=str(path.resolve()), unit="passage")
    total = sum(f.stat().st_size for f in files) or 1
    done = 0
    for f in files:
        enc, confident, forced = _resolve_encoding(f, spec.encoding)
        if not confident:
            report.add(f"encoding guessed as {enc}", path=f.name, action="warning")
        try:
            for line, passage in iter_passages(f, enc):
                report.rows_read += 1
                if report.rows_read % 256 == 0:
                    ctx.say(done, total, f"reading {f.name}: {report.rows_read:,} passages")
                ctx.add(
                    content_hash=text_content_hash(passage),
                    near_hash=text_near_hash(passage),
                    path=str(f),
                    line=line,
                    text=passage,
                )
        except UnicodeDecodeError:
            raise _decode_error(f, enc, forced) from None
        done += f.stat().st_size
    report.rows_kept = ctx.position
    if not ctx.position:
        raise DataError(f"no text found in {_display(path)}", "the .txt files are empty or contain only blank lines")
    return report


def _import_chat_jsonl(ctx: _Context, spec: ImportSpec, path: Path, options: CleaningOptions) -> DataReport:
    enc, confident, forced = _resolve_encoding(path, spec.encoding)
    report = DataReport(source=os.path.abspath(path), encoding=enc, encoding_confident=confident)
    total = _estimate_lines(path)
    try:
        for line, text, plain in iter_chat_records(path, enc, report):
            if report.rows_read % 256 == 0:
                ctx.say(line, total, f"reading {_display(path)}: {report.rows_read:,} conversations")
            ctx.add(content_hash=text_content_hash(text), near_hash=text_near_hash(plain), line=line, text=text)
    except UnicodeDecodeError:
        raise _decode_error(path, enc, forced) from None
    report.rows_kept = ctx.position
    if not ctx.position:
        first = "; ".join(str(i) for i in report.issues[:3]) or "the file is empty"
        raise DataError(
            f"no usable conversations in {_display(path)}",
            'each line must be {"messages": [{"role": "user", "content": "..."}, '
            f'{{"role": "assistant", "content": "..."}}]}}. First problems: {first}',
        )
    return report


_IMPORTERS = {
    "text_table": _import_text_table,
    "image_folder": _import_image_folder,
    "image_csv": _import_image_csv,
    "text_corpus": _import_text_corpus,
    "chat_jsonl": _import_chat_jsonl,
}
