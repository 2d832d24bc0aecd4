"""Packing chat conversations: several short conversations share one row, none attends to another.

With ``hparams.packing`` on, the tokenised conversations are placed into rows of at most
``max_length`` tokens (best fit, longest first), and each row carries ``position_ids`` that restart at
0 for every conversation. Such a row has no attention mask: transformers reads the conversation
boundaries from the position ids and builds a block-diagonal causal mask (SDPA, eager) or runs the
variable-length kernel (flash attention), so a token sees only the earlier tokens of its own
conversation and RoPE positions are those of the conversation alone. The first label of every
conversation is ignored, so the last token of one conversation is never trained to predict the first
of the next: the loss of a packed row equals that of its conversations trained one by one.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100


@dataclass
class PackStats:
    conversations: int
    rows: int
    tokens: int
    padded_before: int  # tokens in batches of one conversation per row, padded to the longest of each batch
    padded_after: int

    def summary(self) -> str:
        waste_before = 1 - self.tokens / max(self.padded_before, 1)
        waste_after = 1 - self.tokens / max(self.padded_after, 1)
        return (
            f"{self.conversations} conversations packed into {self.rows} rows "
            f"(padding {100 * waste_before:.0f}% -> {100 * waste_after:.0f}% of each batch)"
        )


def plan_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices per row: longest first, each into the fullest row it still fits (best fit decreasing).
    Every length must be <= capacity (conversations are cut to max_length before)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row), sorted
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            room, row = free.pop(at)
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(i)
        if room - n > 0:
            bisect.insort(free, (room - n, row))
    return [sorted(r) for r in rows]


class PackedDataset(torch.utils.data.Dataset):
    """Rows of packed conversations: ``input_ids``, ``labels`` and per-conversation ``position_ids``."""

    def __init__(self, input_ids: Sequence[list[int]], labels: Sequence[list[int]], rows: list[list[int]]) -> None:
        self.rows = rows
        self.input_ids: list[list[int]] = []
        self.labels: list[list[int]] = []
        self.position_ids: list[list[int]] = []
        for row in rows:
            ids: list[int] = []
            lab: list[int] = []
            pos: list[int] = []
            for i in row:
                ids.extend(input_ids[i])
                lab.append(IGNORE_INDEX)  # never predicted from the previous conversation's last token
                lab.extend(labels[i][1:])
                pos.extend(range(len(input_ids[i])))
            self.input_ids.append(ids)
            self.labels.append(lab)
            self.position_ids.append(pos)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i], "position_ids": self.position_ids[i]}


def _padded(lengths: list[int], batch: int) -> int:
    return sum(max(lengths[i : i + batch]) * len(lengths[i : i + batch]) for i in range(0, len(lengths), batch))


def pack_dataset(dataset: Any, capacity: int, batch_size: int = 1) -> tuple[PackedDataset, PackStats]:
    """Pack an ``LMDataset`` of conversations (labels given) into rows of ``capacity`` tokens."""
    ids = list(dataset.input_ids)
    labels = [list(lab) if lab is not None else list(x) for x, lab in zip(ids, dataset.labels)]
    lengths = [len(x) for x in ids]
    rows = plan_rows(lengths, capacity)
    packed = PackedDataset(ids, labels, rows)
    row_lengths = [len(r) for r in packed.input_ids]
    stats = PackStats(len(ids), len(rows), sum(lengths), _padded(lengths, batch_size), _padded(row_lengths, batch_size))
    return packed, stats


def position_ids_for(rows: torch.Tensor, lengths: list[list[int]]) -> torch.Tensor:
    """Position ids restarting per conversation, for a (batch, length) tensor of packed rows given the
    conversation lengths of each row (tests and tools; the data path builds them in ``PackedDataset``)."""
    out = torch.zeros_like(rows)
    for r, lens in enumerate(lengths):
        at = 0
        for n in lens:
            out[r, at : at + n] = torch.arange(n)
            at += n
        if at < rows.shape[1]:
            out[r, at:] = torch.arange(rows.shape[1] - at)
    return out
