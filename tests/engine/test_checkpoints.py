"""Checkpoint folders: written aside, verified by their manifest, swapped in whole, recovered after a crash."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tunedesk.engine.run import checkpoint as ck
from tunedesk.engine.run.checkpoint import CheckpointError, CheckpointState, CheckpointWriter, recover, verify


def _files(text: str, step: int) -> list:
    return [
        ("model.safetensors", lambda p: p.write_bytes(text.encode() * 100)),
        ("training_state.pt", lambda p: p.write_text(json.dumps({"step": step}), encoding="utf-8")),
    ]


@pytest.fixture(params=[True, False], ids=["exchange", "two-renames"])
def swap_mode(request, monkeypatch):
    monkeypatch.setattr(ck, "USE_EXCHANGE", request.param)
    return request.param


def test_a_checkpoint_replaces_the_previous_one_whole(tmp_path, swap_mode):
    flushed = []
    writer = CheckpointWriter(tmp_path, before_commit=lambda: flushed.append(True))
    first = writer.write("last", _files("a", 1), step=1, epoch=0)
    assert verify(first).step == 1
    second = writer.write("last", _files("b", 2), step=2, epoch=0)
    assert second == first == tmp_path / "last"
    manifest = verify(second)
    assert manifest.step == 2 and set(manifest.files) == {"model.safetensors", "training_state.pt"}
    assert (second / "model.safetensors").read_bytes() == b"b" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # nothing left aside
    assert flushed == [True, True]  # the history was flushed before each swap
    umask = os.umask(0)
    os.umask(umask)
    assert second.stat().st_mode & 0o777 == 0o777 & ~umask  # a normal folder, not mkdtemp's 0700


def test_damaged_truncated_and_incomplete_checkpoints_are_reported(tmp_path):
    writer = CheckpointWriter(tmp_path)
    folder = writer.write("last", _files("a", 3), step=3, epoch=0)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(b"x" + data[1:])
    with pytest.raises(CheckpointError, match="model.safetensors does not match its manifest"):
        verify(folder)
    assert verify(folder, hashes=False).step == 3  # same size: only the hash sees it
    (folder / "model.safetensors").write_bytes(data[:10])
    with pytest.raises(CheckpointError, match="truncated"):
        verify(folder, hashes=False)
    (folder / "model.safetensors").write_bytes(data)
    (folder / "training_state.pt").unlink()
    with pytest.raises(CheckpointError, match="training_state.pt is missing"):
        verify(folder)
    (folder / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="manifest is unreadable"):
        verify(folder)


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_leftovers(tmp_path):
    writer = CheckpointWriter(tmp_path)
    writer.write("last", _files("a", 1), step=1, epoch=0)

    def fail(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        writer.write("last", [("model.safetensors", fail)], step=2, epoch=0)
    assert verify(tmp_path / "last").step == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_recover_completes_a_swap_cut_between_its_two_renames(tmp_path):
    writer = CheckpointWriter(tmp_path)
    writer.write("last", _files("a", 1), step=1, epoch=0)
    # what a crash between "last -> .last.old-x" and ".last.new-y -> last" leaves behind
    new = tmp_path / ".last.new-y"
    new.mkdir()
    for name, write in _files("b", 2):
        write(new / name)
    ck._write_manifest(new, "last", 2, 0)
    os.rename(tmp_path / "last", tmp_path / ".last.old-x")
    notes = recover(tmp_path)
    assert verify(tmp_path / "last").step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert any("completed the interrupted write" in n for n in notes)


def test_recover_rolls_back_to_the_old_checkpoint_when_the_new_one_is_partial(tmp_path):
    writer = CheckpointWriter(tmp_path)
    writer.write("best", _files("a", 1), step=1, epoch=1)
    partial = tmp_path / ".best.new-z"  # cut short before its manifest
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    os.rename(tmp_path / "best", tmp_path / ".best.old-x")
    recover(tmp_path)
    assert verify(tmp_path / "best").step == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_recover_removes_leftovers_of_interrupted_writes_and_old_temporary_files(tmp_path):
    writer = CheckpointWriter(tmp_path)
    writer.write("last", _files("a", 1), step=1, epoch=0)
    (tmp_path / ".last.new-abc").mkdir()
    (tmp_path / ".last.new-abc" / "model.safetensors").write_bytes(b"0" * 2**20)
    (tmp_path / "last" / ".model.safetensors.k2j3.tmp").write_bytes(b"0" * 1000)  # earlier versions' temp file
    notes = recover(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert not list((tmp_path / "last").glob(".*.tmp"))
    assert verify(tmp_path / "last").step == 1
    assert any("1.0 MiB" in n for n in notes)


def test_state_from_an_older_checkpoint_takes_defaults_for_new_fields():
    state = CheckpointState.from_dict({"step": 5, "epoch": 1, "batch_in_epoch": 2, "unknown_later": 1})
    assert (state.step, state.epoch, state.batch_in_epoch, state.window_micro) == (5, 1, 2, 0)


def test_checkpoints_without_a_manifest_still_load_when_complete(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert verify(tmp_path, required=("model.safetensors",)) is None
    with pytest.raises(CheckpointError, match="incomplete"):
        verify(tmp_path, required=("model.safetensors", "training_state.pt"))


class _QuantLinear(torch.nn.Linear):
    """A linear layer whose weight carries extra state entries, as a 4-bit layer's does ("weight.absmax")."""

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight.absmax"] = self.weight.detach().abs().amax(dim=1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "weight.absmax", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _tiny_net():
    from torch import nn

    torch.manual_seed(0)
    net = nn.Module()
    net.embed = nn.Embedding(10, 4)
    net.body = _QuantLinear(4, 4)
    net.norm = nn.BatchNorm1d(4)
    net.head = nn.Linear(4, 3)
    net.out = nn.Linear(4, 10, bias=False)
    net.out.weight = net.embed.weight  # tied
    return net


