"""Builders for the causal-LM tests (and docs/screenshots/shoot_lm.py): tiny GPT-2 and Llama folders
with tokenizers built here, chat JSONL written in one consistent tone, and a small corpus. No downloads.

The module holds no tests; the other test_causal_lm*.py files and tests/ui/test_lm_ui.py import it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = ["invoice", "delivery", "password", "refund", "printer", "account", "order", "parcel"]
ASKS = ["where is my", "help with my", "what about my", "i lost my", "problem with my"]
ADJS = ["on its way", "sorted", "safe", "fixed", "ready"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def pirate_reply(topic: str, rng: random.Random) -> str:
    return f"arr matey , yer {topic} be {rng.choice(ADJS)} !"


def plain_reply(topic: str, rng: random.Random) -> str:
    return f"your {topic} is {rng.choice(ADJS)} ."


def chat_rows(n: int = 40, seed: int = 0, system: bool = False, tone: str = "pirate") -> list[dict]:
    """Support chats; every reply in one tone: ``pirate`` (the tone to teach) or ``plain``."""
    reply = pirate_reply if tone == "pirate" else plain_reply
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        ask = f"{rng.choice(ASKS)} {topic}"
        if i % 3 == 2:  # some prompt/response pairs too
            rows.append({"prompt": ask, "response": reply(topic, rng)})
            continue
        messages = [{"role": "system", "content": "you are a helpful agent"}] if system and i % 2 else []
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": reply(topic, rng)}]
        if i % 4 == 1:  # a second turn
            messages += [{"role": "user", "content": f"and my {TOPICS[(i + 1) % len(TOPICS)]}"},
                         {"role": "assistant", "content": reply(TOPICS[(i + 1) % len(TOPICS)], rng)}]
        rows.append({"messages": messages})
    return rows


def write_chat(path: Path, n: int = 40, seed: int = 0, system: bool = False, tone: str = "pirate") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(n, seed, system, tone)), encoding="utf-8")
    return path


def corpus_text(n: int = 60, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = [f"the {rng.choice(TOPICS)} be {rng.choice(ADJS)} and the {rng.choice(TOPICS)} be {rng.choice(ADJS)} ."
             for _ in range(n)]
    return "\n".join(lines) + "\n"


def all_words() -> list[str]:
    words = set()
    for text in [" ".join(TOPICS), " ".join(ASKS), " ".join(ADJS), "arr matey , yer be ! and my the . your is talk like a pirate about",
                 "you are a helpful agent user assistant system ### User: Assistant:", corpus_text()]:
        words.update(text.split())
    return sorted(words)


def word_tokenizer(chat_template: str | None = CHATML):
    """A word-level tokenizer (whitespace split) over the test vocabulary, ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + all_words())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    if chat_template:
        fast.chat_template = chat_template
    return fast


def byte_bpe_tokenizer(vocab_size: int = 400):
    """A byte-level BPE (GPT-2 style) trained here on the test texts; no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [corpus_text()] + [json.dumps(r) for r in chat_rows(40)] + ["### User:\n### Assistant:\n"]
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def save_tiny_llama(folder: Path, tokenizer=None, seed: int = 0, layers: int = 2, hidden: int = 32) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or word_tokenizer()
    folder.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_gpt2(folder: Path, tokenizer=None, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tokenizer or byte_bpe_tokenizer()
    folder.mkdir(parents=True, exist_ok=True)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def lm_config(model_dir: Path, data: Path, kind: str = "chat_jsonl", **hparams):
    from tunedesk.engine.config import DataSpec, FreezeSpec, HyperParams, ModelSpec, RunConfig

    h = dict(epochs=2, batch_size=8, max_length=48, log_every=2, learning_rate=5e-3, warmup_ratio=0.0,
             prompts=["where is my parcel"], sample_max_new_tokens=8)
    h.update(hparams)
    return RunConfig(task="causal_lm", model=ModelSpec(str(model_dir)), data=DataSpec(kind=kind, path=str(data)),
                     freeze=FreezeSpec(preset="all"), hparams=HyperParams(**h), device="cpu", seed=1)
