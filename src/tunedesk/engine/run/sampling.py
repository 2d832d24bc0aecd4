"""Which examples go into which batch, epoch by epoch: seeded, resumable, and grouped by length.

``EpochBatches`` shuffles the training set with a generator seeded by the run's seed and the epoch,
so a resumed run draws the same batches and can skip the ones it already trained on.

Texts are padded to the longest text of their batch, so a batch of one long and fifteen short
texts computes sixteen long ones. With ``lengths``, every pool of ``GROUP_STEPS`` optimizer steps'
worth of shuffled examples is sorted by length and cut into steps, whose order is then shuffled: a
batch holds texts of similar length, drawn at random from a pool of (at batch 16) 64. On real labelled
text (docs/benchmarks.md) that computes 1.2-1.35x the real tokens instead of 1.55-2.2x, and epochs ran
1.2-1.5x faster on CPU at the same best accuracy; pools of 8 steps padded less but lost 4 points on one
set (and a tiny test's accuracy), so 4 it is. The pool is cut
at the examples of one optimizer step (micro-batch x accumulation), which an out-of-memory halving
keeps: the halved micro-batches are halves of the old ones, so a step's examples stay the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

GROUP_STEPS = 4  # optimizer steps' worth of examples sorted by length together


class EpochBatches(torch.utils.data.Sampler[list[int]]):
    """Seeded shuffled batches per epoch that can skip the batches a resumed run already consumed.

    Lives in the main process (DataLoader workers only receive indices), so ``set_epoch`` works
    with persistent workers. Data-parallel (``world`` > 1): ``batch_size`` is the global batch and
    rank ``rank`` gets its contiguous share of each; the shards are disjoint and together are the
    one-process epoch (a last batch smaller than ``world`` is left out by every rank).
    ``lengths`` (one per example) groups batches by length; ``accum`` is the gradient accumulation.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        lengths: Sequence[int] | torch.Tensor | None = None,
        accum: int = 1,
    ) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world, self.accum = rank, world, accum
        self.lengths = None if lengths is None else [int(n) for n in lengths]
        if self.lengths is not None and len(self.lengths) != size:
            raise ValueError(f"{len(self.lengths)} lengths for {size} examples")
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def set_batch(self, batch_size: int, accum: int) -> None:
        """After an out-of-memory step: the same examples per optimizer step, in smaller micro-batches."""
        self.batch_size, self.accum = batch_size, accum

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed + 1000 * self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        if self.lengths is None:
            batches = [order[i : i + self.batch_size] for i in range(0, self.size, self.batch_size)]
        else:
            batches = [b for step in self._grouped_steps(order, g) for b in self._cut(step)]
        single = [i for i, b in enumerate(batches) if len(b) == 1]
        if len(batches) > 1 and single:  # a batch of one breaks BatchNorm in training mode
            i = single[0]
            batches[i - 1 if i else 1].extend(batches.pop(i))
        if self.world > 1:
            r, w = self.rank, self.world
            batches = [b[r * len(b) // w : (r + 1) * len(b) // w] for b in batches if len(b) >= w]
        return iter(batches[self.skip :])

    def _cut(self, examples: list[int]) -> list[list[int]]:
        return [examples[i : i + self.batch_size] for i in range(0, len(examples), self.batch_size)]

    def _grouped_steps(self, order: list[int], g: torch.Generator) -> list[list[int]]:
        assert self.lengths is not None
        lengths, step = self.lengths, self.batch_size * self.accum
        steps: list[list[int]] = []
        for start in range(0, len(order), step * GROUP_STEPS):
            pool = sorted(order[start : start + step * GROUP_STEPS], key=lambda i: -lengths[i])
            group = [pool[i : i + step] for i in range(0, len(pool), step)]
            short = group.pop() if len(group[-1]) < step else None
            steps += [group[k] for k in torch.randperm(len(group), generator=g).tolist()]
            if short is not None:  # the epoch's one short step stays last, as without grouping
                steps.append(short)
        return steps

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.skip)

    @property
    def batches_per_epoch(self) -> int:
        n = math.ceil(self.size / self.batch_size)
        n = n - 1 if n > 1 and self.size % self.batch_size == 1 else n
        last = self.size - (n - 1) * self.batch_size
        return n - 1 if self.world > 1 and last < self.world else n
