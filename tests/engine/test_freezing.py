"""Freeze plans: presets, rules and tokens -> exact flags; BatchNorm modes; optimizer groups; words; memory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunedesk.engine import freezing
from tunedesk.engine.config import FreezeRule, FreezeSpec, RunConfig
from tunedesk.engine.errors import ConfigError


@pytest.fixture(scope="module")
def bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=3,
    )
    return BertForSequenceClassification(config)


@pytest.fixture(scope="module")
def bert11():
    """Eleven blocks: ``encoder.layer.1`` must not match ``encoder.layer.10``."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=11,
        num_attention_heads=2,
        intermediate_size=8,
        max_position_embeddings=16,
    )
    return BertForSequenceClassification(config)


@pytest.fixture(scope="module")
def resnet():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3)


def names(model: nn.Module, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if any(n == p or n.startswith(p + ".") for p in prefixes)}


def trained(model: nn.Module, spec: FreezeSpec, heads: list[str]) -> set[str]:
    plan = freezing.resolve(model, spec, heads)
    return {n for n, t in plan.trainable.items() if t}


HEAD = ["classifier"]


# ---- presets ------------------------------------------------------------------------------------------


def test_bert_presets_give_exact_flag_sets(bert):
    every = {n for n, _ in bert.named_parameters()}
    assert trained(bert, FreezeSpec("all"), HEAD) == every
    assert trained(bert, FreezeSpec("none"), HEAD) == set()
    assert trained(bert, FreezeSpec("head_only"), HEAD) == {"classifier.weight", "classifier.bias"}
    last1 = trained(bert, FreezeSpec("last_n_blocks", last_n=1), HEAD)
    assert last1 == names(
        bert, "bert.encoder.layer.1", "bert.pooler", "classifier"
    )  # pooler after the last block trains
    last2 = trained(bert, FreezeSpec("last_n_blocks", last_n=2), HEAD)
    assert last2 == every - names(bert, "bert.embeddings")
    assert trained(bert, FreezeSpec("last_n_blocks", last_n=0), HEAD) == {"classifier.weight", "classifier.bias"}
    assert trained(bert, FreezeSpec("last_n_blocks", last_n=9), HEAD) == last2  # more than there are: all blocks


def test_resnet_presets_give_exact_flag_sets(resnet):
    assert trained(resnet, FreezeSpec("head_only"), ["fc"]) == {"fc.weight", "fc.bias"}
    assert trained(resnet, FreezeSpec("last_n_blocks", last_n=1), ["fc"]) == names(resnet, "layer4", "fc")
    assert trained(resnet, FreezeSpec("last_n_blocks", last_n=2), ["fc"]) == names(resnet, "layer3", "layer4", "fc")


def test_last_n_blocks_without_blocks_is_a_config_error():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ConfigError, match="last_n_blocks") as info:
        freezing.resolve(model, FreezeSpec("last_n_blocks", last_n=1))
    assert info.value.hint


def test_unknown_preset_and_empty_model_are_config_errors(bert):
    with pytest.raises(ConfigError, match="unknown preset"):
        freezing.resolve(bert, FreezeSpec("most"), HEAD)
    with pytest.raises(ConfigError, match="no parameters"):
        freezing.resolve(nn.ReLU(), FreezeSpec())


# ---- rules ----------------------------------------------------------------------------------------------


def test_glob_rules_and_last_rule_wins(bert):
    spec = FreezeSpec("head_only", rules=[FreezeRule("bert.encoder.layer.*.attention*", True)])
    got = trained(bert, spec, HEAD)
    assert got == names(bert, "bert.encoder.layer.0.attention", "bert.encoder.layer.1.attention", "classifier")
    spec.rules.append(FreezeRule("*.self.*", False))
    got = trained(bert, spec, HEAD)
    assert not any(".self." in n for n in got) and "bert.encoder.layer.0.attention.output.dense.weight" in got
    spec.rules.append(FreezeRule("*.bias", True))  # a glob can name parameters too
    assert {n for n, _ in bert.named_parameters() if n.endswith(".bias")} <= trained(bert, spec, HEAD)


