"""The layer tree's engine side: meta builds that match real builds, node counts, plan edits."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tunedesk.engine import freezing, structure
from tunedesk.engine.catalog import ModelEntry, scan_path
from tunedesk.engine.config import FreezeRule, FreezeSpec, ModelSpec
from tunedesk.engine.errors import ConfigError, ModelError
from tunedesk.engine.models import build_hf_classifier


@pytest.fixture(scope="module")
def bert_tree(tiny_bert_dir) -> structure.ModelTree:
    return structure.ModelTree.from_loaded(structure.build_meta_model(tiny_bert_dir))


@pytest.fixture(scope="module")
def real_bert(tiny_bert_dir):
    return build_hf_classifier(ModelSpec(str(tiny_bert_dir)), ["a", "b"])


@pytest.fixture(scope="module")
def no_pooler_dir(tmp_path_factory) -> Path:
    """A BERT checkpoint saved without its pooler: the real load initialises the pooler fresh."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bert-no-pooler")
    config = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        architectures=["BertModel"],
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory) -> Path:
    from transformers import LlamaConfig

    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        architectures=["LlamaForCausalLM"],
    ).save_pretrained(folder)
    return folder


# ---- building ----------------------------------------------------------------------------------------


def test_meta_build_matches_the_real_build(tiny_bert_dir, real_bert):
    meta = structure.build_meta_model(tiny_bert_dir)
    assert next(meta.model.parameters()).is_meta
    assert meta.architecture == real_bert.architecture == "BertForSequenceClassification"
    assert meta.head_paths == real_bert.head_paths == ["classifier"]
    assert [(n, p.shape) for n, p in meta.model.named_parameters()] == [
        (n, p.shape) for n, p in real_bert.model.named_parameters()
    ]
    entry = scan_path(tiny_bert_dir)[0]
    assert entry.task == "feature_extraction"  # a BertModel checkpoint is trained as a sequence classifier
    assert structure.build_meta_model(entry).architecture == "BertForSequenceClassification"
    assert structure.task_of_model(meta) == "text_classification"


def test_meta_build_finds_heads_missing_from_the_checkpoint(no_pooler_dir):
    real = build_hf_classifier(ModelSpec(str(no_pooler_dir)), ["a", "b", "c"])
    meta = structure.build_meta_model(no_pooler_dir, num_labels=3)
    assert sorted(real.head_paths) == ["bert.pooler", "classifier"]  # the loader's order varies
    assert sorted(meta.head_paths) == sorted(real.head_paths)


def test_meta_build_torchvision_by_name_and_entry():
    loaded = structure.build_meta_model("resnet18", num_labels=5)
    assert loaded.kind == "torchvision" and loaded.head_paths == ["fc"] and loaded.model.fc.out_features == 5
    assert next(loaded.model.parameters()).is_meta
    entry = ModelEntry(
        id="torchvision:resnet18",
        name="resnet18",
        path="/nowhere/resnet18-f37072fd.pth",
        source="torch_hub",
        task="image_classification",
        architecture="resnet18",
        model_type="torchvision",
    )
    assert structure.build_meta_model(entry).architecture == "resnet18"
    assert structure.task_of_model(loaded) == "image_classification"


def test_meta_build_causal_lm_and_task_override(gpt_dir):
    loaded = structure.build_meta_model(gpt_dir)
    assert loaded.architecture == "LlamaForCausalLM" and loaded.head_paths == []  # lm_head is pre-trained, not new
    assert structure.task_of_model(loaded) == "causal_lm"
    as_classifier = structure.build_meta_model(gpt_dir, task="text_classification")
    assert as_classifier.architecture == "LlamaForSequenceClassification" and as_classifier.head_paths == ["score"]


def test_meta_build_8b_config_is_fast():
    from transformers import LlamaConfig

    config = LlamaConfig(
        num_hidden_layers=32,
        hidden_size=4096,
        intermediate_size=14336,
        vocab_size=128256,
        num_attention_heads=32,
        num_key_value_heads=8,
    )
    loaded = structure.build_meta_from_config(config, "causal_lm")
    tree = structure.ModelTree.from_loaded(loaded)
    assert tree.total_params == 8_030_261_248
    assert len(tree.blocks) == 32 and tree.blocks.container == "model.layers"


