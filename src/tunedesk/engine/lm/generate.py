"""Replies from a causal LM: where a reply ends (eos and the chat template's end-of-turn token) and
one reply to a prompt or a chat, greedy or sampled."""

from __future__ import annotations

from typing import Any

import torch

from tunedesk.engine.errors import DataError
from tunedesk.engine.lm import data as lm_data
from tunedesk.engine.lm.model import HFModel

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>")


def stop_token_ids(tokenizer: Any, model: HFModel | None = None) -> list[int]:
    """Where a reply ends: the eos token, the model's generation eos ids, and the chat template's
    end-of-turn token (ChatML's ``<|im_end|>``, Llama 3's ``<|eot_id|>`` ...), found by rendering a
    probe reply and taking the special token that follows it."""
    cached = getattr(tokenizer, "_tunedesk_stop_ids", None)
    ids: list[int] = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if cached is None:
        cached = []
        special = set(getattr(tokenizer, "all_special_ids", []) or []) | set(
            getattr(tokenizer, "added_tokens_decoder", {}) or {}
        )
        if getattr(tokenizer, "chat_template", None):
            try:
                probe = "zq"
                text, spans = lm_data.assistant_spans(
                    tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}]
                )
                if spans:
                    start, end = spans[-1]
                    at = text.find(probe, start)
                    tail = text[at + len(probe) : end] if at >= 0 else ""
                    tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail.strip() else []
                    first = next((i for i in tail_ids if i in special), None)
                    if first is not None:
                        cached.append(int(first))
            except Exception:  # noqa: BLE001 - a probe only; eos still stops the reply
                pass
        vocab = tokenizer.get_vocab()
        cached += [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab and vocab[t] in special]
        tokenizer._tunedesk_stop_ids = cached
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += [gen] if isinstance(gen, int) else list(gen or [])
    return list(dict.fromkeys(ids + cached))


def generate_text(
    model: HFModel,
    tokenizer: Any,
    prompt: str | list[dict[str, str]],
    *,
    chat: bool,
    max_new_tokens: int,
    temperature: float = 0.0,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    top_p: float = 0.95,
) -> str:
    """One reply: a chat (list of messages, or one user message) rendered with the template, or a plain
    text continued. ``temperature`` 0 decodes greedily."""
    device = torch.device(device)
    if isinstance(prompt, list):
        text = lm_data.render_chat(tokenizer, prompt, add_generation_prompt=True)
        special = False
    elif chat:
        text = lm_data.render_chat(tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
        special = False
    else:
        text, special = prompt, True
    enc = tokenizer(text, add_special_tokens=special, return_tensors="pt")
    if enc["input_ids"].shape[1] == 0:
        raise DataError("the prompt is empty after tokenisation", "type some text")
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_token_ids(tokenizer, model),
        use_cache=True,
    )
    if temperature and temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature), top_p=top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = model.generate(
            input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device), **kwargs
        )
    new = out[0, enc["input_ids"].shape[1] :]
    return tokenizer.decode(new, skip_special_tokens=True).strip()
