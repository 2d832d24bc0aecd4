"""Comparing runs: settings that differ, freeze-map differences aggregated to modules, curves."""

from __future__ import annotations

import pytest

from tunedesk.engine.store import compare
from tunedesk.engine.store.compare import MISSING, FreezeDifference


def _run(rid: int, lr: float = 1e-4, rules=(), preset: str = "all", trainable=(), **extra) -> dict:
    config = {
        "task": "text_classification", "name": f"run {rid}", "version": 1, "seed": 1,
        "model": {"name_or_path": "/models/bert", "source": "hf"},
        "data": {"kind": "text_table", "path": "/data/t.csv", "val_fraction": 0.2},
        "freeze": {"preset": preset, "last_n": 2, "rules": [dict(r) for r in rules], "lr_multipliers": {}},
        "hparams": {"epochs": 3, "batch_size": 16, "learning_rate": lr},
        "_resolved": {"learning_rate": lr, "label_names": ["a", "b"]},
    }  # fmt: skip
    run = {
        "id": rid,
        "name": f"run {rid}",
        "config": config,
        "trainable_names": list(trainable),
        "model_hash": "m1",
        "dataset_hash": "d1",
        "model_path": "/models/bert",
        "model_name": "/models/bert",
    }
    run.update(extra)
    return run


# ---- configuration --------------------------------------------------------------------------------


def test_flatten_makes_dotted_keys_and_keeps_lists_whole():
    flat = compare.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}, "f": None})
    assert flat == {"a.b": 1, "a.c.d": [1, 2], "e": {}, "f": None}


def test_only_differing_settings_are_listed():
    a = _run(1, lr=1e-4, rules=[{"pattern": "@embeddings", "train": False}])
    b = _run(2, lr=3e-4)
    diffs = {d.key: d.values for d in compare.config_differences([a, b])}
    assert set(diffs) == {"hparams.learning_rate", "effective.learning_rate", "freeze.rules"}
    assert diffs["hparams.learning_rate"] == (1e-4, 3e-4)
    assert compare.format_value(diffs["freeze.rules"][0]) == "freeze @embeddings"
    assert compare.format_value(diffs["freeze.rules"][1]) == "(none)"


def test_identical_runs_differ_in_nothing_and_names_do_not_count():
    assert compare.config_differences([_run(1), _run(2)]) == []  # names and ids differ, settings do not


def test_missing_keys_and_content_hashes_are_differences():
    a = _run(1)
    b = _run(2, dataset_hash="d2")
    b["config"]["hparams"]["max_steps"] = 50
    diffs = {d.key: d.values for d in compare.config_differences([a, b])}
    assert diffs["hparams.max_steps"] == (MISSING, 50)
    assert diffs["data.content_hash"] == ("d1", "d2")
    assert compare.format_value(MISSING) == "—"


def test_ints_and_floats_of_the_same_value_are_equal():
    a, b = _run(1), _run(2)
    a["config"]["hparams"]["epochs"] = 3
    b["config"]["hparams"]["epochs"] = 3.0
    assert compare.config_differences([a, b]) == []


def test_three_runs_a_key_differs_when_any_differs():
    diffs = compare.config_differences([_run(1), _run(2), _run(3, lr=5e-5)])
    assert [d.key for d in diffs] == ["hparams.learning_rate", "effective.learning_rate"]
    assert diffs[0].values == (1e-4, 1e-4, 5e-5)


# ---- freeze maps ----------------------------------------------------------------------------------

MODEL = ["emb.weight",
         "enc.layer.0.attn.weight", "enc.layer.0.attn.bias", "enc.layer.0.ffn.weight",
         "enc.layer.1.attn.weight", "enc.layer.1.attn.bias", "enc.layer.1.ffn.weight",
         "head.weight", "head.bias"]  # fmt: skip
SIZES = {n: (100 if n.endswith("weight") else 10) for n in MODEL}
HEAD = ["head.weight", "head.bias"]
LAYER1 = [n for n in MODEL if n.startswith("enc.layer.1.")]


def test_freeze_diff_aggregates_to_the_shallowest_uniform_module():
    diffs = compare.freeze_differences([HEAD, LAYER1 + HEAD], MODEL, SIZES)
    assert diffs == [FreezeDifference("enc.layer.1", (False, True), 210, 3)]


def test_freeze_diff_without_the_model_layout_groups_by_owning_module_only():
    # Nothing says whether enc.layer.0 exists (frozen in both), so no grouping above attn / ffn.
    diffs = compare.freeze_differences([HEAD, LAYER1 + HEAD])
    assert diffs == [
        FreezeDifference("enc.layer.1.attn", (False, True), None, 2),
        FreezeDifference("enc.layer.1.ffn", (False, True), None, 1),
    ]
    mixed = compare.freeze_differences([["m.weight"], ["m.bias"]])
    assert mixed == [
        FreezeDifference("m.weight", (True, False), None, 1),
        FreezeDifference("m.bias", (False, True), None, 1),
    ]


