"""LoRA on top of a freeze plan: which layers get adapters, wrapping keeps the plan, memory, spec editing."""

from __future__ import annotations

import pytest
import torch

from tunedesk.engine import freezing
from tunedesk.engine.config import FreezeRule, FreezeSpec, LoraRule, LoraSpec, RunConfig
from tunedesk.engine.errors import ConfigError
from tunedesk.engine.lm import lora


def tiny_llama(layers: int = 3, meta: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    if meta:
        with torch.device("meta"):
            return LlamaForCausalLM(cfg)
    return LlamaForCausalLM(cfg)


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=64))


ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


def test_presets_choose_layers():
    model = tiny_llama()
    attn = lora.resolve_targets(model, LoraSpec(preset="attention"))
    assert list(attn) == [f"model.layers.{i}.self_attn.{p}" for i in range(3) for p in ATTN]
    linear = lora.resolve_targets(model, LoraSpec(preset="all_linear"))
    assert len(linear) == 3 * 7 and "lm_head" not in linear
    g = tiny_gpt2()
    assert list(lora.resolve_targets(g, LoraSpec(preset="attention"))) == [
        f"transformer.h.{i}.attn.{p}" for i in range(2) for p in ("c_attn", "c_proj")
    ]
    assert len(lora.resolve_targets(g, LoraSpec(preset="all_linear"))) == 8  # Conv1D layers count as linear


def test_attention_of_the_last_n_blocks_preset():
    model = tiny_llama()
    spec = lora.preset_spec("lora_attention_last_n", last_n=2, rank=4, alpha=8, dropout=0.0)
    assert spec.preset == "none" and spec.lora.rules == [LoraRule("@attention:last:2")]
    plan = freezing.resolve(model, spec)
    targets = lora.resolve_targets(model, spec.lora, plan)
    assert list(targets) == [f"model.layers.{i}.self_attn.{p}" for i in (1, 2) for p in ATTN]
    assert {(t.rank, t.alpha) for t in targets.values()} == {(4, 8.0)}
    assert plan.trainable_params == 0  # everything else frozen
    g = tiny_gpt2()
    assert list(lora.resolve_targets(g, LoraSpec(rules=[LoraRule("@attention:last:1")]))) == [
        "transformer.h.1.attn.c_attn",
        "transformer.h.1.attn.c_proj",
    ]
    assert len(lora.resolve_targets(model, LoraSpec(rules=[LoraRule("@attention:last:9")]))) == 3 * 4  # all there are
    for bad in ("@attention:last:0", "@attention:last:two"):
        with pytest.raises(ConfigError, match="number of blocks"):
            lora.resolve_targets(model, LoraSpec(rules=[LoraRule(bad)]))
    assert lora.PRESET_LABELS["lora_attention_last_n"].startswith("LoRA on the attention")


def test_rules_override_and_deny():
    model = tiny_llama()
    spec = LoraSpec(
        preset="attention",
        rank=8,
        alpha=16,
        dropout=0.05,
        rules=[
            LoraRule("@block:-1", rank=2, alpha=4.0, dropout=0.0),  # every linear layer of the last block, own settings
            LoraRule("model.layers.0.self_attn.k_proj", lora=False),  # deny one
            LoraRule("model.layers.1.mlp.down_proj"),  # add one with the defaults
        ],
    )
    t = lora.resolve_targets(model, spec)
    assert "model.layers.0.self_attn.k_proj" not in t
    assert t["model.layers.1.mlp.down_proj"] == lora.LoraTarget("model.layers.1.mlp.down_proj", 8, 16.0, 0.05)
    assert t["model.layers.2.mlp.up_proj"] == lora.LoraTarget("model.layers.2.mlp.up_proj", 2, 4.0, 0.0)
    assert t["model.layers.2.self_attn.q_proj"].rank == 2
    assert t["model.layers.0.self_attn.q_proj"].rank == 8
    with pytest.raises(ConfigError, match="not understood"):
        lora.resolve_targets(model, LoraSpec(rules=[LoraRule("@nonsense")]))


def test_layers_the_plan_trains_get_no_adapter():
    model = tiny_llama()
    spec = lora.preset_spec("last_n_full", last_n=1)
    plan = freezing.resolve(model, spec, [])
    targets = lora.resolve_targets(model, spec.lora, plan)
    assert targets and not any(p.startswith("model.layers.2.") for p in targets)
    assert all(p.startswith(("model.layers.0.", "model.layers.1.")) for p in targets)