def test_exact_path_matches_module_and_below_only(bert11):
    spec = FreezeSpec("none", rules=[FreezeRule("bert.encoder.layer.1", True)])
    got = trained(bert11, spec, HEAD)
    assert got == names(bert11, "bert.encoder.layer.1") and not any("layer.10" in n for n in got)
    spec = FreezeSpec("none", rules=[FreezeRule("bert.encoder.layer.1*", True)])
    assert trained(bert11, spec, HEAD) == names(bert11, "bert.encoder.layer.1", "bert.encoder.layer.10")
    spec = FreezeSpec("none", rules=[FreezeRule("bert.encoder.layer.0.output.dense.weight", True)])
    assert trained(bert11, spec, HEAD) == {"bert.encoder.layer.0.output.dense.weight"}
    assert trained(bert11, FreezeSpec("none", rules=[FreezeRule("*", True)]), HEAD) == names(
        bert11, "bert", "classifier"
    )


def test_tokens(bert):
    assert trained(bert, FreezeSpec("none", rules=[FreezeRule("@head", True)]), HEAD) == names(bert, "classifier")
    assert trained(bert, FreezeSpec("none"), HEAD) == set()  # "none" really is nothing, head included
    emb = trained(bert, FreezeSpec("none", rules=[FreezeRule("@embeddings", True)]), HEAD)
    assert emb == names(bert, "bert.embeddings")  # word/position/type embeddings and their LayerNorm
    norms = trained(bert, FreezeSpec("none", rules=[FreezeRule("@norms", True)]), HEAD)
    assert norms == {n for n in names(bert, "bert") if "LayerNorm" in n} and len(norms) == 2 * 5
    first = trained(bert, FreezeSpec("none", rules=[FreezeRule("@block:0", True)]), HEAD)
    assert first == names(bert, "bert.encoder.layer.0")
    last = trained(bert, FreezeSpec("none", rules=[FreezeRule("@block:-1", True)]), HEAD)
    assert last == names(bert, "bert.encoder.layer.1")
    assert trained(bert, FreezeSpec("none", rules=[FreezeRule("@block:7", True)]), HEAD) == set()
    frozen_norms = trained(bert, FreezeSpec("all", rules=[FreezeRule("@norms", False)]), HEAD)
    assert frozen_norms == {n for n, _ in bert.named_parameters()} - norms
    with pytest.raises(ConfigError) as info:
        freezing.resolve(bert, FreezeSpec("all", rules=[FreezeRule("@bogus", True)]), HEAD)
    assert info.value.field == "freeze.rules[0]" and "@head" in info.value.hint


