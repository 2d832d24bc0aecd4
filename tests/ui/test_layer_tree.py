"""Layers area: clicks and presets make the plan, the plan is the engine's, and nobody loops on it."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import transformers  # noqa: F401 - imported up front: the panel's build thread then only builds
from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtWidgets import QApplication, QPushButton

from tunedesk.engine import freezing
from tunedesk.engine.catalog import ModelEntry, scan_path
from tunedesk.engine.config import FreezeRule, FreezeSpec, ModelSpec, RunConfig
from tunedesk.engine.models import build_hf_classifier, build_torchvision_classifier
from tunedesk.ui.layer_tree import FreezeTreeWidget, LayerTreePanel
from tunedesk.ui.layer_tree.panel import PAGE_EMPTY, PAGE_ERROR, PAGE_TREE
from tunedesk.ui.layer_tree.tree import COL_LR, COL_MODULE, COL_TRAINABLE
from tunedesk.ui.state import AppState

RESNET = ModelEntry(
    id="torchvision:resnet18",
    name="resnet18",
    path="/nowhere/resnet18-f37072fd.pth",
    source="torch_hub",
    task="image_classification",
    architecture="resnet18",
    model_type="torchvision",
)


@pytest.fixture(autouse=True)
def private_settings(tmp_path_factory):
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path_factory.mktemp("qsettings")))


@pytest.fixture
def state(qtbot, tmp_path):
    return AppState(tmp_path / "home")


@pytest.fixture
def panel(qtbot, state):
    widget = LayerTreePanel(state)
    qtbot.addWidget(widget)
    widget.resize(1200, 800)
    widget.show()
    yield widget
    widget.wait_idle()


@pytest.fixture(scope="module")
def bert_entry(tiny_bert_dir) -> ModelEntry:
    return scan_path(tiny_bert_dir)[0]


@pytest.fixture(scope="module")
def real_bert(tiny_bert_dir):
    return build_hf_classifier(ModelSpec(str(tiny_bert_dir)), ["a", "b"])


def show(qtbot, panel, state, entry) -> None:
    with qtbot.waitSignal(panel.treeShown, timeout=120_000):
        state.select_model(entry)
    assert panel.pages.currentIndex() == PAGE_TREE


def source_index(panel, path: str, column: int = COL_MODULE):
    tree = panel.tree.model_tree()
    return panel.tree.source.index_of(tree.by_path[path], column)


def click(panel, path: str, train: bool) -> None:
    """Tick or untick a row through the item model, as the view's delegate does."""
    index = panel.tree.proxy_index(panel.tree.model_tree().by_path[path])
    value = Qt.CheckState.Checked if train else Qt.CheckState.Unchecked
    assert panel.tree.model().setData(index, value.value, Qt.ItemDataRole.CheckStateRole)


def check_state(panel, path: str) -> Qt.CheckState:
    return Qt.CheckState(panel.tree.source.data(source_index(panel, path), Qt.ItemDataRole.CheckStateRole))


def real_flags(loaded, spec: FreezeSpec) -> dict[str, bool]:
    plan = freezing.resolve(loaded.model, spec, loaded.head_paths)
    freezing.apply(loaded.model, plan)
    return {n: p.requires_grad for n, p in loaded.model.named_parameters()}


def shown_flags(panel) -> dict[str, bool]:
    """Per parameter, what the tree shows: its leaf row's trainable count equals its size, or 0."""
    tree = panel.tree.model_tree()
    out = {}
    for i, name in enumerate(tree.index.names):
        owner = tree.by_path[name.rpartition(".")[0]]
        text = panel.tree.source.data(panel.tree.source.index_of(owner, COL_TRAINABLE))
        if owner.own_params == owner.total_params and owner.state in (0, 2):
            assert (text == "frozen") == (owner.state == 0)
        out[name] = tree.plan.flags[i]
    return out


# ---- empty state, building --------------------------------------------------------------------------


def test_empty_state_then_the_tree(qtbot, panel, state, bert_entry):
    assert panel.pages.currentIndex() == PAGE_EMPTY
    assert "Pick a model in Models" in panel.pages.currentWidget().main_label.text()
    with qtbot.waitSignal(state.showPanel) as shown:
        panel.pages.currentWidget().findChildren(QPushButton)[0].click()  # "Open Models"
    assert shown.args == ["models"]
    show(qtbot, panel, state, bert_entry)
    tree = panel.tree.model_tree()
    assert type(tree.model).__name__ == "BertForSequenceClassification" and tree.head_paths == ["classifier"]
    assert state.freeze == FreezeSpec()  # the panel publishes the plan it shows
    assert "no weights loaded" in panel.subtitle.text()
    view = panel.tree
    root = view.model().index(0, 0)
    assert view.isExpanded(root) and view.model().rowCount(root) == 3  # bert, dropout, classifier
    assert panel.summary.count_label.text().endswith("trainable")
    state.select_model(None)
    assert panel.pages.currentIndex() == PAGE_EMPTY


