"""Text classification: CSV/TSV/JSONL (or a stored data set version) -> a BERT-like classifier."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunedesk.engine.config import RunConfig
from tunedesk.engine.data.split import split_warnings
from tunedesk.engine.data.tensors import TokenTensors
from tunedesk.engine.errors import ConfigError, ModelError
from tunedesk.engine.model_files import check_tokenizer_vocabulary, is_tokenizer_read_failure, tokenizer_error
from tunedesk.engine.models import LoadedModel, build_hf_classifier
from tunedesk.engine.tasks.base import ClassifierTask, PreparedData, hash_examples, labelled_version, report_warnings


def sdpa_bidirectional(model: nn.Module) -> bool:
    """Whether the model attends through SDPA and builds its mask with transformers' shared
    ``create_bidirectional_mask`` (BERT, RoBERTa, DistilBERT, ELECTRA, ALBERT, MPNet, ModernBERT...):
    such a model takes a prepared 4-D mask as it is."""
    import sys

    model = getattr(model, "module", model)  # data-parallel wrapper
    base = getattr(model, "get_base_model", None)  # PEFT
    if callable(base):
        model = base()
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    module = sys.modules.get(type(model).__module__)
    return module is not None and hasattr(module, "create_bidirectional_mask")


def attention_mask_4d(mask: torch.Tensor) -> torch.Tensor:
    """A padded batch's (batch, length) 0/1 mask as the (batch, 1, length, length) boolean mask that
    transformers would build for SDPA. Given the 2-D mask, transformers first checks on the device
    whether it has any zero (to drop an all-ones mask), which makes the host wait for the GPU at every
    forward; the feed already leaves the mask out of batches without padding."""
    b, n = mask.shape
    return mask.bool()[:, None, None, :].expand(b, 1, n, n).contiguous()


@dataclass
class TextExamples:
    texts: list[str]
    labels: list[str]
    name: str
    summary: str
    split: list[str] | None = None  # "train"/"val" per example when the data set version fixes it
    warnings: list[str] | None = None


TOKENIZE_CHUNK = 4096  # texts per tokenizer call: the tokenizer's own objects live for one chunk only
PROGRESS_EVERY_S = 2.0


@contextmanager
def tokenizer_threads() -> Iterator[None]:
    """Let a fast tokenizer encode a batch on every core (TOKENIZERS_PARALLELISM "true") for the length
    of the block, and leave the variable "false" after it (as the command line sets it at start): an
    input worker forked later then inherits a quiet, single-threaded tokenizer instead of the Rust
    library's "process just got forked" warning. 32,000 texts of ~100 words: 6.7 s on one core, about
    half that on two (docs/benchmarks.md)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"


def tokenize(
    tokenizer: Any, texts: list[str], max_length: int, progress: Callable[[str], None] | None = None
) -> dict[str, list[list[int]]]:
    """Tokenise in chunks (the fast tokenizer's per-text objects never exist for all texts at once) on
    every core, reporting progress every few seconds on big data sets."""
    encodings: dict[str, list[list[int]]] = {}
    last = time.monotonic()
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        with tokenizer_threads():
            enc = tokenizer(texts[start : start + TOKENIZE_CHUNK], truncation=True, max_length=max_length)
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key in enc:
                encodings.setdefault(key, []).extend(enc[key])
        if progress is not None and time.monotonic() - last >= PROGRESS_EVERY_S:
            progress(f"tokenising: {min(start + TOKENIZE_CHUNK, len(texts)):,} of {len(texts):,} texts")
            last = time.monotonic()
    return encodings or {"input_ids": []}


