"""Batches per epoch: seeded, every example once, and (texts) grouped by length without losing the
randomness or the invariants that resume and out-of-memory halving rely on."""

from __future__ import annotations

import random

import torch

from tunedesk.engine.run.sampling import GROUP_STEPS, EpochBatches


def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.choice((rng.randint(4, 12), rng.randint(40, 128))) for _ in range(n)]


def _padded(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(max(lengths[i] for i in b) * len(b) for b in batches)


def test_without_lengths_the_batches_are_the_shuffled_order_cut_in_pieces():
    sampler = EpochBatches(37, 8, seed=5)
    sampler.set_epoch(2)
    order = torch.randperm(37, generator=torch.Generator().manual_seed(5 + 2000)).tolist()
    assert list(sampler) == [order[i : i + 8] for i in range(0, 37, 8)]


def test_grouped_batches_hold_every_example_once_in_the_same_sizes_with_far_less_padding():
    n, lengths = 1000, _lengths(1000)
    plain, grouped = EpochBatches(n, 16, seed=1), EpochBatches(n, 16, seed=1, lengths=lengths)
    a, b = list(plain), list(grouped)
    assert sorted(i for batch in b for i in batch) == list(range(n))
    assert sorted(map(len, a)) == sorted(map(len, b)) and len(b) == grouped.batches_per_epoch
    assert _padded(b, lengths) < 0.7 * _padded(a, lengths)
    # still random: the same seed and epoch give the same batches, another epoch other ones
    again = EpochBatches(n, 16, seed=1, lengths=lengths)
    assert list(again) == b
    grouped.set_epoch(1)
    assert list(grouped) != b
    # a batch comes from one pool of GROUP_STEPS steps of the shuffled order, not from the whole data set
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1)).tolist()
    pool_of = {i: k // (16 * GROUP_STEPS) for k, i in enumerate(order)}
    assert all(len({pool_of[i] for i in batch}) == 1 for batch in b)


def test_halving_the_batch_splits_each_batch_so_a_step_keeps_its_examples():
    n, lengths = 203, _lengths(203, seed=3)
    full = EpochBatches(n, 8, seed=2, lengths=lengths, accum=1)
    halved = EpochBatches(n, 8, seed=2, lengths=lengths, accum=1)
    halved.set_batch(4, 2)
    a, b = list(full), list(halved)
    for k in range(len(a) - 1):
        assert sorted(b[2 * k] + b[2 * k + 1]) == sorted(a[k])
    # skipping (a resume, or the restart of an out-of-memory window) skips whole micro-batches of this order
    halved.set_epoch(0, skip=6)
    assert list(halved) == b[6:]


def test_no_batch_of_one_and_data_parallel_shards_stay_disjoint():
    n, lengths = 33, _lengths(33, seed=4)  # 33 = 4 x 8 + 1
    batches = list(EpochBatches(n, 8, seed=0, lengths=lengths))
    assert min(map(len, batches)) > 1 and sorted(i for b in batches for i in b) == list(range(n))
    shards = [list(EpochBatches(n, 8, seed=0, rank=r, world=2, lengths=lengths)) for r in range(2)]
    for one, left, right in zip(batches, *shards):
        assert sorted(left + right) == sorted(one) and not set(left) & set(right)
