"""Chat and instruction records, as TuneDesk reads them for training and for the Datasets area.

One JSON object per conversation, in any of the usual shapes:

* ``{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}``
  (``conversations`` with ``from``/``value`` too, ShareGPT style; roles ``human``/``gpt``/``bot``/
  ``model``/``ai`` map to user/assistant and ``developer`` to system; a content may be a list of
  ``{"text": ...}`` parts, OpenAI style);
* prompt/response pairs: ``prompt``/``response``, ``prompt``/``completion``, ``instruction``/``output``
  (with an optional ``input``), ``question``/``answer``, ``input``/``output``, and an optional ``system``.

``normalise_record`` turns one into ``[{"role", "content"}, ...]`` or says why it cannot. No torch here.
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "ai": "assistant",
    "developer": "system",
}


def message_text(value: Any) -> str | None:
    """A message's content as text: a string, or a list of parts that all carry "text"."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        texts = [p["text"] for p in value if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if len(texts) == len(value):
            return "".join(texts)
    return None


def normalise_record(obj: Any) -> tuple[list[dict[str, str]] | None, str]:
    """One JSONL record -> (messages, "") or (None, reason it was skipped)."""
    if not isinstance(obj, dict):
        return None, "not an object: each line must be a JSON object"
    raw = obj.get("messages", obj.get("conversations"))
    if raw is not None:
        if not isinstance(raw, list) or not raw:
            return None, "bad messages: 'messages' must be a non-empty list"
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict):
                return None, f"bad message: message {i + 1} is not an object"
            role = m.get("role", m.get("from"))
            content = message_text(m.get("content", m.get("value")))
            role = ROLE_ALIASES.get(str(role).lower(), str(role).lower()) if isinstance(role, str) else role
            if role not in ROLES:
                return None, f"unknown role: {role!r} in message {i + 1} (use system, user or assistant)"
            if not isinstance(content, str):
                return None, f"bad message: message {i + 1} has no text content"
            messages.append({"role": role, "content": content})
    else:
        prompt = response = None
        for p_key, r_key in (
            ("prompt", "response"),
            ("prompt", "completion"),
            ("instruction", "output"),
            ("question", "answer"),
            ("input", "output"),
        ):
            if p_key in obj and r_key in obj:
                prompt, response = obj[p_key], obj[r_key]
                if p_key == "instruction" and isinstance(obj.get("input"), str) and obj["input"].strip():
                    prompt = f"{prompt}\n\n{obj['input']}" if isinstance(prompt, str) else prompt
                break
        if prompt is None and response is None:
            return None, "unknown format: expected 'messages' or 'prompt'/'response' keys"
        if not isinstance(prompt, str) or not isinstance(response, str):
            return None, "bad pair: prompt and response must be text"
        messages = []
        if isinstance(obj.get("system"), str) and obj["system"].strip():
            messages.append({"role": "system", "content": obj["system"]})
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return None, "no assistant reply: nothing to learn from this conversation"
    return messages, ""
