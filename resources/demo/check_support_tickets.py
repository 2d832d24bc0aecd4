#!/usr/bin/env python3
"""Validate resources/demo/support_tickets.csv so a regenerated file can't silently break the demo.

Checks: UTF-8, exact header, CSV parses, >= 600 rows, exactly the 5 classes with 110-130 rows
each, 5-40 words per text, no duplicate texts, and how often a text names its own label
(that should stay rare, or the demo would be a keyword lookup). Exits non-zero on failure.

Usage:  python resources/demo/check_support_tickets.py [PATH]
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

CLASSES = {"billing", "technical", "shipping", "account", "feedback"}
DEFAULT = Path(__file__).resolve().parent / "support_tickets.csv"


def check(path: Path) -> list[str]:
    """Return a list of problems (empty when the file is fine); prints a summary."""
    problems: list[str] = []
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return [f"not UTF-8: {e}"]
    if text.startswith("\ufeff"):
        problems.append("file starts with a BOM")
    rows = list(csv.reader(text.splitlines(keepends=True), strict=True))
    if not rows or rows[0] != ["text", "label"]:
        problems.append(f"header is {rows[:1]}, expected ['text', 'label']")
    body = rows[1:]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != 2]
    if bad:
        problems.append(f"rows without exactly 2 fields at lines {bad[:10]}")
    body = [r for r in body if len(r) == 2]
    if len(body) < 600:
        problems.append(f"only {len(body)} rows, need >= 600")
    counts = Counter(label for _, label in body)
    if set(counts) != CLASSES:
        problems.append(f"classes are {sorted(counts)}, expected {sorted(CLASSES)}")
    for label, n in sorted(counts.items()):
        if not 110 <= n <= 130:
            problems.append(f"class {label!r} has {n} rows, expected 110-130")
    dup = [t for t, n in Counter(t for t, _ in body).items() if n > 1]
    if dup:
        problems.append(f"{len(dup)} duplicate texts, e.g. {dup[0]!r}")
    lengths = [len(t.split()) for t, _ in body]
    short_long = [t for t, _ in body if not 5 <= len(t.split()) <= 40]
    if short_long:
        problems.append(f"{len(short_long)} texts outside 5-40 words, e.g. {short_long[0]!r}")
    self_named = Counter(label for t, label in body if label in t.lower())
    print(f"{path}: {len(body)} rows")
    for label in sorted(counts):
        share = self_named[label] / counts[label]
        print(f"  {label:10s} {counts[label]:4d} rows, {share:5.1%} mention their own label word")
        if share > 0.5:
            problems.append(f"{label!r}: {share:.0%} of texts contain the label word")
    if lengths:
        print(f"  words per text: min {min(lengths)}, mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)}")
    return problems


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    problems = check(path)
    for p in problems:
        print("PROBLEM:", p)
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
