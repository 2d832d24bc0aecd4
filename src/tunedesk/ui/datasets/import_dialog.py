"""The import dialog: what to import, from where, and (for tables) a preview to pick the columns.

The preview is read in a worker thread (finding the encoding streams the whole file once). When the
encoding is a guess, the dialog says so and offers the usual alternatives; the preview is read
again with the one chosen, so the user sees the accents come out right before importing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QTimer
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from tunedesk.ui.background import BackgroundTask, run_in_background

if TYPE_CHECKING:
    from tunedesk.engine.datasets import ImportSpec, TablePreview

KINDS = [
    ("text_table", "Labelled texts (CSV, TSV, JSONL, Parquet, a Hugging Face data set)"),
    ("image_folder", "Images in class folders"),
    ("image_csv", "Images + a table of file,label (CSV; or Parquet with the image bytes)"),
    ("text_corpus", "Text corpus (.txt files, for language models)"),
    ("chat_jsonl", "Chat conversations (JSONL: messages, or prompt/response pairs)"),
]
TABLE_FILTER = "Tables (*.csv *.tsv *.tab *.jsonl *.ndjson *.parquet *.arrow);;All files (*)"
NO_LABEL = "(none: label them here)"


def _role(label: QLabel, role: str) -> QLabel:
    label.setProperty("role", role)
    label.style().unpolish(label)
    label.style().polish(label)
    return label


class ImportDialog(QDialog):
    def __init__(self, parent: QWidget | None = None, path: str = "", kind: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Import data")
        self.resize(760, 560)
        self.preview: TablePreview | None = None
        self._job: BackgroundTask | None = None
        self._preview_number = 0  # of the latest preview asked for (older ones arriving late are dropped)
        self._debounce = QTimer(self, singleShot=True, interval=250)
        self._debounce.timeout.connect(self._start_preview)

        self.kind = QComboBox()
        for key, title in KINDS:
            self.kind.addItem(title, key)
        self.path = QLineEdit()
        self.path.setPlaceholderText("a file or folder on this computer")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.hf_button = QToolButton()
        self.hf_button.setText("Hugging Face cache")
        self.hf_button.setToolTip("Data sets already in this machine's Hugging Face datasets cache")
        self.hf_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.hf_menu = QMenu(self.hf_button)
        self.hf_menu.aboutToShow.connect(self._fill_hf_menu)
        self.hf_button.setMenu(self.hf_menu)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path, 1)
        path_row.addWidget(browse)
        path_row.addWidget(self.hf_button)
        self.name = QLineEdit()
        self.name.setPlaceholderText("defaults to the file or folder name")
        self.root = QLineEdit()
        self.root.setPlaceholderText("the CSV's folder")
        root_browse = QPushButton("Browse…")
        root_browse.clicked.connect(self._browse_root)
        root_row = QHBoxLayout()
        root_row.addWidget(self.root, 1)
        root_row.addWidget(root_browse)
        self.root_row = QWidget()
        self.root_row.setLayout(root_row)
        root_row.setContentsMargins(0, 0, 0, 0)

        self.encoding = QComboBox()
        self.encoding.setEditable(True)
        self.encoding.setToolTip("The text encoding of the file; pick another if accents look wrong in the preview")
        self.encoding_note = _role(QLabel(""), "hint")
        enc_row = QHBoxLayout()
        enc_row.addWidget(self.encoding)
        enc_row.addWidget(self.encoding_note, 1)
        self.text_column = QComboBox()
        self.label_column = QComboBox()
        self.text_title = QLabel("Text column")

        self.form = QFormLayout()
        self.form.addRow("Import", self.kind)
        self.form.addRow("From", path_row)
        self.form.addRow("Name", self.name)
        self.form.addRow("Images folder", self.root_row)
        self.form.addRow("Encoding", enc_row)
        self.form.addRow(self.text_title, self.text_column)
        self.form.addRow("Label column", self.label_column)

        self.table_model = QStandardItemModel(self)
        self.table = QTableView()
        self.table.setModel(self.table_model)
        self.table.setEditTriggers(QTableView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setWordWrap(False)
        self.status = _role(QLabel(""), "hint")
        self.status.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.import_button = self.buttons.addButton("Import", QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addWidget(QLabel("Preview"))
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)

        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.path.textChanged.connect(lambda: self._debounce.start())
        self.encoding.activated.connect(lambda _=0: self._start_preview(keep_encoding=True))
        self.text_column.currentIndexChanged.connect(self._update_state)
        self.label_column.currentIndexChanged.connect(self._update_state)
        if kind:
            self.kind.setCurrentIndex(max(0, self.kind.findData(kind)))
        self._kind_changed()
        if path:
            self.path.setText(path)

    # ---- choices --------------------------------------------------------------------------------
    @property
    def kind_key(self) -> str:
        return self.kind.currentData()

    def _is_table(self) -> bool:
        return self.kind_key in ("text_table", "image_csv")

    def _kind_changed(self) -> None:
        table = self._is_table()
        for w in (self.encoding, self.text_column, self.label_column, self.table):
            w.setEnabled(table)
        self.form.setRowVisible(self.root_row, self.kind_key == "image_csv")
        self.hf_button.setVisible(table)
        self.form.setRowVisible(4, table)
        self.form.setRowVisible(5, table)
        self.form.setRowVisible(6, table)
        self.table.setVisible(table)
        self.text_title.setText("File column" if self.kind_key == "image_csv" else "Text column")
        self.preview = None
        self.table_model.clear()
        if self.path.text().strip():
            self._debounce.start()
        self._update_state()

    def _browse(self) -> None:
        if self.kind_key in ("image_folder", "text_corpus"):
            chosen = QFileDialog.getExistingDirectory(self, "Choose the folder", self.path.text())
        else:
            filt = "Chat JSONL (*.jsonl *.ndjson);;All files (*)" if self.kind_key == "chat_jsonl" else TABLE_FILTER
            chosen, _ = QFileDialog.getOpenFileName(self, "Choose the file", self.path.text(), filt)
        if chosen:
            self.path.setText(chosen)

    def _fill_hf_menu(self) -> None:
        """The prepared data sets of the local Hugging Face datasets cache (a quick folder listing)."""
        from tunedesk.engine.data.arrow import find_cached_datasets

        self.hf_menu.clear()
        found = find_cached_datasets()
        if not found:
            self.hf_menu.addAction("no data sets in the Hugging Face datasets cache").setEnabled(False)
            return
        for d in found:
            splits = ", ".join(f"{k} {v:,}" for k, v in d.splits.items())
            action = self.hf_menu.addAction(
                f"{d.name} ({d.config}): {d.rows:,} rows" + (f" — {splits}" if splits else "")
            )
            action.setToolTip(d.path)
            action.triggered.connect(lambda _=False, d=d: self._pick_cached(d.path, d.name))

    def _pick_cached(self, path: str, name: str) -> None:
        if self.kind_key not in ("text_table", "image_csv"):
            self.kind.setCurrentIndex(max(0, self.kind.findData("text_table")))
        if not self.name.text().strip():
            self.name.setText(name.rsplit("/", 1)[-1])
        self.path.setText(path)

    def _browse_root(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Folder the file names are relative to", self.root.text())
        if chosen:
            self.root.setText(chosen)

    # ---- preview -------------------------------------------------------------------------------
    def _start_preview(self, keep_encoding: bool = False) -> None:
        path = self.path.text().strip()
        if not path:
            self._update_state()
            return
        if not self._is_table():
            exists = Path(path).expanduser().exists()
            self.status.setText("" if exists else f"not found: {path}")
            _role(self.status, "hint" if exists else "error")
            self._update_state()
            return
        from tunedesk.engine.datasets import preview_table

        encoding = self.encoding.currentText().strip() if keep_encoding else None
        if self._job is not None:
            self._job.cancel()
        self.status.setText("reading the first rows…")
        _role(self.status, "hint")
        self._preview_number += 1
        number = self._preview_number
        self._job = run_in_background(
            lambda _ctx: preview_table(path, encoding),
            name="previewing",
            on_result=lambda preview: self._show_preview(preview, number),
            on_error=lambda message, hint: self._preview_failed(message, hint, number),
            parent=self,
        )

    def _show_preview(self, preview: TablePreview, number: int | None = None) -> None:
        if number != self._preview_number:
            return  # an older preview
        self.preview = preview
        self.table_model.clear()
        self.table_model.setHorizontalHeaderLabels(preview.columns)
        for row in preview.rows:
            cells = []
            for value in row:
                cell = QStandardItem(" ".join(value.split())[:300])
                cell.setToolTip(value[:1000])
                cells.append(cell)
            self.table_model.appendRow(cells)
        for c in range(len(preview.columns)):
            self.table.setColumnWidth(c, 320 if preview.columns[c] == preview.text_column else 120)
        self.encoding.blockSignals(True)
        self.encoding.clear()
        choices = preview.encoding_choices or [preview.encoding, "utf-8", "cp1252", "latin-1", "utf-16"]
        for enc in dict.fromkeys(choices):
            self.encoding.addItem(enc)
        self.encoding.setCurrentText(preview.encoding)
        self.encoding.blockSignals(False)
        if preview.encoding_confident:
            self.encoding_note.setText("detected")
            _role(self.encoding_note, "hint")
        else:
            self.encoding_note.setText("a guess: check the accents in the preview, or pick another")
            _role(self.encoding_note, "warning")
        is_csv = self.kind_key == "image_csv"
        self._fill(self.text_column, preview.columns, self._file_guess(preview) if is_csv else preview.text_column)
        self._fill(self.label_column, preview.columns, preview.label_column, allow_none=not is_csv)
        size = preview.size_bytes / 1e6
        columnar = preview.format in ("parquet", "arrow")
        self.encoding.setEnabled(not columnar)  # Parquet and Arrow store text as UTF-8
        self.form.setRowVisible(self.root_row, self.kind_key == "image_csv" and not columnar)
        rows = f"{preview.total_rows:,} rows" if preview.total_rows is not None else ""
        if preview.splits:
            rows += " (" + ", ".join(f"{k} {v:,}" for k, v in sorted(preview.splits.items())) + ")"
        note = f"{preview.format.upper()}, {size:,.1f} MB, {rows + ', ' if rows else ''}showing the first {len(preview.rows)} rows"
        if preview.problems:
            note += f"; {len(preview.problems)} rows could not be read: {preview.problems[0]}"
        self.status.setText(note)
        _role(self.status, "hint")
        self._update_state()

    def _file_guess(self, preview: TablePreview) -> str | None:
        if preview.image_column:
            return preview.image_column
        for name in ("file", "filename", "file_name", "path", "image", "image_path", "img"):
            for c in preview.columns:
                if c.casefold() == name:
                    return c
        return preview.columns[0] if preview.columns else None

    def _fill(self, combo: QComboBox, columns: list[str], chosen: str | None, allow_none: bool = False) -> None:
        combo.blockSignals(True)
        combo.clear()
        if allow_none:
            combo.addItem(NO_LABEL, "")
        for c in columns:
            combo.addItem(c, c)
        if chosen is not None:
            combo.setCurrentIndex(max(0, combo.findData(chosen)))
        combo.blockSignals(False)

    def _preview_failed(self, message: str, hint: str, number: int | None = None) -> None:
        if number != self._preview_number:
            return
        self.preview = None
        self.table_model.clear()
        self.status.setText(f"{message}" + (f"\nHint: {hint}" if hint else ""))
        _role(self.status, "error")
        self._update_state()

    def _update_state(self) -> None:
        ok = bool(self.path.text().strip())
        if self._is_table():
            ok = ok and self.preview is not None and self.text_column.currentData() is not None
            if ok and self.text_column.currentData() == self.label_column.currentData():
                ok = False
                self.status.setText("The text and label columns must differ")
                _role(self.status, "error")
        self.import_button.setEnabled(ok)

    # ---- result -------------------------------------------------------------------------------
    def spec(self) -> ImportSpec:
        from tunedesk.engine.datasets import ImportSpec

        kind = self.kind_key
        spec = ImportSpec(kind=kind, path=self.path.text().strip(), name=self.name.text().strip())
        if self._is_table():
            enc = self.encoding.currentText().strip()
            spec.encoding = enc or None
            if kind == "image_csv":
                spec.file_column = self.text_column.currentData() or "file"
                spec.label_column = self.label_column.currentData() or "label"
                spec.images_root = self.root.text().strip()
            else:
                spec.text_column = self.text_column.currentData() or "text"
                spec.label_column = self.label_column.currentData() or ""
        return spec

    def done(self, result: int) -> None:
        if self._job is not None:
            self._job.wait(5000)
        super().done(result)
