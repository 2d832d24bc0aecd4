"""The language-model walkthrough of a new user, in the real main window, with screenshots.

    python docs/screenshots/shoot_lm.py [--out docs/screenshots] [--keep DIR] [--epochs 6]

What it does, as a user would (offline, CPU, a few minutes):

1. A local causal LM: a tiny Llama (4 blocks, hidden 64, a word-level tokenizer with a ChatML chat
   template) "pre-trained" here to answer support questions in a plain tone ("your parcel is on its
   way ."), saved to a folder, added in the Models area ("Add model folder") and used.
2. In the Layers area: the preset "LoRA on attention of the last N blocks" with N = 2.
3. A chat JSONL written in one consistent (pirate) tone, imported in the Datasets area, split at
   random, saved as a version and sent to the Train area ("Use for training").
4. In the Train area: three sample prompts, Start, and the sample replies change epoch by epoch.
5. "Try it": a chat with the fine-tuned model; then, in the Runs area, the run is exported through
   its Export dialog (merged weights, and the adapter alone), and each export is loaded in a plain
   Python process (transformers; PEFT for the adapter) that generates a reply.

Saves lm-layers.png, lm.png (the Train area with its sample replies) and lm-tryit.png. Everything
is written to a temporary folder (TUNEDESK_HOME and Qt settings included).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from _shots import HERE, settle, wait

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # tests.engine.test_causal_lm_fixtures builds the tiny model and data
sys.path.insert(0, str(ROOT / "src"))

PROMPTS = ["where is my parcel", "i lost my password", "problem with my refund"]

PLAIN_PYTHON = textwrap.dedent("""
    import sys
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged, adapter, base = sys.argv[1:4]
    chat = [{"role": "user", "content": "where is my invoice"}]

    def reply(model, tok):
        ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    tok = AutoTokenizer.from_pretrained(merged, local_files_only=True)
    print("merged  :", reply(AutoModelForCausalLM.from_pretrained(merged, local_files_only=True), tok))
    from peft import PeftModel

    base_model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(adapter, local_files_only=True)
    print("adapter :", reply(PeftModel.from_pretrained(base_model, adapter), tok))
