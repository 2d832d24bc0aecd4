"""The export dialog: pick a format and a folder; the export runs in a worker thread."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from tunedesk.engine.store import history
from tunedesk.ui.background import TaskGroup
from tunedesk.ui.runs.detail import set_role


def default_export_folder(home: Path, run: dict[str, Any]) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", (run.get("name") or "model")).strip("-")[:40] or "model"
    base = home / "exports" / f"run-{run['id']:05d}-{slug}"
    candidate, n = base, 2
    while candidate.exists() and any(candidate.iterdir()):
        candidate = base.with_name(f"{base.name}-{n}")
        n += 1
    return candidate


class ExportDialog(QDialog):
    """Choose format and folder, then export in a thread; errors show inline, the dialog stays open."""

    def __init__(self, run: dict[str, Any], home: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Export run #{run['id']}")
        self.run = run
        self.home = Path(home)
        self.result_info: dict[str, Any] | None = None
        self._calls = TaskGroup(self)
        config = run.get("config") or {}
        kind = history.resolved(run).model_kind or (config.get("model") or {}).get("source")
        language_model = run.get("task") == "causal_lm"
        lora_cfg = ((run.get("config") or {}).get("freeze") or {}).get("lora") or {}
        self._base_bits = lora_cfg.get("base_bits") if language_model else None
        intro = QLabel(
            f"Export the <b>best</b> weights of run #{run['id']} <b>{_esc(run.get('name') or '')}</b> "
            "so they load without TuneDesk."
        )
        intro.setWordWrap(True)
        self.format = QComboBox()
        if language_model:
            self.format.addItem("Hugging Face folder, adapters merged (transformers from_pretrained)", "merged")
            self.format.addItem("LoRA adapter only (PEFT, needs the base model)", "adapter")
        elif kind == "torchvision":
            self.format.addItem("torchvision weights (safetensors) + JSON", "torchvision")
        elif kind == "timm":
            self.format.addItem("timm folder (timm.create_model)", "timm")
        else:
            self.format.addItem("Hugging Face folder (transformers from_pretrained)", "hf")
        if not language_model:
            self.format.addItem("ONNX (needs the onnx package)", "onnx")
        self.format.addItem("TensorBoard event files (curves, evaluations, settings)", "tensorboard")
        self.format.currentIndexChanged.connect(self._describe)
        self.folder = QLineEdit(str(default_export_folder(self.home, run)))
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        self.about = QLabel()
        self.about.setWordWrap(True)
        set_role(self.about, "hint")
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        set_role(self.error, "error")
        self.error.hide()
        form = QFormLayout()
        form.addRow("Format", self.format)
        form.addRow("Folder", row)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.about)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self._describe()
        self.resize(620, self.sizeHint().height())

    def _describe(self) -> None:
        fmt = self.format.currentData()
        self.about.setText(
            {
                "hf": "config.json with your label names, model.safetensors and the tokenizer or image processor. "
                "Load it with AutoModelFor…from_pretrained(folder). The folder must be new or empty.",
                "torchvision": "model.safetensors, tunedesk_model.json (architecture, class names, image size, mean/std) "
                "and a README with the lines that load it. The folder must be new or empty.",
                "timm": "config.json (architecture, class names, mean/std, input size) and model.safetensors in "
                "timm's layout: timm.create_model(…, pretrained_cfg_overlay=dict(file=…)) loads it. "
                "The folder must be new or empty.",
                "tensorboard": "The run's history, not its weights: curves, evaluations, hyperparameters and the "
                "freeze plan as TensorBoard event files (tensorboard --logdir folder).",
                "onnx": "model.onnx plus the label names and preprocessing settings, for ONNX Runtime. "
                "Needs `pip install onnx`; not every model can be exported.",
                "merged": "The fine-tuned weights (LoRA adapters merged in) and the tokenizer: "
                "AutoModelForCausalLM.from_pretrained(folder) loads it without PEFT. "
                "The folder must be new or empty.",
                "adapter": "Only the LoRA adapter (small); load it onto the base model with "
                "PeftModel.from_pretrained. The folder must be new or empty.",
            }.get(fmt, "")
            + (
                f" This run trained on a {self._base_bits}-bit base (QLoRA): the merged export loads the base "
                "in bf16 and merges the adapters into it, so replies can differ slightly from the quantised model."
                if self._base_bits and fmt == "merged"
                else ""
            )
        )
        self.resize(self.width(), self.sizeHint().height())  # descriptions differ in length

    def _browse(self) -> None:
        start = str(Path(self.folder.text()).parent if self.folder.text() else self.home)
        chosen = QFileDialog.getExistingDirectory(self, "Export into folder", start)
        if chosen:
            self.folder.setText(chosen)

    def start(self) -> None:
        from tunedesk.engine.export import export_run

        folder = self.folder.text().strip()
        if not folder:
            self._failed("choose a folder to export into", "")
            return
        self.error.hide()
        self.export_button.setEnabled(False)
        self.export_button.setText("Exporting…")
        run_id, fmt, home = self.run["id"], self.format.currentData(), self.home
        self._calls.start(
            lambda _ctx: export_run(run_id, folder, fmt=fmt, home=home),
            name="exporting",
            on_result=self._done,
            on_error=self._failed,
        )

    def _done(self, info: dict[str, Any]) -> None:
        self.result_info = info
        self.accept()

    def _failed(self, message: str, hint: str) -> None:
        self.export_button.setEnabled(True)
        self.export_button.setText("Export")
        self.error.setText(message + (f"\nHint: {hint}" if hint else ""))
        self.error.show()

    def done(self, code: int) -> None:
        self._calls.wait_all()
        super().done(code)


def show_export_result(parent: QWidget, info: dict[str, Any]) -> None:
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Information)
    box.setWindowTitle("Exported")
    box.setText(f"Run #{info['run_id']} exported ({info['format']}) to\n{info['path']}")
    box.setDetailedText("\n".join(info.get("files") or []))
    open_button = box.addButton("Open folder", QMessageBox.ButtonRole.ActionRole)
    box.addButton(QMessageBox.StandardButton.Ok)
    box.exec()
    if box.clickedButton() is open_button:
        QDesktopServices.openUrl(QUrl.fromLocalFile(info["path"]))


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