def test_build_failure_is_shown_with_a_hint(qtbot, panel, state, tmp_path):
    broken = ModelEntry(
        id="folder:x", name="broken", path=str(tmp_path), source="user_folder", problem="no config.json"
    )
    state.select_model(broken)
    qtbot.waitUntil(lambda: panel.pages.currentIndex() == PAGE_ERROR, timeout=30_000)
    assert "no config.json" in panel.error_page.main_label.text()
    assert panel.error_page.hint_label.text()


# ---- clicks and presets make the plan; the plan gives the flags ------------------------------------------


def test_clicks_append_rules_and_repaint_minimal_ranges(qtbot, panel, state, bert_entry):
    show(qtbot, panel, state, bert_entry)
    ranges = []
    panel.tree.source.dataChanged.connect(
        lambda a, b, roles=(): ranges.append((a.internalId(), b.internalId(), a.row(), b.row()))
    )
    click(panel, "bert.encoder.layer.0.output.dense", False)
    assert state.freeze.rules == [FreezeRule("bert.encoder.layer.0.output.dense", False)]
    # one single-row range per changed row on screen: the model row, bert, encoder, layer, layer.0
    # (layer.0 is collapsed: its output and output.dense are not shown, the view asks for them on expand)
    assert len(ranges) == 5 and all(r[2] == r[3] for r in ranges)
    view = panel.tree
    for path in ("bert.encoder.layer.0", "bert.encoder.layer.0.output"):
        view.expand(view.proxy_index(view.model_tree().by_path[path]))
    ranges.clear()
    click(panel, "bert.encoder.layer.0.output.dense", True)
    assert len(ranges) == 7 and all(r[2] == r[3] for r in ranges)  # now the leaf and all 6 ancestors
    click(panel, "bert.encoder.layer.0.output.dense", False)
    assert check_state(panel, "bert.encoder.layer.0.output.dense") == Qt.CheckState.Unchecked
    assert check_state(panel, "bert.encoder.layer.0") == Qt.CheckState.PartiallyChecked
    assert check_state(panel, "") == Qt.CheckState.PartiallyChecked
    assert check_state(panel, "bert.encoder.layer.1") == Qt.CheckState.Checked
    ranges.clear()
    click(panel, "bert.encoder", False)  # the earlier click is inside: it is dropped
    assert state.freeze.rules == [FreezeRule("bert.encoder", False)]
    click(panel, "bert.encoder", True)  # back to what the preset does: no rule at all
    assert state.freeze == FreezeSpec()
    click(panel, "", False)
    assert state.freeze.preset == "none" and panel.preset_none.isChecked()
    assert panel.tree.model_tree().plan.trainable_params == 0


def test_mouse_click_on_a_checkbox(qtbot, panel, state, bert_entry):
    show(qtbot, panel, state, bert_entry)
    view = panel.tree
    index = view.proxy_index(view.model_tree().by_path["bert"])
    rect = view.visualRect(index)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(rect.left() + 10, rect.center().y()))
    assert state.freeze.rules == [FreezeRule("bert", False)]
    assert check_state(panel, "bert") == Qt.CheckState.Unchecked


