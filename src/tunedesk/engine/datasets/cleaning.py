"""Cleaning: find what is wrong with a data set and mark each item with flags (see ``flags``).

Duplicate groups join items that share a content hash (exact copies) or a near hash (texts equal
after normalising; images whose perceptual hashes are within a few bits). The same groups drive
the flags (duplicates, conflicting labels, leakage between train and validation) and the split,
which keeps each group on one side.

Images are compared without looking at every pair: the 256-bit dHash is cut into 16 bands (one
per row of the hash grid) and only images that share a band exactly are compared. Two near copies
(under 5 % of the bits differ) almost always share several rows. A band value shared by very many
images (a plain background row) says nothing and is skipped; images whose whole hash is equal are
grouped directly.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tunedesk.engine.datasets import flags as F
from tunedesk.engine.datasets.hashing import (
    IMAGE_HASH_LEN,
    PHASH_BITS,
    PHASH_MAX_BITS,
    PHASH_MAX_COLOUR,
    TINY_IMAGE_PIXELS,
    inspect_image,
    split_image_hash,
)
from tunedesk.engine.datasets.store import LABELLED_KINDS, DatasetStore

DEFAULT_OVERLONG_CHARS = 2000  # about 500 tokens: more than a 512-token model sees


@dataclass
class CleaningOptions:
    overlong_chars: int = DEFAULT_OVERLONG_CHARS
    phash_max_bits: int = PHASH_MAX_BITS
    phash_max_colour: int = PHASH_MAX_COLOUR
    tiny_pixels: int = TINY_IMAGE_PIXELS


class Row(NamedTuple):
    """What cleaning needs of an item."""

    id: int
    label: str
    split: str
    content_hash: str
    near_hash: str
    flags: int
    length: int  # characters of text (0 for images)


@dataclass
class CleaningReport:
    """Counts per flag (item ids: ``DatasetStore.flagged_ids``) and the duplicate groups."""

    counts: dict[str, int]  # flag key -> items flagged
    groups: list[list[int]]  # duplicate groups (exact or near) of 2+ item ids, in item order
    extra_copies: list[int]  # every item of a group but its first: what "remove duplicates" deletes
    rare_classes: list[str]
    total: int
    changed: int = 0  # items whose flags changed in this refresh


# Row fields by position: the hot loops index plain tuples (100k rows in a fraction of a second).
_ID, _LABEL, _SPLIT, _CHASH, _NHASH, _FLAGS, _LENGTH = range(7)


class _UnionFind:
    """Union-find over the few items that have a duplicate (a dict: most items are alone)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while (p := parent.get(root, root)) != root:
            root = p
        while i != root:  # path compression
            parent[i], i = root, parent.get(i, i)
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for i in list(self.parent):
            out[self.find(i)].append(i)
        for root, members in out.items():
            if root not in self.parent:
                members.append(root)
        return [sorted(set(m)) for m in out.values() if len(set(m)) > 1]


_BAND_BITS = 16
_CROWDED_BAND = 200  # a band value shared by more images than this is background, not evidence


