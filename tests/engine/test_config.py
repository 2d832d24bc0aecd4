"""The run configuration: validation names the field and the fix; files round-trip."""

from __future__ import annotations

import json

import pytest

from tunedesk.engine.config import FreezeRule, RunConfig
from tunedesk.engine.errors import ConfigError


def valid() -> RunConfig:
    config = RunConfig()
    config.model.name_or_path = "some/model"
    config.data.path = "data.csv"
    return config


def test_default_valid_config_passes():
    assert valid().validate()


@pytest.mark.parametrize(
    "mutate, field, text",
    [
        (lambda c: setattr(c.hparams, "learning_rate", -0.0001), "hparams.learning_rate", "must be > 0 (got -0.0001)"),
        (lambda c: setattr(c.hparams, "learning_rate", float("nan")), "hparams.learning_rate", "must be > 0"),
        (lambda c: setattr(c.hparams, "batch_size", 0), "hparams.batch_size", "must be a whole number >= 1 (got 0)"),
        (lambda c: setattr(c.hparams, "epochs", 0), "hparams.epochs", "must be a whole number >= 1"),
        (lambda c: setattr(c.hparams, "warmup_ratio", 1.5), "hparams.warmup_ratio", "must be in [0, 1)"),
        (lambda c: setattr(c.hparams, "schedule", "step"), "hparams.schedule", "must be one of"),
        (lambda c: setattr(c.data, "val_fraction", 0), "data.val_fraction", "between 0 and 1"),
        (lambda c: setattr(c.model, "name_or_path", ""), "model.name_or_path", "is empty"),
        (lambda c: setattr(c, "precision", "int4"), "precision", "must be one of"),
        (lambda c: setattr(c, "device", "tpu"), "device", "must be auto, cpu"),
        (lambda c: setattr(c.freeze, "preset", "half"), "freeze.preset", "must be one of"),
        (
            lambda c: c.freeze.lr_multipliers.update({"encoder.*": 0}),
            "freeze.lr_multipliers['encoder.*']",
            "must be > 0",
        ),
    ],
)
def test_invalid_values_name_field_and_value(mutate, field, text):
    config = valid()
    mutate(config)
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert info.value.field == field
    assert str(info.value).startswith(field)
    assert text in str(info.value)


def test_incompatible_options_are_refused_with_a_fix():
    config = valid()
    config.device, config.precision = "cpu", "fp16"
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert "fp16" in info.value.message and "fp32" in info.value.hint
    config = valid()
    config.model.source = "torchvision"
    with pytest.raises(ConfigError, match="only supports image_classification"):
        config.validate()
    config = valid()
    config.task, config.data.kind = "image_classification", "text_table"
    with pytest.raises(ConfigError, match="image_folder"):
        config.validate()


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_round_trip_through_files(tmp_path, suffix):
    config = valid()
    config.hparams.learning_rate = 3e-5
    config.freeze.preset = "last_n_blocks"
    config.freeze.rules = [FreezeRule("@embeddings", False), FreezeRule("bert.encoder.layer.0*", True)]
    config.freeze.lr_multipliers = {"classifier": 10.0}
    path = config.save(tmp_path / f"run{suffix}")
    loaded = RunConfig.load(path)
    assert loaded == config
    assert loaded.freeze.rules == config.freeze.rules
    assert loaded.hparams.learning_rate == 3e-5


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "data.csv").write_text("text,label\n", encoding="utf-8")
    config = valid()
    config.save(tmp_path / "run.json")
    assert RunConfig.load(tmp_path / "run.json").data.path == str(tmp_path / "data.csv")


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.load(tmp_path / "bad.json")
    (tmp_path / "bad.toml").write_text("epochs = = 3", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        RunConfig.load(tmp_path / "bad.toml")
    (tmp_path / "latin.json").write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        RunConfig.load(tmp_path / "latin.json")


def test_unknown_and_mistyped_settings_are_refused():
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"hparams": {"learnin_rate": 1e-5}})
    assert info.value.field == "hparams.learnin_rate" and "learning_rate" in info.value.hint
    with pytest.raises(ConfigError, match="must be a number"):
        RunConfig.from_dict({"hparams": {"epochs": "three"}})
    with pytest.raises(ConfigError, match="newer"):
        RunConfig.from_dict({"version": 99})
    # found by fuzzing: a list where a table belongs was an AttributeError in validate()
    with pytest.raises(ConfigError, match=r"freeze.lr_multipliers must be a table/object \(got \[1\]\)"):
        RunConfig.from_dict({"freeze": {"lr_multipliers": [1]}})
    with pytest.raises(ConfigError, match="hparams.prompts must be a list"):
        RunConfig.from_dict({"hparams": {"prompts": "hello"}})
    assert RunConfig.from_dict(json.loads(valid().to_json())) == valid()


def test_no_clipping_survives_a_toml_round_trip(tmp_path):
    config = valid()
    config.hparams.max_grad_norm = None
    loaded = RunConfig.load(config.save(tmp_path / "run.toml"))
    assert not loaded.hparams.max_grad_norm  # 0.0: no clipping, not the default 1.0
    loaded.validate()