class TextClassification(ClassifierTask):
    name = "text_classification"

    def load_examples(self, config: RunConfig) -> TextExamples:
        d = config.data
        if d.kind == "dataset_version":
            ex = labelled_version(config, "text")
            return TextExamples(ex.items, ex.labels, ex.name, ex.summary(), split=ex.split, warnings=ex.warnings)
        from tunedesk.engine.data import read_text_table
        from tunedesk.engine.data.budget import check_budget, estimate_text_table

        warnings: list[str] = []
        if Path(d.path).is_file():  # refused before a byte is read when it cannot fit in memory
            tight = check_budget(
                estimate_text_table(Path(d.path), d.max_items, config.hparams.max_length), Path(d.path).name
            )
            warnings += [tight] if tight else []

        rows, report = read_text_table(
            d.path, d.text_column, d.label_column, encoding=d.encoding, max_items=d.max_items
        )
        return TextExamples(
            [r.text for r in rows],
            [r.label for r in rows],
            Path(d.path).name,
            report.summary(),
            warnings=warnings + report_warnings(report),
        )

    def build_model(self, config: RunConfig, label_names: list[str], device: str = "cpu") -> LoadedModel:
        if config.model.source != "hf":
            raise ModelError("text classification needs a Hugging Face model", "pick a BERT-like model folder")
        loaded = build_hf_classifier(config.model, label_names, device=device)
        if device != "meta":
            loaded.processor = load_tokenizer(loaded.path, config.model.trust_remote_code)
            limit = position_limit(loaded.model.config, loaded.processor)
            if limit and config.hparams.max_length > limit:  # longer texts would fail in the first step
                raise ConfigError(
                    "hparams.max_length",
                    f"is {config.hparams.max_length} but {Path(loaded.path).name} handles at most {limit} tokens",
                    f"set max_length to {limit} or less",
                )
            _check_vocabulary(loaded)
        return loaded

    def prepare(self, config: RunConfig, loaded: LoadedModel, examples: TextExamples) -> PreparedData:
        label_names = loaded.label_names
        index = {name: i for i, name in enumerate(label_names)}
        y = [index[label] for label in examples.labels]
        train_idx, val_idx = self.split(config, examples)
        tokenizer = loaded.processor
        encodings = tokenize(tokenizer, examples.texts, config.hparams.max_length, self.progress)

        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        truncated = sum(1 for ids in encodings["input_ids"] if len(ids) >= config.hparams.max_length)
        warnings = list(examples.warnings or []) + split_warnings(
            examples.labels, train_idx, val_idx, examples.split is not None
        )
        if truncated:
            share = truncated / max(len(encodings["input_ids"]), 1)
            limit = position_limit(getattr(loaded.model, "config", None), tokenizer)
            warnings.append(
                f"{truncated} texts ({share:.0%}) were cut to max_length={config.hparams.max_length} tokens; "
                "if what decides their label can come late in a text, raise max_length"
                + (f" (this model reads at most {limit})" if limit and limit > config.hparams.max_length else "")
                + "; a step's time grows about in proportion"
            )

        def subset(idx: list[int]) -> TokenTensors:
            return TokenTensors({k: [v[i] for i in idx] for k, v in encodings.items()}, [y[i] for i in idx], pad_id)

        return PreparedData(
            train=subset(train_idx),
            val=subset(val_idx),
            collate=PadCollate(pad_id),
            label_names=label_names,
            name=examples.name,
            fingerprint=hash_examples(list(zip(examples.texts, examples.labels))),
            summary=examples.summary,
            warnings=warnings,
            train_labels=[y[i] for i in train_idx],
        )

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        mask = inputs.get("attention_mask")
        if mask is not None and mask.device.type == "cuda" and sdpa_bidirectional(model):
            inputs["attention_mask"] = attention_mask_4d(mask)
        return model(**inputs).logits

    def predict(self, loaded: LoadedModel, texts: list[str], max_length: int = 128) -> list[dict[str, float]]:
        """Class scores for free texts (the "try it" box)."""
        model = loaded.model
        model.eval()
        device = next(model.parameters()).device
        enc = loaded.processor(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float()
        probs = logits.softmax(-1).cpu().tolist()
        return [dict(zip(loaded.label_names, p)) for p in probs]


class PadCollate:
    """Pads a batch to its longest text (dynamic padding); picklable for DataLoader workers."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(it["input_ids"]) for it in items)
        out: dict[str, torch.Tensor] = {}
        for key in items[0]:
            if key == "labels":
                out[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
                continue
            pad = self.pad_id if key == "input_ids" else 0
            out[key] = torch.tensor(
                [list(it[key]) + [pad] * (longest - len(it[key])) for it in items], dtype=torch.long
            )
        return out


def position_limit(hf_config: Any, tokenizer: Any = None) -> int | None:
    """The most tokens a text model's learned positions cover: ``max_position_embeddings`` (or GPT-2's
    ``n_positions``), or the tokenizer's ``model_max_length`` where smaller (RoBERTa: 514 positions, 512
    tokens); None for relative positions (DeBERTa-v2 without position input) or when nothing says."""
    if getattr(hf_config, "position_biased_input", True) is False:
        return None
    limit = getattr(hf_config, "max_position_embeddings", None) or getattr(hf_config, "n_positions", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    told = getattr(tokenizer, "model_max_length", None)
    if isinstance(told, int) and 0 < told < limit:
        limit = told
    return limit


def _check_vocabulary(loaded: LoadedModel) -> None:
    """A tokenizer whose ids go past the model's embedding table would fail in the first step with an
    index error (an edited config.json's vocab_size, or a tokenizer from another model)."""
    get_embeddings = getattr(loaded.model, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    rows = getattr(embeddings, "num_embeddings", None)
    words = len(loaded.processor) if loaded.processor is not None else None
    if rows is not None and words is not None and words > rows:
        name = Path(loaded.path).name
        raise ModelError(
            f"the tokenizer of {name} has {words:,} tokens but the model's embedding table only {rows:,}",
            "the tokenizer and config.json belong to different models: check vocab_size in config.json, "
            "or copy the model's own tokenizer files into the folder",
        )


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"no usable tokenizer in {path} ({str(exc).splitlines()[0]})",
            "the model folder needs tokenizer.json or vocab files next to config.json",
        ) from exc
    except Exception as exc:  # damaged or edited tokenizer files, recognised below; anything else re-raised
        if not is_tokenizer_read_failure(exc):
            raise
        raise tokenizer_error(path, exc) from exc
    check_tokenizer_vocabulary(tok, path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok
