"""The resolved run facts: written once by the runner, read through one function, old runs still open."""

from __future__ import annotations

from tunedesk.engine.store import RunStore
from tunedesk.engine.store.history import run_config
from tunedesk.engine.store.resolved import RESOLVED_VERSION, ResolvedRun, resolved


def _create(store: RunStore, config: dict, **kwargs) -> int:
    return store.create_run(
        config=config, name="r", task="causal_lm", model_name="m", model_path="/m", model_hash=None,
        dataset_name="d", dataset_hash=None, **kwargs,
    )  # fmt: skip


def test_written_once_with_the_run_and_kept_apart_from_its_configuration(tmp_path):
    facts = ResolvedRun(learning_rate=2e-4, head_learning_rate=1e-3, label_names=[], chat=True, best_metric="val_loss")
    with RunStore(tmp_path / "h.db") as store:
        run = store.get_run(_create(store, {"task": "causal_lm", "version": 1}, resolved=facts))
    assert run["config"] == run_config(run) == {"task": "causal_lm", "version": 1}
    got = resolved(run)
    assert got == facts and got.version == RESOLVED_VERSION
    assert (got.learning_rate, got.chat, got.best_metric, got.architecture) == (2e-4, True, "val_loss", None)


def test_a_run_recorded_before_the_typed_record_still_opens(tmp_path):
    old = {
        "task": "text_classification",
        "version": 1,
        # how runs were recorded before: a dict in the configuration, no version, no chat/best_metric, and a
        # key this TuneDesk does not know
        "_resolved": {"learning_rate": 1e-4, "head_learning_rate": None, "label_names": ["a", "b"], "later": 1},
    }
    with RunStore(tmp_path / "h.db") as store:
        run = store.get_run(_create(store, old))
    assert "_resolved" not in run["config"]
    got = resolved(run)
    assert (got.learning_rate, got.label_names, got.version) == (1e-4, ["a", "b"], 0)
    assert got.chat is None and got.best_metric is None
    assert resolved({"config": {}}) == ResolvedRun()  # a row without any record: every fact unknown
