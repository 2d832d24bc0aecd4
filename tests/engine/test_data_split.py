"""Label checks and the stratified, seeded train/validation split."""

from __future__ import annotations

from collections import Counter

import pytest

from tunedesk.engine.data import check_labels, split_warnings, stratified_split
from tunedesk.engine.errors import ConfigError, DataError


def test_check_labels_sorted_unique():
    assert check_labels(["b", "a", "b", "c"], "t.csv") == ["a", "b", "c"]


def test_check_labels_empty_and_single_class():
    with pytest.raises(DataError) as info:
        check_labels([], "t.csv")
    assert "t.csv has no examples" in info.value.message and info.value.hint.strip()
    with pytest.raises(DataError) as info:
        check_labels(["pos"] * 12, "t.csv")
    err = info.value
    assert "only one class" in err.message and "'pos'" in err.message and "12 examples" in err.message
    assert "at least 2 classes" in err.hint


def test_split_is_stratified():
    labels = ["a"] * 100 + ["b"] * 50 + ["c"] * 10
    train, val = stratified_split(labels, 0.2, seed=0)
    assert sorted(train + val) == list(range(len(labels)))
    assert not set(train) & set(val)
    assert train == sorted(train) and val == sorted(val)
    assert Counter(labels[i] for i in val) == {"a": 20, "b": 10, "c": 2}
    assert Counter(labels[i] for i in train) == {"a": 80, "b": 40, "c": 8}


def test_split_deterministic_and_seed_dependent():
    labels = [f"c{i % 4}" for i in range(200)]
    assert stratified_split(labels, 0.25, seed=7) == stratified_split(list(labels), 0.25, seed=7)
    assert stratified_split(labels, 0.25, seed=7) != stratified_split(labels, 0.25, seed=8)


def test_split_accepts_any_sequence():
    labels = ["x", "y"] * 20
    assert stratified_split(labels, 0.3, seed=1) == stratified_split(tuple(labels), 0.3, seed=1)


def test_tiny_classes():
    labels = ["solo", "pair", "pair", "trio", "trio", "trio", "big"] + ["big"] * 9
    train, val = stratified_split(labels, 0.1, seed=3)
    val_counts = Counter(labels[i] for i in val)
    train_counts = Counter(labels[i] for i in train)
    assert val_counts["solo"] == 0 and train_counts["solo"] == 1  # a single example stays in train
    assert val_counts["pair"] == 1 and train_counts["pair"] == 1  # >= 1 in each
    assert val_counts["trio"] == 1 and train_counts["trio"] == 2
    assert val_counts["big"] == 1 and train_counts["big"] == 9
    assert any(w.startswith("no validation example of 'solo'") for w in split_warnings(labels, train, val))


def test_large_fraction_keeps_one_in_train():
    labels = ["a"] * 3 + ["b"] * 3
    train, val = stratified_split(labels, 0.9, seed=0)
    assert Counter(labels[i] for i in train) == {"a": 1, "b": 1}


def test_zero_fraction_means_no_validation():
    labels = ["a", "b"] * 5
    assert stratified_split(labels, 0.0, seed=0) == (list(range(10)), [])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_fraction(bad):
    with pytest.raises(ConfigError) as info:
        stratified_split(["a", "b"], bad, seed=0)
    assert info.value.field == "data.val_fraction" and info.value.hint.strip()


def test_split_warnings_name_what_is_too_small():
    from tunedesk.engine.data import split_warnings

    labels = ["a"] * 40 + ["b"] * 40 + ["rare"] * 3 + ["solo"]
    train, val = stratified_split(labels, 0.2, seed=0)
    warnings = split_warnings(labels, train, val)
    assert len(val) == 17 and warnings[0].startswith("only 17 validation examples: each one is 6 points")
    assert "few training examples for 'rare' (2), 'solo' (1)" in warnings[1]
    assert warnings[2].startswith("no validation example of 'solo': its accuracy is not measured")
    assert len(warnings) == 3


def test_split_warnings_quiet_for_a_sound_split_and_without_validation():
    from tunedesk.engine.data import split_warnings

    labels = [c for c in "abc" for _ in range(60)]
    train, val = stratified_split(labels, 0.2, seed=0)
    assert split_warnings(labels, train, val) == []
    train, val = stratified_split(labels, 0.0, seed=0)
    assert split_warnings(labels, train, val) == []  # no validation set is the user's choice, said elsewhere


def test_a_run_whose_texts_are_cut_says_how_many_and_the_fix(tiny_bert_dir, tmp_path):
    import csv

    from tests.fixtures.data import tiny_text_config
    from tunedesk.engine.run.runner import prepare

    path = tmp_path / "long.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(40):
            words = 30 if i % 4 else 3  # three in four texts are longer than 16 tokens
            writer.writerow([" ".join(["refund", "invoice", "crash", "error"][i % 2 * 2 :][:2] * words), "ab"[i % 2]])
    prep = prepare(tiny_text_config(tiny_bert_dir, path, max_length=16))
    (cut,) = [w for w in prep.warnings if "were cut to" in w]
    assert cut.startswith("30 texts (75%) were cut to max_length=16 tokens")
    assert "raise max_length (this model reads at most 64)" in cut


def test_split_warnings_count_the_classes_they_cannot_all_name():
    from tunedesk.engine.data import split_warnings

    labels = [f"c{i:02d}" for i in range(20)] + ["big"] * 50
    train, val = stratified_split(labels, 0.2, seed=0)
    few, unvalidated = split_warnings(labels, train, val)[1:]
    assert few.startswith("few training examples for 20 of the 21 classes: 'c00' (1), ")
    assert unvalidated.startswith("no validation example of 20 of the 21 classes: 'c00', ")


def test_labels_typed_two_ways_are_named():
    from tunedesk.engine.data import split_warnings

    labels = ["Cat"] * 30 + ["cat"] * 40 + ["sci-fi"] * 35 + ["Sci Fi"] * 35 + ["dog"] * 60
    train, val = stratified_split(labels, 0.2, seed=0)
    warnings = split_warnings(labels, train, val)
    assert warnings[0].startswith("the labels 'Cat' (30), 'cat' (40) differ only in case or punctuation")
    assert warnings[1].startswith("the labels 'Sci Fi' (35), 'sci-fi' (35) differ only")
    assert len(warnings) == 2


def test_heavily_imbalanced_classes_point_at_macro_f1():
    from tunedesk.engine.data import split_warnings

    labels = ["ham"] * 500 + ["spam"] * 40 + ["phishing"] * 30
    train, val = stratified_split(labels, 0.2, seed=0)
    (warning,) = split_warnings(labels, train, val)
    assert warning.startswith("imbalanced classes: 'phishing' (5.3%), 'spam' (7.0%) of the training examples")
    assert "watch macro-F1" in warning
    balanced = ["a"] * 200 + ["b"] * 40  # a fifth: not flagged
    assert split_warnings(balanced, *stratified_split(balanced, 0.2, seed=0)) == []