""")


def build_inputs(work: Path) -> tuple[Path, Path]:
    """The "pre-trained" model: a tiny Llama taught to answer support questions in a plain tone (a
    full fine-tune through the engine, in a history of its own), exported as a Hugging Face folder.
    The data: the same kind of questions answered in a pirate tone, the tone the user wants."""
    import json
    import random

    from tests.fixtures.causal_lm import (
        TOPICS,
        chat_rows,
        lm_config,
        pirate_reply,
        save_tiny_llama,
        word_tokenizer,
        write_chat,
    )
    from tunedesk.engine.lm.export import export_lm_run
    from tunedesk.engine.run.runner import execute

    raw = save_tiny_llama(work / "random-init", word_tokenizer(), layers=4, hidden=64)
    rng = random.Random(3)  # like a real LLM it knows pirate talk, but answers support questions plainly
    rows = chat_rows(160, seed=7, tone="plain") + [
        {
            "messages": [
                {"role": "user", "content": f"talk like a pirate about my {t}"},
                {"role": "assistant", "content": pirate_reply(t, rng)},
            ]
        }
        for t in TOPICS * 5
    ]
    rng.shuffle(rows)
    plain = work / "plain-support.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = lm_config(raw, plain, epochs=12, learning_rate=3e-3, batch_size=16, prompts=["where is my parcel"])
    result = execute(config, home=work / "pretraining-home")
    if result.status != "completed":
        raise SystemExit(f"pre-training the tiny model failed: {result.reason} {result.hint}")
    model = Path(
        export_lm_run(result.run_id, work / "models" / "tiny-llama-chat", "merged", home=work / "pretraining-home")[
            "path"
        ]
    )
    data = write_chat(work / "pirate-support.jsonl", 96)
    return model, data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="tunedesk-lm-walk-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    os.environ["TUNEDESK_HOME"] = str(home)
    model_dir, data = build_inputs(work)

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(work / "qsettings"))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setStyle("Fusion")
    qss = ROOT / "resources" / "style" / "app.qss"
    if qss.is_file():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))
    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    from tunedesk.ui.main_window import MainWindow

    window = MainWindow(home)
    window.resize(1440, 900)
    window.show()
    window.load_engine()
    wait(app, lambda: window.engine_ready, 300, "the engine to load")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    # 1. the Models area: add the folder, use the model
    models = window._ensure_panel("models")
    window.show_panel("models")
    models.add_path(model_dir)
    wait(
        app,
        lambda: (e := models.current_entry()) is not None and Path(e.path) == model_dir,
        300,
        "the model folder to be scanned and selected",
    )
    print("model   :", models.current_entry().name, models.current_entry().task, models.current_entry().parameters)
    assert models.use_model(), "the Models area refused the model"

    # 2. the Layers area: LoRA on the attention of the last 2 blocks
    layers = window._ensure_panel("layers")
    window.show_panel("layers")
    wait(app, lambda: layers.lora_widget is not None and layers.lora_box.isVisible(), 300, "the layer tree")
    layers.lora_widget.last_n.setValue(2)
    layers.lora_widget.last_attention_button.click()
    settle(app, 30)
    print("layers  :", layers.lora_widget.summary.text())
    window.grab().save(str(out / "lm-layers.png"))

    # 3. the Datasets area: import the chat JSONL, save a version, train on it
    from tunedesk.engine.datasets import ImportSpec

    datasets = window._ensure_panel("datasets")
    window.show_panel("datasets")
    datasets.controller.start_import(ImportSpec("chat_jsonl", str(data)))
    wait(
        app,
        lambda: (
            datasets.controller.task_job is None
            and datasets.controller.info is not None
            and datasets.model.rowCount() > 0
        ),
        300,
        "the chat import",
    )
    datasets.split_box.button.click()  # a random 20 % for validation, stored with the version
    wait(
        app,
        lambda: datasets.controller.task_job is None and "validation" in datasets.split_box.summary.text(),
        300,
        "the split",
    )
    settle(app, 20)
    if os.environ.get("TUNEDESK_SHOT_ALL"):
        window.grab().save(str(out / "lm-datasets.png"))
    datasets.version_box.use_button.click()  # saves a version and hands it to the Train area
    train = window._ensure_panel("train")
    wait(app, lambda: train.form._base.data.kind == "dataset_version", 300, "the version to reach the Train area")
    print("data    :", train.form._base.data.dataset_version, datasets.controller.info.item_count, "conversations")

    # 4. the Train area: prompts, a few epochs; Start
    window.show_panel("train")
    form = train.form
    form.lm_settings.prompts.setPlainText("\n".join(PROMPTS))
    form.lm_settings.max_new.setValue(12)
    form.hparams.epochs.setValue(args.epochs)
    form.hparams.batch_size.setValue(8)
    form.hparams.max_length.setValue(48)
    form.hparams.warmup.setText("0")  # the learning rate stays TuneDesk's suggestion: the adapters train at 1e-3
    assert form.task_combo.currentData() == "causal_lm", form.task_combo.currentData()
    assert train.controller.start(), form.visible_errors()
    wait(app, lambda: train.controller.mode == "idle" and not window.state.running, 1800, "the run to finish")
    finished = train.controller.last_finished
    if finished is None or finished.status != "completed":
        raise SystemExit("the run did not complete: " + "\n".join(train.log.lines()[-6:]))
    print("run     :", train.controller.run_id, finished.status)
    train.plots.redraw(force=True)
    split = train.tabs.parentWidget()  # plots above, tabs below: room for every evaluation's replies
    split.setSizes([470, 330])
    if os.environ.get("TUNEDESK_SHOT_ALL"):  # the other tabs, for a look while developing
        for name, widget in (("log", train.log), ("evaluation", train.evaluation)):
            train.tabs.setCurrentWidget(widget)
            settle(app, 20)
            window.grab().save(str(out / f"lm-{name}.png"))
    train.tabs.setCurrentWidget(train.samples)
    settle(app, 30)
    window.grab().save(str(out / "lm.png"))

    # 5. Try it: chat with the fine-tuned model
    train.tabs.setCurrentWidget(train.try_stack)
    chat = train.chat
    chat.temperature.setValue(0.0)
    chat.max_tokens.setValue(12)
    for message in ("where is my order", "and my printer"):
        replies = sum(m["role"] == "assistant" for m in chat.messages)
        chat.send(message)
        wait(
            app,
            lambda: (
                sum(m["role"] == "assistant" for m in chat.messages) > replies
                or chat.status.property("role") == "error"
            ),
            300,
            "a reply",
        )
        if chat.status.property("role") == "error":
            raise SystemExit(chat.status.text())
    for m in chat.messages:
        print(f"chat    : {m['role']:>9}: {m['content']}")
    chat.input.setText("can i get a refund")
    settle(app, 30)
    window.grab().save(str(out / "lm-tryit.png"))

    # 6. the Runs area: the run's detail (its own "Try it"), its Export dialog twice; plain Python loads both
    runs = window._ensure_panel("runs")
    window.show_panel("runs")
    runs.select_runs([train.controller.run_id])
    detail = runs.detail
    if os.environ.get("TUNEDESK_SHOT_ALL"):
        detail.tabs.setCurrentWidget(detail.try_holder)
        detail.chat.send("where is my parcel")
        wait(
            app,
            lambda: len(detail.chat.messages) == 2 or detail.chat.status.property("role") == "error",
            300,
            "a reply in the Runs area",
        )
        settle(app, 20)
        window.grab().save(str(out / "lm-runs.png"))
    from tunedesk.ui.runs.dialogs import ExportDialog

    exported = {}
    for fmt in ("merged", "adapter"):
        dialog = ExportDialog(detail.run, home, window)
        dialog.format.setCurrentIndex(dialog.format.findData(fmt))
        dialog.folder.setText(str(work / f"export-{fmt}"))
        dialog.open()
        dialog.start()
        wait(app, lambda: dialog.result_info is not None or dialog.error.isVisible(), 300, f"the {fmt} export")
        if dialog.result_info is None:
            raise SystemExit(f"the {fmt} export failed: {dialog.error.text()}")
        exported[fmt] = dialog.result_info["path"]
    merged, adapter = exported["merged"], exported["adapter"]
    window.close()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_PYTHON, str(merged), str(adapter), str(model_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    print(done.stdout.strip())
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    print("saved   :", ", ".join(str(out / n) for n in ("lm-layers.png", "lm.png", "lm-tryit.png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
