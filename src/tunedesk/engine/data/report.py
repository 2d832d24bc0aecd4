"""What happened while reading a data set: rows read, rows kept, and every row left out and why.

Readers never drop a row silently: each skipped row becomes a ``DataIssue`` with its file and line,
so the user can fix the source. The report's ``summary()`` is the one line the CLI prints and the
UI shows above the issue table.

Convention for ``DataIssue.reason``: the part before the first ``": "`` is the *category* used to
group issues in the summary (``"invalid JSON: Expecting value at column 1"`` counts as
``invalid JSON``), so put the variable detail after a colon.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

ACTIONS = ("skipped", "refused", "warning")

#: Issues stored one by one; beyond this only their counts are kept (a broken 10 GB file must not
#: fill memory with issue objects). The summary still counts every issue.
MAX_STORED_ISSUES = 10_000


@dataclass
class DataIssue:
    """One row (or file) that was left out or looks suspicious. ``path`` is what the user sees:
    the file name for tables, the path relative to the data folder for images."""

    path: str
    line: int | None
    reason: str
    action: str  # "skipped" | "refused" | "warning"

    @property
    def category(self) -> str:
        """The reason without its detail, for grouping (``"too few fields"``)."""
        return self.reason.split(": ", 1)[0]

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path} line {self.line}"
        if self.action == "warning":  # shown as a warning already; "(warning)" would say it twice
            return f"{where}: {self.reason}"
        return f"{where}: {self.reason} ({self.action})"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "reason": self.reason, "action": self.action}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class DataReport:
    """The outcome of reading one source (a table file or an image folder)."""

    source: str
    encoding: str | None = None
    encoding_confident: bool = True
    rows_read: int = 0
    rows_kept: int = 0
    issues: list[DataIssue] = field(default_factory=list)
    unit: str = "row"  # "row" for tables, "image" for image folders (used in the summary)
    limit_reached: bool = False  # stopped early because of max_items
    # Issues beyond MAX_STORED_ISSUES: (action, category) -> count. Counted in summary().
    issues_not_stored: Counter = field(default_factory=Counter, repr=False)

    def add(
        self,
        reason: str,
        line: int | None = None,
        action: str = "skipped",
        path: str | None = None,
    ) -> DataIssue:
        """Record an issue. ``path`` defaults to the source's file name."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        issue = DataIssue(path if path is not None else PurePath(self.source).name, line, reason, action)
        if len(self.issues) < MAX_STORED_ISSUES:
            self.issues.append(issue)
        else:
            self.issues_not_stored[(action, issue.category)] += 1
        return issue

    def counts(self) -> dict[str, Counter]:
        """action -> Counter(category -> count), over stored and not-stored issues."""
        out: dict[str, Counter] = {a: Counter() for a in ACTIONS}
        for issue in self.issues:
            out.setdefault(issue.action, Counter())[issue.category] += 1
        for (action, category), n in self.issues_not_stored.items():
            out.setdefault(action, Counter())[category] += n
        return out

    @property
    def skipped(self) -> int:
        return sum(self.counts()["skipped"].values())

    @property
    def warnings(self) -> int:
        return sum(self.counts()["warning"].values())

    def summary(self) -> str:
        """One line: ``read 612 rows, kept 608; 4 skipped (3 empty text, 1 blank label)``."""
        parts = [f"read {_plural(self.rows_read, self.unit)}, kept {self.rows_kept}"]
        for action, counter in self.counts().items():
            total = sum(counter.values())
            if not total:
                continue
            # Most frequent first; ties keep first-seen order (Counter preserves insertion order).
            detail = ", ".join(f"{n} {cat}" for cat, n in counter.most_common())
            head = _plural(total, "warning") if action == "warning" else f"{total} {action}"
            parts.append(f"{head} ({detail})")
        if self.limit_reached:
            parts.append("stopped at max_items")
        if self.encoding and not self.encoding_confident:
            parts.append(f"encoding guessed as {self.encoding}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (stored with dataset versions and run records)."""
        return {
            "source": self.source,
            "encoding": self.encoding,
            "encoding_confident": self.encoding_confident,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "unit": self.unit,
            "limit_reached": self.limit_reached,
            "issues": [i.to_dict() for i in self.issues],
            "issues_not_stored": [[a, c, n] for (a, c), n in self.issues_not_stored.items()],
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataReport:
        report = cls(
            source=d["source"],
            encoding=d.get("encoding"),
            encoding_confident=d.get("encoding_confident", True),
            rows_read=d.get("rows_read", 0),
            rows_kept=d.get("rows_kept", 0),
            unit=d.get("unit", "row"),
            limit_reached=d.get("limit_reached", False),
        )
        report.issues = [DataIssue(**i) for i in d.get("issues", [])]
        report.issues_not_stored = Counter({(a, c): n for a, c, n in d.get("issues_not_stored", [])})
        return report
