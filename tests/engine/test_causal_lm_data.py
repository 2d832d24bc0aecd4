"""Language-model data: reading chat JSONL and corpora, the assistant-only loss mask (token by token),
packing, batching. Tokenizers are built in the tests; no model is needed."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.causal_lm import byte_bpe_tokenizer, corpus_text, word_tokenizer, write_chat
from tunedesk.engine.errors import DataError
from tunedesk.engine.lm import data as lm_data

IGN = lm_data.IGNORE_INDEX


@pytest.fixture(scope="module")
def wtok():
    return word_tokenizer()


@pytest.fixture(scope="module")
def btok():
    tok = byte_bpe_tokenizer()
    assert lm_data.ensure_chat_template(tok) is True  # no template of its own: the documented fallback
    return tok


# ---- reading ----------------------------------------------------------------------------------


def test_chat_jsonl_formats_and_bad_lines(tmp_path):
    path = tmp_path / "chat.jsonl"
    lines = [
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "arr"}]}),
        json.dumps({"prompt": "where is my parcel", "response": "arr matey"}),
        json.dumps({"instruction": "say", "input": "hello", "output": "arr"}),
        json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "arr"}]}),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps({"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        json.dumps(["a list"]),
        json.dumps({"text": "no known keys"}),
        "",
        json.dumps({"system": "be brief", "question": "why", "answer": "because"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ex = lm_data.read_chat_jsonl(path)
    assert len(ex.conversations) == 5
    assert ex.conversations[1] == [
        {"role": "user", "content": "where is my parcel"},
        {"role": "assistant", "content": "arr matey"},
    ]
    assert ex.conversations[2][0]["content"] == "say\n\nhello"
    assert ex.conversations[3][1] == {"role": "assistant", "content": "arr"}
    assert ex.conversations[4][0] == {"role": "system", "content": "be brief"}
    text = "\n".join(ex.warnings)
    assert "line 5: invalid JSON" in text and "line 6: no assistant reply" in text
    assert (
        "line 7: unknown role: 'wizard'" in text
        and "line 8: not an object" in text
        and "line 9: unknown format" in text
    )
    assert "read 10 conversations, kept 5" in ex.summary


def test_chat_jsonl_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        lm_data.read_chat_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match="no usable conversation") as info:
        lm_data.read_chat_jsonl(bad)
    assert "line 1" in str(info.value) and info.value.hint
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DataError, match="must be a .jsonl file"):
        lm_data.read_chat_jsonl(csv)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(
        json.dumps({"prompt": "caf\u00e9", "response": "ol\u00e9"}, ensure_ascii=False).encode("cp1252") + b"\n"
    )
    ex = lm_data.read_chat_jsonl(latin, encoding="cp1252")
    assert ex.conversations[0][0]["content"] == "caf\u00e9"


def test_utf16_given_for_a_corpus_without_a_byte_order_mark(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_bytes(b"plain text, no byte-order mark\n")
    with pytest.raises(DataError, match="doc.txt has no byte-order mark"):
        lm_data.read_corpus(doc, encoding="utf-16")


def test_corpus_file_and_folder(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("first document\r\nline two\n", encoding="utf-8")
    (folder / "sub" / "b.md").write_text("second document\n", encoding="utf-8")
    (folder / "empty.txt").write_text("  \n", encoding="utf-8")
    (folder / "bad.txt").write_bytes(b"bad \xc3\x28 text")
    (folder / "skip.csv").write_text("not,text\n", encoding="utf-8")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "h.txt").write_text("hidden\n", encoding="utf-8")
    ex = lm_data.read_corpus(folder, encoding="utf-8")
    names = [n for n, _ in ex.documents]
    assert names == ["a.txt", "sub/b.md"]
    assert ex.documents[0][1] == "first document\nline two\n"
    assert any("empty.txt" in w and "empty text" in w for w in ex.warnings)
    assert any("bad.txt" in w and "undecodable" in w for w in ex.warnings)
    assert "bad.txt" in [n for n, _ in lm_data.read_corpus(folder).documents]  # detected: not UTF-8, still text
    single = lm_data.read_corpus(folder / "a.txt")
    assert len(single.documents) == 1
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    with pytest.raises(DataError, match="no text files"):
        lm_data.read_corpus(empty_dir)
    with pytest.raises(DataError, match="not found"):
        lm_data.read_corpus(tmp_path / "nope.txt")
    chat = write_chat(tmp_path / "c.jsonl", 3)
    with pytest.raises(DataError, match="chat data"):
        lm_data.read_corpus(chat)


# ---- the assistant-only mask, token by token ----------------------------------------------------


def _labels_by_token(tok, ids, labels):
    return [(tok.convert_ids_to_tokens(i), lab != IGN) for i, lab in zip(ids, labels)]


def test_mask_chatml_single_turn(wtok):
    messages = [
        {"role": "user", "content": "where is my parcel"},
        {"role": "assistant", "content": "arr matey , yer parcel be safe !"},
    ]
    ids, labels, cut = lm_data.encode_chat(wtok, messages, 64)
    assert not cut
    got = _labels_by_token(wtok, ids, labels)
    expected = (
        [
            ("<|im_start|>", False),
            ("user", False),
            ("where", False),
            ("is", False),
            ("my", False),
            ("parcel", False),
            ("<|im_end|>", False),
            ("<|im_start|>", False),
            ("assistant", False),
        ]
        + [(w, True) for w in "arr matey , yer parcel be safe !".split()]
        + [("<|im_end|>", True)]
    )
    assert got == expected
    assert all(lab == i for i, lab in zip(ids, labels) if lab != IGN)  # a label is the token itself


def test_mask_chatml_system_and_two_turns(wtok):
    messages = [
        {"role": "system", "content": "you are a helpful agent"},
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": "arr yer order be ready !"},
        {"role": "user", "content": "and my refund"},
        {"role": "assistant", "content": "arr sorted"},
    ]
    ids, labels, _ = lm_data.encode_chat(wtok, messages, 128)
    got = _labels_by_token(wtok, ids, labels)
    S, E = "<|im_start|>", "<|im_end|>"
    expected = (
        [(S, False), ("system", False)]
        + [(w, False) for w in "you are a helpful agent".split()]
        + [(E, False)]
        + [(S, False), ("user", False)]
        + [(w, False) for w in "where is my order".split()]
        + [(E, False)]
        + [(S, False), ("assistant", False)]
        + [(w, True) for w in "arr yer order be ready !".split()]
        + [(E, True)]
        + [(S, False), ("user", False)]
        + [(w, False) for w in "and my refund".split()]
        + [(E, False)]
        + [(S, False), ("assistant", False)]
        + [(w, True) for w in "arr sorted".split()]
        + [(E, True)]
    )
    assert got == expected


def test_mask_fallback_template_byte_level(btok):
    messages = [
        {"role": "user", "content": "where is my parcel"},
        {"role": "assistant", "content": "arr matey, yer parcel be safe!"},
        {"role": "user", "content": "and my refund"},
        {"role": "assistant", "content": "arr sorted"},
    ]
    text = lm_data.render_chat(btok, messages)
    eos = btok.eos_token
    assert text == (
        "### User:\nwhere is my parcel\n\n### Assistant:\narr matey, yer parcel be safe!" + eos + "\n\n"
        "### User:\nand my refund\n\n### Assistant:\narr sorted" + eos + "\n\n"
    )
    ids, labels, _ = lm_data.encode_chat(btok, messages, 256)
    assert btok.decode(ids) == text
    # token by token: every learned token belongs to a reply (+ its eos and blank line), nothing else does
    runs, current, prev = [], [], False
    for i, lab in zip(ids, labels):
        piece = btok.decode([i])
        if lab != IGN:
            assert lab == i
            current.append(piece)
        elif prev:
            runs.append("".join(current))
            current = []
        prev = lab != IGN
    if current:
        runs.append("".join(current))
    assert runs == ["arr matey, yer parcel be safe!" + eos + "\n\n", "arr sorted" + eos + "\n\n"]
    masked = "".join(btok.decode([i]) for i, lab in zip(ids, labels) if lab == IGN)
    assert masked == "### User:\nwhere is my parcel\n\n### Assistant:\n### User:\nand my refund\n\n### Assistant:\n"


def test_truncation_and_dropping(wtok, tmp_path):
    messages = [
        {"role": "user", "content": "where is my parcel"},
        {"role": "assistant", "content": "arr matey , yer parcel be safe !"},
    ]
    ids, labels, cut = lm_data.encode_chat(wtok, messages, 11)
    assert cut and len(ids) == 11 and [lab != IGN for lab in labels] == [False] * 9 + [True, True]
    ex = lm_data.LMExamples(
        "chat_jsonl",
        "c",
        "",
        conversations=[messages] * 3
        + [[{"role": "user", "content": " ".join(["where"] * 20)}, {"role": "assistant", "content": "arr"}]],
    )
    enc = lm_data.encode_examples(wtok, ex, 12, 0.25, 0)
    assert len(enc.train) + len(enc.val) == 3
    assert any("1 conversation(s) skipped" in w for w in enc.warnings)
    assert any("cut to max_length=12" in w for w in enc.warnings)
    with pytest.raises(DataError, match="usable conversation"):
        lm_data.encode_examples(wtok, lm_data.LMExamples("chat_jsonl", "c", "", conversations=[messages]), 64, 0.2, 0)


# ---- packing and batching ---------------------------------------------------------------------


def test_tokenize_documents_and_pack(wtok, btok):
    docs = [("a", "the parcel be safe ."), ("b", "the order be ready .")]
    stream = lm_data.tokenize_documents(wtok, docs)
    bos, eos = wtok.bos_token_id, wtok.eos_token_id
    words = [wtok.convert_tokens_to_ids(w) for w in "the parcel be safe .".split()]
    assert stream[:7] == [bos] + words + [eos]
    assert len(stream) == 14
    # GPT-2 style: bos == eos, so documents are only separated by it
    bstream = lm_data.tokenize_documents(btok, docs)
    assert btok.decode(bstream) == "the parcel be safe .<|endoftext|>the order be ready .<|endoftext|>"
    blocks = lm_data.pack(list(range(20)), 8)
    assert blocks == [list(range(8)), list(range(8, 16)), [16, 17, 18, 19]]  # tail of 4 >= half a block: kept
    assert lm_data.pack(list(range(19)), 8) == [list(range(8)), list(range(8, 16))]  # tail of 3: dropped


def test_corpus_encoding_split_and_collate(wtok, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text(30), encoding="utf-8")
    ex = lm_data.read_corpus(path)
    enc = lm_data.encode_examples(wtok, ex, 16, 0.2, 3)
    n = len(enc.train) + len(enc.val)
    assert n >= 10 and len(enc.val) == round(n * 0.2)
    item = enc.train[0]
    assert len(item["input_ids"]) == 16 and item["labels"] == item["input_ids"]
    again = lm_data.encode_examples(wtok, ex, 16, 0.2, 3)
    assert again.val.input_ids == enc.val.input_ids  # seeded
    batch = lm_data.LMCollate(wtok.pad_token_id)(
        [{"input_ids": [5, 6, 7], "labels": [IGN, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, wtok.pad_token_id, wtok.pad_token_id]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGN, 6, 7], [8, IGN, IGN]]
    short = tmp_path / "short.txt"
    short.write_text("the parcel", encoding="utf-8")
    with pytest.raises(DataError, match="too short") as info:
        lm_data.encode_examples(wtok, lm_data.read_corpus(short), 16, 0.2, 0)
    assert "max_length" in info.value.hint


def test_default_prompts_prefer_validation(tmp_path):
    ex = lm_data.read_chat_jsonl(write_chat(tmp_path / "c.jsonl", 10))
    prompts = lm_data.default_prompts(ex, prefer=[7, 8])
    assert prompts[0] == ex.conversations[7][0]["content"] or ex.conversations[7][0]["role"] == "system"
    corpus = lm_data.LMExamples("text_corpus", "x", "", documents=[("a", "one two three four five six seven eight")])
    assert lm_data.default_prompts(corpus) == ["one two three four five six"]


def test_a_binary_file_with_a_text_name_is_left_out_of_a_corpus(tmp_path):
    """A PDF or an archive saved as .txt decoded (as Latin-1 or cp1252) into a document of control
    characters, and the language model trained on it without a word."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("Tabs\tand line breaks\r\nare text.\n\fA form feed too.\n", encoding="utf-8")
    (folder / "report.txt").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 40)
    ex = lm_data.read_corpus(folder)
    assert [n for n, _ in ex.documents] == ["notes.txt"]
    assert any(w.startswith("report.txt: not text: ") and "control characters" in w for w in ex.warnings)
    assert lm_data.control_share("plain words\n") == 0.0
