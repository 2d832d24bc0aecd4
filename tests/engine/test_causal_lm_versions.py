"""Language models train on data set versions saved in the Datasets area: chat and corpus versions,
with their stored split; the run remembers that it trained on conversations."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.causal_lm import corpus_text, lm_config, save_tiny_llama, word_tokenizer, write_chat
from tunedesk.engine.datasets import DatasetStore, ImportSpec, run_import, split_dataset
from tunedesk.engine.errors import ConfigError, DataError
from tunedesk.engine.paths import database_path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model", word_tokenizer())


def saved_version(home, spec: ImportSpec, split: bool = True):
    with DatasetStore(database_path(home)) as store:
        ds = run_import(store, spec).dataset_id
        if split:
            split_dataset(store, ds, "random", 0.25, seed=3)
        version = store.save_version(ds)
        val = [
            json.loads(i.text)["messages"] if spec.kind == "chat_jsonl" else i.text
            for i in store.iter_items(ds)
            if i.split == "val"
        ]
    return version, val


def version_config(model_dir, version_id, **hparams):
    config = lm_config(model_dir, "unused", **hparams)
    config.data.kind, config.data.path, config.data.dataset_version = "dataset_version", "", version_id
    return config


def test_a_chat_version_trains_with_its_stored_split_and_chats_afterwards(home, llama_dir, tmp_path):
    from tunedesk.engine.lm.export import generate, load_run_model
    from tunedesk.engine.run.runner import execute, open_store, prepare
    from tunedesk.engine.store import history

    chats = tmp_path / "pirate.jsonl"
    write_chat(chats, 40)  # a third of the rows are prompt/response pairs: the Datasets area keeps them too
    version, val = saved_version(home, ImportSpec("chat_jsonl", str(chats)))
    assert version.item_count == 40
    config = version_config(llama_dir, version.id, epochs=1)
    config.validate()  # a version is a valid source for a language model
    prep = prepare(config)
    assert prep.task.chat and len(prep.data.val) == len(val) == 10
    assert "stored split" in prep.data.summary and version.id in prep.data.name
    result = execute(config, home=home)
    assert result.status == "completed", (result.reason, result.hint)
    with open_store(home) as store:
        run = store.get_run(result.run_id)
    assert history.lm_chat(run) and run["dataset_version"] == version.id
    assert load_run_model(result.run_id, home=home).chat
    reply = generate(result.run_id, [{"role": "user", "content": "where is my parcel"}], 6, 0.0, home=home)
    assert isinstance(reply, str)


def test_a_corpus_version_packs_each_part_on_its_own(home, llama_dir, tmp_path):
    from tunedesk.engine.run.runner import prepare

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(corpus_text(6, seed=s) for s in range(12)), encoding="utf-8")  # 12 passages
    version, val = saved_version(home, ImportSpec("text_corpus", str(corpus)))
    assert version.item_count == 12 and len(val) == 3
    prep = prepare(version_config(llama_dir, version.id, max_length=16))
    assert not prep.task.chat and "stored split" in prep.data.summary
    from tunedesk.engine.lm.data import pack, tokenize_documents

    val_blocks = pack(tokenize_documents(word_tokenizer(), [("v", p) for p in val]), 16)
    assert [list(b) for b in prep.data.val.input_ids] == [list(b) for b in val_blocks]  # only its passages
    unsplit, _ = saved_version(home, ImportSpec("text_corpus", str(corpus), name="again"), split=False)
    prep = prepare(version_config(llama_dir, unsplit.id, max_length=16))  # no stored split: val_fraction
    assert "stored split" not in prep.data.summary and len(prep.data.val) >= 1


def test_a_labelled_version_is_refused_for_a_language_model(home, llama_dir, text_csv):
    from tunedesk.engine.run.runner import prepare

    version, _ = saved_version(home, ImportSpec("text_table", str(text_csv)))
    with pytest.raises(DataError, match="not text for a language model") as err:
        prepare(version_config(llama_dir, version.id))
    assert "Datasets area" in err.value.hint
    bad = version_config(llama_dir, version.id)
    bad.data.kind, bad.data.path = "image_folder", "photos"
    with pytest.raises(ConfigError, match="dataset_version"):
        bad.validate()
