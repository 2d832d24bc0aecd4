"""Packing chat conversations: rows fill up, and no token attends across conversations."""

from __future__ import annotations

import pytest
import torch

from tests.fixtures.causal_lm import lm_config, save_tiny_llama, write_chat
from tunedesk.engine.lm import packing
from tunedesk.engine.lm.data import LMCollate, LMDataset


def tiny_llama(attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(cfg).eval()


def test_rows_are_filled_best_fit_and_never_overflow():
    lengths = [30, 5, 12, 20, 7, 31, 1, 16, 9]
    rows = packing.plan_rows(lengths, 32)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 32 for r in rows)
    assert len(rows) == 5  # 131 tokens need at least 5 rows of 32


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_each_conversation_alone(attn):
    model = tiny_llama(attn)
    g = torch.Generator().manual_seed(1)
    convs = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (11, 4, 17, 9, 6)]
    data = LMDataset(convs, [list(c) for c in convs])
    packed, stats = packing.pack_dataset(data, capacity=24, batch_size=2)
    assert stats.rows < len(convs)
    batch = LMCollate(pad_id=0)([packed[i] for i in range(len(packed))])
    assert "attention_mask" not in batch and batch["position_ids"].shape == batch["input_ids"].shape
    with torch.no_grad():
        # no key/value cache: transformers reads the boundaries from the position ids only then (as in training)
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        for r, row in enumerate(packed.rows):
            at = 0
            for i in row:
                alone = model(input_ids=torch.tensor([convs[i]])).logits[0]
                got = out[r, at : at + len(convs[i])]
                assert torch.allclose(got, alone, atol=1e-5), (attn, r, i, (got - alone).abs().max())
                at += len(convs[i])


def test_changing_one_conversation_leaves_its_row_neighbours_unchanged():
    model = tiny_llama("sdpa")
    a, b = list(range(5, 15)), list(range(20, 28))
    rows = [a + b, [90, 91, 92, 93, 94, 95, 96, 3, 4, 6] + b]  # a different first conversation, same second
    ids = torch.tensor(rows)
    pos = packing.position_ids_for(ids, [[10, 8], [10, 8]])
    with torch.no_grad():
        out = model(input_ids=ids, position_ids=pos, use_cache=False).logits
    assert torch.allclose(out[0, 10:], out[1, 10:], atol=1e-5)
    assert not torch.allclose(out[0, :10], out[1, :10], atol=1e-3)


def test_packed_loss_counts_the_same_tokens_as_unpacked():
    convs = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]
    labels = [[-100, 6, 7, 8], [-100, -100, 11], [-100, 13, -100, 15, 16]]
    packed, _ = packing.pack_dataset(LMDataset(convs, labels), capacity=12)
    row = packed[0]
    assert len(packed) == 1 and row["position_ids"] == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]
    # the first token of every conversation is never a target (nothing predicts it across a boundary)
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
    assert all(row["labels"][i] == -100 for i in starts)
    assert sorted(x for x in row["labels"] if x != -100) == [6, 7, 8, 11, 13, 15, 16]


def test_a_packed_chat_run_trains_and_says_how_much_padding_it_saved(tmp_path):
    from tunedesk.engine.run.runner import execute, prepare

    model = save_tiny_llama(tmp_path / "llama")
    config = lm_config(model, write_chat(tmp_path / "chat.jsonl", n=30), epochs=1, max_length=96, packing=True)
    prep = prepare(config)
    assert "packed into" in prep.data.summary and len(prep.data.train) < 24
    result = execute(config, home=tmp_path / "home", prepared=prep)
    assert result.status == "completed", result.reason
    assert result.metrics["val_loss"] > 0
