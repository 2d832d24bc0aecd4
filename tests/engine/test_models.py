"""Safe model loading from local files, fresh task heads, torchvision weights."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from tunedesk.engine.config import ModelSpec
from tunedesk.engine.errors import ModelError
from tunedesk.engine.model_files import load_state_dict
from tunedesk.engine.models import build_hf_classifier, build_torchvision_classifier, find_classifier


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/tunedesk-pwned",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with path.open("wb") as fh:
        pickle.dump({"weight": _Exploit()}, fh)
    with pytest.raises(ModelError) as info:
        load_state_dict(path)
    assert "refused" in info.value.message and "safetensors" in info.value.hint
    assert not os.path.exists("/tmp/tunedesk-pwned")


def test_weights_only_state_dict_and_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    state = {"w": torch.ones(2, 2)}
    torch.save(state, tmp_path / "ok.pth")
    save_file(state, tmp_path / "ok.safetensors")
    assert torch.equal(load_state_dict(tmp_path / "ok.pth")["w"], state["w"])
    assert torch.equal(load_state_dict(tmp_path / "ok.safetensors")["w"], state["w"])
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ModelError, match="not a readable safetensors"):
        load_state_dict(tmp_path / "broken.safetensors")
    with pytest.raises(ModelError, match="not found"):
        load_state_dict(tmp_path / "missing.pth")


def test_random_bytes_are_never_a_traceback_whatever_the_unpickler_raises(tmp_path, tiny_bert_dir):
    """torch's weights-only unpickler meets random bytes with UnpicklingError, IndexError, KeyError or
    UnicodeDecodeError depending on the bytes: each is one sentence that names the file and the fix."""
    import random
    import shutil

    from tunedesk.engine.model_files import is_weights_read_failure

    raised: set[str] = set()
    for seed in range(120):
        data = random.Random(seed).randbytes(5000)
        try:
            torch.load(_write(tmp_path / "probe.bin", data), weights_only=True)
        except Exception as exc:  # noqa: BLE001 - recording what torch raises
            raised.add(type(exc).__name__)
            assert is_weights_read_failure(exc), (seed, exc)
        with pytest.raises(ModelError, match="not a readable PyTorch checkpoint"):
            load_state_dict(_write(tmp_path / f"w{seed}.pth", data))
    assert {"UnpicklingError", "IndexError", "KeyError"} <= raised  # the seeds cover the odd types
    folder = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "model.safetensors").unlink()
    for seed in (2, 20, 3):  # IndexError, KeyError, UnpicklingError
        _write(folder / "pytorch_model.bin", random.Random(seed).randbytes(5000))
        with pytest.raises(ModelError) as info:
            build_hf_classifier(ModelSpec(name_or_path=str(folder)), ["a", "b"])
        assert "pytorch_model.bin is not a readable PyTorch checkpoint" in info.value.message
        assert "copy the file again" in info.value.hint
    assert not is_weights_read_failure(IndexError("a bug of ours, not a damaged file"))


def test_a_config_json_value_of_the_wrong_type_is_one_sentence(tmp_path, tiny_bert_dir):
    """Found by fuzzing config.json: transformers 5 checks each value's type (huggingface_hub's
    StrictDataclassFieldValidationError, no ValueError), and a model_type that is no text fails inside
    configuration_auto.py; both escaped load_hf_config as tracebacks."""
    import json
    import shutil

    from tunedesk.engine.model_files import is_config_read_failure

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, folder)
    good = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for change, named in (
        ({"pad_token_id": 0.5}, "pad_token_id"),
        ({"max_position_embeddings": None}, "max_position_embeddings"),
        ({"layer_norm_eps": [1]}, "layer_norm_eps"),
        ({"model_type": {}}, ""),
    ):
        (folder / "config.json").write_text(json.dumps({**good, **change}), encoding="utf-8")
        with pytest.raises(ModelError) as info:
            build_hf_classifier(ModelSpec(name_or_path=str(folder)), ["a", "b"])
        assert f"config.json in {folder} has an invalid value" in info.value.message, change
        assert named in info.value.message and "\n" not in info.value.message
        assert "copy the model folder again" in info.value.hint
    assert not is_config_read_failure(TypeError("a bug of ours, raised in our own code"))


@pytest.mark.parametrize(
    "change, pretrained, said",
    [
        ({"hidden_act": "x"}, True, "unknown value 'x'"),  # KeyError in transformers' activations.py
        ({"hidden_act": "x"}, False, "unknown value 'x'"),
        ({"initializer_range": -0.5}, False, "std >= 0.0"),  # RuntimeError in nn.init, from initialization.py
        ({"pad_token_id": 10**6}, False, "Padding_idx must be within num_embeddings"),  # AssertionError
        ({"hidden_size": 0}, True, "cannot be raised to a negative power"),  # ZeroDivisionError
        ({"add_cross_attention": True}, True, "BertLayer(...) should be used as a decoder"),  # ValueError
    ],
)
def test_a_config_json_the_model_code_cannot_use_is_one_sentence(tmp_path, tiny_bert_dir, change, pretrained, said):
    """Found by fuzzing config.json with values of the right type: transformers' configuration check lets
    them through and the model code fails while building (KeyError, AssertionError, ZeroDivisionError...);
    from random weights each escaped as a traceback, from a checkpoint some read as damaged weights."""
    import json
    import shutil

    from tunedesk.engine.model_files import is_model_build_failure

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, folder)
    good = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**good, **change}), encoding="utf-8")
    with pytest.raises(ModelError) as info:
        build_hf_classifier(ModelSpec(name_or_path=str(folder), pretrained=pretrained), ["a", "b"])
    assert f"cannot build the model that config.json in {folder} describes" in info.value.message
    assert said in info.value.message and "\n" not in info.value.message
    assert "fix the value named" in info.value.hint
    assert not is_model_build_failure(KeyError("a bug of ours, raised in our own code"))


@pytest.mark.parametrize(
    "file, change",
    [
        ("tokenizer_config.json", {"pad_token": []}),  # TypeError in tokenization_utils_base.py
        ("tokenizer_config.json", {"do_lower_case": 0.5}),  # TypeError from the tokenizers normaliser
        ("tokenizer_config.json", {"tokenizer_class": -1}),  # AttributeError in tokenization_auto.py
        ("tokenizer.json", {"version": 1}),  # tokenizers' plain Exception: "invalid type: integer"
        ("tokenizer.json", {"model": None}),  # "data did not match any variant of untagged enum"
    ],
)
def test_edited_or_damaged_tokenizer_files_are_one_sentence(tmp_path, tiny_bert_dir, file, change):
    """Found by fuzzing the tokenizer files: transformers and tokenizers raise TypeError, AttributeError or a
    plain Exception for values of the wrong type; each escaped both tokenizer loaders as a traceback."""
    import json
    import shutil

    from tunedesk.engine.lm.model import load_lm_tokenizer
    from tunedesk.engine.model_files import is_tokenizer_read_failure
    from tunedesk.engine.tasks.text_classification import load_tokenizer

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, folder)
    if not (folder / file).is_file():
        pytest.skip(f"this transformers writes no {file}")
    data = json.loads((folder / file).read_text(encoding="utf-8"))
    data.update(change)
    (folder / file).write_text(json.dumps(data), encoding="utf-8")
    for load in (load_tokenizer, lambda p: load_lm_tokenizer(p, chat=False)):
        with pytest.raises(ModelError) as info:
            load(str(folder))
        assert f"the tokenizer files in {folder} cannot be read" in info.value.message
        assert "\n" not in info.value.message and "copy the model folder again" in info.value.hint
    assert not is_tokenizer_read_failure(TypeError("a bug of ours, raised in our own code"))


def test_a_model_folder_without_its_vocabulary_files_is_refused_not_trained_on_unknown_tokens(tmp_path, tiny_bert_dir):
    """transformers builds a tokenizer of the special tokens alone from a folder whose vocab.txt /
    tokenizer.json were not copied; every word became [UNK] and the run trained on nothing, silently."""
    import shutil

    from tunedesk.engine.lm.model import load_lm_tokenizer
    from tunedesk.engine.tasks.text_classification import load_tokenizer

    folder = tmp_path / "copied-without-tokenizer"
    shutil.copytree(tiny_bert_dir, folder)
    for name in ("vocab.txt", "tokenizer.json"):
        (folder / name).unlink(missing_ok=True)
    for load in (load_tokenizer, lambda p: load_lm_tokenizer(p, chat=False)):
        with pytest.raises(ModelError) as info:
            load(str(folder))
        assert f"the tokenizer in {folder} knows only 5 tokens of the model's " in info.value.message
        assert "copy the tokenizer files" in info.value.hint
    assert len(load_tokenizer(str(tiny_bert_dir))) > 5  # the whole folder loads as before


def _write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def test_hf_classifier_gets_a_fresh_head_marked_new(tiny_bert_dir):
    loaded = build_hf_classifier(ModelSpec(str(tiny_bert_dir)), ["a", "b", "c"])
    assert loaded.head_paths == ["classifier"]
    assert loaded.model.classifier.out_features == 3
    assert loaded.model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert loaded.pretrained and loaded.fingerprint and loaded.family == "bert"
    # the encoder weights are the checkpoint's, not random
    from safetensors.torch import load_file

    saved = load_file(str(tiny_bert_dir / "model.safetensors"))
    key = next(k for k in saved if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert torch.equal(loaded.model.bert.encoder.layer[0].attention.self.query.weight, saved[key])


def test_scratch_model_warns_that_it_is_not_fine_tuning(tiny_bert_dir):
    loaded = build_hf_classifier(ModelSpec(str(tiny_bert_dir), pretrained=False), ["a", "b"])
    assert any("from scratch" in w for w in loaded.warnings)
    assert not loaded.pretrained


def test_missing_model_folder_and_missing_weights(tmp_path, tiny_bert_dir):
    with pytest.raises(ModelError):
        build_hf_classifier(ModelSpec(str(tmp_path / "nowhere")), ["a", "b"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        build_hf_classifier(ModelSpec(str(tmp_path / "empty")), ["a", "b"])
    import shutil

    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_bert_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no weights file"):
        build_hf_classifier(ModelSpec(str(no_weights)), ["a", "b"])


def test_remote_code_models_are_not_run_without_consent(tmp_path, tiny_bert_dir):
    import json
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(tiny_bert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "my-custom-arch"
    config["auto_map"] = {"AutoConfig": "modeling_custom.CustomConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_custom.py").write_text("open('/tmp/tunedesk-remote-ran', 'w')\n")
    with pytest.raises(ModelError) as info:
        build_hf_classifier(ModelSpec(str(folder)), ["a", "b"])
    assert "trust" in (info.value.message + info.value.hint)
    assert not os.path.exists("/tmp/tunedesk-remote-ran")


def test_torchvision_weights_from_local_file_and_new_head(tmp_path):
    import torchvision

    reference = torchvision.models.get_model("resnet18", weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18-local.pth")
    loaded = build_torchvision_classifier(
        ModelSpec("resnet18", source="torchvision", weights=str(tmp_path / "resnet18-local.pth")), ["x", "y"]
    )
    assert loaded.pretrained and loaded.head_paths == ["fc"]
    assert loaded.model.fc.out_features == 2
    assert torch.equal(loaded.model.conv1.weight, reference.conv1.weight)
    path, layer = find_classifier(loaded.model)
    assert path == "fc" and layer is loaded.model.fc


def test_torchvision_without_weights_warns_loudly(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    loaded = build_torchvision_classifier(ModelSpec("mobilenet_v3_small", source="torchvision"), ["x", "y"])
    assert not loaded.pretrained
    assert any("random initialisation" in w and "not fine-tuning" in w for w in loaded.warnings)
    assert loaded.head_paths == ["classifier.3"]


def test_unknown_torchvision_architecture():
    with pytest.raises(ModelError, match="not a torchvision classification architecture"):
        build_torchvision_classifier(ModelSpec("resnet999", source="torchvision"), ["x", "y"])


def test_meta_build_loads_no_weights(tiny_bert_dir):
    loaded = build_hf_classifier(ModelSpec(str(tiny_bert_dir)), ["a", "b"], device="meta")
    assert all(p.is_meta for p in loaded.model.parameters())
    assert loaded.head_paths == ["classifier"]


def test_torch_hub_checkpoints_are_found_as_the_model_browser_names_them(monkeypatch, tmp_path):
    import torchvision

    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))
    torch.save(
        torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict(),
        hub / "mobilenet_v3_small-047dcff4.pth",
    )
    loaded = build_torchvision_classifier(ModelSpec("mobilenet_v3_small", source="torchvision"), ["x", "y"])
    assert loaded.pretrained and loaded.path.endswith("mobilenet_v3_small-047dcff4.pth")


def test_a_config_with_sizes_no_real_model_has_is_refused_before_building(tmp_path, tiny_bert_dir):
    """Found by fuzzing: num_hidden_layers = 2**31 in config.json made the model build hang."""
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["num_hidden_layers"] = 2**31
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelError) as info:
        build_hf_classifier(ModelSpec(name_or_path=str(folder)), ["a", "b"])
    assert "num_hidden_layers = 2,147,483,648" in info.value.message and "config.json" in info.value.hint
