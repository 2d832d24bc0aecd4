"""Training on a saved data set version: the stored split is used, later edits change nothing, the
run records the version, and the command line trains on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.data import tiny_text_config
from tunedesk.engine.datasets import DatasetStore, ImportSpec, run_import, split_dataset
from tunedesk.engine.datasets import edits as E
from tunedesk.engine.errors import DataError
from tunedesk.engine.paths import database_path


def saved_text_version(home: Path, csv_path: Path):
    with DatasetStore(database_path(home)) as store:
        ds = run_import(store, ImportSpec("text_table", str(csv_path))).dataset_id
        split_dataset(store, ds, "stratified", 0.25, seed=7)
        version = store.save_version(ds)
        val_ids = [i.id for i in store.iter_items(ds) if i.split == "val"]
        # edits after saving must not reach a run that names the version
        E.apply_edit(store, ds, E.relabel(store.item_ids(ds)[:10], "zzz"))
        E.apply_edit(store, ds, E.delete_items(store.item_ids(ds)[-5:]))
    return version, val_ids


def version_config(model_dir: Path, version_id: str, **hparams):
    config = tiny_text_config(model_dir, Path("unused.csv"), **hparams)
    config.data.kind = "dataset_version"
    config.data.path = ""
    config.data.dataset_version = version_id
    return config


def test_prepare_uses_the_stored_split_of_the_exact_version(home, tiny_bert_dir, text_csv):
    from tunedesk.engine.run.runner import prepare

    version, val_ids = saved_text_version(home, text_csv)
    prep = prepare(version_config(tiny_bert_dir, version.id))
    assert prep.data.label_names == ["account", "billing", "shipping", "technical"]  # not "zzz"
    assert len(prep.data.train) + len(prep.data.val) == 96  # not 91
    assert len(prep.data.val) == len(val_ids) == 24
    assert prep.data.name == f"tickets ({version.id})"
    assert version.id in prep.data.summary and "stored split" in prep.data.summary


def test_cli_trains_on_a_version_and_the_run_records_it(home, tiny_bert_dir, text_csv, tmp_path, capsys):
    from tunedesk.cli import main
    from tunedesk.engine.run.runner import open_store

    version, _ = saved_text_version(home, text_csv)
    config_path = tiny_text_config(tiny_bert_dir, text_csv, epochs=1).save(tmp_path / "run.json")
    code = main(["train", str(config_path), "--dataset-version", version.id, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0, out
    result = json.loads(out[-1])
    assert result["status"] == "completed"
    # the app's way: prepare in its worker, then execute the prepared run
    from tunedesk.engine.run.runner import execute, prepare

    app_config = version_config(tiny_bert_dir, version.id, epochs=1)
    app_result = execute(app_config, home=home, prepared=prepare(app_config))
    store = open_store(home)
    run, app_run = store.get_run(result["run_id"]), store.get_run(app_result.run_id)
    store.close()
    assert run["dataset_version"] == version.id and run["dataset_name"] == f"tickets ({version.id})"
    # both record the database holding the version, not the config file's CSV or an empty path
    assert run["config"]["data"]["path"] == app_run["config"]["data"]["path"] == str(database_path(home))


def test_unknown_version_and_wrong_kind_are_clear(home, tiny_bert_dir, text_csv, image_folder):
    from tunedesk.engine.run.runner import prepare
    from tunedesk.engine.tasks.image_classification import ImageClassification

    with pytest.raises(DataError) as err:
        prepare(version_config(tiny_bert_dir, "ds7-v1"))
    assert "not found" in err.value.message and "Save version" in err.value.hint
    with DatasetStore(database_path(home)) as store:
        ds = run_import(store, ImportSpec("image_folder", str(image_folder))).dataset_id
        split_dataset(store, ds, "stratified", 0.25, seed=0)
        image_version = store.save_version(ds)
    from tunedesk.engine.datasets import task_for_version

    assert task_for_version(image_version.id) == "image_classification"
    with pytest.raises(DataError, match="holds labelled images, not labelled texts"):
        prepare(version_config(tiny_bert_dir, image_version.id))
    # an image version: paths and stored split; a file deleted since is left out with a warning
    (image_folder / "red" / "red_0.png").unlink()
    config = version_config(tiny_bert_dir, image_version.id)
    config.task = "image_classification"
    ex = ImageClassification().load_examples(config)
    assert len(ex.paths) == 23 and ex.split.count("val") + ex.split.count("train") == 23
    assert any("moved or deleted" in w for w in ex.warnings)