def test_embedding_and_norm_paths_across_families():
    import torchvision

    from tunedesk.engine.catalog.params import meta_device

    with meta_device():
        vit = torchvision.models.vit_b_16(num_classes=3)
        eff = torchvision.models.efficientnet_b0(num_classes=3)
    emb = freezing.find_embedding_paths(vit)
    assert {"conv_proj", "class_token", "encoder.pos_embedding"} <= set(emb)
    assert "encoder.ln" in freezing.find_norm_paths(vit)
    assert freezing.detect_blocks(vit).paths == [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
    assert freezing.detect_blocks(eff).container == "features" and len(freezing.detect_blocks(eff)) == 9
    assert all(isinstance(eff.get_submodule(p), nn.BatchNorm2d) for p in freezing.find_norm_paths(eff))


def test_detect_blocks(bert, resnet):
    b = freezing.detect_blocks(bert)
    assert b.container == "bert.encoder.layer" and b.paths == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    r = freezing.detect_blocks(resnet)
    assert r.paths == ["layer1", "layer2", "layer3", "layer4"] and len(r) == 4


def test_index_resolution_equals_plain_resolution_and_apply_sets_flags(bert):
    spec = FreezeSpec("last_n_blocks", last_n=1, rules=[FreezeRule("@embeddings", True), FreezeRule("*.dense", False)])
    index = freezing.index_model(bert)
    plain = freezing.resolve(bert, spec, HEAD)
    fast = freezing.resolve(bert, spec, HEAD, index=index)
    assert plain.trainable == fast.trainable and plain.flags == fast.flags
    assert freezing.index_model(bert, index) is index
    freezing.apply(bert, fast)
    assert {n for n, p in bert.named_parameters() if p.requires_grad} == set(fast.trainable_names)
    assert fast.trainable_params == sum(p.numel() for p in bert.parameters() if p.requires_grad)
    assert fast.total_params == sum(p.numel() for p in bert.parameters())
    assert freezing.matching_params(bert, "*.dense", HEAD) == [n for n in plain.trainable if ".dense." in n]
    table = freezing.module_table(bert, fast.trainable)
    assert table[""] == (fast.total_params, fast.trainable_params)
    assert table["bert.embeddings"][0] == table["bert.embeddings"][1] > 0
    freezing.apply(bert, freezing.resolve(bert, FreezeSpec("all"), HEAD))


def test_plan_round_trips_through_a_saved_run(tmp_path):
    spec = FreezeSpec(
        "last_n_blocks",
        last_n=3,
        rules=[FreezeRule("@embeddings", False), FreezeRule("bert.encoder.layer.1", True)],
        train_batchnorm_stats=True,
        lr_multipliers={"bert.encoder.*": 0.5, "@head": 2.0},
    )
    config = RunConfig(freeze=spec)
    assert RunConfig.from_dict(config.to_dict()).freeze == spec
    path = config.save(tmp_path / "run.json")
    assert RunConfig.load(path).freeze == spec
    toml = config.save(tmp_path / "run.toml")
    assert RunConfig.load(toml).freeze == spec


# ---- BatchNorm ------------------------------------------------------------------------------------------


def bn_modes(model: nn.Module) -> dict[str, bool]:
    return {n: m.training for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def test_frozen_batchnorm_stays_in_eval_mode(resnet):
    freezing.apply(resnet, freezing.resolve(resnet, FreezeSpec("last_n_blocks", last_n=1), ["fc"]))
    freezing.set_train_mode(resnet)
    modes = bn_modes(resnet)
    assert resnet.training and resnet.fc.training
    assert all(modes[n] == n.startswith("layer4") for n in modes)
    before = resnet.layer1[0].bn1.running_mean.clone()
    after4 = resnet.layer4[0].bn1.running_mean.clone()
    resnet(torch.randn(2, 3, 32, 32))
    assert torch.equal(resnet.layer1[0].bn1.running_mean, before)  # frozen statistics kept
    assert not torch.equal(resnet.layer4[0].bn1.running_mean, after4)  # trained block updates its own
    freezing.set_train_mode(resnet, train_batchnorm_stats=True)
    assert all(bn_modes(resnet).values())
    freezing.apply(resnet, freezing.resolve(resnet, FreezeSpec("all"), ["fc"]))
    freezing.set_train_mode(resnet)
    assert all(bn_modes(resnet).values())


def test_batchnorm_without_affine_follows_its_parent():
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, affine=False)),
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, affine=False)),
    )
    freezing.apply(model, freezing.resolve(model, FreezeSpec("none", rules=[FreezeRule("1", True)])))
    freezing.set_train_mode(model)
    assert not model[0][1].training and model[1][1].training


# ---- optimizer groups -----------------------------------------------------------------------------------


def groups_by_name(groups: list[dict]) -> dict[str, tuple[float, float]]:
    return {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["names"]}


def test_param_groups_only_trainable_no_decay_on_bias_and_norms(bert):
    freezing.apply(bert, freezing.resolve(bert, FreezeSpec("last_n_blocks", last_n=1), HEAD))
    groups = freezing.param_groups(bert, 1e-3, 0.01, head_paths=HEAD)
    by = groups_by_name(groups)
    assert set(by) == {n for n, p in bert.named_parameters() if p.requires_grad}
    assert by["bert.encoder.layer.1.attention.self.query.weight"] == (1e-3, 0.01)
    assert by["bert.encoder.layer.1.attention.self.query.bias"] == (1e-3, 0.0)
    assert by["bert.encoder.layer.1.output.LayerNorm.weight"] == (1e-3, 0.0)
    assert all(len(g["params"]) == len(g["names"]) for g in groups)
    freezing.apply(bert, freezing.resolve(bert, FreezeSpec("all"), HEAD))