def test_meta_build_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelError) as info:
        structure.build_meta_model(tmp_path)  # a folder without config.json
    assert "config.json" in info.value.message and info.value.hint
    with pytest.raises(ModelError):
        structure.build_meta_model("not-a-model-anywhere-xyz")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "my-own-arch", "auto_map": {"AutoConfig": "x.Y"}}))
    with pytest.raises(ModelError) as info:
        structure.build_meta_model(remote)
    assert "trust_remote_code" in info.value.message or "own" in info.value.message
    broken = ModelEntry(
        id="file:/x.pth",
        name="x.pth",
        path=str(tmp_path / "x.pth"),
        source="user_file",
        model_type="torchvision",
        problem="not a recognised torchvision checkpoint",
    )
    with pytest.raises(ModelError, match="not a recognised"):
        structure.build_meta_model(broken)
    with pytest.raises(ConfigError):
        structure.build_meta_model("resnet18", num_labels=0)
    typed = tmp_path / "typed"
    typed.mkdir()
    (typed / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": "wide"}))
    with pytest.raises(ModelError, match="config.json in .* has an invalid value .*hidden_size"):
        structure.build_meta_model(typed)  # transformers 5's value check, not a traceback


# ---- the tree --------------------------------------------------------------------------------------------


def test_tree_nodes_and_counts(bert_tree):
    tree = bert_tree
    model = tree.model
    table = freezing.module_table(model, {})
    assert [n.path for n in tree.nodes] == [n for n, _ in model.named_modules()]
    for node in tree.nodes:
        assert node.total_params == table[node.path][0]
        assert (
            node.own_params == sum(p.numel() for p in model.get_submodule(node.path).parameters(recurse=False))
            if node.path
            else node.own_params == 0
        )
        assert node.parent is None or node.parent.children[node.row] is node
    assert tree.root.name == "BertForSequenceClassification" and tree.root.total_params == tree.total_params
    assert tree.by_path["classifier"].is_head and not tree.by_path["bert"].is_head
    assert [n.path for n in tree.nodes if n.is_block] == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    assert tree.by_path["bert.encoder.layer.1"].block_index == 1
    assert tree.by_path["bert.embeddings.LayerNorm"].kind == "norm"
    assert tree.by_path["bert.embeddings.word_embeddings"].kind == "embedding"
    assert tree.by_path["classifier"].detail == "32 → 2"
    assert tree.by_path["bert.embeddings.dropout"].state is None  # no parameters, no checkbox
    assert not tree.has_batchnorm


def test_apply_counts_equal_the_engine_plan_and_report_changes(bert_tree):
    tree = bert_tree
    for spec in (
        FreezeSpec("all"),
        FreezeSpec("head_only"),
        FreezeSpec("last_n_blocks", last_n=1),
        FreezeSpec("all", rules=[FreezeRule("@norms", False), FreezeRule("*.attention.*", False)]),
    ):
        tree.apply(spec)
        table = freezing.module_table(tree.model, tree.plan.trainable)
        assert all(n.trainable == table[n.path][1] for n in tree.nodes)
    tree.apply(FreezeSpec("all"))
    spec = structure.toggle(tree, FreezeSpec("all"), "bert.encoder.layer.0.output.dense", False)
    changed = tree.apply(spec)
    assert {n.path for n in changed} == {
        "",
        "bert",
        "bert.encoder",
        "bert.encoder.layer",
        "bert.encoder.layer.0",
        "bert.encoder.layer.0.output",
        "bert.encoder.layer.0.output.dense",
    }
    assert tree.apply(spec) == []
    assert (
        tree.by_path["bert.encoder.layer.0"].state == 1 and tree.by_path["bert.encoder.layer.0.output.dense"].state == 0
    )
    with pytest.raises(ConfigError):
        tree.apply(FreezeSpec("all", rules=[FreezeRule("@what", True)]))
    assert tree.spec == spec  # a bad spec changes nothing


def test_summary(bert_tree):
    tree = bert_tree
    tree.apply(FreezeSpec("head_only"))
    s = tree.summary(batch_size=8, sequence_length=64, device="cpu", available=1 << 40)
    assert s.trainable == 32 * 2 + 2 and s.total == tree.total_params
    assert s.description.endswith("head only") and s.memory.overhead == 0 and s.fits is True
    g = tree.summary(batch_size=8, device="cuda:0", available=1)
    assert g.memory.overhead == 1 << 30 and g.fits is False


# ---- edits ----------------------------------------------------------------------------------------------


def test_toggle_appends_normalised_exact_rules(bert_tree):
    tree = bert_tree
    base = FreezeSpec("all", lr_multipliers={"bert.*": 0.5})
    frozen = structure.toggle(tree, base, "bert.encoder.layer.0", False)
    assert frozen.rules == [FreezeRule("bert.encoder.layer.0", False)] and frozen.lr_multipliers == {"bert.*": 0.5}
    assert base.rules == []  # edits return new specs
    back = structure.toggle(tree, frozen, "bert.encoder.layer.0", True)
    assert back.rules == []  # the click undid the earlier one: nothing left to say
    child = structure.toggle(tree, frozen, "bert.encoder.layer.0.attention", True)
    assert child.rules == [
        FreezeRule("bert.encoder.layer.0", False),
        FreezeRule("bert.encoder.layer.0.attention", True),
    ]
    parent = structure.toggle(tree, child, "bert.encoder", False)
    assert parent.rules == [FreezeRule("bert.encoder", False)]
    assert structure.toggle(tree, parent, "", True) == FreezeSpec("all", lr_multipliers={"bert.*": 0.5})
    nothing = structure.toggle(tree, parent, "", False)
    assert nothing.preset == "none" and nothing.rules == []
    with pytest.raises(ConfigError, match="not a module"):
        structure.toggle(tree, base, "bert.nope", True)


def test_glob_edits(bert_tree):
    tree = bert_tree
    assert structure.glob_for("attention") == "*attention*"
    assert structure.glob_for(" layer.1* ") == "layer.1*"
    assert structure.glob_for("layer.1*", tree) == "*layer.1*"  # nothing starts so: searched anywhere
    assert structure.glob_for("bert.encoder.*", tree) == "bert.encoder.*"
    assert [n.path for n in structure.matching_nodes(tree, "*.LayerNorm.bias", outermost=True)][:1] == [
        "bert.embeddings.LayerNorm"
    ]  # a parameter pattern shows the modules owning the parameters
    assert structure.glob_for("@norms") == "@norms"
    nodes = structure.matching_nodes(tree, "*attention*")
    assert nodes and all("attention" in n.path for n in nodes)
    outer = structure.matching_nodes(tree, "*attention*", outermost=True)
    assert [n.path for n in outer] == ["bert.encoder.layer.0.attention", "bert.encoder.layer.1.attention"]
    spec = structure.apply_glob(tree, FreezeSpec("head_only"), "*attention*", True)
    assert spec.rules == [FreezeRule("*attention*", True)]
    tree.apply(spec)
    assert all(n.state in (2, None) for n in nodes) and any(n.state == 2 for n in nodes)
    assert structure.apply_glob(tree, spec, "*attention*", True).rules == spec.rules
    with pytest.raises(ConfigError, match="matches no"):
        structure.apply_glob(tree, spec, "*banana*", True)
    with pytest.raises(ConfigError, match="empty"):
        structure.apply_glob(tree, spec, "  ", True)


def test_presets_and_modifiers():
    spec = FreezeSpec("all", rules=[FreezeRule("a.b", False)])
    spec = structure.set_modifier(spec, "@embeddings", True)
    assert structure.modifier_state(spec, "@embeddings") and not structure.modifier_state(spec, "@norms")
    last = structure.set_preset(spec, "last_n_blocks", 3)
    assert last.preset == "last_n_blocks" and last.last_n == 3 and last.rules == [FreezeRule("@embeddings", False)]
    more = structure.set_preset(
        dataclasses.replace(last, rules=last.rules + [FreezeRule("x", True)]), "last_n_blocks", 4
    )
    assert more.last_n == 4 and FreezeRule("x", True) in more.rules  # only the number changed: edits stay
    off = structure.set_modifier(last, "@embeddings", False)
    assert off.rules == [] and not structure.modifier_state(off, "@embeddings")
    with pytest.raises(ConfigError):
        structure.set_preset(spec, "some")
    with pytest.raises(ConfigError):
        structure.set_modifier(spec, "@head", True)


def test_modifiers_follow_what_the_plan_does(bert_tree):
    tree = bert_tree
    spec = FreezeSpec("last_n_blocks", last_n=1)
    tree.apply(spec)
    assert structure.token_state(tree, "@embeddings") == 2  # frozen by the preset already
    assert structure.token_state(tree, "@norms") == 1  # the last block's norms train, the others do not
    trains = structure.set_modifier(spec, "@embeddings", False, tree)
    assert trains.rules == [FreezeRule("@embeddings", True)]  # unticked "Freeze embeddings": they train
    tree.apply(trains)
    assert structure.token_state(tree, "@embeddings") == 0
    frozen = structure.set_modifier(trains, "@embeddings", True, tree)
    assert frozen.rules == [FreezeRule("@embeddings", False)]
    assert structure.set_modifier(FreezeSpec("all"), "@norms", False, tree).rules == []  # they train already
    assert structure.token_state(tree, "@block:9") is None


def test_lr_multipliers_most_specific_wins(bert_tree):
    tree = bert_tree
    spec = structure.set_lr_multiplier(FreezeSpec(), "bert.encoder.layer.0", 0.25)
    spec = structure.set_lr_multiplier(spec, "bert.encoder", 0.5)  # set later, but encloses the first
    assert list(spec.lr_multipliers) == ["bert.encoder", "bert.encoder.layer.0"]
    mults = dict(zip(tree.index.names, tree.lr_multipliers(spec)))
    assert mults["bert.encoder.layer.0.output.dense.weight"] == 0.25
    assert mults["bert.encoder.layer.1.output.dense.weight"] == 0.5
    assert mults["classifier.weight"] == 1.0
    assert structure.set_lr_multiplier(spec, "bert.encoder", None).lr_multipliers == {"bert.encoder.layer.0": 0.25}
    assert structure.set_lr_multiplier(spec, "", 2.0).lr_multipliers["*"] == 2.0
    with pytest.raises(ConfigError):
        structure.set_lr_multiplier(spec, "bert", -1.0)


def test_prune_for_another_model(bert_tree):
    tree = bert_tree
    spec = FreezeSpec(
        "last_n_blocks",
        rules=[
            FreezeRule("model.layers.3", False),
            FreezeRule("@norms", False),
            FreezeRule("*attention*", True),
            FreezeRule("bert.pooler", False),
        ],
        lr_multipliers={"model.embed_tokens": 0.1, "bert.embeddings": 0.1},
    )
    pruned = structure.prune(tree, spec)
    assert [r.pattern for r in pruned.rules] == ["@norms", "*attention*", "bert.pooler"]
    assert pruned.lr_multipliers == {"bert.embeddings": 0.1}


def test_explain(bert_tree):
    spec = FreezeSpec("all", rules=[FreezeRule("bert.encoder", False)])
    assert structure.explain(bert_tree, spec, "bert.encoder.layer.1") == "rule bert.encoder → freeze"
    assert structure.explain(bert_tree, spec, "classifier") == "the preset"
    assert structure.explain(bert_tree, spec, "bert.embeddings.dropout") == "no parameters"


# ---- the tree's plan is the engine's plan -----------------------------------------------------------------


def test_edited_plans_give_the_same_flags_on_the_real_model(bert_tree, real_bert):
    tree = bert_tree
    spec = FreezeSpec("all")
    specs = []
    for edit in (
        lambda s: structure.set_preset(s, "last_n_blocks", 1),
        lambda s: structure.toggle(tree, s, "bert.encoder.layer.0.attention", True),
        lambda s: structure.set_modifier(s, "@norms", True),
        lambda s: structure.apply_glob(tree, s, "*intermediate*", False),
        lambda s: structure.toggle(tree, s, "bert.pooler", False),
        lambda s: structure.set_preset(s, "head_only"),
        lambda s: structure.toggle(tree, s, "", False),
    ):
        spec = edit(spec)
        specs.append(spec)
    for spec in specs:
        tree.apply(spec)
        plan = freezing.resolve(real_bert.model, spec, real_bert.head_paths)
        freezing.apply(real_bert.model, plan)
        flags = {n: p.requires_grad for n, p in real_bert.model.named_parameters()}
        assert flags == dict(zip(tree.index.names, tree.plan.flags))
        for node in tree.nodes:
            module = real_bert.model.get_submodule(node.path) if node.path else real_bert.model
            assert node.trainable == sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---- LoRA (causal language models) ---------------------------------------------------------------------


def test_lora_targets_counts_and_choices(gpt_dir):
    from tunedesk.engine.lm import lora

    tree = structure.ModelTree.from_loaded(structure.build_meta_model(gpt_dir))
    assert tree.supports_lora
    spec = lora.preset_spec("lora_attention")
    tree.apply(spec)
    q = tree.by_path["model.layers.0.self_attn.q_proj"]
    assert q.lora is not None and q.lora.rank == 8 and q.adapters == 8 * (16 + 16)
    assert tree.by_path["model.layers.0.mlp.up_proj"].lora is None
    assert tree.root.adapters == lora.adapter_params(tree.model, lora.resolve_targets(tree.model, spec.lora, tree.plan))
    summary = tree.summary(batch_size=2, sequence_length=32, device="cpu")
    assert "LoRA" in summary.description and summary.trainable == tree.plan.trainable_params + tree.root.adapters
    mlp = structure.set_module_choice(tree, spec, "model.layers.1.mlp", "lora", rank=4)
    tree.apply(mlp)
    assert tree.by_path["model.layers.1.mlp.down_proj"].lora.rank == 4
    trained = structure.set_module_choice(tree, mlp, "model.layers.1", "train")
    tree.apply(trained)
    assert tree.by_path["model.layers.1"].state == 2 and tree.by_path["model.layers.1"].adapters == 0
    assert structure.set_module_choice(tree, FreezeSpec(), "model.norm", "frozen").rules == [
        FreezeRule("model.norm", False)
    ]
    with pytest.raises(ConfigError):
        structure.set_module_choice(tree, spec, "", "lora")


def test_lora_is_pruned_for_other_models(bert_tree):
    from tunedesk.engine.lm import lora

    assert not bert_tree.supports_lora
    pruned = structure.prune(bert_tree, lora.preset_spec("lora_all_linear"))
    assert not pruned.lora.active
    with pytest.raises(ConfigError, match="causal"):
        structure.set_module_choice(bert_tree, FreezeSpec(), "bert.pooler", "lora")
