"""The learning-rate range test on the tiny BERT: a curve, a suggestion, and the model put back."""

from __future__ import annotations

import math

import pytest

from tests.fixtures.data import tiny_text_config


@pytest.fixture(scope="module")
def prepared(tiny_bert_dir, tmp_path_factory):
    import csv

    from tests.fixtures.data import make_texts
    from tunedesk.engine.run.runner import prepare

    path = tmp_path_factory.mktemp("lr") / "tickets.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(make_texts())
    return prepare(tiny_text_config(tiny_bert_dir, path, batch_size=16, learning_rate=None))


def test_range_test_gives_a_curve_and_a_suggestion_and_restores_the_model(prepared):
    import torch

    from tunedesk.engine.run.lr_finder import find_lr

    model = prepared.loaded.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    seen = []
    result = find_lr(prepared, start_lr=1e-6, end_lr=10.0, num_steps=40, progress=lambda *a: seen.append(a))
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) >= 10
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:]))  # exponentially increasing
    assert result.lrs[0] == pytest.approx(1e-6)
    assert result.diverged  # 10 is far too high for anyone: the test stops on its own
    assert len(result.lrs) < 40
    assert 1e-6 <= result.suggestion <= 10.0
    assert result.method in ("steepest", "min/10")
    assert f"{result.suggestion:.2g}" in result.explanation
    assert len(seen) == len(result.lrs)
    # Everything is put back: weights, flags, mode, RNG.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_suggestion_rules():
    from tunedesk.engine.run.lr_finder import suggest

    lrs = [10 ** (-6 + i * 0.25) for i in range(25)]
    # A clean descent around 1e-3 then a blow-up.
    smoothed = [2.0 - 1.5 / (1 + math.exp(-(math.log10(lr) + 3) * 3)) for lr in lrs[:20]] + [1.0, 2.0, 4.0, 8.0, 16.0]
    lr, method = suggest(lrs, smoothed)
    assert method == "steepest"
    assert 3e-4 <= lr <= 3e-3
    # Flat curve: no steepest point, so a tenth of the minimum's learning rate.
    flat = [1.0] * 25
    lr, method = suggest(lrs, flat)
    assert method == "min/10"
    assert lr == pytest.approx(float(f"{lrs[0] / 10:.2g}"))


def test_bad_range_is_refused(prepared):
    from tunedesk.engine.errors import ConfigError
    from tunedesk.engine.run.lr_finder import find_lr

    with pytest.raises(ConfigError):
        find_lr(prepared, start_lr=1e-2, end_lr=1e-3)
    with pytest.raises(ConfigError):
        find_lr(prepared, num_steps=2)


def test_stop_request_ends_the_test_early(prepared):
    from tunedesk.engine.errors import TrainingError
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.lr_finder import find_lr

    control = Control()
    control.request_stop()
    with pytest.raises(TrainingError):
        find_lr(prepared, num_steps=20, control=control)
