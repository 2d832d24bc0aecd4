"""Language-model widgets: sample replies per evaluation, the "try it" chat box, LoRA settings."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from tunedesk.engine.config import FreezeSpec, HyperParams, LoraRule, LoraSpec
from tunedesk.engine.errors import TuneDeskError


def _sample(step, epoch, prompt, text):
    from tunedesk.engine.run.events import SampleGenerated

    return SampleGenerated(1, step, epoch, prompt, text)


def test_samples_view_rows_are_evaluations_columns_are_prompts(qtbot):
    from tunedesk.engine.run.events import LogMessage
    from tunedesk.ui.lm import SampleGenerationsView

    view = SampleGenerationsView()
    qtbot.addWidget(view)
    view.show()
    assert view.empty.isVisible() and not view.table.isVisible()
    for epoch, step in ((1, 10), (2, 20), (3, 30)):
        view.add_event(_sample(step, epoch, "where is my parcel", f"reply {epoch}"))
        view.add_event(_sample(step, epoch, "can i get a refund", f"refund {epoch}"))
    view.add_event(LogMessage(1, "info", "ignored"))
    m = view.model
    assert (m.rowCount(), m.columnCount()) == (3, 2)
    assert m.data(m.index(2, 0)) == "reply 3" and m.data(m.index(0, 1)) == "refund 1"
    assert m.headerData(0, Qt.Orientation.Vertical) == "Epoch 1 \u00b7 step 10"
    assert "where is my parcel" in m.headerData(0, Qt.Orientation.Horizontal)
    qtbot.waitUntil(lambda: view.table.isVisible() and not view.empty.isVisible())
    view.add_sample(30, 3, "where is my parcel", "updated")  # same evaluation again: replaces, no new row
    assert m.rowCount() == 3 and m.data(m.index(2, 0)) == "updated"
    view.add_sample(0, 0, "where is my parcel", "your parcel is on its way .")  # the replies before training
    assert m.headerData(3, Qt.Orientation.Vertical) == "Before training"
    view.clear()
    assert m.rowCount() == 0 and m.columnCount() == 0


def test_samples_view_loads_a_runs_stored_samples(qtbot, tmp_path):
    from tunedesk.engine.paths import database_path
    from tunedesk.engine.store import RunStore
    from tunedesk.ui.lm import SampleGenerationsView

    store = RunStore(database_path(tmp_path))
    run_id = store.create_run(
        config={},
        name="lm",
        task="causal_lm",
        model_name="m",
        model_path="/m",
        model_hash=None,
        dataset_name="d",
        dataset_hash=None,
    )
    store.add_sample(run_id, 5, 1, "hi", "hello")
    store.add_sample(run_id, 10, 2, "hi", "arr hello")
    store.close()
    view = SampleGenerationsView()
    qtbot.addWidget(view)
    view.load_run(tmp_path, run_id)
    assert view.model.rowCount() == 2 and view.model.text(1, 0) == "arr hello"


class FakeGenerate:
    def __init__(self, fail: bool = False) -> None:
        self.calls = []
        self.fail = fail

    def __call__(self, run_id, messages, max_new_tokens, temperature, home=None):
        self.calls.append((run_id, messages, max_new_tokens, temperature, home))
        if self.fail:
            raise TuneDeskError("the base model of run 3 is no longer at /gone", "put the base model folder back")
        last = messages[-1]["content"] if isinstance(messages, list) else messages
        return f"arr, {last}"


def test_chat_widget_multi_turn_in_a_thread(qtbot, tmp_path):
    from tunedesk.ui.lm import ChatTryItWidget

    fake = FakeGenerate()
    chat = ChatTryItWidget(tmp_path, 3, generate_fn=fake)
    qtbot.addWidget(chat)
    chat.temperature.setValue(0.0)
    chat.max_tokens.setValue(20)
    chat.input.setText("where is my parcel")
    with qtbot.waitSignal(chat.replyReceived, timeout=5000) as sig:
        chat.send_button.click()
        assert not chat.input.isEnabled()  # one question at a time
    assert sig.args == ["arr, where is my parcel"]
    with qtbot.waitSignal(chat.replyReceived, timeout=5000):
        chat.send("and my refund")
    run_id, messages, max_new, temperature, home = fake.calls[-1]
    assert (run_id, max_new, temperature, home) == (3, 20, 0.0, str(tmp_path))
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]  # the whole chat goes along
    assert "arr, and my refund" in chat.transcript.toPlainText()
    assert chat.input.isEnabled() and chat.clear_button.isEnabled()
    chat.clear()
    assert chat.messages == [] and chat.transcript.toPlainText().strip() == ""
    chat.set_run(4, chat=False)
    with qtbot.waitSignal(chat.replyReceived, timeout=5000):
        chat.send("the parcel")
    assert fake.calls[-1][1] == "the parcel"  # corpus run: a text to continue
    assert chat.title.text().endswith("run 4")
    assert chat.stop_and_wait()


def test_chat_widget_shows_errors_and_gives_the_message_back(qtbot, tmp_path):
    from tunedesk.ui.lm import ChatTryItWidget

    chat = ChatTryItWidget(tmp_path, 3, generate_fn=FakeGenerate(fail=True))
    qtbot.addWidget(chat)
    chat.send("hello")
    qtbot.waitUntil(lambda: "no longer at /gone" in chat.status.text(), timeout=5000)
    assert "put the base model folder back" in chat.status.text()
    assert chat.status.property("role") == "error"
    assert chat.input.text() == "hello" and chat.messages == []
    none = ChatTryItWidget(tmp_path, None, generate_fn=FakeGenerate())
    qtbot.addWidget(none)
    none.send("ignored")
    assert not none.send_button.isEnabled() and none.messages == []
    assert chat.stop_and_wait() and none.stop_and_wait()


def test_lora_settings_presets_and_edits(qtbot):
    from tunedesk.engine.lm import lora
    from tunedesk.ui.lm import LoraSettingsWidget

    w = LoraSettingsWidget(FreezeSpec(preset="none", lora=LoraSpec(rules=[LoraRule("model.layers.1", rank=4)])))
    qtbot.addWidget(w)
    assert "1 per-module choice" in w.rules_label.text()
    with qtbot.waitSignal(w.specChanged) as sig:
        w.rank.setValue(16)
    assert sig.args[0].lora.rank == 16 and sig.args[0].lora.rules == [LoraRule("model.layers.1", rank=4)]
    w.layers.setCurrentIndex(w.layers.findData("all_linear"))
    assert w.spec().lora.preset == "all_linear"
    for name, button in (
        ("lora_attention", w.attention_button),
        ("lora_all_linear", w.linear_button),
        ("last_n_full", w.last_n_button),
        ("lora_attention_last_n", w.last_attention_button),
    ):
        w.last_n.setValue(3)
        with qtbot.waitSignal(w.specChanged) as sig:
            button.click()
        assert sig.args[0] == lora.preset_spec(name, last_n=3, rank=16, alpha=16.0, dropout=0.05)
    shown = lora.preset_spec("last_n_full", last_n=5, rank=4, alpha=8, dropout=0.0)
    with qtbot.assertNotEmitted(w.specChanged):
        w.set_spec(shown)
    assert (w.rank.value(), w.alpha.value(), w.last_n.value()) == (4, 8.0, 5)
    w.set_spec(lora.preset_spec("lora_attention_last_n", last_n=2))
    assert w.last_n.value() == 2 and "attention of the last 2 blocks" in w.rules_label.text()


def test_lora_settings_summary_from_a_meta_model(qtbot):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunedesk.ui.lm import LoraSettingsWidget

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    w = LoraSettingsWidget()
    qtbot.addWidget(w)
    w.set_model(model)
    w.attention_button.click()
    assert w.summary.text().startswith("LoRA on 8 layers")
    w.set_spec(FreezeSpec(preset="all", lora=LoraSpec(preset="attention")))
    assert w.summary.text().startswith("No adapters")


def test_base_in_4bit_is_disabled_with_the_reason_and_shows_the_saving(qtbot, tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunedesk.ui.lm import LoraSettingsWidget

    cfg = LlamaConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=4,
        num_attention_heads=16,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    w = LoraSettingsWidget()
    qtbot.addWidget(w)
    w.set_model(model)  # this machine: no CUDA GPU
    assert not w.base_4bit.isEnabled()
    assert "CUDA GPU" in w.base_4bit.toolTip() and "Not available here" in w.base_note.text()
    w.set_quantisation_available(None)  # as on a GPU machine with bitsandbytes
    w.linear_button.click()
    assert w.base_4bit.isEnabled() and "would save" in w.base_note.text()
    with qtbot.waitSignal(w.specChanged) as sig:
        w.base_4bit.setChecked(True)
    assert sig.args[0].lora.base_bits == 4 and sig.args[0].lora.preset == "all_linear"
    assert "Base in 4-bit" in w.base_note.text() and "saves" in w.base_note.text()
    with qtbot.waitSignal(w.specChanged) as sig:
        w.rank.setValue(32)
    assert sig.args[0].lora.base_bits == 4  # other edits keep it
    w.attention_button.click()
    assert w.spec().lora.base_bits == 4 and w.spec().lora.preset == "attention"
    w.resize(420, w.sizeHint().height())
    w.grab().save(str(tmp_path / "lora_4bit.png"))
    w.set_quantisation_available(("a 4-bit base needs a CUDA GPU, and this machine has none", "train on a GPU"))
    assert w.base_4bit.isEnabled()  # checked: it can still be switched off
    w.base_4bit.setChecked(False)
    assert w.spec().lora.base_bits is None and not w.base_4bit.isEnabled()


def test_module_dialog_and_run_settings(qtbot):
    from tunedesk.ui.lm import LmRunSettingsWidget, ModuleLoraDialog

    d = ModuleLoraDialog("model.layers.3.self_attn", rank=4, alpha=8, dropout=0.1)
    qtbot.addWidget(d)
    d.rank.setValue(12)
    assert d.values() == (12, 8.0, pytest.approx(0.1))
    s = LmRunSettingsWidget()
    qtbot.addWidget(s)
    s.set_hparams(HyperParams(prompts=["a", "b"], sample_max_new_tokens=20, gradient_checkpointing=True))
    assert s.prompts.toPlainText() == "a\nb" and s.checkpointing.isChecked()
    with qtbot.waitSignal(s.changed):
        s.prompts.setPlainText("where is my parcel\n\n  can i get a refund  \n")
    h = s.apply_to(HyperParams())
    assert h.prompts == ["where is my parcel", "can i get a refund"]
    assert h.sample_max_new_tokens == 20 and h.gradient_checkpointing
    assert not h.packing and h.fused_loss == "auto" and h.fused_kernels == "auto"
    s.set_hparams(HyperParams(packing=True, fused_loss="off", fused_kernels="on"))
    with qtbot.waitSignal(s.changed):
        s.fused_loss.setCurrentIndex(s.fused_loss.findData("on"))
    h = s.apply_to(HyperParams())
    assert h.packing and h.fused_loss == "on" and h.fused_kernels == "on"


def test_train_and_runs_try_it_chat_with_a_finished_lora_run(qtbot, home, tmp_path):
    """The new user's path in the app: a LoRA chat run trained from the Train area, then "Try it"
    in the Train area and in the Runs detail talk to its fine-tuned model (real generation)."""
    import torch

    from tests.fixtures.causal_lm import (
        last_block_attention_lora,
        lm_config,
        save_tiny_llama,
        word_tokenizer,
        write_chat,
    )
    from tunedesk.ui.lm import ChatTryItWidget
    from tunedesk.ui.runs.panel import RunsPanel
    from tunedesk.ui.state import AppState
    from tunedesk.ui.training.panel import TrainingPanel

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    state = AppState(home)
    train = TrainingPanel(state)
    qtbot.addWidget(train)
    try:
        model = save_tiny_llama(tmp_path / "tiny-llama", word_tokenizer())
        data = write_chat(tmp_path / "pirate.jsonl", 24)
        train.form.apply_config(last_block_attention_lora(lm_config(model, data, epochs=1, learning_rate=3e-2)))
        assert train.try_stack.currentWidget() is train.try_it  # nothing started yet: the classifier box
        assert train.controller.start()
        assert isinstance(train.chat, ChatTryItWidget) and train.try_stack.currentWidget() is train.chat
        assert train.chat.run_id is None and not train.chat.send_button.isEnabled()  # not while training
        assert "when the run has finished" in train.chat.input.placeholderText()
        qtbot.waitUntil(lambda: train.controller.mode == "idle" and not state.running, timeout=180_000)
        run_id = train.controller.run_id
        assert train.controller.last_finished.status == "completed"
        assert train.chat.run_id == run_id and train.chat.chat  # trained on conversations
        assert train.tabs.currentWidget() is train.samples  # a finished language model shows its replies
        assert train.samples.model.headerData(0, Qt.Orientation.Vertical) == "Before training"
        ev = train.evaluation  # no classes to confuse: a table of the evaluations, perplexity in the summary
        assert ev.pages.currentWidget() is ev.epoch_table and ev.epoch_table.rowCount() == 1
        assert "perplexity" in ev.summary.text() and ev.epoch_table.item(0, 3).text()
        train.plots.redraw(force=True)
        assert list(train.plots._right_items) == ["val_perplexity"]  # not a share: on its own axis
        train.chat.temperature.setValue(0.0)
        train.chat.max_tokens.setValue(6)
        with qtbot.waitSignal(train.chat.replyReceived, timeout=60_000) as got:
            train.chat.send("where is my parcel")
        assert got.args[0] == train.chat.messages[-1]["content"]
        assert [m["role"] for m in train.chat.messages] == ["user", "assistant"]

        runs = RunsPanel(state)
        qtbot.addWidget(runs)
        runs.select_runs([run_id])
        detail = runs.detail
        tab = detail.tabs.indexOf(detail.try_holder)
        assert detail.tabs.isTabVisible(tab)
        detail.tabs.setCurrentIndex(tab)
        assert detail.chat.run_id == run_id and detail.chat.chat
        detail.chat.temperature.setValue(0.0)
        detail.chat.max_tokens.setValue(6)
        with qtbot.waitSignal(detail.chat.replyReceived, timeout=60_000) as again:
            detail.chat.send("where is my parcel")
        assert again.args[0] == got.args[0]  # the same model, greedy: the same reply in both places
        detail.refresh()  # a live refresh keeps the conversation
        assert len(detail.chat.messages) == 2
        assert runs.shutdown(5000)
    finally:
        assert train.shutdown(10_000)
        torch.set_num_threads(threads)


def test_runs_detail_try_it_explains_when_a_run_has_no_model(qtbot, home):
    from tests.fixtures.runs import make_run
    from tunedesk.engine.store import RunStore
    from tunedesk.ui.runs.panel import RunsPanel
    from tunedesk.ui.state import AppState

    state = AppState(home)
    with RunStore(state.database) as store:
        lm = make_run(store, name="pirate tone", status="failed")
        store.update_run(lm, task="causal_lm")  # failed before its first checkpoint: no model
        clf = make_run(store, name="tickets")
    runs = RunsPanel(state)
    qtbot.addWidget(runs)
    runs.select_runs([clf])
    assert not runs.detail.tabs.isTabVisible(runs.detail.tabs.indexOf(runs.detail.try_holder))  # classifiers: no chat
    runs.select_runs([lm])
    runs.detail.tabs.setCurrentWidget(runs.detail.try_holder)
    chat = runs.detail.chat
    assert chat.run_id is None and not chat.input.isEnabled()
    assert "saved no model" in chat.input.placeholderText()
    assert runs.shutdown(1000)


def test_export_dialog_says_a_qlora_run_merges_into_a_bf16_base(qtbot, tmp_path):
    from tunedesk.ui.runs.dialogs import ExportDialog

    run = {"id": 7, "name": "tone", "task": "causal_lm", "config": {"freeze": {"lora": {"base_bits": 4}}}}
    dialog = ExportDialog(run, tmp_path, None)
    qtbot.addWidget(dialog)
    assert dialog.format.currentData() == "merged"
    assert "4-bit base (QLoRA)" in dialog.about.text() and "bf16" in dialog.about.text()
    dialog.grab().save(str(tmp_path / "export.png"))
    dialog.format.setCurrentIndex(dialog.format.findData("adapter"))
    assert "QLoRA" not in dialog.about.text()
    plain = ExportDialog({"id": 8, "name": "x", "task": "causal_lm", "config": {}}, tmp_path, None)
    qtbot.addWidget(plain)
    assert "QLoRA" not in plain.about.text()
