"""Screenshot of the language-model widgets with a real tiny run: sample replies epoch by epoch and
the "try it" chat box.

    python docs/screenshots/shoot_lm.py [--out docs/screenshots] [--keep DIR]

Builds a tiny Llama (2 layers, hidden 32, word-level tokenizer with a ChatML template) and a chat
JSONL written in one consistent (pirate) tone, fine-tunes it with LoRA on all linear layers through
the real runner (CPU, about a minute), then shows SampleGenerationsView on the run's stored samples
and ChatTryItWidget talking to the run's fine-tuned model (real generation), and saves lm.png.
Everything is written to a temporary TUNEDESK_HOME.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _shots import HERE, wait  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # tests.engine.test_causal_lm_fixtures builds the tiny model and data
sys.path.insert(0, str(ROOT / "src"))

PROMPTS = ["where is my parcel", "i lost my password", "problem with my refund"]


def train(work: Path):
    from tests.engine.test_causal_lm_fixtures import lm_config, save_tiny_llama, write_chat
    from tunedesk.engine import lora
    from tunedesk.engine.runner import execute

    model = save_tiny_llama(work / "tiny-llama")
    data = write_chat(work / "pirate-support.jsonl", 64)
    config = lm_config(model, data, epochs=5, learning_rate=4e-3, prompts=PROMPTS, sample_max_new_tokens=12)
    config.freeze = lora.preset_spec("lora_all_linear", rank=8, alpha=16, dropout=0.0)
    config.name = "tiny-llama: pirate tone (LoRA)"
    result = execute(config, home=work / "home", progress=lambda m: print("..", m, flush=True))
    if result.status != "completed":
        raise SystemExit(f"the run {result.status}: {result.reason} {result.hint}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tunedesk-lm-shot-"))
    work.mkdir(parents=True, exist_ok=True)
    result = train(work)
    home = work / "home"

    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QHBoxLayout, QLabel, QSplitter, QVBoxLayout, QWidget

    from tunedesk.engine.runner import open_store
    from tunedesk.ui.lm import ChatTryItWidget, SampleGenerationsView

    app = QApplication.instance() or QApplication(sys.argv)
    qss = ROOT / "resources" / "style" / "app.qss"
    if qss.is_file():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))
    store = open_store(home)
    run = store.get_run(result.run_id)
    store.close()

    page = QWidget()
    page.setWindowTitle("TuneDesk - language model")
    head = QLabel(f"<b>Run {result.run_id}</b> \u00b7 {run['name']} \u00b7 {run['dataset_name']} \u00b7 "
                  f"{run['freeze_summary']} \u00b7 val loss {result.metrics['val_loss']:.2f} "
                  f"(perplexity {result.metrics['val_perplexity']:.1f})")
    head.setTextFormat(Qt.TextFormat.RichText)
    samples = SampleGenerationsView()
    samples.load_run(home, result.run_id)
    chat = ChatTryItWidget(home, result.run_id)
    chat.temperature.setValue(0.0)
    chat.max_tokens.setValue(12)
    splitter = QSplitter()
    splitter.addWidget(samples)
    splitter.addWidget(chat)
    splitter.setSizes([760, 440])
    layout = QVBoxLayout(page)
    layout.addWidget(head)
    layout.addWidget(splitter, 1)
    page.resize(1280, 600)
    page.show()

    for message in ("where is my order", "and my printer"):
        replies = len([m for m in chat.messages if m["role"] == "assistant"])
        chat.input.setText(message)
        chat.send()
        wait(app, lambda: len([m for m in chat.messages if m["role"] == "assistant"]) > replies or
             chat.status.property("role") == "error", 180, "a reply")
        if chat.status.property("role") == "error":
            raise SystemExit(chat.status.text())
    chat.input.setText("can i get a refund")
    chat.input.setFocus()
    samples.table.clearSelection()
    samples.table.setCurrentIndex(samples.model.index(-1, -1))
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    out = Path(args.out) / "lm.png"
    page.grab().save(str(out))
    print(f"saved {out}")
    chat.stop_and_wait()


if __name__ == "__main__":
    main()
