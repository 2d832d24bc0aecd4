"""The task registry and the Task interface's defaults."""

from __future__ import annotations

import pytest

from tests.fixtures.data import tiny_text_config
from tunedesk.engine import tasks
from tunedesk.engine.errors import ConfigError
from tunedesk.engine.tasks import registry
from tunedesk.engine.tasks.base import Task
from tunedesk.engine.tasks.text_classification import TextClassification


def test_built_in_tasks_are_registered_and_each_get_is_a_fresh_instance():
    assert tasks.names()[:3] == ("text_classification", "image_classification", "causal_lm")
    first, second = tasks.get("causal_lm"), tasks.get("causal_lm")
    assert isinstance(first, Task) and first.name == "causal_lm" and first is not second


def test_an_unknown_task_names_the_known_ones():
    with pytest.raises(ConfigError) as err:
        tasks.get("translation")
    assert err.value.field == "task" and "translation" in err.value.message
    assert "text_classification" in err.value.hint


def test_defaults_of_the_optional_hooks():
    task = TextClassification()
    assert task.generate_samples(None, None, None, None) == []  # type: ignore[arg-type]
    assert task.chat is False and task.channels_last is False
    plan = object()
    assert task.adapt_plan(None, None, plan) is plan  # type: ignore[arg-type]


def test_a_registered_task_runs_through_the_runner(monkeypatch, home, tiny_bert_dir, text_csv):
    """What CONTRIBUTING.md promises: a new module with a Task subclass and one register line."""
    from tunedesk.engine.run.runner import prepare

    class ShoutedTickets(TextClassification):
        name = "shouted_tickets"

        def load_examples(self, config):
            examples = super().load_examples(config)
            examples.texts = [t.upper() for t in examples.texts]
            return examples

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    tasks.register("shouted_tickets", ShoutedTickets)
    config = tiny_text_config(tiny_bert_dir, text_csv)
    config.task = "shouted_tickets"
    prep = prepare(config)
    assert isinstance(prep.task, ShoutedTickets) and prep.config.task == "shouted_tickets"
    assert prep.data.label_names == ["account", "billing", "shipping", "technical"]


def test_text_max_length_beyond_the_models_positions_is_refused_before_training(tiny_bert_dir, text_csv):
    """Found by fuzzing: texts longer than max_position_embeddings failed in the first step with a tensor
    size RuntimeError ("internal error ... a bug"); causal_lm already checked this, text classification did not."""
    from types import SimpleNamespace

    from tunedesk.engine.tasks.text_classification import position_limit

    task = TextClassification()
    with pytest.raises(ConfigError) as err:  # the tiny BERT has 64 positions
        task.build_model(tiny_text_config(tiny_bert_dir, text_csv, max_length=65), ["a", "b"])
    assert err.value.field == "hparams.max_length" and "at most 64 tokens" in err.value.message
    assert task.build_model(tiny_text_config(tiny_bert_dir, text_csv, max_length=64), ["a", "b"]).processor
    roberta = SimpleNamespace(max_position_embeddings=514)
    assert position_limit(roberta, SimpleNamespace(model_max_length=512)) == 512
    assert position_limit(roberta, SimpleNamespace(model_max_length=int(1e30))) == 514  # "no limit known"
    assert position_limit(SimpleNamespace(max_position_embeddings=512, position_biased_input=False)) is None


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused_before_training(tiny_bert_dir, text_csv, tmp_path):
    """Found by fuzzing: config.json's vocab_size edited below the tokenizer's size failed in the first step
    with an IndexError reported as an internal error."""
    import json
    import shutil

    from tunedesk.engine.errors import ModelError

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["vocab_size"] = 3
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "model.safetensors").unlink()  # random weights: the table has 3 rows
    cfg = tiny_text_config(folder, text_csv)
    cfg.model.pretrained = False
    with pytest.raises(ModelError) as err:
        TextClassification().build_model(cfg, ["a", "b"])
    assert "embedding table only 3" in err.value.message and "vocab_size" in err.value.hint