def test_presets_and_edits_give_the_engine_flags(qtbot, panel, state, bert_entry, real_bert):
    show(qtbot, panel, state, bert_entry)
    plans = []

    def record():
        plans.append(copy.deepcopy(state.freeze))
        assert panel.spec() == state.freeze

    panel.preset_head.click()
    record()
    assert state.freeze.preset == "head_only"
    panel.preset_last.click()
    panel.last_n.setValue(1)
    record()
    assert (state.freeze.preset, state.freeze.last_n) == ("last_n_blocks", 1)
    click(panel, "bert.encoder.layer.0.attention", True)
    record()
    panel.freeze_norms.click()
    record()
    assert (
        FreezeRule("@norms", False) in state.freeze.rules and panel.freeze_norms.checkState() == Qt.CheckState.Checked
    )
    panel.freeze_embeddings.click()  # already frozen by the preset: the box was ticked, so this trains them
    record()
    assert FreezeRule("@embeddings", True) in state.freeze.rules
    assert panel.freeze_embeddings.checkState() == Qt.CheckState.Unchecked
    panel.preset_all.click()
    record()
    assert state.freeze.preset == "all" and all(r.pattern in ("@norms", "@embeddings") for r in state.freeze.rules)
    panel.preset_none.click()
    click(panel, "classifier", True)
    record()
    for spec in plans:
        panel.tree.set_spec(spec)
        assert shown_flags(panel) == real_flags(real_bert, spec), spec
        for node in panel.tree.model_tree().nodes:
            module = real_bert.model.get_submodule(node.path) if node.path else real_bert.model
            assert node.trainable == sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_filter_finds_modules_and_adds_one_glob_rule(qtbot, panel, state, bert_entry, real_bert):
    show(qtbot, panel, state, bert_entry)
    assert not panel.train_matches.isEnabled()
    panel.filter.setText("attention")
    assert panel.match_label.text().startswith("2 modules")  # the attention of each block (and what is inside)
    view = panel.tree
    tree = view.model_tree()
    assert view.proxy_index(tree.by_path["bert.embeddings"]).isValid() is False  # filtered out
    assert view.proxy_index(tree.by_path["bert.encoder.layer.1.attention.self.query"]).isValid()  # inside a match
    assert view.isExpanded(view.proxy_index(tree.by_path["bert.encoder.layer.1"]))
    panel.freeze_matches.click()
    assert state.freeze.rules == [FreezeRule("*attention*", False)]
    assert shown_flags(panel) == real_flags(real_bert, state.freeze)
    panel.filter.setText("layer.1*")  # matches nothing from the start of a path: searched anywhere
    panel.train_matches.click()
    assert state.freeze.rules[-1] == FreezeRule("*layer.1*", True)
    panel.filter.setText("*.bias")  # parameters, not modules: their modules are shown
    assert view.proxy_index(tree.by_path["bert.pooler.dense"]).isValid()
    assert not view.proxy_index(tree.by_path["bert.embeddings.word_embeddings"]).isValid()
    panel.freeze_matches.click()
    assert state.freeze.rules[-1] == FreezeRule("*.bias", False)
    assert shown_flags(panel) == real_flags(real_bert, state.freeze)
    panel.filter.setText("banana")
    assert panel.match_label.text() == "no module matches" and not panel.freeze_matches.isEnabled()
    panel.filter.clear()
    assert view.proxy_index(tree.by_path["bert.embeddings"]).isValid()


def test_lr_multiplier_cells_and_undo(qtbot, panel, state, bert_entry):
    show(qtbot, panel, state, bert_entry)
    source = panel.tree.source
    assert source.setData(source_index(panel, "bert.encoder", COL_LR), "0.5", Qt.ItemDataRole.EditRole)
    assert state.freeze.lr_multipliers == {"bert.encoder": 0.5}
    assert source.data(source_index(panel, "bert.encoder.layer.1", COL_LR)) == "×0.5"  # inherited
    assert source.data(source_index(panel, "bert", COL_LR)) == "mixed"
    errors = []
    source.editFailed.connect(lambda m, h: errors.append(m))
    assert not source.setData(source_index(panel, "bert.encoder", COL_LR), "fast", Qt.ItemDataRole.EditRole)
    assert errors and "not a number" in errors[0]
    assert not source.setData(source_index(panel, "bert.encoder", COL_LR), "-2", Qt.ItemDataRole.EditRole)
    assert "must be > 0" in panel.message.text()
    assert source.setData(source_index(panel, "bert.encoder", COL_LR), "", Qt.ItemDataRole.EditRole)
    assert state.freeze.lr_multipliers == {}
    panel.undo()
    assert state.freeze.lr_multipliers == {"bert.encoder": 0.5}
    panel.undo()
    assert state.freeze == FreezeSpec()
    panel.lr_toggle.setChecked(False)
    assert panel.tree.isColumnHidden(COL_LR)


# ---- the plan from elsewhere -----------------------------------------------------------------------------


def test_a_plan_set_elsewhere_is_shown_not_sent_back(qtbot, panel, state, bert_entry):
    show(qtbot, panel, state, bert_entry)
    emitted = []
    state.freezeChanged.connect(emitted.append)
    other = FreezeSpec("last_n_blocks", last_n=1, rules=[FreezeRule("@embeddings", True)])
    state.set_freeze(other)  # e.g. the runs panel re-opening a run
    assert len(emitted) == 1 and panel.spec() == other
    assert panel.preset_last.isChecked() and panel.last_n.value() == 1
    assert panel.tree.model_tree().plan == freezing.resolve(panel.tree.model_tree().model, other, ["classifier"])
    click(panel, "classifier", False)  # the user's edits are sent once each
    assert len(emitted) == 2 and emitted[-1].rules[-1] == FreezeRule("classifier", False)