def test_wrap_keeps_the_freeze_plan_and_adds_adapters():
    model = tiny_llama()
    spec = lora.preset_spec("last_n_full", last_n=1, rank=4, alpha=8, dropout=0.1)
    spec.lora.rules.append(LoraRule("model.layers.0.self_attn.v_proj", rank=2, dropout=0.0))
    plan = freezing.resolve(model, spec, [])
    targets = lora.resolve_targets(model, spec.lora, plan)
    wrapped = lora.wrap(model, targets)
    new = lora.adapted_plan(wrapped, plan, targets)
    names = dict(wrapped.named_parameters())
    assert set(new.trainable) == set(names)
    adapters = [n for n in names if lora.is_adapter_param(n)]
    assert len(adapters) == 2 * len(targets) and all(new.trainable[n] for n in adapters)
    for n in names:  # every base parameter keeps the plan's flag
        if not lora.is_adapter_param(n):
            assert new.trainable[n] == plan.trainable[lora.base_name(n)], n
    assert new.trainable["base_model.model.model.layers.2.mlp.up_proj.weight"]  # last block trains fully
    assert not new.trainable["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"]
    assert names["base_model.model.model.layers.0.self_attn.v_proj.lora_A.default.weight"].shape == (2, 32)
    layer = wrapped.base_model.model.model.layers[0].self_attn
    assert isinstance(layer.v_proj.lora_dropout["default"], torch.nn.Identity)
    assert layer.q_proj.lora_dropout["default"].p == 0.1
    assert new.blocks.paths[-1] == "base_model.model.model.layers.2"
    assert new.head_paths == lora.adapter_module_paths(targets)
    freezing.apply(wrapped, new)
    # the optimizer sees exactly the plan's trainable parameters
    groups = freezing.param_groups(wrapped, 1e-3, 0.0, {}, new.head_paths, 1e-2)
    grouped = {n for g in groups for n in g["names"]}
    assert grouped == set(new.trainable_names)
    assert {g["lr"] for g in groups if any(lora.is_adapter_param(n) for n in g["names"])} == {1e-2}
    # adapters start as a no-op (B = 0): the wrapped model computes what the base computed
    x = torch.tensor([[1, 2, 3, 4]])
    wrapped.eval()
    with torch.no_grad():
        a = wrapped(input_ids=x).logits
        with wrapped.disable_adapter():
            b = wrapped(input_ids=x).logits
    assert torch.allclose(a, b)


def test_module_choices_and_set_module_choice():
    model = tiny_llama()
    spec = FreezeSpec(preset="none")
    spec = lora.set_module_choice(spec, "model.layers.1", "lora", rank=4)
    spec = lora.set_module_choice(spec, "model.layers.2", "train")
    spec = lora.set_module_choice(spec, "model.layers.1.mlp", "frozen")
    choices = lora.module_choices(model, spec)
    assert choices["model.layers.1.self_attn.q_proj"] == "lora"
    assert choices["model.layers.1.mlp.up_proj"] == "frozen"
    assert choices["model.layers.1.mlp"] == "frozen"
    assert choices["model.layers.1"] == "mixed"  # lora attention, frozen mlp and norms
    assert choices["model.layers.2"] == "train"
    assert choices["model.layers.0"] == "frozen"
    targets = lora.resolve_targets(model, spec.lora, freezing.resolve(model, spec, []))
    assert set(targets) == {f"model.layers.1.self_attn.{p}" for p in ATTN}
    assert {t.rank for t in targets.values()} == {4}
    # a layer switched from LoRA to trained loses its adapter
    spec2 = lora.set_module_choice(spec, "model.layers.1.self_attn", "train")
    assert lora.resolve_targets(model, spec2.lora, freezing.resolve(model, spec2, [])) == {}
    assert FreezeRule("model.layers.1.self_attn", True) in spec2.rules
    with pytest.raises(ConfigError):
        lora.set_module_choice(spec, "x", "maybe")


