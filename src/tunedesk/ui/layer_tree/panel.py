"""Layers area: the selected model's module tree, presets, a module finder and the live summary.

The panel draws and forwards the user's clicks; ``LayersController`` (controller.py) holds the plan,
its undo history and the model tree, and builds trees in the background.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from tunedesk.engine.config import FreezeSpec
from tunedesk.ui.layer_tree.controller import LayersController
from tunedesk.ui.layer_tree.fmt import count_text
from tunedesk.ui.layer_tree.summary import SummaryPanel, _set_role
from tunedesk.ui.layer_tree.tree import FreezeTreeWidget, icon

log = logging.getLogger("tunedesk.ui.layer_tree")
PAGE_EMPTY, PAGE_LOADING, PAGE_ERROR, PAGE_TREE = range(4)
PRESET_IDS = {"all": 0, "head_only": 1, "last_n_blocks": 2, "none": 3}


class LayerTreePanel(QWidget):
    """``LayerTreePanel(state)``: follows ``modelSelected``/``freezeChanged``, edits go to ``set_freeze``."""

    treeShown = Signal()  # a model's tree is on screen (tests, screenshots)

    def __init__(self, state: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._syncing = False  # drawing the controls from the plan: their signals are not edits
        self._build()
        self.controller = LayersController(state, self, parent=self)
        self._connect()
        state.modelSelected.connect(self.controller.show_entry)
        state.freezeChanged.connect(self.controller.external_spec)
        state.engineReady.connect(self.controller.ensure_devices)
        self._restore()
        if state.model is not None:
            QTimer.singleShot(0, lambda: self.controller.show_entry(state.model))

    # ---- layout ---------------------------------------------------------------------------------

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(14, 10, 14, 8)
        head = QHBoxLayout()
        title = QLabel("Layers")
        title.setProperty("role", "title")
        head.addWidget(title)
        self.subtitle = QLabel("")
        self.subtitle.setProperty("role", "hint")
        self.subtitle.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        head.addWidget(self.subtitle, 1, Qt.AlignmentFlag.AlignBottom)
        outer.addLayout(head)

        self.pages = QStackedWidget()
        outer.addWidget(self.pages, 1)
        self.pages.addWidget(
            self._message_page(
                "Pick a model in Models, then choose what trains here.",
                "Tick a module to train it, untick it to freeze it. Presets, a module finder and a live memory "
                "estimate help you choose. Nothing is loaded until you train.",
                "Open Models",
                self._open_models,
            )
        )
        loading = QWidget()
        ll = QVBoxLayout(loading)
        ll.addStretch(1)
        self.loading_label = QLabel("Building the layer tree…")
        self.loading_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        busy = QProgressBar()
        busy.setRange(0, 0)
        busy.setMaximumWidth(280)
        ll.addWidget(self.loading_label)
        ll.addWidget(busy, 0, Qt.AlignmentFlag.AlignHCenter)
        ll.addStretch(2)
        self.pages.addWidget(loading)
        self.error_page = self._message_page("", "", "Back to Models", self._open_models)
        self.pages.addWidget(self.error_page)
        self.pages.addWidget(self._tree_page())
        self.pages.setCurrentIndex(PAGE_EMPTY)

    def _message_page(self, text: str, hint: str, button: str, action) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addStretch(1)
        picture = QLabel()
        picture.setPixmap(icon("freeze").pixmap(56, 56))
        picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(picture)
        main = QLabel(text)
        main.setWordWrap(True)
        main.setAlignment(Qt.AlignmentFlag.AlignCenter)
        font = main.font()
        font.setPointSizeF(font.pointSizeF() * 1.2)
        main.setFont(font)
        sub = QLabel(hint)
        sub.setWordWrap(True)
        sub.setAlignment(Qt.AlignmentFlag.AlignCenter)
        sub.setProperty("role", "hint")
        sub.setMaximumWidth(520)
        layout.addWidget(main)
        layout.addWidget(sub, 0, Qt.AlignmentFlag.AlignHCenter)
        go = QPushButton(button)
        go.clicked.connect(action)
        layout.addWidget(go, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addStretch(2)
        page.main_label, page.hint_label = main, sub  # type: ignore[attr-defined]
        return page

    def _tree_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 4, 0, 0)

        presets = QHBoxLayout()
        presets.setSpacing(10)
        caption = QLabel("Start from:")
        presets.addWidget(caption)
        self.preset_group = QButtonGroup(self)
        self.preset_all = QRadioButton("Everything")
        self.preset_head = QRadioButton("Head only")
        self.preset_last = QRadioButton("Last")
        self.preset_none = QRadioButton("Nothing")
        self.last_n = QSpinBox()
        self.last_n.setRange(1, 999)
        self.last_n.setValue(2)
        self.last_n.setSuffix(" blocks")
        self.preset_all.setToolTip("Train every parameter (full fine-tuning)")
        self.preset_head.setToolTip("Train only the new task head; the pre-trained body stays frozen")
        self.preset_none.setToolTip("Freeze everything, then tick what should train")
        for button, key in (
            (self.preset_all, "all"),
            (self.preset_head, "head_only"),
            (self.preset_last, "last_n_blocks"),
            (self.preset_none, "none"),
        ):
            self.preset_group.addButton(button, PRESET_IDS[key])
        presets.addWidget(self.preset_all)
        presets.addWidget(self.preset_head)
        presets.addWidget(self.preset_last)
        presets.addWidget(self.last_n)
        presets.addWidget(self.preset_none)
        presets.addSpacing(16)
        self.freeze_embeddings = QCheckBox("Freeze embeddings")
        self.freeze_embeddings.setToolTip("Keep the input embeddings as pre-trained (a rule @embeddings → freeze)")
        self.freeze_norms = QCheckBox("Freeze normalisation layers")
        self.freeze_norms.setToolTip(
            "Keep LayerNorm / RMSNorm / BatchNorm weights as pre-trained (a rule @norms → freeze)"
        )
        presets.addWidget(self.freeze_embeddings)
        presets.addWidget(self.freeze_norms)
        self.bn_label = QLabel("BatchNorm statistics:")
        self.bn_choice = QComboBox()
        self.bn_choice.addItem("keep frozen statistics", False)
        self.bn_choice.addItem("train them", True)
        self.bn_choice.setToolTip(
            "Frozen BatchNorm layers keep their running mean/variance (recommended for small "
            "data sets), or update them while training"
        )
        presets.addWidget(self.bn_label)
        presets.addWidget(self.bn_choice)
        presets.addStretch(1)
        layout.addLayout(presets)

        find = QHBoxLayout()
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Find modules: attention, layer.1*, *.bias …")
        self.filter.setClearButtonEnabled(True)
        self.filter.addAction(icon("search"), QLineEdit.ActionPosition.LeadingPosition)
        self.filter.setToolTip("Shows modules whose path matches (a word matches anywhere; * and ? are wildcards)")
        self.match_label = QLabel("")
        self.match_label.setProperty("role", "hint")
        self.train_matches = QPushButton(icon("unfreeze"), "Train matches")
        self.freeze_matches = QPushButton(icon("freeze"), "Freeze matches")
        self.train_matches.setToolTip("Add one rule: every module matching the filter trains")
        self.freeze_matches.setToolTip("Add one rule: every module matching the filter is frozen")
        self.undo_button = QToolButton()
        self.undo_button.setText("Undo")
        self.undo_button.setToolTip("Undo the last change to the plan (Ctrl+Z)")
        self.lr_toggle = QCheckBox("LR multipliers")
        self.lr_toggle.setToolTip("Show the learning-rate multiplier column (double-click a cell to edit)")
        self.lr_toggle.setChecked(True)
        find.addWidget(self.filter, 2)
        find.addWidget(self.match_label)
        find.addWidget(self.train_matches)
        find.addWidget(self.freeze_matches)
        find.addSpacing(12)
        find.addWidget(self.undo_button)
        find.addWidget(self.lr_toggle)
        layout.addLayout(find)

        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setVisible(False)
        layout.addWidget(self.message)

        split = QSplitter(Qt.Orientation.Horizontal)
        self.tree = FreezeTreeWidget()
        split.addWidget(self.tree)
        self.summary = SummaryPanel()
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        self.lora_box = QGroupBox("LoRA adapters (language models)")
        self.lora_box.setVisible(False)
        self.lora_layout = QVBoxLayout(self.lora_box)
        self.lora_layout.setContentsMargins(6, 4, 6, 4)
        self.lora_widget: Any = None  # tunedesk.ui.lm.lora_settings.LoraSettingsWidget, made for the first causal LM
        side_layout.addWidget(self.lora_box)
        side_layout.addWidget(self.summary, 1)
        scroll = QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setMinimumWidth(320)
        scroll.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        split.addWidget(scroll)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        split.setSizes([760, 360])
        self.splitter = split
        layout.addWidget(split, 1)

        return page

    def _connect(self) -> None:
        self.preset_group.idClicked.connect(self._preset_clicked)
        self.last_n.valueChanged.connect(self._last_n_changed)
        self.freeze_embeddings.clicked.connect(lambda: self.controller.toggle_modifier("@embeddings"))
        self.freeze_norms.clicked.connect(lambda: self.controller.toggle_modifier("@norms"))
        self.bn_choice.currentIndexChanged.connect(self._bn_changed)
        self.filter.textChanged.connect(self._filter_changed)
        self.train_matches.clicked.connect(lambda: self.controller.apply_matches(self.filter.text(), True))
        self.freeze_matches.clicked.connect(lambda: self.controller.apply_matches(self.filter.text(), False))
        self.undo_button.clicked.connect(self.controller.undo)
        self.lr_toggle.toggled.connect(self.tree.set_lr_column_visible)
        self.tree.specChanged.connect(self._edited)
        self.tree.editFailed.connect(self.show_problem)
        self.summary.inputsChanged.connect(self.controller.inputs_changed)
        undo = QAction("Undo plan change", self)
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        undo.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        undo.triggered.connect(self.controller.undo)
        self.addAction(undo)

    # ---- drawing (LayersView: the controller calls these) ------------------------------------------

    def _open_models(self) -> None:
        self.state.showPanel.emit("models")

    def show_empty(self) -> None:
        self.subtitle.setText("")
        self.pages.setCurrentIndex(PAGE_EMPTY)

    def show_loading(self, name: str) -> None:
        self.loading_label.setText(f"Building the layer tree of {name} from its configuration…")
        self.subtitle.setText(name)
        self.pages.setCurrentIndex(PAGE_LOADING)

    def show_build_error(self, message: str, hint: str) -> None:
        self.error_page.main_label.setText(f"This model’s layers cannot be shown: {message}")  # type: ignore[attr-defined]
        self.error_page.hint_label.setText(hint)  # type: ignore[attr-defined]
        self.pages.setCurrentIndex(PAGE_ERROR)

    def image_size(self) -> int:
        return int(self.summary.image.value())

    def model_tree(self) -> Any:
        return self.tree.model_tree()

    def set_tree(self, tree: Any, spec: FreezeSpec) -> None:
        """Show ``tree`` (None: no model) with ``spec``; a plan that does not apply raises TuneDeskError."""
        if tree is None:
            self.tree.set_model(None)
        else:
            self.tree.set_model(tree, spec)

    def apply_spec(self, spec: FreezeSpec) -> None:
        """Show another plan on the same tree; one that does not apply raises TuneDeskError."""
        self.tree.set_spec(spec)

    def edit_tree(self, make: Any) -> None:
        self.tree.edit_spec(make)

    def show_model(self, tree: Any, spec: FreezeSpec, name: str) -> None:
        self.summary.set_task(tree.task)
        heads = ", ".join(tree.head_paths) or "none (all pre-trained)"
        self.subtitle.setText(
            f"{name} · {type(tree.model).__name__} · {count_text(tree.total_params)} parameters · "
            f"new head: {heads} · built from the config, no weights loaded"
        )
        blocks = tree.blocks
        self.preset_last.setEnabled(bool(blocks.paths))
        self.last_n.setEnabled(bool(blocks.paths))
        self.last_n.setMaximum(max(1, len(blocks.paths)))
        self.preset_last.setToolTip(
            f"Train the last N of the {len(blocks)} repeated blocks ({blocks.container or 'stages'}), "
            "what follows them, and the head"
            if blocks.paths
            else "no repeated blocks found"
        )
        self.preset_head.setEnabled(bool(tree.head_paths))
        self.bn_label.setVisible(tree.has_batchnorm)
        self.bn_choice.setVisible(tree.has_batchnorm)
        self._setup_lora(tree, spec)
        self.pages.setCurrentIndex(PAGE_TREE)

    def tree_shown(self) -> None:
        self.filter.clear()
        self._filter_changed("")
        self.treeShown.emit()

    def show_tree(self, tree: Any) -> None:
        """Show an already built ``ModelTree`` with the current plan (pruned to this model)."""
        self.controller.show_tree(tree)

    def spec(self) -> FreezeSpec:
        return self.controller.spec()

    def show_plan(self, spec: FreezeSpec, can_undo: bool) -> None:
        """Draw the preset, modifier and BatchNorm controls (and the LoRA settings) from the plan."""
        from tunedesk.engine.structure import token_state

        tree = self.tree.model_tree()
        self._syncing = True
        try:
            button = self.preset_group.button(PRESET_IDS.get(spec.preset, 0))
            if button is not None:
                button.setChecked(True)
            self.last_n.setValue(max(1, spec.last_n) if spec.last_n else self.last_n.value())
            for box, token, noun in (
                (self.freeze_embeddings, "@embeddings", "embedding layers"),
                (self.freeze_norms, "@norms", "normalisation layers"),
            ):
                state = token_state(tree, token) if tree is not None else None
                box.setEnabled(state is not None)
                box.setTristate(state == 1)
                box.setCheckState(
                    (Qt.CheckState.Unchecked, Qt.CheckState.PartiallyChecked, Qt.CheckState.Checked)[state or 0]
                )
                if state is None and tree is not None:
                    box.setToolTip(f"this model has no {noun}")
            self.bn_choice.setCurrentIndex(1 if spec.train_batchnorm_stats else 0)
            self.undo_button.setEnabled(can_undo)
        finally:
            self._syncing = False
        if self.lora_widget is not None and self.lora_box.isVisibleTo(self):
            self.lora_widget.set_spec(spec)

    def _edited(self, spec: FreezeSpec) -> None:
        self.message.setVisible(False)
        self.controller.edited(spec)

    def _preset_clicked(self, button_id: int) -> None:
        preset = next(k for k, v in PRESET_IDS.items() if v == button_id)
        self.controller.preset(preset, self.last_n.value())

    def _last_n_changed(self, value: int) -> None:
        if not self._syncing:
            self.controller.preset("last_n_blocks", value)

    def _bn_changed(self) -> None:
        if not self._syncing:
            self.controller.train_batchnorm_stats(bool(self.bn_choice.currentData()))

    def undo(self) -> None:
        self.controller.undo()

    # ---- LoRA (causal language models) ------------------------------------------------------------------

    def _setup_lora(self, tree: Any, spec: FreezeSpec) -> None:
        """Show the LoRA settings for a causal LM (the LM area's widget); hide them otherwise."""
        if not tree.supports_lora:
            self.lora_box.setVisible(False)
            return
        if self.lora_widget is None:
            try:
                from tunedesk.ui.lm.lora_settings import LoraSettingsWidget
            except ImportError:
                log.exception("the LoRA settings are not available")
                return
            self.lora_widget = LoraSettingsWidget(spec)
            self.lora_widget.specChanged.connect(self.controller.lora_edited)
            self.lora_layout.addWidget(self.lora_widget)
        self.lora_widget.set_model(tree.model, tree.head_paths)
        self.lora_box.setVisible(True)

    # ---- finder ---------------------------------------------------------------------------------------

    def _filter_changed(self, text: str) -> None:
        from tunedesk.engine.structure import glob_for

        tree = self.tree.model_tree()
        pattern = glob_for(text, tree)
        matches = self.tree.set_filter(pattern) if not pattern.startswith("@") else []
        params = self.controller.params_matching(pattern)
        self.train_matches.setEnabled(params > 0)
        self.freeze_matches.setEnabled(params > 0)
        if not text.strip():
            self.match_label.setText("")
            self.match_label.setToolTip("")
        elif params:
            self.match_label.setText(
                f"{len(matches)} module{'s' if len(matches) != 1 else ''} · {count_text(params)} parameters"
            )
            self.match_label.setToolTip(f"pattern {pattern}")
        else:
            self.match_label.setText("no module matches")
            self.match_label.setToolTip(f"pattern {pattern}")

    def show_problem(self, message: str, hint: str) -> None:
        self.message.setText(message + (f" — {hint}" if hint else ""))
        _set_role(self.message, "error")
        self.message.setVisible(True)

    # ---- summary --------------------------------------------------------------------------------------

    def show_devices(self, devices: list[tuple[str, str]], wanted: str | None) -> None:
        self.summary.set_devices(devices, wanted)

    def summary_inputs(self) -> dict[str, Any]:
        return self.summary.inputs()

    def show_summary(self, summary: Any, spec: FreezeSpec) -> None:
        self.summary.show_summary(summary, spec)

    def clear_summary(self) -> None:
        self.summary.clear()

    def refresh_summary(self) -> None:
        self.controller.refresh_summary()

    def wait_idle(self, timeout_ms: int = 60000) -> None:
        """Wait for running builds (tests, shutdown)."""
        self.controller.wait_idle(timeout_ms)

    # ---- settings --------------------------------------------------------------------------------------

    def _restore(self) -> None:
        settings = QSettings("TuneDesk", "TuneDesk")
        for key, spin in (
            ("batch_size", self.summary.batch),
            ("sequence_length", self.summary.seq),
            ("image_size", self.summary.image),
        ):
            try:
                value = int(str(settings.value(f"layers/{key}", spin.value())))
            except (TypeError, ValueError):
                continue
            spin.setValue(value)
        precision = settings.value("layers/precision", "auto")
        if isinstance(precision, str) and self.summary.precision.findData(precision) >= 0:
            self.summary.precision.setCurrentIndex(self.summary.precision.findData(precision))
        lr = settings.value("layers/lr_column", True)
        self.lr_toggle.setChecked(lr not in (False, "false", "0", 0))

    def save_settings(self, settings: QSettings) -> None:
        inputs = self.summary.inputs()
        for key in ("batch_size", "sequence_length", "image_size", "precision", "device"):
            settings.setValue(f"layers/{key}", inputs[key])
        settings.setValue("layers/lr_column", self.lr_toggle.isChecked())
