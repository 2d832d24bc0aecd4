"""The HyperParams box of the run setup: training length, batch, optimizer and schedule, input size,
augmentation and the feature cache, as widgets that show and read ``HyperParams``.

The learning-rate row belongs to the setup form (it follows the model and the freeze plan, and the
learning-rate finder writes it); the form hands its widgets in so the rows keep their reading order.
"""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit, QWidget

from tunedesk.engine.config import HyperParams
from tunedesk.ui.training.field_rows import FieldRows
from tunedesk.ui.training.setup_helpers import FieldError, parse_number, spin_box

SCHEDULES = (
    ("auto", "auto (halve on plateau for auto length, else cosine)"),
    ("plateau", "halve on plateau (warm-up, then constant)"),
    ("cosine", "cosine (warm-up, then cosine decay)"),
    ("linear", "linear decay"),
    ("constant", "constant after warm-up"),
)
CLASSIFICATION_TASKS = ("text_classification", "image_classification")


class HparamFields:
    """Adds its rows to ``form`` (errors shown through ``rows``); ``show`` and ``read_into`` move values."""

    def __init__(
        self, rows: FieldRows, form: QFormLayout, learning_rate: tuple[QWidget, ...], learning_rate_note: QLabel
    ) -> None:
        self.form = form
        self.epochs = spin_box(0, 100000, 0)
        self.epochs.setSpecialValueText("auto")  # 0: until validation stops improving, within a budget
        rows.row(
            form,
            "Epochs",
            "hparams.epochs",
            self.epochs,
            tip="auto: train until the validation metric stops improving (within a budget from the data "
            "size) and keep the best weights",
        )
        self.batch_size = spin_box(0, 65536, 0)
        self.batch_size.setSpecialValueText("auto")  # 0: the calibrated batch, split to fit the GPU
        rows.row(
            form,
            "Batch size",
            "hparams.batch_size",
            self.batch_size,
            tip="auto: 16 examples per step, split into smaller batches if the GPU memory needs it",
        )
        rows.row(form, "Learning rate", "hparams.learning_rate", *learning_rate)
        form.addRow("", learning_rate_note)
        self.weight_decay = QLineEdit("0.01")
        rows.row(form, "Weight decay", "hparams.weight_decay", self.weight_decay)
        self.schedule = QComboBox()
        for key, text in SCHEDULES:
            self.schedule.addItem(text, key)
        rows.row(form, "Schedule", "hparams.schedule", self.schedule)
        self.warmup = QLineEdit("0.1")
        tip = "share of the steps spent ramping the learning rate up from 0"
        rows.row(form, "Warm-up share", "hparams.warmup_ratio", self.warmup, tip=tip)
        self.grad_accum = spin_box(0, 4096, 1)
        tip = "batches added up per optimizer step (effective batch = batch size x this)"
        rows.row(form, "Grad. accumulation", "hparams.grad_accum_steps", self.grad_accum, tip=tip)
        self.clip = QLineEdit("1.0")
        self.clip.setPlaceholderText("empty: no clipping")
        tip = "largest gradient norm; empty for no clipping"
        rows.row(form, "Gradient clipping", "hparams.max_grad_norm", self.clip, tip=tip)
        self.max_length = spin_box(0, 131072, 128)
        self.max_length_row = rows.row(form, "Max length (tokens)", "hparams.max_length", self.max_length)
        self.group_by_length = QCheckBox("Batch texts of similar length")
        self.group_by_length.setChecked(True)
        tip = "Less padding to compute: each batch draws texts of similar length from a shuffled pool"
        self.group_row = rows.row(form, "Length grouping", "hparams.group_by_length", self.group_by_length, tip=tip)
        self.image_size = spin_box(0, 4096, 224)
        self.image_size_row = rows.row(form, "Image size (px)", "hparams.image_size", self.image_size)
        self.augment = QCheckBox("Random crops and flips")
        self.augment.setChecked(True)
        tip = "Training images vary each epoch; off, the frozen layers' output is cached for training too"
        self.augment_row = rows.row(form, "Augmentation", "hparams.augment", self.augment, tip=tip)
        self.feature_cache = QCheckBox("Compute frozen layers once")
        self.feature_cache.setChecked(True)
        tip = "When the first layers are frozen, their output is computed once and epochs train only the rest"
        self.feature_cache_row = rows.row(form, "Feature cache", "hparams.feature_cache", self.feature_cache, tip=tip)
        # resumable checkpoints inside an epoch (epoch ends write one when the last is a minute old)
        self.checkpoint_minutes = QDoubleSpinBox()
        self.checkpoint_minutes.setRange(0.0, 24 * 60.0)
        self.checkpoint_minutes.setDecimals(1)
        self.checkpoint_minutes.setSuffix(" min")
        self.checkpoint_minutes.setSpecialValueText("epoch ends only")
        self.checkpoint_minutes.setValue(10.0)
        self.checkpoint_steps = QLineEdit()
        self.checkpoint_steps.setPlaceholderText("or every N steps")
        tip = (
            "A stopped or crashed run resumes from its last checkpoint: one is written on stop, after the first "
            "and the last epoch, at an epoch's end when the last one is a minute old, and inside an epoch every "
            "this many minutes (0: only at epoch ends) and/or every N optimizer steps"
        )
        rows.row(
            form, "Checkpoint every", "hparams.checkpoint_every_minutes", self.checkpoint_minutes,
            self.checkpoint_steps, tip=tip,
        )  # fmt: skip
        rows.alias("hparams.checkpoint_every_steps", "hparams.checkpoint_every_minutes")
        rows.widgets["hparams.checkpoint_every_steps"] = self.checkpoint_steps

    def show_rows_for(self, task: str | None) -> None:
        """Only the rows that mean something for the task: token length for text, image size and
        augmentation for images, the feature cache for classifiers."""
        image = task == "image_classification"
        self.form.setRowVisible(self.max_length_row, not image)
        self.form.setRowVisible(self.group_row, task == "text_classification")
        self.form.setRowVisible(self.image_size_row, image)
        self.form.setRowVisible(self.augment_row, image)
        self.form.setRowVisible(self.feature_cache_row, task in CLASSIFICATION_TASKS)

    def show(self, h: HyperParams) -> None:
        """The values of ``h`` (the learning rate is the form's)."""
        for spin, value in (
            (self.epochs, h.epochs or 0),  # 0 shows "auto"
            (self.batch_size, h.batch_size or 0),
            (self.grad_accum, h.grad_accum_steps),
            (self.max_length, h.max_length),
            (self.image_size, h.image_size),
        ):
            spin.setValue(int(value))
        self.augment.setChecked(h.augment)
        self.feature_cache.setChecked(h.feature_cache)
        self.group_by_length.setChecked(h.group_by_length)
        self.weight_decay.setText(f"{h.weight_decay:g}")
        self.schedule.setCurrentIndex(max(self.schedule.findData(h.schedule), 0))
        self.warmup.setText(f"{h.warmup_ratio:g}")
        self.clip.setText("" if h.max_grad_norm is None else f"{h.max_grad_norm:g}")
        self.checkpoint_minutes.setValue(float(h.checkpoint_every_minutes or 0.0))
        self.checkpoint_steps.setText("" if h.checkpoint_every_steps is None else str(h.checkpoint_every_steps))

    def read_into(self, h: HyperParams) -> None:
        """The widgets' values into ``h``; raises FieldError (beside the field) for text that is no number."""
        h.epochs = self.epochs.value() or None  # "auto"
        h.batch_size = self.batch_size.value() or None
        h.weight_decay = parse_number(self.weight_decay.text(), "hparams.weight_decay", "a number like 0.01 (0: none)")
        h.schedule = self.schedule.currentData()
        h.warmup_ratio = parse_number(self.warmup.text(), "hparams.warmup_ratio", "a share like 0.1 (0: no warm-up)")
        h.grad_accum_steps = self.grad_accum.value()
        clip = self.clip.text().strip()
        h.max_grad_norm = (
            None if not clip else parse_number(clip, "hparams.max_grad_norm", "a number like 1.0, or empty")
        )
        h.max_length = self.max_length.value()
        h.image_size = self.image_size.value()
        h.augment, h.feature_cache = self.augment.isChecked(), self.feature_cache.isChecked()
        h.group_by_length = self.group_by_length.isChecked()
        h.checkpoint_every_minutes = round(self.checkpoint_minutes.value(), 1)
        steps = self.checkpoint_steps.text().strip().replace(",", "").replace("_", "")
        if not steps:
            h.checkpoint_every_steps = None
        elif steps.isdigit() and int(steps) >= 1:
            h.checkpoint_every_steps = int(steps)
        else:
            raise FieldError(
                "hparams.checkpoint_every_steps",
                f"must be a whole number of optimizer steps, 1 or more (got {steps!r})",
                "leave it empty to checkpoint by time only",
            )