def test_memory_estimate_covers_lora_and_checkpointing():
    model = tiny_llama(layers=4, meta=True)
    kw = dict(batch_size=4, precision="bf16", sequence_length=256, cuda=True)
    full = lora.estimate_memory(model, FreezeSpec(preset="all"), **kw)
    with_lora = lora.estimate_memory(model, lora.preset_spec("lora_attention"), **kw)
    frozen_params = sum(p.numel() for p in model.parameters())
    assert with_lora.optimizer < full.optimizer and with_lora.gradients < full.gradients
    adapters = lora.adapter_params(model, lora.resolve_targets(model, LoraSpec(preset="attention")))
    assert adapters == 4 * 8 * ((32 + 32) * 2 + (32 + 16) * 2)  # q,o: 32->32; k,v: 32->16 (grouped KV)
    assert with_lora.optimizer == adapters * 8
    assert with_lora.weights == adapters * 6 + frozen_params * 2
    ckpt = lora.estimate_memory(model, lora.preset_spec("lora_attention"), gradient_checkpointing=True, **kw)
    assert ckpt.activations < with_lora.activations
    assert with_lora.activations > 4 * 256 * 64 * 2  # includes the logits
    more = lora.estimate_memory(model, lora.preset_spec("lora_all_linear"), **kw)
    assert more.optimizer > with_lora.optimizer


def test_describe_and_config_round_trip():
    model = tiny_llama()
    spec = lora.preset_spec("lora_attention", rank=16)
    plan = freezing.resolve(model, spec, [])
    targets = lora.resolve_targets(model, spec.lora, plan)
    wrapped = lora.wrap(model, targets)
    text = lora.describe(spec, lora.adapted_plan(wrapped, plan, targets), targets)
    assert text.endswith("base frozen + LoRA r=16 on 12 layers")
    cfg = RunConfig(task="causal_lm", freeze=spec)
    cfg.model.name_or_path, cfg.data.kind, cfg.data.path = "/m", "chat_jsonl", "/d.jsonl"
    assert RunConfig.from_dict(cfg.to_dict()).freeze == spec
    cfg.validate()
    with pytest.raises(ConfigError, match="unknown LoRA preset"):
        lora.preset_spec("nope")


FAMILIES = {  # tiny configs of the decoder families the issue names (and two more), built here
    "qwen2": ("Qwen2Config", dict(num_key_value_heads=1, intermediate_size=64)),
    "qwen3": ("Qwen3Config", dict(num_key_value_heads=1, intermediate_size=64, head_dim=16)),
    "mistral": ("MistralConfig", dict(num_key_value_heads=1, intermediate_size=64)),
    "phi3": ("Phi3Config", dict(num_key_value_heads=2, intermediate_size=64, pad_token_id=0)),
    "phi": ("PhiConfig", dict(intermediate_size=64)),
    "gpt_neox": ("GPTNeoXConfig", dict(intermediate_size=64)),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_attention_presets_and_training_on_each_decoder_family(family):
    """Attention LoRA finds each family's attention projections (fused qkv in Phi-3 and GPT-NeoX,
    ``dense`` in Phi), and a step through PEFT trains the adapters only."""
    import transformers

    cls, extra = FAMILIES[family]
    cfg = getattr(transformers, cls)(
        vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, max_position_embeddings=64, **extra
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    everything = lora.resolve_targets(model, LoraSpec(preset="attention"))
    last = lora.resolve_targets(model, LoraSpec(rules=[LoraRule("@attention:last:1")]))
    blocks = freezing.detect_blocks(model).paths
    assert len(blocks) == 3 and everything and set(last) < set(everything)
    assert all(p.startswith(blocks[-1] + ".") for p in last)
    assert len(everything) == 3 * len(last)  # the same projections in every block
    assert not any(
        p.split(".")[-1] in ("mlp", "fc1", "fc2", "gate_proj", "up_proj", "down_proj", "dense_h_to_4h")
        for p in everything
    )
    spec = lora.preset_spec("lora_attention_last_n", last_n=1, rank=4, alpha=8, dropout=0.0)
    plan = freezing.resolve(model, spec)
    targets = lora.resolve_targets(model, spec.lora, plan)
    assert set(targets) == set(last)
    wrapped = lora.wrap(model, targets)
    freezing.apply(wrapped, lora.adapted_plan(wrapped, plan, targets))
    ids = torch.randint(0, 64, (2, 12))
    wrapped(input_ids=ids, labels=ids).loss.backward()
    grads = {n for n, p in wrapped.named_parameters() if p.grad is not None}
    assert grads and all(lora.is_adapter_param(n) for n in grads)
    assert all(f".{blocks[-1]}." in f".{lora.base_name(n)}" for n in grads)
