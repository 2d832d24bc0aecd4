"""Cleaning flags: one bit each in ``dataset_items.flags``.

File flags (unreadable, truncated, tiny, missing) are facts about an image file, set when it is read
(import, "check files"). All other flags depend on the rest of the data set (duplicates, conflicts,
leakage, rare classes) and are recomputed by ``cleaning.refresh_flags`` after edits.
"""

from __future__ import annotations

from dataclasses import dataclass

EXACT_DUPLICATE = 1 << 0
LABEL_CONFLICT = 1 << 1
NEAR_DUPLICATE = 1 << 2
LEAKAGE = 1 << 3
EMPTY_TEXT = 1 << 4
OVERLONG_TEXT = 1 << 5
UNREADABLE_IMAGE = 1 << 6
TRUNCATED_IMAGE = 1 << 7
TINY_IMAGE = 1 << 8
MISSING_FILE = 1 << 9
RARE_CLASS = 1 << 10
UNLABELLED = 1 << 11

FILE_FLAGS = UNREADABLE_IMAGE | TRUNCATED_IMAGE | TINY_IMAGE | MISSING_FILE
PROBLEM_FLAG = {
    "unreadable": UNREADABLE_IMAGE,
    "truncated": TRUNCATED_IMAGE,
    "tiny": TINY_IMAGE,
    "missing": MISSING_FILE,
}


@dataclass(frozen=True)
class FlagInfo:
    bit: int
    key: str
    title: str
    description: str
    kinds: tuple[str, ...]  # data set kinds the flag applies to
    duplicate_group: bool = False  # "select extra copies" makes sense (keep one of each group)


_TEXTS = ("text", "text_corpus", "chat")
_ALL = ("text", "image", "text_corpus", "chat")
_LABELLED = ("text", "image")

FLAGS: tuple[FlagInfo, ...] = (
    FlagInfo(
        EXACT_DUPLICATE,
        "exact_duplicate",
        "Exact duplicates",
        "the same text or image file content appears more than once",
        _ALL,
        True,
    ),
    FlagInfo(
        LABEL_CONFLICT,
        "label_conflict",
        "Conflicting labels",
        "copies (exact or near) of one item carry different labels: at most one can be right",
        _LABELLED,
    ),
    FlagInfo(
        NEAR_DUPLICATE,
        "near_duplicate",
        "Near duplicates",
        "texts equal up to case, punctuation and spacing; images that look the same",
        _ALL,
        True,
    ),
    FlagInfo(
        LEAKAGE,
        "leakage",
        "Train/validation leakage",
        "copies on both sides of the split: validation grades memory, so its score looks better than it is",
        _ALL,
    ),
    FlagInfo(EMPTY_TEXT, "empty_text", "Empty texts", "nothing to learn from", _TEXTS),
    FlagInfo(
        OVERLONG_TEXT,
        "overlong_text",
        "Overlong texts",
        "longer than the limit: the model only sees the beginning",
        _TEXTS,
    ),
    FlagInfo(
        UNREADABLE_IMAGE,
        "unreadable_image",
        "Unreadable images",
        "the file is not an image, is damaged, or cannot be opened",
        ("image",),
    ),
    FlagInfo(TRUNCATED_IMAGE, "truncated_image", "Truncated images", "the file is cut short", ("image",)),
    FlagInfo(TINY_IMAGE, "tiny_image", "Tiny images", "too few pixels to show the class", ("image",)),
    FlagInfo(
        MISSING_FILE, "missing_file", "Missing files", "the image was moved or deleted since the import", ("image",)
    ),
    FlagInfo(
        RARE_CLASS,
        "rare_class",
        "Classes under 2 examples",
        "a class with fewer than 2 examples cannot be in both train and validation",
        _LABELLED,
    ),
    FlagInfo(UNLABELLED, "unlabelled", "Not labelled", "the item has no label yet", _LABELLED),
)
FLAG_BY_KEY = {f.key: f for f in FLAGS}
FLAG_BY_BIT = {f.bit: f for f in FLAGS}


def flag_names(flags: int) -> list[str]:
    """Titles of the flags set in ``flags``, in FLAGS order."""
    return [f.title for f in FLAGS if flags & f.bit]


def flags_for_kind(kind: str) -> tuple[FlagInfo, ...]:
    return tuple(f for f in FLAGS if kind in f.kinds)
