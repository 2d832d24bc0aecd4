"""Big text tables: tokenised in chunks with progress, and a memory estimate that refuses what cannot fit
before a byte is read."""

from __future__ import annotations

import csv
import os

import pytest

from tunedesk.engine.data import budget
from tunedesk.engine.errors import DataError
from tunedesk.engine.tasks import text_classification as tc


def test_chunked_tokenising_equals_one_call_and_reports_progress(tiny_bert_dir, monkeypatch):
    tok = tc.load_tokenizer(str(tiny_bert_dir))
    texts = ["invoice refund please", "crash", "my parcel is late again since monday " * 5, "login", "box"]
    monkeypatch.setattr(tc, "TOKENIZE_CHUNK", 2)
    monkeypatch.setattr(tc, "PROGRESS_EVERY_S", 0.0)
    seen: list[str] = []
    encodings = tc.tokenize(tok, texts, max_length=16, progress=seen.append)
    expected = tok(texts, truncation=True, max_length=16)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert encodings[key] == expected[key], key
    assert seen[-1] == "tokenising: 5 of 5 texts"


def test_tokenising_runs_on_every_core_and_leaves_forked_workers_a_quiet_tokenizer(tiny_bert_dir, monkeypatch):
    """The fast tokenizer reads TOKENIZERS_PARALLELISM at each call: "true" while TuneDesk encodes
    (every core), "false" afterwards (a forked input worker would otherwise print the library's
    fork warning, and the command line's "false" would leave a 16-core machine tokenising on one)."""
    tok = tc.load_tokenizer(str(tiny_bert_dir))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    during: list[str | None] = []
    real_call = type(tok).__call__

    def spy(self, *args, **kwargs):
        during.append(os.environ.get("TOKENIZERS_PARALLELISM"))
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(type(tok), "__call__", spy)
    monkeypatch.setattr(tc, "TOKENIZE_CHUNK", 2)
    tc.tokenize(tok, ["one text", "two texts", "three"], max_length=8)
    assert during == ["true", "true"]
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    with pytest.raises(RuntimeError), tc.tokenizer_threads():
        raise RuntimeError("a failing encode")
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"


def _table(path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows((f"text number {i} about invoices and parcels", "ab"[i % 2]) for i in range(rows))


def test_a_table_too_big_for_free_memory_is_refused_with_a_max_items_that_fits(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    _table(path, 20000)
    est = budget.estimate_text_table(path, None, 128)
    assert 19000 <= est.rows <= 21000
    monkeypatch.setattr(budget, "available_memory", lambda: est.needed)  # needs all that is free
    with pytest.raises(DataError, match="too big for this machine's memory") as err:
        budget.check_budget(budget.estimate_text_table(path, None, 128), path.name)
    hint = err.value.hint
    fit = int(hint.split("at most about ")[1].split(" ")[0].replace(",", ""))
    assert 0 < fit < est.rows
    budget.check_budget(budget.estimate_text_table(path, fit, 128), path.name)  # the suggested limit fits
    assert "max_items" in budget.check_budget(budget.estimate_text_table(path, est.rows // 2, 128), path.name)
    monkeypatch.setattr(budget, "available_memory", lambda: est.needed * 100)
    assert budget.check_budget(budget.estimate_text_table(path, None, 128), path.name) is None