def test_a_cloned_run_reopens_with_its_plan(qtbot, panel, state, bert_entry, real_bert):
    saved = RunConfig(
        freeze=FreezeSpec(
            "head_only", rules=[FreezeRule("bert.encoder.layer.1", True)], lr_multipliers={"classifier": 2.0}
        )
    )
    spec = RunConfig.from_dict(saved.to_dict()).freeze  # what a saved run gives back
    state.set_freeze(spec)  # the runs panel sets the plan, then the model
    show(qtbot, panel, state, bert_entry)
    assert panel.spec() == spec and state.freeze == spec
    assert shown_flags(panel) == real_flags(real_bert, spec)
    other_model = RESNET
    show(qtbot, panel, state, other_model)
    pruned = panel.spec()
    assert pruned.rules == [] and pruned.lr_multipliers == {} and pruned.preset == "head_only"


# ---- read-only widget (the runs panel's freeze map) ------------------------------------------------------------


def test_read_only_widget(qtbot, real_bert):
    widget = FreezeTreeWidget(read_only=True)
    qtbot.addWidget(widget)
    spec = FreezeSpec("last_n_blocks", last_n=1)
    widget.set_model(real_bert, spec)
    source = widget.source
    index = source.index_of(widget.model_tree().by_path["bert.encoder.layer.0"])
    assert not (source.flags(index) & Qt.ItemFlag.ItemIsUserCheckable)
    assert source.data(index, Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Unchecked
    assert not source.setData(index, Qt.CheckState.Checked.value, Qt.ItemDataRole.CheckStateRole)
    assert widget.spec() == spec
    assert (
        widget.model_tree().plan.trainable_names
        == freezing.resolve(real_bert.model, spec, ["classifier"]).trainable_names
    )
    widget.set_model(None)
    assert widget.model().rowCount() == 0


# ---- BatchNorm and the memory verdict ------------------------------------------------------------------------


def test_resnet_batchnorm_choice_and_engine_modes(qtbot, panel, state):
    show(qtbot, panel, state, RESNET)
    assert panel.bn_choice.isVisible() and panel.summary.image.isVisibleTo(panel)
    panel.preset_last.click()
    panel.last_n.setValue(1)
    real = build_torchvision_classifier(ModelSpec("resnet18", source="torchvision", pretrained=False), ["a", "b"])
    spec = state.freeze
    assert shown_flags(panel) == real_flags(real, spec)
    freezing.set_train_mode(real.model, spec.train_batchnorm_stats)
    modes = {n: m.training for n, m in real.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert all(modes[n] == n.startswith("layer4") for n in modes)  # frozen BatchNorm keeps its statistics
    panel.bn_choice.setCurrentIndex(1)
    assert state.freeze.train_batchnorm_stats is True
    freezing.set_train_mode(real.model, state.freeze.train_batchnorm_stats)
    assert all(m.training for m in real.model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_memory_verdict(qtbot, panel, state, bert_entry, monkeypatch):
    show(qtbot, panel, state, bert_entry)
    monkeypatch.setattr(panel.controller, "_available", lambda device: 1 << 20)  # 1 MiB free
    panel.refresh_summary()
    assert "Won’t fit" in panel.summary.verdict.text() and panel.summary.verdict.property("role") == "error"
    monkeypatch.setattr(panel.controller, "_available", lambda device: 1 << 40)
    panel.summary.batch.setValue(4)
    assert "Fits" in panel.summary.verdict.text() and panel.summary.verdict.property("role") == ""
    monkeypatch.setattr(panel.controller, "_available", lambda device: None)
    panel.refresh_summary()
    assert "cannot tell" in panel.summary.verdict.text()


def test_importing_the_panel_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, tunedesk.ui.layer_tree; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert out.stdout.strip() == "False", out.stderr
    assert QApplication.instance() is not None


# ---- LoRA for causal language models ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_entry(tmp_path_factory):
    from transformers import LlamaConfig

    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        architectures=["LlamaForCausalLM"],
    ).save_pretrained(folder)
    return ModelEntry(
        id=f"folder:{folder}",
        name="tiny-llama",
        path=str(folder),
        source="user_folder",
        task="causal_lm",
        architecture="LlamaForCausalLM",
        model_type="llama",
    )


def test_lora_presets_and_module_choices(qtbot, panel, state, llama_entry, bert_entry):
    from tunedesk.engine.lm import lora

    show(qtbot, panel, state, llama_entry)
    assert panel.lora_box.isVisibleTo(panel) and panel.lora_widget is not None
    panel.lora_widget.apply_preset("lora_attention")
    assert state.freeze.preset == "none" and state.freeze.lora.preset == "attention"
    tree = panel.tree.model_tree()
    q = tree.by_path["model.layers.0.self_attn.q_proj"]
    assert panel.tree.source.data(panel.tree.source.index_of(q, COL_TRAINABLE)) == "LoRA r=8"
    assert "LoRA" in panel.summary.plan_label.text()
    labels = [label for label, _ in panel.tree.context_actions(tree.by_path["model.layers.1.mlp"])]
    assert "LoRA adapter…" in labels and "Train fully" in labels
    assert panel.tree.choose(tree.by_path["model.layers.1.mlp"], "lora", rank=4)
    assert state.freeze.lora.rules[-1].pattern == "model.layers.1.mlp" and state.freeze.lora.rules[-1].rank == 4
    real = lora.resolve_targets(tree.model, state.freeze.lora, freezing.resolve(tree.model, state.freeze, []))
    assert set(real) == set(tree.lora_targets)  # what the run will adapt is what the tree shows
    # gradient checkpointing in the memory estimate: fewer activations for a long sequence, and it is offered
    summary = panel.summary
    assert summary.checkpointing.isVisibleTo(panel)
    summary.seq.setValue(4096)
    without = panel.tree.model_tree().summary(**summary.inputs()).memory.activations
    summary.checkpointing.setChecked(True)
    with_ckpt = panel.tree.model_tree().summary(**summary.inputs()).memory.activations
    assert 0 < with_ckpt < without
    summary.checkpointing.setChecked(False)
    panel.controller._available = lambda device: 1 << 20  # 1 MiB free: the activations are what does not fit
    panel.refresh_summary()
    assert "Gradient checkpointing" in summary.verdict.text()
    del panel.controller._available
    show(qtbot, panel, state, bert_entry)  # LoRA is for causal LMs: the plan drops it for a classifier
    assert not panel.lora_box.isVisibleTo(panel) and not state.freeze.lora.active
    assert not summary.checkpointing.isVisibleTo(panel) and not summary.inputs()["gradient_checkpointing"]


def test_base_in_4bit_lowers_the_weights_in_the_estimate_live(qtbot, panel, state, llama_entry):
    show(qtbot, panel, state, llama_entry)
    widget = panel.lora_widget
    widget.apply_preset("lora_all_linear")
    summary = panel.summary
    summary.precision.setCurrentIndex(summary.precision.findData("bf16"))
    before = panel.tree.model_tree().summary(**summary.inputs()).memory
    assert summary.part_labels["working"].text() == "—"
    assert not widget.base_4bit.isEnabled()  # this machine: no CUDA GPU, the reason is shown
    widget.set_quantisation_available(None)  # as on a GPU machine with bitsandbytes
    widget.base_4bit.setChecked(True)
    assert state.freeze.lora.base_bits == 4
    after = panel.tree.model_tree().summary(**summary.inputs()).memory
    assert after.weights < before.weights and after.working > 0
    assert summary.part_labels["working"].text() != "—"  # the panel redrew with the dequantisation memory
    assert "Base in 4-bit" in widget.base_note.text()


def test_feature_cache_estimate_next_to_the_memory_estimate(qtbot, panel, state):
    show(qtbot, panel, state, RESNET)
    panel.preset_last.click()
    panel.last_n.setValue(1)
    text = panel.summary.cache_label.text()
    assert panel.summary.cache_label.isVisibleTo(panel)
    assert text.startswith("Feature cache: ") and "per 10,000 examples" in text and "before layer4" in text
    speedup = float(text.split("epochs ~")[1].split("x")[0])
    assert 1.5 < speedup < 10  # layer4 is a fifth of ResNet-18's work: (1 + 2/5) / (3/5) ≈ 2.3
    panel.preset_head.click()
    assert "epochs ≥100x faster" in panel.summary.cache_label.text()
    assert "before fc" in panel.summary.cache_label.text()
    panel.grab().save(str(Path(os.environ.get("TUNEDESK_SHOTS", "/tmp")) / "layers-feature-cache.png"))
    panel.preset_all.click()
    assert not panel.summary.cache_label.isVisibleTo(panel)  # nothing frozen: no cache
