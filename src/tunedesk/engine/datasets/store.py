"""DatasetStore: data sets, their items and classes, and immutable versions, in the run history file.

Threads: like ``RunStore``, a DatasetStore owns one sqlite3 connection bound to the thread that
opened it; each thread (UI, import worker, training preparation) opens its own ``DatasetStore(path)``.

Writes go through ``write()`` (``BEGIN IMMEDIATE``: the write lock is taken up front, so a
concurrent writer waits for the busy timeout instead of failing half way) and are short: an import
commits in batches into a data set marked ``importing``, which lists hide and which is deleted if
the import fails, is cancelled or its process dies. Nothing that was already stored is touched by
an import, so a bad file never loses saved data.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlite_utils import Database

from tunedesk.engine.datasets import flags as F
from tunedesk.engine.errors import DataError
from tunedesk.engine.store.connection import DEFAULT_BUSY_TIMEOUT_S, open_database, pid_alive
from tunedesk.engine.store.migrations import utc_now

KINDS = ("text", "image", "text_corpus", "chat")
LABELLED_KINDS = ("text", "image")
SPLITS = ("train", "val")

# Insert order used by importers (``insert_items``) and restores.
ITEM_COLUMNS = (
    "position",
    "label",
    "split",
    "flags",
    "content_hash",
    "near_hash",
    "path",
    "source_line",
    "width",
    "height",
    "size_bytes",
    "mtime",
    "text",
)
_ALL_ITEM_COLUMNS = ("id", "dataset_id") + ITEM_COLUMNS
_CHUNK = 900  # ids per "IN (...)" query: below SQLite's default 999 variables


@dataclass
class DatasetInfo:
    id: int
    name: str
    kind: str
    status: str
    source: str
    created_at: str
    updated_at: str
    item_count: int
    split: dict[str, Any] = field(default_factory=dict)
    import_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class VersionInfo:
    id: str  # "ds3-v2": what `tunedesk train --dataset-version` and DataSpec.dataset_version take
    dataset_id: int | None  # None once the data set itself was deleted (the version stays)
    number: int
    dataset_name: str
    kind: str
    content_hash: str
    created_at: str
    item_count: int
    note: str = ""
    classes: list[str] = field(default_factory=list)
    split: dict[str, Any] = field(default_factory=dict)  # {"settings": {...}, "counts": {label: {split: n}}}
    reused: bool = False  # save_version found nothing changed and returned the latest version


@dataclass(slots=True)
class Item:
    id: int
    position: int
    label: str
    split: str
    flags: int
    content_hash: str
    near_hash: str
    path: str | None
    source_line: int | None
    width: int | None
    height: int | None
    size_bytes: int | None
    mtime: float | None
    text: str | None

    @property
    def flag_names(self) -> list[str]:
        return F.flag_names(self.flags)


def _loads(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _contains(haystack: str | None, needle: str) -> bool:
    return haystack is not None and needle in haystack.casefold()


def chunks(seq: Sequence[Any], n: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class DatasetStore:
    """Read and write data sets. One instance per thread (see the module docstring)."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._owner = threading.get_ident()
        self._db: Database | None = open_database(self.path, busy_timeout_s)
        self._db.conn.create_function("td_contains", 2, _contains, deterministic=True)

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("this DatasetStore is closed")
        if threading.get_ident() != self._owner:
            raise RuntimeError(
                "a DatasetStore is bound to the thread that opened it; open another DatasetStore(path) in this thread"
            )
        return self._db

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def close(self) -> None:
        if self._db is not None:
            if threading.get_ident() == self._owner:
                self._db.close()
            self._db = None

    def __enter__(self) -> DatasetStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (nested calls join the outer one). Rolls back on any exception."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    # -- data sets --------------------------------------------------------------------------
    def create_dataset(
        self, name: str, kind: str, source: str = "", import_info: dict | None = None, status: str = "ready"
    ) -> int:
        """A new, empty data set. Importers create it with status ``importing`` and call
        ``finish_import`` at the end; until then lists do not show it."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        name = name.strip() or "data set"
        now = utc_now()
        with self.write() as conn:
            cur = conn.execute(
                "INSERT INTO datasets (name, kind, status, source, created_at, updated_at, pid, import_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    kind,
                    status,
                    source,
                    now,
                    now,
                    os.getpid() if status == "importing" else None,
                    _dumps(import_info or {}),
                ),
            )
            return int(cast(int, cur.lastrowid))

    def finish_import(self, dataset_id: int, import_info: dict | None = None) -> None:
        with self.write() as conn:
            self._update_count(dataset_id)
            conn.execute(
                "UPDATE datasets SET status = 'ready', pid = NULL, updated_at = ? WHERE id = ?", (utc_now(), dataset_id)
            )
            if import_info is not None:
                conn.execute("UPDATE datasets SET import_json = ? WHERE id = ?", (_dumps(import_info), dataset_id))

    def discard_dataset(self, dataset_id: int) -> None:
        """Remove a data set and its items in one transaction (a failed or cancelled import).
        Versions saved from it stay."""
        with self.write() as conn:
            conn.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,))

    delete_dataset = discard_dataset

    def cleanup_interrupted_imports(self) -> list[int]:
        """Delete data sets whose import was killed (status ``importing`` and the process is gone)."""
        stale = [
            int(i)
            for i, pid in self.conn.execute("SELECT id, pid FROM datasets WHERE status = 'importing'")
            if pid != os.getpid() and not pid_alive(pid)
        ]
        for dataset_id in stale:
            self.discard_dataset(dataset_id)
        return stale

    def _dataset(self, row: sqlite3.Row | tuple) -> DatasetInfo:
        (id_, name, kind, status, source, created, updated, count, split_json, import_json) = row
        return DatasetInfo(
            int(id_),
            name,
            kind,
            status,
            source,
            created,
            updated,
            int(count),
            _loads(split_json, {}),
            _loads(import_json, {}),
        )

    _DATASET_COLUMNS = "id, name, kind, status, source, created_at, updated_at, item_count, split_json, import_json"

    def list_datasets(self) -> list[DatasetInfo]:
        """Data sets that finished importing, newest first."""
        rows = self.conn.execute(
            f"SELECT {self._DATASET_COLUMNS} FROM datasets WHERE status = 'ready' ORDER BY id DESC"
        ).fetchall()
        return [self._dataset(r) for r in rows]

    def get_dataset(self, dataset_id: int) -> DatasetInfo:
        row = self.conn.execute(f"SELECT {self._DATASET_COLUMNS} FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        if row is None:
            raise DataError(f"data set {dataset_id} does not exist", "it may have been deleted; pick another data set")
        return self._dataset(row)

    def touch(self, dataset_id: int) -> None:
        self.conn.execute("UPDATE datasets SET updated_at = ? WHERE id = ?", (utc_now(), dataset_id))

    def _update_count(self, dataset_id: int) -> None:
        self.conn.execute(
            "UPDATE datasets SET item_count = (SELECT COUNT(*) FROM dataset_items WHERE dataset_id = ?) WHERE id = ?",
            (dataset_id, dataset_id),
        )

    def set_split_settings(self, dataset_id: int, settings: dict[str, Any]) -> None:
        self.conn.execute("UPDATE datasets SET split_json = ? WHERE id = ?", (_dumps(settings), dataset_id))

    # -- items ------------------------------------------------------------------------------
    def insert_items(self, dataset_id: int, rows: Iterable[Sequence[Any]]) -> None:
        """Insert rows of ``ITEM_COLUMNS`` values (one transaction; importers call it per batch)."""
        sql = (
            f"INSERT INTO dataset_items (dataset_id, {', '.join(ITEM_COLUMNS)}) "
            f"VALUES ({dataset_id:d}, {', '.join('?' * len(ITEM_COLUMNS))})"
        )
        with self.write() as conn:
            conn.executemany(sql, rows)

    def count_items(self, dataset_id: int) -> int:
        return int(self._one("SELECT COUNT(*) FROM dataset_items WHERE dataset_id = ?", (dataset_id,)))

    def item_ids(
        self,
        dataset_id: int,
        *,
        label: str | None = None,
        split: str | None = None,
        flags: int = 0,
        search: str = "",
        order: str = "position",
        descending: bool = False,
    ) -> list[int]:
        """Ids of the items matching every given filter, in ``order``. ``label=""`` means unlabelled,
        ``split=""`` not assigned; ``flags``: items with any of these bits; ``search``: case-folded
        substring of the text or file path."""
        where = ["dataset_id = ?"]
        params: list[Any] = [dataset_id]
        if label is not None:
            where.append("label = ?")
            params.append(label)
        if split is not None:
            where.append("split = ?")
            params.append(split)
        if flags:
            where.append("(flags & ?) != 0")
            params.append(int(flags))
        needle = search.strip().casefold()
        if needle:
            where.append("(td_contains(text, ?) OR td_contains(path, ?))")
            params += [needle, needle]
        columns = {
            "position": "position",
            "label": "label",
            "split": "split",
            "flags": "flags",
            "text": "COALESCE(text, path)",
            "id": "id",
        }
        if order not in columns:
            raise ValueError(f"order must be one of {sorted(columns)}")
        direction = "DESC" if descending else "ASC"
        sql = (
            f"SELECT id FROM dataset_items WHERE {' AND '.join(where)} "
            f"ORDER BY {columns[order]} {direction}, position {direction}"
        )
        return [r[0] for r in self.conn.execute(sql, params)]

    def items(self, ids: Sequence[int], *, text_limit: int | None = None) -> list[Item]:
        """The items with these ids, in the order given (unknown ids are left out). ``text_limit``
        cuts texts to that many characters (table views need only the start)."""
        text = f"substr(text, 1, {int(text_limit)})" if text_limit else "text"
        cols = ", ".join(c if c != "text" else text for c in ("id",) + ITEM_COLUMNS)
        found: dict[int, Item] = {}
        for part in chunks(list(ids)):
            sql = f"SELECT {cols} FROM dataset_items WHERE id IN ({', '.join('?' * len(part))})"  # by primary key
            for row in self.conn.execute(sql, list(part)):
                found[row[0]] = Item(*row)
        return [found[i] for i in ids if i in found]

    def item(self, item_id: int) -> Item:
        got = self.items([item_id])
        if not got:
            raise DataError(f"item {item_id} does not exist", "it may have been deleted; refresh the view")
        return got[0]

    def iter_items(self, dataset_id: int, batch: int = 5000) -> Iterator[Item]:
        cols = ", ".join(("id",) + ITEM_COLUMNS)
        cur = self.conn.execute(
            f"SELECT {cols} FROM dataset_items WHERE dataset_id = ? ORDER BY position", (dataset_id,)
        )
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            for row in rows:
                yield Item(*row)

    def raw_rows(self, ids: Sequence[int]) -> list[tuple]:
        """Full rows (``id, dataset_id, *ITEM_COLUMNS``) for restoring deleted items."""
        out: list[tuple] = []
        for part in chunks(list(ids)):
            out += self.conn.execute(
                f"SELECT {', '.join(_ALL_ITEM_COLUMNS)} FROM dataset_items WHERE id IN ({', '.join('?' * len(part))})",
                list(part),
            ).fetchall()
        return out

    def restore_rows(self, rows: Sequence[tuple]) -> None:
        self.conn.executemany(
            f"INSERT INTO dataset_items ({', '.join(_ALL_ITEM_COLUMNS)}) VALUES ({', '.join('?' * len(_ALL_ITEM_COLUMNS))})",
            rows,
        )

    def ids_of_label(self, dataset_id: int, label: str) -> list[int]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM dataset_items WHERE dataset_id = ? AND label = ? ORDER BY position", (dataset_id, label)
            )
        ]

    def set_file_info(
        self,
        item_id: int,
        *,
        flags: int,
        content_hash: str,
        near_hash: str,
        width: int | None,
        height: int | None,
        size_bytes: int | None,
        mtime: float | None,
    ) -> None:
        self.conn.execute(
            "UPDATE dataset_items SET flags = ?, content_hash = ?, near_hash = ?, width = ?, height = ?, "
            "size_bytes = ?, mtime = ? WHERE id = ?",
            (flags, content_hash, near_hash, width, height, size_bytes, mtime, item_id),
        )

    # -- classes and counts ------------------------------------------------------------------
    def classes(self, dataset_id: int) -> list[str]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT name FROM dataset_classes WHERE dataset_id = ? ORDER BY position, name", (dataset_id,)
            )
        ]

    def replace_classes(self, dataset_id: int, names: Sequence[str]) -> None:
        self.conn.execute("DELETE FROM dataset_classes WHERE dataset_id = ?", (dataset_id,))
        self.conn.executemany(
            "INSERT INTO dataset_classes (dataset_id, name, position) VALUES (?, ?, ?)",
            [(dataset_id, n, i) for i, n in enumerate(names)],
        )

    def class_counts(self, dataset_id: int) -> dict[str, dict[str, int]]:
        """label -> {"train": n, "val": n, "": n (not assigned)}, for every class (empty ones too) and
        ``""`` (unlabelled) when there are unlabelled items."""
        out: dict[str, dict[str, int]] = {c: {"train": 0, "val": 0, "": 0} for c in self.classes(dataset_id)}
        for label, split, n in self.conn.execute(
            "SELECT label, split, COUNT(*) FROM dataset_items WHERE dataset_id = ? GROUP BY label, split", (dataset_id,)
        ):
            out.setdefault(label, {"train": 0, "val": 0, "": 0})[split if split in SPLITS else ""] += n
        return out

    def flag_counts(self, dataset_id: int) -> dict[str, int]:
        """flag key -> number of items carrying it."""
        counts = {f.key: 0 for f in F.FLAGS}
        rows = self.conn.execute(
            "SELECT flags, COUNT(*) FROM dataset_items WHERE dataset_id = ? AND flags != 0 GROUP BY flags",
            (dataset_id,),
        ).fetchall()
        for bits, n in rows:
            for f in F.FLAGS:
                if bits & f.bit:
                    counts[f.key] += n
        return counts

    def flagged_ids(self, dataset_id: int, bits: int) -> list[int]:
        return self.item_ids(dataset_id, flags=bits)

    # -- versions ---------------------------------------------------------------------------
    _VERSION_COLUMNS = (
        "id, dataset_id, number, dataset_name, kind, content_hash, created_at, item_count, note, "
        "classes_json, split_json"
    )

    def _version(self, row: tuple) -> VersionInfo:
        (id_, ds, number, name, kind, chash, created, count, note, classes, split) = row
        return VersionInfo(
            id_, ds, int(number), name, kind, chash, created, int(count), note, _loads(classes, []), _loads(split, {})
        )

    def dataset_content_hash(self, dataset_id: int) -> str:
        """The hash a version saved now would get: kind, classes, and each item's content hash, label
        and split in order. Paths are not in it (moving a folder does not change the data)."""
        info = self.get_dataset(dataset_id)
        h = hashlib.blake2b(digest_size=16)
        h.update(info.kind.encode())
        h.update(b"\x1d" + "\x1f".join(self.classes(dataset_id)).encode("utf-8", "surrogatepass") + b"\x1d")
        cur = self.conn.execute(
            "SELECT content_hash, label, split FROM dataset_items WHERE dataset_id = ? ORDER BY position", (dataset_id,)
        )
        while rows := cur.fetchmany(10_000):
            h.update("".join(f"{c}\x1f{lab}\x1f{s}\x1e" for c, lab, s in rows).encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def save_version(self, dataset_id: int, note: str = "") -> VersionInfo:
        """Freeze the data set as it is now into an immutable version (its items are copied). When
        nothing changed since the latest version, that version is returned (``reused=True``)."""
        with self.write() as conn:
            info = self.get_dataset(dataset_id)
            if info.status != "ready":
                raise DataError(f"{info.name} is still being imported", "wait for the import to finish")
            count = self.count_items(dataset_id)
            if count == 0:
                raise DataError(f"{info.name} has no items", "import data into it before saving a version")
            chash = self.dataset_content_hash(dataset_id)
            latest = conn.execute(
                f"SELECT {self._VERSION_COLUMNS} FROM dataset_versions WHERE dataset_id = ? "
                "ORDER BY number DESC LIMIT 1",
                (dataset_id,),
            ).fetchone()
            if latest is not None and latest[5] == chash:
                version = self._version(latest)
                version.reused = True
                return version
            number = (
                int(
                    self._one(
                        "SELECT COALESCE(MAX(number), 0) FROM dataset_versions WHERE dataset_id = ?", (dataset_id,)
                    )
                )
                + 1
            )
            version_id = f"ds{dataset_id}-v{number}"
            classes = self.classes(dataset_id)
            split = {"settings": info.split, "counts": self.class_counts(dataset_id)}
            conn.execute(
                f"INSERT INTO dataset_versions ({self._VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    version_id,
                    dataset_id,
                    number,
                    info.name,
                    info.kind,
                    chash,
                    utc_now(),
                    count,
                    note.strip(),
                    _dumps(classes),
                    _dumps(split),
                ),
            )
            conn.execute(
                "INSERT INTO dataset_version_items (version_id, position, item_id, label, split, content_hash, path, text) "
                "SELECT ?, ROW_NUMBER() OVER (ORDER BY position), id, label, split, content_hash, path, text "
                "FROM dataset_items WHERE dataset_id = ?",
                (version_id, dataset_id),
            )
            return self.get_version(version_id)

    def list_versions(self, dataset_id: int | None = None) -> list[VersionInfo]:
        """Versions of one data set (newest first), or of all."""
        if dataset_id is None:
            rows = self.conn.execute(f"SELECT {self._VERSION_COLUMNS} FROM dataset_versions ORDER BY created_at DESC")
        else:
            rows = self.conn.execute(
                f"SELECT {self._VERSION_COLUMNS} FROM dataset_versions WHERE dataset_id = ? ORDER BY number DESC",
                (dataset_id,),
            )
        return [self._version(r) for r in rows]

    def get_version(self, ref: str) -> VersionInfo:
        """A version by id (``ds3-v2``) or by the start of its content hash (8 characters or more)."""
        ref = str(ref).strip()
        row = self.conn.execute(f"SELECT {self._VERSION_COLUMNS} FROM dataset_versions WHERE id = ?", (ref,)).fetchone()
        if row is None and len(ref) >= 8:
            rows = self.conn.execute(
                f"SELECT {self._VERSION_COLUMNS} FROM dataset_versions WHERE content_hash LIKE ? LIMIT 2",
                (ref.lower() + "%",),
            ).fetchall()
            row = rows[0] if len(rows) == 1 else None
        if row is None:
            known = [
                r[0] for r in self.conn.execute("SELECT id FROM dataset_versions ORDER BY created_at DESC LIMIT 5")
            ]
            hint = (
                f"saved versions include: {', '.join(known)}"
                if known
                else "no version is saved yet: open the Datasets area, then click Save version"
            )
            raise DataError(f"data set version {ref!r} not found in {self.path}", hint)
        return self._version(row)

    def version_rows(self, version_id: str) -> list[tuple[int | None, str, str, str, str | None, str | None]]:
        """``(item_id, label, split, content_hash, path, text)`` of each item of a version, in order."""
        return self.conn.execute(
            "SELECT item_id, label, split, content_hash, path, text FROM dataset_version_items "
            "WHERE version_id = ? ORDER BY position",
            (version_id,),
        ).fetchall()