def test_partial_weights_leave_out_frozen_pretrained_parameters_and_what_belongs_to_them():
    from tunedesk.engine.run.checkpoint import BaseWeights, partial_weights

    net = _tiny_net()
    for p in net.body.parameters():
        p.requires_grad_(False)
    net.head.weight.requires_grad_(False)  # frozen, but the new head: not in the model files, so written
    tensors, omitted = partial_weights(net, BaseWeights("fp", keep=("head",)))
    assert set(omitted) == {"body.weight", "body.bias", "body.weight.absmax", "out.weight"}  # out: tied to embed
    assert {"embed.weight", "head.weight", "head.bias", "norm.running_mean", "norm.num_batches_tracked"} <= set(tensors)
    assert partial_weights(_tiny_net(), BaseWeights("fp")) is None  # nothing frozen: the whole model is written


def test_a_partial_checkpoint_loads_into_the_same_model_and_refuses_another(tmp_path):
    from safetensors.torch import save_file

    from tunedesk.engine.files import load_model_weights
    from tunedesk.engine.run.checkpoint import BaseWeights, partial_weights

    net = _tiny_net()
    for p in net.body.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        net.embed.weight.add_(1.0)
        net.norm.running_mean.fill_(0.25)
    tensors, omitted = partial_weights(net, BaseWeights("fp"))
    save_file(tensors, str(tmp_path / "model.safetensors"))
    fresh = _tiny_net()
    load_model_weights(tmp_path, fresh, {"base_fingerprint": "fp", "omitted": omitted}, "cpu")
    assert torch.equal(fresh.embed.weight, net.embed.weight) and torch.equal(fresh.out.weight, net.embed.weight)
    assert torch.equal(fresh.norm.running_mean, net.norm.running_mean)
    other = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_model_weights(tmp_path, other, {"base_fingerprint": "fp", "omitted": omitted}, "cpu")