def _band_buckets(bits: list[int]) -> Iterator[list[int]]:
    """Groups (2 to _CROWDED_BAND indexes) of hashes equal in one band. Sorting the band values and
    looking at neighbours is several times faster in Python than a dict of lists, and needs no
    memory per distinct value."""
    mask = (1 << _BAND_BITS) - 1
    n = len(bits)
    for band in range(PHASH_BITS // _BAND_BITS):
        shift = band * _BAND_BITS
        keys = [(h >> shift) & mask for h in bits]
        order = sorted(range(n), key=keys.__getitem__)
        ordered = [keys[i] for i in order]
        same = [i for i, (a, b) in enumerate(zip(ordered, ordered[1:]), 1) if a == b]
        start = end = -1
        for i in same + [-1]:
            if i == end + 1 and i != -1:
                end = i
                continue
            if start >= 0 and end - start + 1 <= _CROWDED_BAND:
                yield order[start : end + 1]
            start, end = i - 1, i


def _near_image_pairs(rows: Sequence[tuple], options: CleaningOptions) -> list[tuple[int, int]]:
    """Index pairs of near-duplicate images (a spanning set: enough to build the groups)."""
    reps: dict[str, int] = {}  # equal near hashes: compare one of them
    pairs: list[tuple[int, int]] = []
    for i, r in enumerate(rows):
        if len(r[_NHASH]) != IMAGE_HASH_LEN:
            continue
        j = reps.setdefault(r[_NHASH], i)
        if j != i:
            pairs.append((j, i))
    idx = list(reps.values())
    parsed = [split_image_hash(rows[i][_NHASH]) for i in idx]
    bits = [p[0] for p in parsed]  # type: ignore[index]
    colour = [p[1] for p in parsed]  # type: ignore[index]
    max_bits, max_colour = options.phash_max_bits, options.phash_max_colour
    for bucket in _band_buckets(bits):
        # a pair in several buckets is compared again: cheaper than remembering which were compared
        for x, a in enumerate(bucket):
            bits_a, colour_a = bits[a], colour[a]
            for b in bucket[x + 1 :]:
                if (bits_a ^ bits[b]).bit_count() <= max_bits and all(
                    abs(p - q) <= max_colour for p, q in zip(colour_a, colour[b])
                ):
                    pairs.append((idx[a], idx[b]))
    return pairs


def analyse(
    rows: Sequence[Row] | Sequence[tuple], kind: str, options: CleaningOptions | None = None
) -> tuple[list[int], list[list[int]]]:
    """Duplicate flags (exact, near, conflicting labels, leakage) for each row, in order, and the
    duplicate groups as lists of row indexes (2+ members, sorted).

    Pure function over rows (``Row`` or plain tuples in its field order). Only rows that have a copy
    matter, so callers pass just those candidates (``duplicate_candidates``); per-item flags (empty,
    overlong, unlabelled, rare class, file problems) are set by ``refresh_flags`` in SQL.
    """
    options = options or CleaningOptions()
    flags = [0] * len(rows)
    uf, near_uf = _UnionFind(), _UnionFind()  # near: its own relation, to tell near from exact copies
    first: dict[str, int] = {}
    for i, r in enumerate(rows):
        h = r[_CHASH]
        if h:
            j = first.setdefault(h, i)
            if j != i:
                uf.union(j, i)
                flags[i] |= F.EXACT_DUPLICATE
                flags[j] |= F.EXACT_DUPLICATE
    if kind == "image":
        near_pairs = _near_image_pairs(rows, options)
    else:
        near_first: dict[str, int] = {}
        near_pairs = []
        for i, r in enumerate(rows):
            h = r[_NHASH]
            if h:
                j = near_first.setdefault(h, i)
                if j != i:
                    near_pairs.append((j, i))
    for a, b in near_pairs:
        uf.union(a, b)
        near_uf.union(a, b)
    for members in near_uf.groups():
        if len({rows[i][_CHASH] for i in members}) > 1:
            for i in members:
                flags[i] |= F.NEAR_DUPLICATE
    labelled = kind in LABELLED_KINDS
    groups = sorted(uf.groups(), key=lambda g: g[0])
    for members in groups:
        if labelled and len({rows[i][_LABEL] for i in members if rows[i][_LABEL]}) > 1:
            for i in members:
                flags[i] |= F.LABEL_CONFLICT
        splits = {rows[i][_SPLIT] for i in members}
        if "train" in splits and "val" in splits:
            for i in members:
                flags[i] |= F.LEAKAGE
    return flags, groups


def duplicate_candidates(store: DatasetStore, dataset_id: int, kind: str) -> list[tuple]:
    """Rows (``Row`` field order, length 0) that may have a copy, in item order. Texts: those sharing a
    content or near hash with another item, found by SQL (memory stays small for millions of rows).
    Images: every decodable image (near copies are found by comparing perceptual hashes)."""
    cols = "id, label, split, content_hash, near_hash, flags, 0"
    if kind == "image":
        sql = (
            f"SELECT {cols} FROM dataset_items WHERE dataset_id = :ds AND (content_hash != '' OR near_hash != '') "
            "ORDER BY position"
        )
    else:
        sql = f"""
            SELECT {cols} FROM dataset_items WHERE dataset_id = :ds AND (
                content_hash IN (SELECT content_hash FROM dataset_items WHERE dataset_id = :ds AND content_hash != ''
                                 GROUP BY content_hash HAVING COUNT(*) > 1)
                OR near_hash IN (SELECT near_hash FROM dataset_items WHERE dataset_id = :ds AND near_hash != ''
                                 GROUP BY near_hash HAVING COUNT(*) > 1))
            ORDER BY position"""
    return store.conn.execute(sql, {"ds": dataset_id}).fetchall()


def duplicate_groups(store: DatasetStore, dataset_id: int, options: CleaningOptions | None = None) -> list[list[int]]:
    """Groups (2+ item ids, in item order) of exact or near duplicates."""
    info = store.get_dataset(dataset_id)
    rows = duplicate_candidates(store, dataset_id, info.kind)
    _, groups = analyse(rows, info.kind, options)
    return [[rows[i][_ID] for i in g] for g in groups]


def refresh_flags(store: DatasetStore, dataset_id: int, options: CleaningOptions | None = None) -> CleaningReport:
    """Recompute every flag of a data set and store the ones that changed (one transaction).

    Duplicate flags come from ``analyse`` over the candidates; the per-item flags are one SQL UPDATE
    that writes only rows whose flags change."""
    options = options or CleaningOptions()
    info = store.get_dataset(dataset_id)
    rows = duplicate_candidates(store, dataset_id, info.kind)
    group_flags, groups = analyse(rows, info.kind, options)
    texty = info.kind != "image"
    labelled = info.kind in LABELLED_KINDS
    conn = store.conn
    rare = (
        [
            r[0]
            for r in conn.execute(
                "SELECT label FROM dataset_items WHERE dataset_id = ? AND label != '' GROUP BY label HAVING COUNT(*) < 2",
                (dataset_id,),
            )
        ]
        if labelled
        else []
    )
    expr = f"""((flags & {F.FILE_FLAGS})
        | COALESCE((SELECT bits FROM temp.td_group_flags g WHERE g.id = dataset_items.id), 0)
        | (CASE WHEN {int(texty)} AND near_hash = '' THEN {F.EMPTY_TEXT} ELSE 0 END)
        | (CASE WHEN {int(texty)} AND length(text) > {int(options.overlong_chars)} THEN {F.OVERLONG_TEXT} ELSE 0 END)
        | (CASE WHEN {int(labelled)} AND label = '' THEN {F.UNLABELLED} ELSE 0 END)
        | (CASE WHEN label IN (SELECT label FROM temp.td_rare) THEN {F.RARE_CLASS} ELSE 0 END))"""
    with store.write():
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS td_group_flags (id INTEGER PRIMARY KEY, bits INTEGER)")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS td_rare (label TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM temp.td_group_flags")
        conn.execute("DELETE FROM temp.td_rare")
        conn.executemany(
            "INSERT INTO temp.td_group_flags (id, bits) VALUES (?, ?)",
            [(r[_ID], bits) for r, bits in zip(rows, group_flags) if bits],
        )
        conn.executemany("INSERT INTO temp.td_rare (label) VALUES (?)", [(lab,) for lab in rare])
        before = conn.total_changes
        conn.execute(f"UPDATE dataset_items SET flags = {expr} WHERE dataset_id = ? AND flags != {expr}", (dataset_id,))
        changed = conn.total_changes - before
    id_groups = [[rows[i][_ID] for i in g] for g in groups]
    return CleaningReport(
        store.flag_counts(dataset_id),
        id_groups,
        [i for g in id_groups for i in g[1:]],
        sorted(rare),
        store.count_items(dataset_id),
        changed,
    )


