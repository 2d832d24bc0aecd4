"""The run setup form: model, data, freeze plan, hyperparameters, device and precision.

The form holds no truth of its own beyond what the user typed: ``build_config()`` turns the widgets
into a ``RunConfig`` (fields the form does not show are kept from the last configuration loaded),
and ``RunConfig.validate()`` decides what is valid. Its ``ConfigError.field`` is mapped back to the
widget, so the engine's message appears right beside the value that caused it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from tunedesk.engine.config import DataSpec, FreezeSpec, ModelSpec, RunConfig
from tunedesk.engine.defaults import suggested_learning_rate
from tunedesk.engine.errors import ConfigError
from tunedesk.ui.training.field_rows import FieldRows
from tunedesk.ui.training.hparam_fields import HparamFields
from tunedesk.ui.training.setup_helpers import (
    PRECISION_LABELS,
    TASK_LABELS,
    TENSORBOARD_LABELS,
    DeviceCombo,
    FieldError,
    family_of_path,
    freeze_text,
    guess_column,
    lm_kind,
    lost_on_reload,
    lr_note,
    make_label,
    model_family,
    model_spec_from_entry,
    parse_number,
    set_role,
    spin_box,
    table_columns,
    task_for_data,
)

__all__ = ["FieldError", "SetupForm", "lost_on_reload", "set_role"]


class SetupForm(QWidget):
    """Everything a run needs, as widgets; ``build_config`` and ``show_error`` are its interface."""

    changed = Signal()
    findLearningRate = Signal()
    editLayers = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._base = RunConfig()  # fields the form does not show come from here
        self._freeze = FreezeSpec()
        self._model_source = "hf"
        self._model_weights: str | None = None
        self._family: str | None = None
        self._params: int | None = None  # the model's size, when known: the suggested rate depends on it
        self._suggested_text = ""
        self.rows = FieldRows()
        self._errors = self.rows.errors  # field -> error label
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 4, 0)
        layout.setSpacing(10)
        layout.addWidget(self._model_group())
        layout.addWidget(self._data_group())
        layout.addWidget(self._freeze_group())
        layout.addWidget(self._hparam_group())
        layout.addWidget(self._lm_group())
        layout.addWidget(self._hardware_group())
        self.general_error = self.rows.general_error
        layout.addWidget(self.general_error)
        layout.addStretch(1)
        # a combo box's longest item must not set the form's width (it sits in a narrow scroll area)
        for combo in self.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(min(combo.minimumContentsLength() or 12, 16))
        self._update_task_fields()

    # ---- building ---------------------------------------------------------------------------------

    def _model_group(self) -> QGroupBox:
        box, form = self.rows.group("Model")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("model folder, Hugging Face id or torchvision name")
        self.model_edit.textEdited.connect(self._model_edited)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_model)
        self.rows.row(form, "Model", "model.name_or_path", self.model_edit, browse)
        self.model_source = QComboBox()
        self.model_source.addItem("Hugging Face folder or cache id", "hf")
        self.model_source.addItem("torchvision architecture", "torchvision")
        self.model_source.addItem("timm model folder or cache id", "timm")
        self.model_source.currentIndexChanged.connect(self._source_changed)
        self.rows.row(form, "Format", "model.source", self.model_source)
        self.model_note = make_label("Pick a model in the Models area, or browse to a model folder.")
        form.addRow("", self.model_note)
        return box

    def _data_group(self) -> QGroupBox:
        box, form = self.rows.group("Data")
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("CSV / TSV / JSONL file, or a folder of class folders")
        self.data_edit.editingFinished.connect(self._data_edited)
        browse = QPushButton("Browse…")
        browse.setMinimumWidth(browse.sizeHint().width() + 18)  # room for the menu arrow
        menu = QMenu(browse)
        menu.addAction("Text table (CSV, TSV, JSONL)…", self._browse_data_file)
        menu.addAction("Image folder (one sub-folder per class)…", self._browse_data_folder)
        browse.setMenu(menu)
        self.rows.row(form, "Data", "data.path", self.data_edit, browse)
        self.task_combo = QComboBox()
        for key, text in TASK_LABELS.items():
            self.task_combo.addItem(text, key)
        self.task_combo.currentIndexChanged.connect(self._update_task_fields)
        self.rows.row(form, "Task", "task", self.task_combo)
        self.text_col = QComboBox()
        self.text_col.setEditable(True)
        self.label_col = QComboBox()
        self.label_col.setEditable(True)
        self.text_row = self.rows.row(form, "Text column", "data.text_column", self.text_col)
        self.label_row = self.rows.row(form, "Label column", "data.label_column", self.label_col)
        self.val_fraction = QDoubleSpinBox()
        self.val_fraction.setRange(0.0, 1.0)
        self.val_fraction.setSingleStep(0.05)
        self.val_fraction.setDecimals(2)
        self.val_fraction.setValue(0.2)
        self.rows.row(
            form,
            "Validation share",
            "data.val_fraction",
            self.val_fraction,
            tip="the share of examples held out to measure the model (stratified, seeded)",
        )
        self.data_note = make_label("")
        self.data_note.hide()
        form.addRow("", self.data_note)
        for combo in (self.text_col, self.label_col):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        return box

    def _freeze_group(self) -> QGroupBox:
        box, form = self.rows.group("Layers to train")
        self.freeze_label = QLabel(freeze_text(None))
        self.freeze_label.setWordWrap(True)
        edit = QPushButton("Edit in Layers…")
        edit.clicked.connect(self.editLayers.emit)
        edit.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.rows.row(form, "Plan", "freeze", self.freeze_label, edit)
        return box

    def _hparam_group(self) -> QGroupBox:
        box, form = self.rows.group("Hyperparameters")
        self.lr_edit = QLineEdit()
        self.lr_edit.setPlaceholderText("TuneDesk's suggestion")
        self.lr_edit.textEdited.connect(self._lr_edited)
        self.find_lr_button = QPushButton("Find…")
        self.find_lr_button.setToolTip("Run a short learning-rate range test and pick a value from the curve")
        self.find_lr_button.clicked.connect(self.findLearningRate.emit)
        self.lr_note = make_label("")
        self.hparams = HparamFields(self.rows, form, (self.lr_edit, self.find_lr_button), self.lr_note)
        return box

    def _lm_group(self) -> QGroupBox:
        """Language models: the prompts answered after each evaluation, their length, gradient checkpointing."""
        from tunedesk.ui.lm.lora_settings import LmRunSettingsWidget

        box, form = self.rows.group("Language model")
        self.lm_settings = LmRunSettingsWidget()
        self.lm_settings.changed.connect(self.changed)
        self.rows.row(form, "", "hparams.prompts", self.lm_settings)
        for alias in (
            "hparams.sample_max_new_tokens",
            "hparams.gradient_checkpointing",
            "hparams.packing",
            "hparams.fused_loss",
            "hparams.fused_kernels",
            "hparams.attention",
        ):
            self.rows.alias(alias, "hparams.prompts")
        self.lm_group = box
        return box

    def _hardware_group(self) -> QGroupBox:
        box, form = self.rows.group("Hardware")
        self.device = DeviceCombo()
        self.rows.row(form, "Device", "device", self.device)
        self.precision = QComboBox()
        for key, text in PRECISION_LABELS.items():
            self.precision.addItem(text, key)
        self.rows.row(
            form,
            "Precision",
            "precision",
            self.precision,
            tip="Automatic: bf16 mixed precision on a GPU that has it (else fp16) and on a CPU with native bf16 "
            "(AVX-512 BF16 or AMX), where it trains 1.5-1.7x faster per step; fp32 on other CPUs. On such a CPU an "
            "image model's run first times a few passes both ways and keeps fp32 where it is clearly faster "
            "(MobileNet: about 1.5x); the run's log says which",
        )
        self.seed = spin_box(0, 2**31 - 1, 42)
        self.rows.row(form, "Seed", "seed", self.seed)
        self.tensorboard = QComboBox()
        for key, text in TENSORBOARD_LABELS.items():
            self.tensorboard.addItem(text, key)
        tip = "Event files in the run's folder, for `tensorboard --logdir` (needs the tensorboard package)"
        self.rows.row(form, "TensorBoard", "tensorboard", self.tensorboard, tip=tip)
        return box

    # ---- model, data, freeze --------------------------------------------------------------------

    def set_model_entry(self, entry: Any) -> None:
        """A model chosen in the Models area."""
        if entry is None:
            return
        spec = model_spec_from_entry(entry)
        self._set_model(spec)
        params = getattr(entry, "parameters", None)
        bits = [
            b for b in (getattr(entry, "family", None), f"{params / 1e6:.1f} M parameters" if params else None) if b
        ]
        self.model_note.setText(f"{entry.name}" + (f" ({', '.join(bits)})" if bits else "") + " — from the Models area")
        self._family = getattr(entry, "family", None) or family_of_path(spec.name_or_path)
        self._params = params or None
        if getattr(entry, "task", None) in TASK_LABELS and not self.data_edit.text():
            self._set_task(entry.task)
        self._refresh_suggestion()

    def _set_model(self, spec: ModelSpec) -> None:
        self.model_edit.setText(spec.name_or_path)
        self.model_edit.setToolTip(spec.name_or_path)
        self._model_weights = spec.weights
        self._base.model = copy.deepcopy(spec)
        idx = self.model_source.findData(spec.source)
        self.model_source.blockSignals(True)
        self.model_source.setCurrentIndex(max(idx, 0))
        self.model_source.blockSignals(False)

    def _model_edited(self, text: str) -> None:
        self._model_weights = None
        self.model_note.setText("")
        self._family = model_family(self.model_source.currentData(), text)
        self._params = None
        self._refresh_suggestion()
        self.changed.emit()

    def _source_changed(self) -> None:
        self._model_edited(self.model_edit.text())

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Choose a model folder (with config.json)", self.model_edit.text()
        )
        if folder:
            self.model_source.setCurrentIndex(0)
            self.model_edit.setText(folder)
            self._model_edited(folder)

    def set_data_spec(self, spec: DataSpec | None) -> None:
        """A data set chosen in the Datasets area (or read from a configuration)."""
        if spec is None:
            return
        self._base.data = copy.deepcopy(spec)
        self.data_edit.setText(spec.path or (spec.dataset_version or ""))
        self.data_edit.setToolTip(self.data_edit.text())
        task = task_for_data(spec)
        if task is not None:
            self._set_task(task)
        self._fill_columns(spec.path if spec.kind == "text_table" else "", spec.text_column, spec.label_column)
        self.val_fraction.setValue(spec.val_fraction)
        note = {
            "dataset_version": f"saved data set version {spec.dataset_version}: its stored split is used (the "
            "validation share only applies to a version saved unsplit)"
        }.get(spec.kind, "")
        self.data_note.setText(note)
        self.data_note.setVisible(bool(note))

    def _data_edited(self) -> None:
        path = self.data_edit.text().strip()
        if self._base.data.kind == "dataset_version" and path == (self._base.data.dataset_version or ""):
            return
        self.data_note.hide()
        if self.task_combo.currentData() == "causal_lm":  # a corpus or chat file: no columns to pick
            self._base.data = DataSpec(kind=lm_kind(path), path=path, val_fraction=self.val_fraction.value())
            self.changed.emit()
            return
        kind = "image_folder" if path and Path(path).expanduser().is_dir() else "text_table"
        self._base.data = DataSpec(kind=kind, path=path, val_fraction=self.val_fraction.value())
        if kind == "image_folder":
            self._set_task("image_classification")
        elif path:
            self._set_task("text_classification")
            self._fill_columns(path, self.text_col.currentText() or "text", self.label_col.currentText() or "label")
        self.changed.emit()

    def _browse_data_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Choose a labelled text file",
            self.data_edit.text(),
            "Text tables (*.csv *.tsv *.tab *.txt *.jsonl *.ndjson);;All files (*)",
        )
        if path:
            self.data_edit.setText(path)
            self._data_edited()

    def _browse_data_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Choose an image folder (one sub-folder per class)", self.data_edit.text()
        )
        if folder:
            self.data_edit.setText(folder)
            self._data_edited()

    def _fill_columns(self, path: str, text_column: str, label_column: str) -> None:
        columns = table_columns(path) if path else []
        for combo, wanted, guess in (
            (self.text_col, text_column, ("text", "sentence", "message", "content")),
            (self.label_col, label_column, ("label", "labels", "class", "category")),
        ):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(columns)
            combo.setEditText(guess_column(columns, wanted, guess))
            combo.blockSignals(False)

    def _set_task(self, task: str) -> None:
        idx = self.task_combo.findData(task)
        if idx >= 0:
            self.task_combo.setCurrentIndex(idx)
        self._update_task_fields()

    def _update_task_fields(self) -> None:
        task = self.task_combo.currentData()
        columns = task == "text_classification"
        self.hparams.show_rows_for(task)
        if hasattr(self, "lm_group"):
            self.lm_group.setVisible(task == "causal_lm")
        for row in (self.text_row, self.label_row):
            holder = row.parentWidget()
            parent_form = holder.layout() if holder is not None else None
            if isinstance(parent_form, QFormLayout):
                parent_form.setRowVisible(row, columns)
        if hasattr(self, "lr_note"):
            self.lr_note.setText(self._lr_note_for(self.lr_edit.text()))

    def set_freeze(self, spec: FreezeSpec | None) -> None:
        self._freeze = copy.deepcopy(spec) if spec is not None else FreezeSpec()
        self.freeze_label.setText(freeze_text(self._freeze))
        if hasattr(self, "lr_note"):
            self.lr_note.setText(self._lr_note_for(self.lr_edit.text()))  # LoRA adapters have their own rate

    def set_freeze_resolved(self, summary: str, trainable: int, total: int) -> None:
        """After preparing: the engine's own description, with real parameter counts (the suggested rate
        depends on the model's size)."""
        if total and total != self._params:
            self._params = total
            self._refresh_suggestion()
        self.freeze_label.setText(
            f"{freeze_text(self._freeze)}\n{summary.split(' - ')[0]} of the weights train "
            f"({trainable / 1e6:.2f} M of {total / 1e6:.2f} M parameters)"
        )

    # ---- learning rate --------------------------------------------------------------------------

    def _lr_edited(self, text: str) -> None:
        self.lr_note.setText(self._lr_note_for(text))
        self.changed.emit()

    def _refresh_suggestion(self) -> None:
        lr, why = self._suggestion()
        old = self._suggested_text
        self._suggested_text = f"{lr:g}"
        if not self.lr_edit.text().strip() or self.lr_edit.text().strip() == old:
            self.lr_edit.setText(self._suggested_text)
        self.lr_note.setText(self._lr_note_for(self.lr_edit.text()))

    def _suggestion(self) -> tuple[float, str]:
        return suggested_learning_rate(
            self._family or "", total_params=self._params, pretrained=self._base.model.pretrained
        )

    def _lr_note_for(self, text: str) -> str:
        return lr_note(
            text,
            self._suggested_text,
            self._family,
            self.task_combo.currentData(),
            head_from_pretrained=self.model_source.currentData() in ("hf", "timm") or bool(self._model_weights),
            lora=self._freeze.lora.active,
            params=self._params,
            pretrained=self._base.model.pretrained,
        )

    def set_learning_rate(self, value: float, explanation: str = "") -> None:
        """A value from the learning-rate finder."""
        self.lr_edit.setText(f"{value:.2g}")
        self.lr_note.setText(
            f"From the learning-rate finder: {explanation}" if explanation else self._lr_note_for(f"{value:.2g}")
        )
        self.clear_error("hparams.learning_rate")
        self.changed.emit()

    def set_devices(self, devices: list[tuple[str, str]]) -> None:
        """(device, label) pairs from ``devices.list_devices()``; keeps the current choice when it still exists."""
        self.device.set_devices(devices)

    # ---- config in and out ------------------------------------------------------------------------

    def apply_config(self, config: RunConfig) -> None:
        """Show a configuration (loaded from a file, or a past run's)."""
        self._base = copy.deepcopy(config)
        self._set_model(config.model)
        self._family = model_family(config.model.source, config.model.name_or_path)
        self.model_note.setText("")
        self._set_task(config.task)
        self.set_data_spec(config.data)
        self.set_freeze(config.freeze)
        h = config.hparams
        self.hparams.show(h)
        self.seed.setValue(int(config.seed))
        self._suggested_text = ""
        self.lr_edit.setText("" if h.learning_rate is None else f"{h.learning_rate:g}")
        self._refresh_suggestion()
        self.lm_settings.set_hparams(h)
        self.device.select(config.device)
        self.precision.setCurrentIndex(max(self.precision.findData(config.precision), 0))
        board = {None: "auto", True: "on", False: "off"}[config.tensorboard]
        self.tensorboard.setCurrentIndex(max(self.tensorboard.findData(board), 0))
        self.clear_errors()

    def build_config(self) -> RunConfig:
        """The configuration the widgets describe (not validated). Raises FieldError for unparseable text."""
        cfg = copy.deepcopy(self._base)
        cfg.task = self.task_combo.currentData()
        source = self.model_source.currentData()
        name = self.model_edit.text().strip()
        weights = self._model_weights if source == "torchvision" else None
        cfg.model = ModelSpec(
            name_or_path=name,
            source=source,
            weights=weights,
            pretrained=self._base.model.pretrained,
            trust_remote_code=self._base.model.trust_remote_code and name == self._base.model.name_or_path,
        )
        data = copy.deepcopy(self._base.data)
        text = self.data_edit.text().strip()
        if data.kind == "dataset_version":
            data.dataset_version = text or None
        else:
            data.path = text
            if cfg.task == "image_classification":
                data.kind = "image_folder"
            elif cfg.task == "text_classification":
                data.kind = "text_table"
            elif data.kind not in ("text_corpus", "chat_jsonl"):
                data.kind = lm_kind(text)
        data.text_column = self.text_col.currentText().strip()
        data.label_column = self.label_col.currentText().strip()
        data.val_fraction = round(self.val_fraction.value(), 4)
        cfg.data = data
        cfg.freeze = copy.deepcopy(self._freeze)
        h = cfg.hparams
        self.hparams.read_into(h)
        lr_text = self.lr_edit.text().strip()
        h.learning_rate = (
            None
            if (not lr_text or lr_text == self._suggested_text)
            else parse_number(lr_text, "hparams.learning_rate", "a number like 3e-5 (empty: TuneDesk's suggestion)")
        )
        if cfg.task == "causal_lm":
            self.lm_settings.apply_to(h)
        cfg.device = self.device.currentData() or "auto"
        cfg.precision = self.precision.currentData()
        cfg.tensorboard = {"auto": None, "on": True, "off": False}[self.tensorboard.currentData()]
        cfg.seed = self.seed.value()
        return cfg

    def validated_config(self) -> RunConfig | None:
        """The configuration when valid; otherwise None with the message shown beside the field."""
        self.clear_errors()
        try:
            return self.build_config().validate()
        except ConfigError as exc:
            self.show_error(exc.field, exc.message, exc.hint)
            return None

    # ---- errors (beside the field they concern) -------------------------------------------------------

    def field_label(self, field: str) -> QLabel | None:
        return self.rows.field_label(field)

    def show_error(self, field: str, message: str, hint: str = "") -> QLabel:
        return self.rows.show_error(field, message, hint)

    def clear_error(self, field: str) -> None:
        self.rows.clear_error(field)

    def clear_errors(self) -> None:
        self.rows.clear_errors()

    def visible_errors(self) -> dict[str, str]:
        """{field: message} of the errors on show (tests, screenshots)."""
        return self.rows.visible_errors()