def test_freeze_diff_descends_where_a_module_is_mixed():
    a = HEAD + ["enc.layer.1.attn.weight", "enc.layer.1.attn.bias"]
    b = HEAD + ["enc.layer.1.ffn.weight", "emb.weight"]
    diffs = compare.freeze_differences([a, b], MODEL, SIZES)
    assert [(d.path, d.trains) for d in diffs] == [
        ("emb", (False, True)),
        ("enc.layer.1.attn", (True, False)),
        ("enc.layer.1.ffn", (False, True)),
    ]


def test_freeze_diff_of_three_runs_and_of_the_whole_model():
    diffs = compare.freeze_differences([MODEL, HEAD, HEAD], MODEL, SIZES)
    assert [(d.path, d.trains) for d in diffs] == [("emb", (True, False, False)), ("enc", (True, False, False))]
    assert compare.freeze_differences([MODEL, []], MODEL, SIZES) == [FreezeDifference("", (True, False), 630, 9)]


def test_same_plan_or_one_run_has_no_freeze_diff():
    assert compare.freeze_differences([HEAD, list(reversed(HEAD))], MODEL, SIZES) == []
    assert compare.freeze_differences([HEAD]) == []


def test_parameter_layout_builds_the_model_on_the_meta_device(tiny_bert_dir):
    from tunedesk.engine.run import rebuild

    run = _run(1)
    run["config"]["model"]["name_or_path"] = str(tiny_bert_dir)
    names, sizes = rebuild.parameter_layout(run)
    assert "classifier.weight" in names and sizes["classifier.weight"] == 2 * 32
    assert any(n.startswith("bert.encoder.layer.1.") for n in names)
    broken = _run(2)
    broken["config"]["model"]["name_or_path"] = "/nowhere/model"
    assert rebuild.parameter_layout(broken) is None


# ---- curves and the whole comparison ----------------------------------------------------------------


@pytest.fixture
def store(home):
    from tunedesk.engine.run.runner import open_store

    s = open_store(home)
    yield s
    s.close()


def _record(store, lr: float, trainable: list[str], losses: list[float], accs: list[float]) -> int:
    run = _run(0, lr=lr, trainable=trainable)
    rid = store.create_run(
        config=run["config"],
        name=f"lr {lr}",
        task="text_classification",
        model_name="/models/bert",
        model_path="/models/bert",
        model_hash="m1",
        dataset_name="t.csv",
        dataset_hash="d1",
        trainable_names=trainable,
    )
    store.add_step_metrics(rid, [{"step": i + 1, "epoch": i // 4, "loss": v} for i, v in enumerate(losses)])
    for e, acc in enumerate(accs, start=1):
        store.add_epoch_metrics(rid, e, 4 * e, {"val_accuracy": acc, "val_loss": 1 - acc, "epoch": e})
    return rid


def test_curves_by_step_and_by_epoch(store):
    a = _record(store, 1e-4, HEAD, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [0.5, 0.7])
    b = _record(store, 3e-4, LAYER1 + HEAD, [1.0, 0.8, 0.6, 0.4], [0.6])
    assert compare.available_metrics(store, [a, b]) == [
        "loss",
        "learning_rate",
        "samples_per_second",
        "val_accuracy",
        "val_loss",
    ]
    by_step = compare.curves(store, [a, b], "loss", "step")
    assert [c.run_id for c in by_step] == [a, b]
    assert by_step[0].xs == [1, 2, 3, 4, 5, 6, 7, 8] and by_step[1].ys == [1.0, 0.8, 0.6, 0.4]
    by_epoch = compare.curves(store, [a, b], "loss", "epoch")
    assert by_epoch[0].xs[3] == pytest.approx(1.0)  # step 4 of 4 per epoch
    acc = compare.curves(store, [a, b], "val_accuracy", "epoch")
    assert acc[0].xs == [1, 2] and acc[0].ys == [0.5, 0.7] and acc[1].ys == [0.6]
    acc_steps = compare.curves(store, [a, b], "val_accuracy", "step")
    assert acc_steps[0].xs == [4, 8]
    assert compare.curves(store, [a], "learning_rate")[0].xs == []  # not logged: an empty curve
    with pytest.raises(ValueError):
        compare.curves(store, [a], "loss", "time")


def test_compare_runs_puts_it_together(store):
    a = _record(store, 1e-4, HEAD, [1.0, 0.9], [0.5])
    b = _record(store, 3e-4, LAYER1 + HEAD, [1.0, 0.8], [0.6])
    result = compare.compare_runs(store, [a, b])
    assert [r["id"] for r in result.runs] == [a, b]
    assert {d.key for d in result.config} == {"hparams.learning_rate", "effective.learning_rate"}
    assert [d.path for d in result.freeze] == ["enc.layer.1.attn", "enc.layer.1.ffn"]
    assert "val_accuracy" in result.metrics and not result.exact_layout
