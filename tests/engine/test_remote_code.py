"""No code from a model folder runs through any entry point: a folder whose own Python code would create a
file is listed with the reason, refused for training, shown without it, and exported without it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.fixtures.data import tiny_text_config

EVIL = """
from pathlib import Path
Path({marker!r}).write_text("the model folder's code ran")
from transformers import BertConfig, BertModel, BertForSequenceClassification, BertTokenizerFast

class EvilConfig(BertConfig):
    model_type = "evilbert"

class EvilModel(BertModel):
    config_class = EvilConfig

class EvilForSequenceClassification(BertForSequenceClassification):
    config_class = EvilConfig

class EvilTokenizer(BertTokenizerFast):
    pass
"""


def _evil_folder(root: Path, bert: Path, marker: Path, *, needs_code: bool) -> Path:
    """``needs_code``: an unknown model type that only its own code can build; else a BERT whose folder
    offers custom code that transformers must not take up."""
    folder = root / ("needs-code" if needs_code else "offers-code")
    shutil.copytree(bert, folder)
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)), encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModel": "evil.EvilModel",
        "AutoModelForSequenceClassification": "evil.EvilForSequenceClassification",
    }
    if needs_code:
        config["model_type"] = "evilbert"
        config["architectures"] = ["EvilModel"]
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tok = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok), encoding="utf-8")
    return folder


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "CODE-RAN"


@pytest.fixture
def needs_code(tmp_path, tiny_bert_dir, marker) -> Path:
    return _evil_folder(tmp_path, tiny_bert_dir, marker, needs_code=True)


@pytest.fixture
def offers_code(tmp_path, tiny_bert_dir, marker) -> Path:
    return _evil_folder(tmp_path, tiny_bert_dir, marker, needs_code=False)


def test_the_marker_code_really_runs_when_trusted(needs_code, marker, tmp_path, monkeypatch):
    """The folder is a real threat: transformers with trust_remote_code=True runs its code."""
    from transformers import AutoConfig

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    AutoConfig.from_pretrained(str(needs_code), local_files_only=True, trust_remote_code=True)
    assert marker.exists()


def test_the_catalog_lists_a_folder_that_needs_its_code_with_the_reason(needs_code, offers_code, marker, home):
    from tunedesk.engine import catalog

    roots = catalog.CatalogRoots(user_paths=[needs_code, offers_code], scan_packages=False)
    entries = {Path(e.path).name: e for e in catalog.scan(roots)}
    assert "trust_remote_code" in (entries["needs-code"].problem or "")
    assert entries["offers-code"].parameters  # a BERT: counted with transformers' own class
    assert not marker.exists()


def test_the_layers_area_builder_never_runs_folder_code(needs_code, offers_code, marker):
    from tunedesk.engine.errors import ModelError
    from tunedesk.engine.structure import build_meta_model

    with pytest.raises(ModelError, match="needs its own Python code") as err:
        build_meta_model(needs_code, num_labels=3)
    assert err.value.hint
    loaded = build_meta_model(offers_code, num_labels=3)
    assert type(loaded.model).__module__.startswith("transformers.")
    assert not marker.exists()


def test_training_refuses_a_folder_that_needs_its_code_and_ignores_offered_code(
    needs_code, offers_code, marker, home, text_csv, capsys
):
    from tunedesk import cli
    from tunedesk.engine.errors import ModelError
    from tunedesk.engine.run.runner import prepare

    with pytest.raises(ModelError, match="needs its own Python code"):
        prepare(tiny_text_config(needs_code, text_csv))
    cfg = tiny_text_config(needs_code, text_csv).save(home.parent / "cfg.json")
    assert cli.main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "hint:" in err and "Traceback" not in err
    prep = prepare(tiny_text_config(offers_code, text_csv))  # tokenizer and model: transformers' own classes
    assert type(prep.loaded.model).__module__.startswith("transformers.")
    assert type(prep.loaded.processor).__module__.startswith("transformers.")
    assert not marker.exists()


def test_export_and_the_models_command_never_run_folder_code(offers_code, marker, home, text_csv, tmp_path, capsys):
    from tunedesk import cli
    from tunedesk.engine.export import export_run
    from tunedesk.engine.run.runner import execute

    result = execute(tiny_text_config(offers_code, text_csv, epochs=1))
    assert result.status == "completed", result.reason
    info = export_run(result.run_id, tmp_path / "export", fmt="hf")
    assert (Path(info["path"]) / "config.json").is_file() and not (Path(info["path"]) / "evil.py").exists()
    assert cli.main(["models", "--add", str(offers_code)]) == 0
    assert "offers-code" in capsys.readouterr().out
    assert not marker.exists()
