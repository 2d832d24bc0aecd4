"""Language-model data: plain-text corpora packed into blocks, and chat JSONL with assistant-only labels.

Two kinds of data (``config.data.kind``):

* ``text_corpus``: a ``.txt``/``.md`` file or a folder of them (searched recursively). Every
  document is tokenised, documents are joined with the end-of-sequence token, and the token stream
  is cut into blocks of ``hparams.max_length`` tokens. The loss covers every token.
* ``chat_jsonl``: one conversation per line, either ``{"messages": [{"role": ..., "content": ...}]}``
  (roles ``system``, ``user``, ``assistant``; ShareGPT's ``{"conversations": [{"from", "value"}]}``
  is accepted too) or a single exchange ``{"prompt": ..., "response": ...}`` (also
  ``instruction``/``input``/``output``, ``question``/``answer``, ``prompt``/``completion``).
  Conversations are rendered with the tokenizer's chat template; a tokenizer without one gets
  ``FALLBACK_CHAT_TEMPLATE``. The loss covers only the assistant's tokens (including the template's
  end-of-turn marker, so the model learns to stop); every other label is -100.

Problems with single lines (invalid JSON, no assistant reply, unknown role) are reported with the
line number and the line is skipped; problems with the whole data set raise DataError with a hint.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunedesk.engine.data.encoding import detect_encoding
from tunedesk.engine.data.report import DataReport
from tunedesk.engine.data.text import given_encoding, iter_table_records
from tunedesk.engine.errors import DataError
from tunedesk.engine.lm.chat_format import ROLES, normalise_record  # noqa: F401 - re-exported

IGNORE_INDEX = -100
CORPUS_SUFFIXES = (".txt", ".md", ".text")
CHAT_SUFFIXES = (".jsonl", ".jsonlines", ".ndjson")

#: Used when the tokenizer has no chat template of its own (GPT-2 and most base models):
#:
#:     <system text>\n\n                       (only when there is a system message)
#:     ### User:\n<text>\n\n
#:     ### Assistant:\n<text><eos>\n\n
#:
#: The generation prompt is ``### Assistant:\n``. The template is saved with exported models, so
#: the fine-tuned model is prompted the same way it was trained.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Assistant:\n{{ message['content'] }}{{ eos_token }}\n\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)


# ---- reading ----------------------------------------------------------------------------------


@dataclass
class LMExamples:
    """What ``CausalLM.load_examples`` returns: the raw documents or conversations, not yet tokenised."""

    kind: str  # "text_corpus" | "chat_jsonl"
    name: str
    summary: str
    documents: list[tuple[str, str]] = field(default_factory=list)  # corpus: (file name, text)
    conversations: list[list[dict[str, str]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # a saved data set version's split, one "train" / "val" (or "test" / "": left out) per document or
    # conversation; None: split here with data.val_fraction and the seed
    split: list[str] | None = None

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name, text in self.documents:
            h.update(name.encode("utf-8", "surrogatepass") + b"\x1f" + text.encode("utf-8", "surrogatepass") + b"\x1e")
        for conv in self.conversations:
            h.update(json.dumps(conv, ensure_ascii=False, sort_keys=True).encode("utf-8", "surrogatepass") + b"\x1e")
        if self.split is not None:
            h.update(("split:" + ",".join(self.split)).encode("utf-8"))
        return h.hexdigest()[:16]

    def stored_split(self) -> tuple[list[int], list[int]] | None:
        """(train, validation) indices from a version's split, or None when it has none (or no
        validation part, or no training part)."""
        if self.split is None:
            return None
        train = [i for i, s in enumerate(self.split) if s == "train"]
        val = [i for i, s in enumerate(self.split) if s == "val"]
        return (train, val) if train and val else None


def _encoding(path: Path, encoding: str | None) -> str:
    if encoding and encoding.lower() != "auto":
        return given_encoding(path, encoding)
    return detect_encoding(path)[0]


def _issue_warnings(report: DataReport) -> list[str]:
    out = [str(i) for i in report.issues[:20]]
    if len(report.issues) > 20:
        out.append(f"... and {len(report.issues) - 20} more data problems")
    return out


BINARY_SHARE = 0.01  # text has tabs and line breaks, almost never other control characters
_TEXT_CONTROLS = frozenset("\t\n\r\f\v")


def control_share(text: str, sample: int = 65536) -> float:
    """The share of control characters (NUL, escape, ... but not tabs and line breaks) in the first
    ``sample`` characters: a PDF, image or archive saved as .txt decodes to a few percent or more."""
    head = text[:sample]
    if not head:
        return 0.0
    controls = sum(1 for ch in head if (ch < " " or "\x7f" <= ch < "\xa0") and ch not in _TEXT_CONTROLS)
    return controls / len(head)


def read_corpus(path: str | Path, encoding: str | None = None, max_items: int | None = None) -> LMExamples:
    """A text file, or every text file under a folder (sorted, recursive), as documents."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"corpus not found: {root}", "point data.path at a .txt file or a folder of .txt files")
    if root.is_dir():
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in CORPUS_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise DataError(
                f"{root} holds no text files ({', '.join(CORPUS_SUFFIXES)})",
                "put your documents in the folder as UTF-8 .txt files",
            )
    else:
        if root.suffix.lower() in CHAT_SUFFIXES:
            raise DataError(
                f"{root.name} looks like chat data, not a plain-text corpus",
                "set the data kind to chat_jsonl for conversations",
            )
        files = [root]
    report = DataReport(str(root), unit="document")
    docs: list[tuple[str, str]] = []
    for f in files:
        rel = f.name if f == root else str(f.relative_to(root))
        report.rows_read += 1
        try:
            enc = _encoding(f, encoding)
            text = f.read_text(encoding=enc)
        except UnicodeDecodeError:
            report.add(f"undecodable: not {enc} text", path=rel)
            continue
        except OSError as exc:
            report.add(f"unreadable: {exc.strerror or exc}", path=rel)
            continue
        text = text.lstrip("\ufeff").replace("\r\n", "\n")
        if not text.strip():
            report.add("empty text", path=rel)
            continue
        share = control_share(text)
        if share > BINARY_SHARE:
            report.add(f"not text: {share:.0%} control characters (a binary file with a text name?)", path=rel)
            continue
        docs.append((rel, text))
        report.rows_kept += 1
        if max_items and len(docs) >= max_items:
            report.limit_reached = len(docs) < len(files)
            break
    if not docs:
        raise DataError(
            f"{root.name} has no readable text ({report.summary()})",
            "save the documents as UTF-8 text, or set data.encoding",
        )
    return LMExamples("text_corpus", root.name, report.summary(), documents=docs, warnings=_issue_warnings(report))


