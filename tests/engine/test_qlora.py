"""QLoRA (a 4-/8-bit frozen base) and the chunked loss: configuration, refusals, memory, equal losses."""

from __future__ import annotations

import pytest
import torch

from tests.fixtures.causal_lm import lm_config, save_tiny_llama, write_chat
from tunedesk.engine.config import FreezeSpec, LoraSpec, RunConfig
from tunedesk.engine.errors import ConfigError
from tunedesk.engine.lm import kernels, lora, quant


def qlora_config(tmp_path, bits=4, device="auto"):
    model = save_tiny_llama(tmp_path / "llama")
    config = lm_config(model, write_chat(tmp_path / "chat.jsonl", n=12))
    config.freeze = lora.preset_spec("lora_all_linear", rank=4)
    config.freeze.lora.base_bits = bits
    config.device = device
    return config


def test_base_bits_round_trips_through_toml_and_json(tmp_path):
    config = qlora_config(tmp_path)
    config.hparams.fused_loss, config.hparams.fused_kernels, config.hparams.attention = "on", "off", "sdpa"
    config.hparams.packing = True
    for name in ("run.toml", "run.json"):
        back = RunConfig.load(config.save(tmp_path / name))
        assert back.freeze.lora.base_bits == 4
        assert back.to_dict() == config.to_dict()
    text = (tmp_path / "run.toml").read_text()
    assert '"base_bits" = 4' in text and 'fused_loss = "on"' in text and "packing = true" in text
    # as a person writes it
    hand = (
        text.split("\n[freeze]")[0]
        + '\n[freeze]\npreset = "none"\n\n[freeze.lora]\npreset = "all_linear"\nbase_bits = 4\n'
    )
    (tmp_path / "hand.toml").write_text(hand)
    assert RunConfig.load(tmp_path / "hand.toml").validate().freeze.lora.base_bits == 4
    plain = lm_config(tmp_path / "llama", tmp_path / "chat.jsonl")
    assert RunConfig.load(plain.save(tmp_path / "plain.toml")).freeze.lora.base_bits is None


@pytest.mark.parametrize(
    "mutate, field, text",
    [
        (lambda c: setattr(c.freeze.lora, "base_bits", 3), "freeze.lora.base_bits", "must be 4 or 8"),
        (lambda c: setattr(c.freeze, "lora", LoraSpec(base_bits=4)), "freeze.lora.base_bits", "no layer gets"),
        (lambda c: setattr(c, "device", "cpu"), "freeze.lora.base_bits", "needs a CUDA GPU"),
        (lambda c: setattr(c.hparams, "fused_loss", "yes"), "hparams.fused_loss", "must be one of"),
        (lambda c: setattr(c.hparams, "attention", "flash"), "hparams.attention", "must be one of"),
    ],
)
def test_invalid_quantisation_and_kernel_settings_are_refused(tmp_path, mutate, field, text):
    config = qlora_config(tmp_path)
    mutate(config)
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert info.value.field == field and text in info.value.message and info.value.hint


def test_packing_is_refused_for_classifiers():
    config = RunConfig()
    config.model.name_or_path, config.data.path = "m", "d.csv"
    config.hparams.packing = True
    with pytest.raises(ConfigError, match="causal_lm only"):
        config.validate()


def test_4bit_without_cuda_is_refused_before_loading(tmp_path, monkeypatch):
    from tunedesk.engine.run.runner import prepare

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        prepare(qlora_config(tmp_path))
    assert info.value.field == "freeze.lora.base_bits"
    assert "CUDA GPU" in info.value.message and "leave base_bits out" in info.value.hint


def test_4bit_without_bitsandbytes_names_the_package(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(quant, "bitsandbytes_installed", lambda: False)
    message, hint = quant.unavailable_reason(4)
    assert "bitsandbytes" in message and "pip install bitsandbytes" in hint
    with pytest.raises(ConfigError, match="bitsandbytes"):
        quant.require(4, torch.device("cuda", 0))
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        quant.require(4, torch.device("cpu"))
    assert quant.unavailable_reason(None) is None


def test_quantisation_config_is_nf4_double_quant_bf16_and_skips_trained_layers():
    cfg = quant.quantization_config(4, torch.bfloat16, ["lm_head", "model.layers.1.mlp.down_proj"])
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
    assert cfg.bnb_4bit_compute_dtype == torch.bfloat16
    assert "lm_head" in cfg.llm_int8_skip_modules
    assert quant.quantization_config(8, torch.bfloat16).load_in_8bit


def _meta_8b_shaped(layers: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        return LlamaForCausalLM(cfg)


def test_estimate_counts_4bit_weights_constants_and_dequantisation():
    model = _meta_8b_shaped()
    spec = lora.preset_spec("lora_all_linear", rank=16)
    kw = dict(batch_size=1, precision="bf16", sequence_length=2048, cuda=True, gradient_checkpointing=True)
    bf16 = lora.estimate_memory(model, spec, **kw)
    spec.lora.base_bits = 4
    q4 = lora.estimate_memory(model, spec, **kw)
    linear = sum(
        m.weight.numel() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"
    )
    saved = bf16.weights - q4.weights
    # each quantised weight drops from 2 bytes to 0.5 + ~0.016 (8-bit absmax per 64, fp32 per 256 blocks)
    assert saved == pytest.approx(linear * (2 - quant.bytes_per_weight(4)), rel=1e-3)
    assert 0.515 < quant.bytes_per_weight(4) < 0.517
    # working memory: the largest layer (the MLP's 14336 x 4096) dequantised to bf16, twice
    assert q4.working == 2 * 14336 * 4096 * 2 and bf16.working == 0
    assert q4.activations == bf16.activations and q4.optimizer == bf16.optimizer
    spec.lora.base_bits = 8
    q8 = lora.estimate_memory(model, spec, **kw)
    assert q4.weights < q8.weights < bf16.weights


def test_estimate_full_8b_qlora_fits_16_gib():
    model = _meta_8b_shaped(layers=32)
    spec = lora.preset_spec("lora_all_linear", rank=16)
    spec.lora.base_bits = 4
    est = lora.estimate_memory(
        model, spec, batch_size=1, precision="bf16", sequence_length=2048, cuda=True, gradient_checkpointing=True
    )
    assert 5 * 2**30 < est.weights < 7 * 2**30  # ~3.6 GB of 4-bit layers + 2.1 GB of bf16 embeddings and head
    assert est.total < 16 * 2**30


def test_chunked_loss_shrinks_the_logits_in_the_estimate():
    model = _meta_8b_shaped()
    spec = lora.preset_spec("lora_attention", rank=16)
    kw = dict(batch_size=1, precision="bf16", sequence_length=4096, cuda=True)
    whole = lora.estimate_memory(model, spec, fused_loss=False, **kw)
    chunked = lora.estimate_memory(model, spec, fused_loss=True, **kw)
    logits = 4096 * 128256 * 12
    assert whole.activations - chunked.activations > 0.8 * logits


def test_auto_kernels_follow_the_measured_constants(monkeypatch):
    assert not kernels.use_fused_loss("auto", "cpu") and kernels.use_fused_loss("on", "cpu")
    assert not kernels.use_fused_loss("off", "cuda")
    monkeypatch.setitem(kernels.AUTO_ON_CUDA, "fused_loss", True)
    assert kernels.use_fused_loss("auto", "cuda") and not kernels.use_fused_loss("auto", "cpu")
    with pytest.raises(ConfigError, match="CUDA GPU"):
        kernels.use_fused_kernels("on", "cpu")
    monkeypatch.setattr(kernels, "liger_installed", lambda: False)
    with pytest.raises(ConfigError, match="liger-kernel"):
        kernels.use_fused_kernels("on", "cuda")
    monkeypatch.setitem(kernels.AUTO_ON_CUDA, "fused_kernels", True)
    assert not kernels.use_fused_kernels("auto", "cuda")  # auto without the package: quietly off


def test_chunked_loss_equals_the_models_loss_and_gradients():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    model = LlamaForCausalLM(cfg)
    ids = torch.randint(0, 300, (3, 20))
    labels = ids.clone()
    labels[:, :5] = -100
    labels[2, 15:] = -100
    mask = torch.ones_like(ids)
    ref = model(input_ids=ids, attention_mask=mask, labels=labels)
    ref.loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    loss, _ = kernels.causal_lm_loss(model, batch)
    with torch.no_grad():
        _, correct = kernels.chunked_cross_entropy(
            model.model(input_ids=ids).last_hidden_state, model.lm_head, labels, chunk=7, count_correct=True
        )
    assert torch.allclose(loss, ref.loss, atol=1e-6)
    loss.backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, ref_grads[name], atol=1e-6), name
    preds = ref.logits[:, :-1].argmax(-1)
    assert int(correct) == int(((preds == labels[:, 1:]) & (labels[:, 1:] != -100)).sum())
    assert kernels.supports_chunked_loss(model)
    model.config.logit_scale = 0.0625  # a model that scales its logits itself (Cohere): its own loss
    assert not kernels.supports_chunked_loss(model)


def test_run_with_chunked_loss_trains_like_the_plain_loss(tmp_path):
    from tunedesk.engine.run.runner import execute

    model = save_tiny_llama(tmp_path / "llama")
    data = write_chat(tmp_path / "chat.jsonl", n=24)
    results = {}
    for setting in ("off", "on"):
        config = lm_config(model, data, epochs=1, max_steps=4, fused_loss=setting, prompts=[])
        config.freeze = FreezeSpec(preset="none", lora=LoraSpec(preset="attention", rank=4, dropout=0.0))
        result = execute(config, home=tmp_path / f"home-{setting}")
        assert result.status == "completed", result.reason
        results[setting] = result.metrics
    assert results["on"]["val_loss"] == pytest.approx(results["off"]["val_loss"], rel=1e-4)
    assert results["on"]["val_token_accuracy"] == pytest.approx(results["off"]["val_token_accuracy"])


def test_an_attention_the_model_cannot_run_is_a_config_error(tmp_path):
    from tunedesk.engine.lm.model import load_causal_lm

    config = lm_config(save_tiny_llama(tmp_path / "llama"), tmp_path / "chat.jsonl")
    with pytest.raises(ConfigError) as info:
        load_causal_lm(config.model, attn_implementation="flash_attention_2")
    assert info.value.field == "hparams.attention" and "auto" in info.value.hint