def test_param_groups_lr_multipliers_and_head_rate(bert):
    freezing.apply(bert, freezing.resolve(bert, FreezeSpec("all"), HEAD))
    mult = {"bert.encoder.*": 0.5, "bert.encoder.layer.1": 0.25, "@embeddings": 0.1}
    by = groups_by_name(freezing.param_groups(bert, 1e-3, 0.0, mult, HEAD, head_learning_rate=1e-2))
    assert by["bert.encoder.layer.0.intermediate.dense.weight"][0] == pytest.approx(5e-4)
    assert by["bert.encoder.layer.1.intermediate.dense.weight"][0] == pytest.approx(2.5e-4)  # later, more specific
    assert by["bert.embeddings.word_embeddings.weight"][0] == pytest.approx(1e-4)
    assert by["bert.pooler.dense.weight"][0] == pytest.approx(1e-3)
    assert by["classifier.weight"][0] == pytest.approx(1e-2)
    by = groups_by_name(freezing.param_groups(bert, 1e-3, 0.0, {"@head": 0.5}, HEAD, head_learning_rate=1e-2))
    assert by["classifier.weight"][0] == pytest.approx(5e-3)  # the multiplier scales the head's own rate
    with pytest.raises(ConfigError, match="lr_multipliers"):
        freezing.param_groups(bert, 1e-3, 0.0, {"@nope": 2.0}, HEAD)


# ---- words ---------------------------------------------------------------------------------------------


def test_describe(bert):
    def say(spec: FreezeSpec) -> str:
        return freezing.describe(spec, freezing.resolve(bert, spec, HEAD))

    assert say(FreezeSpec("all")) == "100% - everything"
    assert say(FreezeSpec("none")) == "0% - nothing"
    assert say(FreezeSpec("head_only")).endswith("% - head only") and say(FreezeSpec("head_only")).startswith("0.")
    assert say(FreezeSpec("last_n_blocks", last_n=1)).endswith(" - last 1 block + head")
    assert say(FreezeSpec("last_n_blocks", last_n=2)).endswith(" - last 2 blocks + head")
    spec = FreezeSpec(
        "all",
        rules=[
            FreezeRule("@embeddings", False),
            FreezeRule("@norms", False),
            FreezeRule("x.*", True),
            FreezeRule("bert.pooler", False),
        ],
    )
    assert say(spec).endswith(" - everything, embeddings frozen, norms frozen, 2 rules")
    almost = FreezeSpec("all", rules=[FreezeRule("bert.encoder.layer.0.output.LayerNorm.bias", False)])
    assert say(almost).startswith("99.") and "100%" not in say(almost)  # never rounded up while something is frozen


def test_normalise_rules():
    R = FreezeRule
    assert freezing.normalise_rules([R("a.b", True), R("a.b", False)]) == [R("a.b", False)]
    assert freezing.normalise_rules([R("a.b.c", True), R("a.b", False)]) == [R("a.b", False)]
    assert freezing.normalise_rules([R("a.b", True), R("a.b.c", False)]) == [R("a.b", True), R("a.b.c", False)]
    assert freezing.normalise_rules([R("a.bc", True), R("a.b", False)]) == [R("a.bc", True), R("a.b", False)]
    assert freezing.normalise_rules([R("a.1.x", True), R("a.*", False)]) == [R("a.*", False)]  # glob over it
    assert freezing.normalise_rules([R("a.1*", True), R("a.*", False)]) == [R("a.1*", True), R("a.*", False)]
    assert freezing.normalise_rules([R("@norms", True), R("@norms", False)]) == [R("@norms", False)]
    assert freezing.normalise_rules([R("@norms", True), R("x", True), R("*", False)]) == [R("*", False)]
    assert freezing.normalise_rules([R("a.norm", True), R("@norms", False)]) == [R("a.norm", True), R("@norms", False)]
    assert freezing.normalise_rules([]) == []


# ---- memory ---------------------------------------------------------------------------------------------


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))  # 10100 + 1010 parameters


