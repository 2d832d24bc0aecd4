"""Causal LM end to end on tiny GPT-2 and Llama models built here: runner, LoRA, samples, resume,
export (merged through transformers, adapter through PEFT), and the "try it" generation helper."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.fixtures.causal_lm import (
    corpus_text,
    last_block_attention_lora,
    lm_config,
    save_tiny_gpt2,
    save_tiny_llama,
    word_tokenizer,
    write_chat,
)
from tunedesk.engine.config import FreezeSpec, LoraSpec
from tunedesk.engine.errors import ConfigError, ModelError, TuneDeskError

PROMPT = "where is my parcel"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model", word_tokenizer())


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2") / "model")


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory):
    return write_chat(tmp_path_factory.mktemp("chat") / "pirate.jsonl", 40, system=True)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, llama_dir, chat_file):
    from tunedesk.engine.run.runner import execute

    home = tmp_path_factory.mktemp("home")
    events = []
    config = last_block_attention_lora(lm_config(llama_dir, chat_file, epochs=3, learning_rate=3e-2))
    result = execute(config, home=home, listeners=[events.append])
    assert result.status == "completed", (result.reason, result.hint)
    return home, result, events


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_run_records_loss_perplexity_samples_and_adapter_names(lora_run):
    from tunedesk.engine.run.runner import open_store

    home, result, events = lora_run
    assert result.metrics["val_perplexity"] == pytest.approx(
        torch.tensor(result.metrics["val_loss"]).exp().item(), rel=1e-6
    )
    samples = [e for e in events if e.kind == "SampleGenerated"]
    # epoch 0: the replies before any training, then one set per evaluation
    assert [(s.epoch, s.prompt) for s in samples] == [(0, PROMPT), (1, PROMPT), (2, PROMPT), (3, PROMPT)]
    assert all(isinstance(s.text, str) for s in samples)
    store = open_store(home)
    try:
        run = store.get_run(result.run_id)
        stored = store.samples(result.run_id)
        epochs = store.epoch_metrics(result.run_id)
    finally:
        store.close()
    assert [(s["epoch"], s["prompt"], s["text"]) for s in stored] == [(s.epoch, s.prompt, s.text) for s in samples]
    assert run["best_metric_name"] == "val_loss"
    losses = [e["metrics"]["val_loss"] if "metrics" in e else e["val_loss"] for e in epochs]
    assert losses[-1] < losses[0]  # it learns the tone
    names = run["trainable_names"]
    expected = {
        f"base_model.model.model.layers.1.self_attn.{p}.lora_{ab}.default.weight"
        for p in ("q_proj", "k_proj", "v_proj", "o_proj")
        for ab in "AB"
    }
    assert set(names) == expected
    assert run["freeze_summary"].endswith("base frozen + LoRA r=8 on 4 layers")
    best = result.output_dir + "/best"
    meta = json.loads(Path(best, "tunedesk.json").read_text())
    assert set(meta["lora"]) == {f"model.layers.1.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    assert meta["trainable_names"] == sorted(expected)


def test_export_merged_loads_in_plain_transformers_and_adapter_in_peft(lora_run, llama_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunedesk.engine.lm.export import export_lm_run, load_run_model

    home, result, _ = lora_run
    rm = load_run_model(result.run_id, home=home)
    tok = rm.tokenizer
    ids = tok(
        tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True),
        add_special_tokens=False,
        return_tensors="pt",
    )["input_ids"]
    reference = _logits(rm.model, ids)

    merged = export_lm_run(result.run_id, tmp_path / "merged", "merged", home)
    assert merged["format"] == "merged" and (tmp_path / "merged" / "model.safetensors").is_file()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)
    tok2 = AutoTokenizer.from_pretrained(tmp_path / "merged", local_files_only=True)
    assert tok2.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id  # replies end at the turn
    assert torch.allclose(_logits(model, ids), reference, atol=1e-5)
    prompt = tok2.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True)
    enc = tok2(prompt, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok2.pad_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]

    adapter = export_lm_run(result.run_id, tmp_path / "adapter", "adapter", home)
    assert adapter["format"] == "adapter"
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(llama_dir.resolve()) and cfg["r"] == 8
    base = AutoModelForCausalLM.from_pretrained(llama_dir, local_files_only=True)
    peft_model = PeftModel.from_pretrained(base, tmp_path / "adapter")
    assert torch.allclose(_logits(peft_model, ids), reference, atol=1e-5)
    out = peft_model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids.shape[1]

    with pytest.raises(ConfigError, match="not an empty folder"):
        export_lm_run(result.run_id, tmp_path / "merged", "merged", home)
    with pytest.raises(ConfigError, match="not a language-model export format"):
        export_lm_run(result.run_id, tmp_path / "x", "onnx", home)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".*.tmp"))


def test_generate_helper_for_the_chat_box(lora_run):
    from tunedesk.engine.lm.export import clear_cache, generate

    home, result, events = lora_run
    greedy = generate(result.run_id, PROMPT, max_new_tokens=8, temperature=0.0, home=home, device="cpu")
    again = generate(
        result.run_id, [{"role": "user", "content": PROMPT}], max_new_tokens=8, temperature=0.0, home=home, device="cpu"
    )
    assert greedy == again  # a text is a user message for a chat-trained run
    last_sample = [e for e in events if e.kind == "SampleGenerated"][-1].text
    assert greedy.split()[:3] == last_sample.split()[:3]  # best == last epoch here: same greedy reply
    sampled = generate(result.run_id, PROMPT, max_new_tokens=5, temperature=1.0, home=home, device="cpu")
    assert isinstance(sampled, str)
    with pytest.raises(ConfigError, match="temperature"):
        generate(result.run_id, PROMPT, temperature=-1, home=home)
    with pytest.raises(ConfigError, match="empty"):
        generate(result.run_id, "  ", home=home)
    with pytest.raises(TuneDeskError, match="not found"):
        generate(9999, PROMPT, home=home)
    clear_cache()


def test_stop_and_resume_lora_run_matches_uninterrupted(tmp_path, llama_dir, chat_file):
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute, open_store, resume

    def config():
        return last_block_attention_lora(lm_config(llama_dir, chat_file, epochs=2, learning_rate=3e-2, log_every=1))

    straight = execute(config(), home=tmp_path / "a")
    control = Control()

    def stop_at_3(event):
        if event.kind == "StepLogged" and event.step == 3:
            control.request_stop("test stop")

    stopped = execute(config(), home=tmp_path / "b", listeners=[stop_at_3], control=control)
    assert stopped.status == "stopped"
    # the resumable checkpoint holds the adapters, not the frozen base; "try it" / export can use it
    from safetensors import safe_open

    from tunedesk.engine.lm.export import load_run_model

    with safe_open(str(Path(stopped.output_dir) / "last" / "model.safetensors"), "pt") as f:
        saved = list(f.keys())
    assert saved and all("lora_" in k for k in saved if k.endswith("weight")), saved[:5]
    assert load_run_model(stopped.run_id, home=tmp_path / "b", which="last").which == "last"
    resumed = resume(stopped.run_id, home=tmp_path / "b")
    assert resumed.status == "completed", resumed.reason
    assert resumed.metrics["val_loss"] == pytest.approx(straight.metrics["val_loss"], rel=1e-5, abs=1e-6)
    store = open_store(tmp_path / "b")
    try:
        assert store.get_run(stopped.run_id)["status"] == "completed"
        assert [s["epoch"] for s in store.samples(stopped.run_id)] == [0, 1, 2]
    finally:
        store.close()


def test_gpt2_corpus_last_block_full_lora_elsewhere_checkpointing(tmp_path, gpt2_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunedesk.engine.lm import lora
    from tunedesk.engine.lm.export import export_lm_run, load_run_model
    from tunedesk.engine.lm.model import is_checkpointing
    from tunedesk.engine.run.runner import execute, open_store, prepare

    docs = tmp_path / "docs"
    docs.mkdir()
    text = corpus_text(40)
    (docs / "a.txt").write_text(text, encoding="utf-8")
    (docs / "b.txt").write_text(corpus_text(20, seed=1), encoding="utf-8")
    config = lm_config(
        gpt2_dir, docs, kind="text_corpus", epochs=1, max_length=32, prompts=["the parcel"], gradient_checkpointing=True
    )
    config.freeze = lora.preset_spec("last_n_full", last_n=1, rank=4, alpha=8, dropout=0.1)
    prep = prepare(config)
    inner = prep.loaded.model.get_base_model()
    assert is_checkpointing(inner)
    names = prep.plan.trainable_names
    assert "base_model.model.transformer.h.1.attn.c_attn.weight" in names  # last block: trained fully
    assert "base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight" in names  # LoRA elsewhere
    assert "base_model.model.transformer.h.0.attn.c_attn.base_layer.weight" not in names
    assert not any("wte" in n or "wpe" in n for n in names)

    result = execute(config, home=tmp_path / "home", prepared=prep)
    assert result.status == "completed", (result.reason, result.hint)
    store = open_store(tmp_path / "home")
    try:
        assert store.get_run(result.run_id)["trainable_names"] == names
    finally:
        store.close()
    rm = load_run_model(result.run_id, home=tmp_path / "home")
    ids = rm.tokenizer("the parcel be", return_tensors="pt")["input_ids"]
    reference = _logits(rm.model, ids)
    export_lm_run(result.run_id, tmp_path / "merged", "merged", tmp_path / "home")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)
    assert torch.allclose(_logits(merged, ids), reference, atol=1e-5)
    export_lm_run(result.run_id, tmp_path / "adapter", "adapter", tmp_path / "home")
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert "transformer.h.1.attn.c_attn" in cfg["modules_to_save"]  # the fully trained block travels too
    base = AutoModelForCausalLM.from_pretrained(gpt2_dir, local_files_only=True)
    adapted = PeftModel.from_pretrained(base, tmp_path / "adapter")
    assert torch.allclose(_logits(adapted, ids), reference, atol=1e-5)


def test_gpt2_full_finetune_chat_with_fallback_template(tmp_path, gpt2_dir, chat_file):
    from transformers import AutoTokenizer

    from tunedesk.engine.lm.data import FALLBACK_CHAT_TEMPLATE
    from tunedesk.engine.lm.export import export_lm_run, generate
    from tunedesk.engine.run.runner import execute

    config = lm_config(gpt2_dir, chat_file, epochs=1, max_length=64, learning_rate=None)
    config.freeze = FreezeSpec(preset="last_n_blocks", last_n=1)
    result = execute(config, home=tmp_path / "home")
    assert result.status == "completed", (result.reason, result.hint)
    with pytest.raises(ConfigError, match="without LoRA"):
        export_lm_run(result.run_id, tmp_path / "adapter", "adapter", tmp_path / "home")
    export_lm_run(result.run_id, tmp_path / "merged", "hf", tmp_path / "home")
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged", local_files_only=True)
    assert tok.chat_template == FALLBACK_CHAT_TEMPLATE  # the model is prompted the way it was trained
    assert isinstance(
        generate(result.run_id, PROMPT, max_new_tokens=4, temperature=0, home=tmp_path / "home", device="cpu"), str
    )


def test_mistakes_are_refused_before_anything_runs(tmp_path, llama_dir, chat_file, tiny_bert_dir):
    from tunedesk.engine.run.runner import prepare

    with pytest.raises(ModelError, match="not a decoder language model"):
        prepare(lm_config(tiny_bert_dir, chat_file))
    with pytest.raises(ConfigError, match="max_length"):
        prepare(lm_config(llama_dir, chat_file, max_length=4096))
    config = lm_config(llama_dir, chat_file)
    config.freeze = FreezeSpec(preset="all", lora=LoraSpec(preset="attention"))  # every layer trains fully
    with pytest.raises(ConfigError, match="chooses no layer"):
        prepare(config)
    config = lm_config(llama_dir, chat_file)
    config.data.kind = "text_table"
    with pytest.raises(ConfigError, match="text_corpus, chat_jsonl or dataset_version"):
        prepare(config)
    config = lm_config(llama_dir, tmp_path / "missing.jsonl")
    with pytest.raises(TuneDeskError, match="not found"):
        prepare(config)
