"""Shared fixtures: tiny models built from configs and tiny generated data, all offline."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

from tests.fixtures.data import FILLER, TOPICS, make_texts

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _auto_precision_is_fp32_on_the_cpu(request, monkeypatch) -> None:
    """``precision = "auto"`` picks bf16 on a CPU with native bf16 (engine.devices.cpu_has_bf16). The tests'
    tiny random models and their accuracy thresholds are about the engine's logic, so they run as on a CPU
    without it, whatever CPU runs them; tests marked ``native_bf16`` see the real answer (or patch it)."""
    if request.node.get_closest_marker("native_bf16") is None:
        monkeypatch.setattr("tunedesk.engine.devices.cpu_has_bf16", lambda: False)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private TUNEDESK_HOME: everything TuneDesk writes goes under it."""
    path = tmp_path / "home"
    monkeypatch.setenv("TUNEDESK_HOME", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32) with a word-level vocabulary, saved as a Hugging Face folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + list("abcdefghijklmnopqrstuvwxyz")
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        architectures=["BertModel"],
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny-bert\nA test model.\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def no_dropout_bert(tmp_path_factory, tiny_bert_dir) -> Path:
    """The tiny BERT without dropout: training through a frozen prefix is then deterministic."""
    import shutil

    from transformers import BertConfig

    folder = tmp_path_factory.mktemp("bert-nodrop")
    for f in tiny_bert_dir.iterdir():
        shutil.copy(f, folder / f.name)
    cfg = BertConfig.from_pretrained(folder)
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
    cfg.save_pretrained(folder)
    return folder


@pytest.fixture
def text_csv(tmp_path) -> Path:
    path = tmp_path / "tickets.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(make_texts())
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Three classes of small coloured images (red, green, blue squares with noise)."""
    from PIL import Image

    rng = random.Random(0)
    root = tmp_path / "images"
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for label, rgb in colours.items():
        (root / label).mkdir(parents=True)
        for i in range(8):
            img = Image.new("RGB", (40, 40), tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in rgb))
            img.save(root / label / f"{label}_{i}.png")
    return root