def read_chat_jsonl(path: str | Path, encoding: str | None = None, max_items: int | None = None) -> LMExamples:
    """Conversations from a JSONL file; skipped lines are reported with their line number."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"chat data not found: {p}", "point data.path at a .jsonl file with one conversation per line")
    if p.is_dir():
        raise DataError(
            f"{p} is a folder", "choose the .jsonl file inside it, or use the text_corpus kind for a folder of .txt"
        )
    if p.suffix.lower() not in CHAT_SUFFIXES and p.suffix.lower() != ".json":
        raise DataError(
            f"{p.name}: chat data must be a .jsonl file (got {p.suffix or 'no suffix'})",
            "write one JSON object per line with 'messages' or 'prompt'/'response'",
        )
    enc = _encoding(p, encoding)
    report = DataReport(str(p), encoding=enc, unit="conversation")
    conversations: list[list[dict[str, str]]] = []
    try:
        for lineno, _, obj in iter_table_records(p, enc, "jsonl", report):  # BOM, blank lines, bad JSON
            report.rows_read += 1
            messages, reason = normalise_record(obj)
            if messages is None:
                report.add(reason, lineno)
                continue
            conversations.append(messages)
            report.rows_kept += 1
            if max_items and len(conversations) >= max_items:
                report.limit_reached = True
                break
    except UnicodeDecodeError:
        raise DataError(
            f"cannot decode {p.name} as {enc}", 'save the file as UTF-8, or set data.encoding (e.g. "cp1252")'
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read {p}: {exc.strerror or exc}", "check the file permissions") from None
    if not conversations:
        first = report.issues[0] if report.issues else None
        raise DataError(
            f"{p.name} has no usable conversation ({report.summary()})"
            + (f"; first problem: {first}" if first else ""),
            'each line needs {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]} '
            'or {"prompt": ..., "response": ...}',
        )
    return LMExamples(
        "chat_jsonl", p.name, report.summary(), conversations=conversations, warnings=_issue_warnings(report)
    )


# ---- chat rendering and the assistant-only mask -------------------------------------------------


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a tokenizer without a chat template the documented fallback; True if it was added."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return True


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
    try:
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as exc:
        raise DataError(
            f"the model's chat template refused a conversation: {str(exc).splitlines()[0]}",
            "check the roles' order (many templates need user/assistant turns alternating, system first)",
        ) from exc


def assistant_spans(tokenizer: Any, messages: Sequence[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character ranges of the assistant's turns.

    Each range runs from the end of the prompt that precedes the reply (the template's generation
    prompt) to the end of the rendered reply, so it includes the end-of-turn marker. Templates that
    re-render earlier turns differently (not prefix-stable) fall back to locating the reply text.
    """
    text = render_chat(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        through = render_chat(tokenizer, messages[: i + 1])
        if text.startswith(through) and through.startswith(before) and len(before) >= cursor:
            start, end = len(before), len(through)
        else:  # not prefix-stable: find the reply's text after the previous span
            start = text.find(m["content"], cursor) if m["content"] else -1
            if start < 0:
                continue
            end = start + len(m["content"])
            eos = getattr(tokenizer, "eos_token", None)
            if eos and text.startswith(eos, end):
                end += len(eos)
        if end > start:
            spans.append((start, end))
            cursor = end
    return text, spans


def encode_chat(
    tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int
) -> tuple[list[int], list[int], bool]:
    """Token ids and labels (assistant tokens only, -100 elsewhere) for one conversation.

    A token is the assistant's when its first character lies inside an assistant span. Returns
    ``(input_ids, labels, truncated)``; long conversations keep their first ``max_length`` tokens.
    """
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    labels = []
    for tok, (s, e) in zip(ids, offsets):
        inside = any(a <= s < b for a, b in spans) if e > s else False
        labels.append(tok if inside else IGNORE_INDEX)
    truncated = len(ids) > max_length
    return ids[:max_length], labels[:max_length], truncated


# ---- corpus packing ---------------------------------------------------------------------------


def _pieces(text: str, size: int = 1 << 16) -> Iterable[str]:
    """Split a long document at paragraph breaks into pieces of about ``size`` characters."""
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind("\n\n", start, end)
            if cut > start:
                end = cut + 2
        yield text[start:end]
        start = end


def tokenize_documents(tokenizer: Any, documents: Sequence[tuple[str, str]]) -> list[int]:
    """One token stream: each document as ``[bos] text <eos>`` (bos only when it differs from eos)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    stream: list[int] = []
    for _, text in documents:
        if bos is not None and bos != eos:
            stream.append(bos)
        pieces = list(_pieces(text))
        for ids in tokenizer(pieces, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
        if eos is not None:
            stream.append(eos)
    return stream


def pack(stream: Sequence[int], block: int, min_tail: int | None = None) -> list[list[int]]:
    """Cut a token stream into blocks of ``block`` tokens; a last partial block is kept when it
    holds at least ``min_tail`` tokens (default: half a block), else dropped."""
    min_tail = block // 2 if min_tail is None else min_tail
    blocks = [list(stream[i : i + block]) for i in range(0, len(stream), block)]
    if blocks and len(blocks[-1]) < block and len(blocks[-1]) < max(min_tail, 2):
        blocks.pop()
    return blocks


# ---- datasets and batching --------------------------------------------------------------------


class LMDataset(torch.utils.data.Dataset):
    """Token sequences with their labels (labels None: every token is a target)."""

    def __init__(self, input_ids: list[list[int]], labels: list[list[int] | None]) -> None:
        self.input_ids, self.labels = input_ids, labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids = self.input_ids[i]
        labels = self.labels[i]
        return {"input_ids": ids, "labels": list(ids) if labels is None else labels}


class LMCollate:
    """Right-pads a batch to its longest sequence: pad id in input_ids, 0 in attention_mask, -100 in
    labels; a batch without padding has no attention_mask. Packed rows (``tunedesk.engine.lm.packing``) carry ``position_ids`` instead of a mask: the
    padding continues as a separate run of positions from 0, so nothing attends across it.
    Picklable for DataLoader workers."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(it["input_ids"]) for it in items)
        packed = "position_ids" in items[0]
        ids = torch.full((len(items), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
        positions = torch.arange(longest).repeat(len(items), 1) if packed else None
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            ids[row, :n] = torch.as_tensor(it["input_ids"], dtype=torch.long)
            mask[row, :n] = 1
            labels[row, :n] = torch.as_tensor(it["labels"], dtype=torch.long)
            if positions is not None:
                positions[row, :n] = torch.as_tensor(it["position_ids"], dtype=torch.long)
                positions[row, n:] = torch.arange(longest - n)
        if positions is not None:
            return {"input_ids": ids, "position_ids": positions, "labels": labels}
        if all(len(it["input_ids"]) == longest for it in items):
            # no padding (corpus blocks): without a mask the model runs plain causal attention; with an
            # all-ones mask transformers reads it back from the GPU on every forward to find that out
            return {"input_ids": ids, "labels": labels}
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random split of ``n`` items: at least one in each part (needs n >= 2)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = min(max(int(math.floor(n * val_fraction + 0.5)), 1), n - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


@dataclass
class EncodedLM:
    train: LMDataset
    val: LMDataset
    warnings: list[str]
    summary: str
    train_tokens: int
    val_sources: list[int] = field(default_factory=list)  # chat: the conversations (indices) kept for validation


def encode_examples(tokenizer: Any, examples: LMExamples, max_length: int, val_fraction: float, seed: int) -> EncodedLM:
    """Tokenise and split: corpus -> packed blocks (split by block); chat -> one sequence per conversation."""
    warnings = list(examples.warnings)
    stored = examples.stored_split()
    if stored is not None:
        left_out = len(examples.split or []) - len(stored[0]) - len(stored[1])
        if left_out:
            warnings.append(
                f"{left_out} item(s) of the version are in neither its training nor its validation part "
                "and are left out"
            )
    if examples.kind == "text_corpus":
        if stored is not None:  # the version's split is by passage: pack each part on its own
            parts = [
                pack(tokenize_documents(tokenizer, [examples.documents[i] for i in idx]), max_length) for idx in stored
            ]
            if not parts[0] or not parts[1]:
                raise DataError(
                    f"{examples.name}: its {'training' if not parts[0] else 'validation'} part is shorter "
                    f"than one block of {max_length} tokens",
                    "lower hparams.max_length, or give that part more text in the Datasets area",
                )
            blocks = parts[0] + parts[1]
            train_idx = list(range(len(parts[0])))
            val_idx = list(range(len(parts[0]), len(blocks)))
            tokens = sum(len(b) for b in blocks)
            where = "stored split"
        else:
            stream = tokenize_documents(tokenizer, examples.documents)
            blocks = pack(stream, max_length)
            tokens = len(stream)
            if len(blocks) < 2:
                raise DataError(
                    f"{examples.name} is too short: {len(stream)} tokens make {len(blocks)} block(s) of "
                    f"{max_length} tokens, and training needs at least 2 (one for validation)",
                    "add more text, or lower hparams.max_length",
                )
            train_idx, val_idx = split_indices(len(blocks), val_fraction, seed)
            where = "validation"
        train = LMDataset([blocks[i] for i in train_idx], [None] * len(train_idx))
        val = LMDataset([blocks[i] for i in val_idx], [None] * len(val_idx))
        summary = (
            f"{examples.summary}; {tokens:,} tokens packed into {len(blocks)} blocks of {max_length} "
            f"({len(train_idx)} train, {len(val_idx)} validation"
            + (", the version's stored split)" if where == "stored split" else ")")
        )
        return EncodedLM(train, val, warnings, summary, sum(len(b) for b in train.input_ids))
    ids_list: list[list[int]] = []
    labels_list: list[list[int]] = []
    kept: list[int] = []
    truncated = dropped = 0
    for index, conv in enumerate(examples.conversations):
        ids, labels, cut = encode_chat(tokenizer, conv, max_length)
        truncated += cut
        if not any(label != IGNORE_INDEX for label in labels[1:]):
            dropped += 1  # the reply was cut away entirely (or is empty after templating)
            continue
        ids_list.append(ids)
        labels_list.append(labels)
        kept.append(index)
    if truncated:
        warnings.append(f"{truncated} conversation(s) were cut to max_length={max_length} tokens")
    if dropped:
        warnings.append(f"{dropped} conversation(s) skipped: no assistant token left within max_length={max_length}")
    if len(ids_list) < 2:
        raise DataError(
            f"{examples.name} has {len(ids_list)} usable conversation(s); training needs at least 2 "
            "(one for validation)",
            "add conversations, or raise hparams.max_length if replies were cut off",
        )
    if stored is not None:  # the version's split, by conversation (those cut away above drop out)
        position = {source: k for k, source in enumerate(kept)}
        train_idx = [position[i] for i in stored[0] if i in position]
        val_idx = [position[i] for i in stored[1] if i in position]
        if not train_idx or not val_idx:
            raise DataError(
                f"{examples.name}: no usable conversation is left in its "
                f"{'training' if not train_idx else 'validation'} part",
                "raise hparams.max_length if replies were cut off, or re-split in the Datasets area",
            )
    else:
        train_idx, val_idx = split_indices(len(ids_list), val_fraction, seed)
    train = LMDataset([ids_list[i] for i in train_idx], [labels_list[i] for i in train_idx])
    val = LMDataset([ids_list[i] for i in val_idx], [labels_list[i] for i in val_idx])
    targets = sum(sum(1 for x in labels_list[i] if x != IGNORE_INDEX) for i in train_idx)
    how = " (the version's stored split)" if stored is not None else ""
    summary = (
        f"{examples.summary}; {len(train_idx)} train and {len(val_idx)} validation conversations{how}, "
        f"{targets:,} assistant tokens to learn"
    )
    return EncodedLM(train, val, warnings, summary, targets, [kept[i] for i in val_idx])


def default_prompts(examples: LMExamples, prefer: Sequence[int] = (), count: int = 2) -> list[str]:
    """Prompts for sample generations when the user set none: the first user turns of the chat data
    (validation conversations ``prefer`` first, so the samples are not replies the model trained on),
    or the opening words of the corpus's first documents."""
    out: list[str] = []
    if examples.kind == "chat_jsonl":
        order = list(prefer) + [i for i in range(len(examples.conversations)) if i not in set(prefer)]
        for conv in (examples.conversations[i] for i in order):
            first = next((m["content"] for m in conv if m["role"] == "user" and m["content"].strip()), None)
            if first and first not in out:
                out.append(first.strip())
            if len(out) >= count:
                break
    else:
        for _, text in examples.documents[:count]:
            words = text.split()
            if words:
                out.append(" ".join(words[:6]))
    return out
