"""The details of one catalog entry: facts, config summary, licence, path, and its model card rendered."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from tunedesk.ui.models.format import human_bytes, human_count, source_label, summary_text, task_label

if TYPE_CHECKING:
    from tunedesk.engine.catalog import ModelEntry

MAX_CARD_BYTES = 512 * 1024


def strip_front_matter(text: str) -> str:
    """Drop a model card's YAML front matter (``---`` ... ``---``): metadata, not prose."""
    if not text.startswith("---"):
        return text
    lines = text.splitlines(keepends=True)
    if lines[0].strip() != "---":
        return text
    for i in range(1, len(lines)):
        if lines[i].strip() in ("---", "..."):
            return "".join(lines[i + 1 :]).lstrip("\n")
    return text


def read_card(path: str | None) -> str | None:
    """The card's Markdown without front matter; None when there is none or it cannot be read."""
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CARD_BYTES)
    except OSError:
        return None
    return strip_front_matter(raw.decode("utf-8", errors="replace"))


def _set_role(label: QLabel, role: str) -> None:
    label.setProperty("role", role)
    label.style().unpolish(label)
    label.style().polish(label)


class DetailsPane(QWidget):
    """Shows one entry; "Use this model" is a signal, the panel decides (and may refuse)."""

    useRequested = Signal(object)  # ModelEntry

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.entry: ModelEntry | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 0, 0, 0)

        self.title = QLabel("No model selected")
        self.title.setProperty("role", "title")
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.subtitle = QLabel("Pick a model in the list to see its details and model card.")
        self.subtitle.setProperty("role", "hint")
        self.subtitle.setWordWrap(True)
        self.problem = QLabel()
        self.problem.setProperty("role", "error")
        self.problem.setWordWrap(True)
        self.problem.hide()
        layout.addWidget(self.title)
        layout.addWidget(self.subtitle)
        layout.addWidget(self.problem)

        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form.setHorizontalSpacing(12)
        self.form.setVerticalSpacing(3)
        self.fields: dict[str, QLabel] = {}
        for key, label in (
            ("parameters", "Parameters"),
            ("size", "Size on disk"),
            ("format", "Weights"),
            ("license", "Licence"),
            ("config", "Config"),
        ):
            value = QLabel()
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.fields[key] = value
            self.form.addRow(f"{label}:", value)
        layout.addLayout(self.form)

        path_row = QHBoxLayout()
        self.path = QLabel()
        self.path.setWordWrap(True)
        self.path.setProperty("role", "hint")
        self.path.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.path.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.open_button = QPushButton("Open folder")
        self.open_button.setToolTip("Show this model's folder in the file manager")
        self.open_button.clicked.connect(self.open_folder)
        path_row.addWidget(self.path, 1)
        path_row.addWidget(self.open_button)
        layout.addLayout(path_row)

        use_row = QHBoxLayout()
        self.use_button = QPushButton("Use this model")
        self.use_button.setDefault(True)
        self.use_button.setToolTip("Open it in the layer tree and the training panel (Enter)")
        self.use_button.clicked.connect(self._use)
        use_row.addWidget(self.use_button)
        use_row.addStretch(1)
        layout.addLayout(use_row)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.hide()
        layout.addWidget(self.message)

        self.card = QTextBrowser()
        self.card.setOpenExternalLinks(True)
        self.card.setPlaceholderText("No model card")
        layout.addWidget(self.card, 1)
        self.show_entry(None)

    def _use(self) -> None:
        if self.entry is not None:
            self.useRequested.emit(self.entry)

    def show_entry(self, entry: ModelEntry | None) -> None:
        self.entry = entry
        self.clear_message()
        has = entry is not None
        for w in (self.open_button, self.use_button):
            w.setEnabled(has)
        if entry is None:
            self.title.setText("No model selected")
            self.subtitle.setText("Pick a model in the list to see its details and model card.")
            self.problem.hide()
            for value in self.fields.values():
                value.setText("")
            self.path.setText("")
            self.card.clear()
            return
        self.title.setText(entry.name)
        bits = [source_label(entry.source), task_label(entry.task) or "task unknown", entry.architecture or ""]
        self.subtitle.setText(" · ".join(b for b in bits if b))
        self.problem.setText(f"⚠ {entry.problem}" if entry.problem else "")
        self.problem.setVisible(bool(entry.problem))
        params = (
            f"{entry.parameters:,} ({human_count(entry.parameters)})"
            if entry.parameters is not None
            else ("counting…" if not entry.problem else "unknown")
        )
        self.fields["parameters"].setText(params)
        self.fields["size"].setText(human_bytes(entry.size_bytes) or "—")
        fmt = entry.weight_format or "none"
        self.fields["format"].setText(f"{fmt}, {'present' if entry.weights_present else 'missing or incomplete'}")
        self.fields["license"].setText(entry.license or "not stated (check the model's source before use)")
        pairs = summary_text(entry.config_summary)
        self.fields["config"].setText(" · ".join(f"{k} {v}" for k, v in pairs) if pairs else "—")
        self.path.setText(entry.path)
        self.path.setToolTip(entry.path)
        self._show_card(entry)

    def _show_card(self, entry: ModelEntry) -> None:
        text = read_card(entry.card_path)
        if text is None:
            where = "file" if entry.source == "user_file" or Path(entry.path).is_file() else "folder"
            self.card.setMarkdown(f"*No model card (README.md) in this model's {where}.*")
            return
        base = Path(entry.card_path or entry.path).parent
        self.card.document().setBaseUrl(QUrl.fromLocalFile(str(base) + "/"))
        self.card.setSearchPaths([str(base)])
        self.card.setMarkdown(text)

    def changeEvent(self, event: QEvent) -> None:
        # Markdown links take the palette's link colour when rendered: redo it when the theme changes.
        if event.type() == QEvent.Type.PaletteChange and self.entry is not None:
            self._show_card(self.entry)
        super().changeEvent(event)

    def folder(self) -> Path | None:
        if self.entry is None:
            return None
        path = Path(self.entry.path)
        return path if path.is_dir() else path.parent

    def open_folder(self) -> None:
        folder = self.folder()
        if folder is not None and folder.exists():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
        elif folder is not None:
            self.show_message(f"{folder} no longer exists: rescan (F5) to update the list.", error=True)

    def show_message(self, text: str, error: bool = True) -> None:
        self.message.setText(text)
        _set_role(self.message, "error" if error else "hint")
        self.message.show()

    def clear_message(self) -> None:
        self.message.clear()
        self.message.hide()
