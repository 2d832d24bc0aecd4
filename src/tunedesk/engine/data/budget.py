"""How much memory a data set will take, estimated before any of it is read.

A 200 MB CSV of short texts is about two million rows; tokenised in one call it needed over 12 GB.
TuneDesk tokenises in chunks, but the texts, a Python object per row and the token tensors remain. The estimate below
samples the start of the file, extrapolates, and compares with the memory the system has free:
above ``REFUSE_SHARE`` of it the run is refused before anything is read, above ``WARN_SHARE`` it warns.

Measured before the input feed's padded tensors landed (ids in one int32 array): a 203 MiB CSV of 2.66
million short tickets peaked at 1.98 GiB for the whole process. With the feed's padded int64 tensors
the token cost is higher; the estimate counts it (TOKEN_BYTES).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunedesk.engine.errors import DataError

SAMPLE_BYTES = 1 << 20
ROW_OVERHEAD = 620  # bytes a row costs besides its text (row object, strings, three token lists, slots)
# Token ids, mask and type ids: Python lists while tokenising (36 bytes an id, 8 a mask or type slot), then the input
# feed's int64 tensors padded to the longest text (data/tensors.TokenTensors, 3 x 8 bytes a position).
TOKEN_BYTES = 52
PAD_BYTES = 24  # per padded position (the padding reaches the longest text: max_length counted)
CHARS_PER_TOKEN = 3.0  # conservative (English is ~4 for BERT-like tokenisers)
REFUSE_SHARE = 0.6
WARN_SHARE = 0.25


@dataclass(frozen=True)
class Budget:
    rows: int  # estimated rows that will be kept
    needed: int  # bytes, estimated peak
    available: int  # bytes free on this machine now
    unit: str = "rows"  # what ``rows`` counts; "" when the count means nothing to the user (a corpus)

    @property
    def share(self) -> float:
        return self.needed / max(self.available, 1)


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def estimate_text_table(path: Path, max_items: int | None, max_length: int) -> Budget:
    """Rows and peak bytes for reading and tokenising a text table (CSV/TSV/JSONL), from its first MiB."""
    size = Path(path).stat().st_size
    with open(path, "rb") as fh:
        sample = fh.read(SAMPLE_BYTES)
    lines = max(sample.count(b"\n"), 1)
    bytes_per_row = max(len(sample) / lines, 1.0)
    rows = int(size / bytes_per_row) if len(sample) < size else lines
    if max_items is not None:
        rows = min(rows, int(max_items))
    tokens_per_row = min(float(max_length), bytes_per_row / CHARS_PER_TOKEN + 2)
    # a text string takes about its byte size (1 byte a char for ASCII, more for other scripts, never less)
    per_row = ROW_OVERHEAD + bytes_per_row + tokens_per_row * TOKEN_BYTES + max_length * PAD_BYTES
    return Budget(rows=rows, needed=int(rows * per_row), available=available_memory())


LM_TOKEN_BYTES = 100  # a language-model corpus is still held as Python lists: the token stream and its blocks


def estimate_corpus(path: Path, max_items: int | None) -> Budget | None:
    """Peak bytes for a language-model corpus or chat file (None when max_items already limits it)."""
    if max_items is not None:
        return None
    path = Path(path)
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    size = sum(p.stat().st_size for p in files)
    tokens = size / CHARS_PER_TOKEN
    needed = int(2 * size + tokens * LM_TOKEN_BYTES)
    return Budget(rows=len(files), needed=needed, available=available_memory(), unit="")


def check_budget(budget: Budget, name: str) -> str | None:
    """Refuse a data set that would not fit (DataError with a max_items that fits); a warning when tight."""
    gib = 2**30
    if budget.share > REFUSE_SHARE:
        fit = max(int(budget.rows * REFUSE_SHARE / budget.share * 0.8), 1)
        raise DataError(
            f"{name} is too big for this machine's memory: "
            f"{f'about {budget.rows:,} {budget.unit}' if budget.unit else 'its texts'} need about "
            f"{budget.needed / gib:.1f} GiB, and {budget.available / gib:.1f} GiB are free",
            (
                f"set data.max_items to at most about {fit:,} (the file's first {budget.unit} are used)"
                if budget.unit
                else "set data.max_items to use fewer documents, or split the corpus"
            )
            + ", or close other programs to free memory",
        )
    if budget.share > WARN_SHARE:
        what = f"about {budget.rows:,} {budget.unit}" if budget.unit else "its texts"
        return (
            f"{name}: {what} will take about {budget.needed / gib:.1f} GiB of the "
            f"{budget.available / gib:.1f} GiB free; set data.max_items to use fewer"
        )
    return None