def check_files(
    store: DatasetStore,
    dataset_id: int,
    progress: Callable[[int, int], None] | None = None,
    options: CleaningOptions | None = None,
) -> dict[str, int]:
    """Look at an image data set's files again: a file that was moved or deleted is flagged missing;
    a file that changed (size or time) is read again (hashes, size, problems). Returns counts
    ``{"checked", "missing", "changed", "back"}``. ``progress(done, total)`` may raise to cancel."""
    options = options or CleaningOptions()
    rows = store.conn.execute(
        "SELECT id, path, size_bytes, mtime, flags FROM dataset_items WHERE dataset_id = ? AND path IS NOT NULL "
        "ORDER BY position",
        (dataset_id,),
    ).fetchall()
    out = {"checked": 0, "missing": 0, "changed": 0, "back": 0}
    updates: list[tuple] = []
    for n, (item_id, path, size, mtime, bits) in enumerate(rows):
        if progress is not None and n % 256 == 0:
            progress(n, len(rows))
        out["checked"] += 1
        try:
            st = os.stat(path)
        except OSError:
            if not bits & F.MISSING_FILE:
                updates.append(("flags", bits | F.MISSING_FILE, item_id))
            out["missing"] += 1
            continue
        if bits & F.MISSING_FILE or st.st_size != size or st.st_mtime != mtime:
            info = inspect_image(path, options.tiny_pixels)
            file_bits = F.PROBLEM_FLAG.get(info.problem or "", 0)
            out["back" if bits & F.MISSING_FILE else "changed"] += 1
            updates.append(("file", item_id, (bits & ~F.FILE_FLAGS) | file_bits, info))
    if updates:
        with store.write() as conn:
            for u in updates:
                if u[0] == "flags":
                    conn.execute("UPDATE dataset_items SET flags = ? WHERE id = ?", (u[1], u[2]))
                else:
                    _, item_id, bits, info = u
                    store.set_file_info(
                        item_id,
                        flags=bits,
                        content_hash=info.content_hash,
                        near_hash=info.near_hash,
                        width=info.width,
                        height=info.height,
                        size_bytes=info.size_bytes,
                        mtime=info.mtime,
                    )
    if progress is not None:
        progress(len(rows), len(rows))
    return out
