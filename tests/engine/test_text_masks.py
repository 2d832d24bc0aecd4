"""Text batches reach the model without a per-step host wait: no mask when nothing is padded, a prepared
4-D mask for SDPA models when something is."""

from __future__ import annotations

import pytest
import torch

from tunedesk.engine.data.tensors import TokenTensors


def _model(folder):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, attn_implementation="sdpa").eval()


def test_a_batch_without_padding_gives_the_same_logits_without_its_mask(no_dropout_bert):
    """Texts cut at max_length fill the batch: the feed leaves the mask out, the model's output is the same."""
    model = _model(no_dropout_bert)
    torch.manual_seed(0)
    rows = [torch.randint(5, model.config.vocab_size, (12,)).tolist() for _ in range(4)]
    ds = TokenTensors({"input_ids": rows, "attention_mask": [[1] * 12] * 4}, [0, 1, 0, 1])
    batch = ds.batch([0, 1, 2, 3], ds.stored(), torch.arange(4))
    assert "attention_mask" not in batch
    with torch.no_grad():
        without = model(input_ids=batch["input_ids"]).logits
        with_mask = model(input_ids=batch["input_ids"], attention_mask=torch.ones_like(batch["input_ids"])).logits
    assert torch.allclose(without, with_mask, atol=1e-6)


def test_a_padded_batch_gives_the_same_logits_with_the_prepared_4d_mask(no_dropout_bert):
    from tunedesk.engine.tasks.text_classification import attention_mask_4d, sdpa_bidirectional

    model = _model(no_dropout_bert)
    assert sdpa_bidirectional(model)
    torch.manual_seed(0)
    lengths = [12, 7, 3, 10]
    ids = torch.randint(5, model.config.vocab_size, (4, 12))
    mask = (torch.arange(12)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask
    with torch.no_grad():
        two_d = model(input_ids=ids, attention_mask=mask).logits
        four_d = model(input_ids=ids, attention_mask=attention_mask_4d(mask)).logits
        alone = torch.cat([model(input_ids=ids[i : i + 1, :n]).logits for i, n in enumerate(lengths)])
    assert torch.allclose(four_d, two_d, atol=1e-6)
    assert torch.allclose(four_d, alone, atol=1e-5)  # the padding changes nothing


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_only_sdpa_models_with_the_shared_mask_builder_get_the_4d_mask(no_dropout_bert, attn):
    from transformers import AutoModelForSequenceClassification, DebertaV2Config, DebertaV2ForSequenceClassification

    from tunedesk.engine.tasks.text_classification import sdpa_bidirectional

    bert = AutoModelForSequenceClassification.from_pretrained(no_dropout_bert, num_labels=2, attn_implementation=attn)
    assert sdpa_bidirectional(bert) is (attn == "sdpa")
    deberta = DebertaV2ForSequenceClassification(
        DebertaV2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
    )
    assert not sdpa_bidirectional(deberta)  # builds its own mask from the 2-D one
    assert not sdpa_bidirectional(torch.nn.Linear(2, 2))