def test_memory_bytes_per_parameter():
    model = mlp()
    spec = FreezeSpec("none", rules=[FreezeRule("2", True)])
    plan = freezing.resolve(model, spec)
    trainable, frozen = 1010, 10100
    mixed = freezing.estimate_memory(model, plan, batch_size=8, precision="bf16")
    assert mixed.weights + mixed.gradients + mixed.optimizer == 18 * trainable + 4 * frozen
    assert (mixed.gradients, mixed.optimizer) == (4 * trainable, 8 * trainable)
    full = freezing.estimate_memory(model, plan, batch_size=8, precision="fp32")
    assert full.weights + full.gradients + full.optimizer == 16 * trainable + 4 * frozen
    assert full.overhead == 0 and full.activations == 0  # real weights: no forward is run for an estimate
    gpu = freezing.estimate_memory(model, plan, batch_size=8, precision="auto", cuda=True)
    assert gpu.overhead == 1 << 30 and gpu.weights == mixed.weights  # auto on a GPU = bf16 mixed precision
    half = mlp().to(torch.bfloat16)  # a bf16 checkpoint, loaded as stored: 8 bytes per trainable parameter
    hplan = freezing.resolve(half, spec)
    h = freezing.estimate_memory(half, hplan, batch_size=8, precision="bf16")
    assert h.weights + h.gradients + h.optimizer == 8 * trainable + 2 * frozen
    assert gpu.fits(gpu.total) is True and gpu.fits(gpu.total - 1) is False and gpu.fits(None) is None
    assert set(gpu.to_dict()) == {"weights", "gradients", "optimizer", "activations", "working", "overhead", "total"}
    # backward frees activations as it writes gradients: the larger of the two counts, not both
    est = freezing.MemoryEstimate(weights=10, gradients=4, optimizer=8, activations=30, overhead=1, working=2)
    assert est.total == 10 + 8 + 30 + 2 + 1 and est.peak_of_both == 30


def test_transformer_activations_follow_the_first_trainable_block():
    from transformers import BertConfig, BertForSequenceClassification

    from tunedesk.engine.catalog.params import meta_device

    config = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    with meta_device():
        model = BertForSequenceClassification(config)

    def act(spec: FreezeSpec, **kw) -> int:
        plan = freezing.resolve(model, spec, HEAD)
        args = dict(batch_size=16, precision="bf16", sequence_length=128) | kw
        return freezing.estimate_memory(model, plan, **args).activations

    full = act(FreezeSpec("all"))
    # 34 bytes per token and hidden unit in each layer (Korthikanti et al. 2022, with SDPA attention)
    assert full == pytest.approx(16 * 128 * 768 * 34 * 12, rel=0.05)
    plan = freezing.resolve(model, FreezeSpec("head_only"), HEAD)
    head = freezing.estimate_memory(model, plan, batch_size=16, precision="bf16", sequence_length=128)
    assert head.activations == 0 and head.working == pytest.approx(full / 12, rel=0.01)  # the frozen body still runs
    assert act(FreezeSpec("last_n_blocks", last_n=6)) == pytest.approx(full / 2, rel=0.01)
    assert act(FreezeSpec("head_only")) == 0 and act(FreezeSpec("none")) == 0
    assert act(FreezeSpec("head_only", rules=[FreezeRule("@embeddings", True)])) == full
    assert act(FreezeSpec("all"), batch_size=32) == pytest.approx(2 * full, rel=0.01)
    assert act(FreezeSpec("all"), precision="fp32") == pytest.approx(2 * full, rel=0.1)


def test_cnn_activations_are_measured_on_meta_and_scale_with_batch():
    import torchvision

    from tunedesk.engine.catalog.params import meta_device

    with meta_device():
        model = torchvision.models.resnet18(num_classes=3)

    def act(spec: FreezeSpec, batch: int = 8, image: int = 224) -> int:
        plan = freezing.resolve(model, spec, ["fc"])
        return freezing.estimate_memory(model, plan, batch_size=batch, precision="bf16", image_size=image).activations

    full = act(FreezeSpec("all"))
    assert full > 0 and act(FreezeSpec("all"), batch=16) == 2 * full
    assert act(FreezeSpec("last_n_blocks", last_n=1)) < act(FreezeSpec("last_n_blocks", last_n=2)) < full
    assert act(FreezeSpec("head_only")) < full / 100
    assert act(FreezeSpec("all"), image=112) < full / 3
