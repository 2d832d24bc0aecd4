"""After each validation and at the end: metrics, a confusion-matrix heat map, and the "try it" box."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
Index = QModelIndex | QPersistentModelIndex


class ConfusionModel(QAbstractTableModel):
    """Rows: true class, columns: predicted class; cells coloured by the share of the row."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.matrix: list[list[int]] = []
        self.labels: list[str] = []

    def set_data(self, matrix: list[list[int]], labels: list[str]) -> None:
        self.beginResetModel()
        self.matrix = [list(map(int, r)) for r in matrix]
        self.labels = list(labels) or [str(i) for i in range(len(matrix))]
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.matrix)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.matrix)

    def _share(self, r: int, c: int) -> float:
        total = sum(self.matrix[r])
        return self.matrix[r][c] / total if total else 0.0

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r, c = index.row(), index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return str(self.matrix[r][c])
        if role == Qt.ItemDataRole.BackgroundRole:
            share = self._share(r, c)
            if share == 0:
                return None
            # Diagonal (right) in blue, off-diagonal (confusions) in orange; strength = share of the row.
            hue = QColor(0, 114, 178) if r == c else QColor(213, 94, 0)
            alpha = int(40 + 200 * share)
            hue.setAlpha(alpha)
            return hue
        if role == Qt.ItemDataRole.ForegroundRole:
            if self._share(r, c) > 0.55:
                return QColor(255, 255, 255)
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return Qt.AlignmentFlag.AlignCenter
        if role == Qt.ItemDataRole.ToolTipRole:
            return (
                f"true {self.labels[r]}, predicted {self.labels[c]}: {self.matrix[r][c]} "
                f"({100 * self._share(r, c):.0f} % of {self.labels[r]})"
            )
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and 0 <= section < len(self.labels):
            return self.labels[section]
        if role == Qt.ItemDataRole.ToolTipRole and 0 <= section < len(self.labels):
            return ("predicted " if orientation == Qt.Orientation.Horizontal else "true ") + self.labels[section]
        return None


class PerClassModel(QAbstractTableModel):
    COLUMNS = ("class", "precision", "recall", "F1", "examples")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[tuple[str, dict[str, float]]] = []

    def set_data(self, per_class: dict[str, dict[str, float]]) -> None:
        self.beginResetModel()
        self.rows = list(per_class.items())
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        name, values = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return name
            key = ("precision", "recall", "f1", "support")[col - 1]
            value = values.get(key)
            if value is None:
                return ""
            return str(int(value)) if key == "support" else f"{value:.3f}"
        if role == Qt.ItemDataRole.TextAlignmentRole and col > 0:
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.COLUMNS[section]
        return None


def metric_line(metrics: dict[str, float]) -> str:
    parts = []
    for key, title in (
        ("val_accuracy", "accuracy"),
        ("val_macro_f1", "macro-F1"),
        ("val_loss", "validation loss"),
        ("val_perplexity", "perplexity"),
        ("val_token_accuracy", "token accuracy"),
        ("train_loss", "training loss"),
    ):
        value = metrics.get(key)
        if isinstance(value, (int, float)):
            parts.append(
                f"{title} <b>{value:.3f}</b>"
                if key in ("val_accuracy", "val_macro_f1", "val_perplexity")
                else f"{title} {value:.4f}"
                if key.endswith("loss")
                else f"{title} {value:.3f}"
            )
    return " · ".join(parts)


LM_COLUMNS = (
    ("epoch", "Epoch"),
    ("step", "Step"),
    ("val_loss", "Validation loss"),
    ("val_perplexity", "Perplexity"),
    ("val_token_accuracy", "Token accuracy"),
    ("train_loss", "Training loss"),
)


class EpochTable(QTableWidget):
    """Language models: one row per evaluation (no classes to confuse), the best one in bold."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(LM_COLUMNS), parent)
        self.setHorizontalHeaderLabels([title for _, title in LM_COLUMNS])
        self.verticalHeader().hide()
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setAlternatingRowColors(True)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.rows: dict[int, int] = {}  # epoch -> row

    def show_epoch(self, ev: Any, best_epoch: int | None) -> None:
        row = self.rows.get(ev.epoch)
        if row is None:
            row = self.rows[ev.epoch] = self.rowCount()
            self.insertRow(row)
        values = dict(ev.metrics, epoch=ev.epoch, step=ev.step)
        for col, (key, _title) in enumerate(LM_COLUMNS):
            value = values.get(key)
            text = (
                ""
                if value is None
                else str(value)
                if key in ("epoch", "step")
                else f"{value:.4f}"
                if key.endswith("loss")
                else f"{value:.3f}"
            )
            item = QTableWidgetItem(text)
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.setItem(row, col, item)
        for col in range(self.columnCount()):  # a metric the task does not report: no empty column
            cells = [self.item(r, col) for r in self.rows.values()]
            self.setColumnHidden(col, all(cell is None or not cell.text() for cell in cells))
        for epoch, r in self.rows.items():
            for col in range(self.columnCount()):
                cell = self.item(r, col)
                if cell is not None:
                    font = cell.font()
                    font.setBold(epoch == best_epoch)
                    cell.setFont(font)
        first = self.item(row, 0)
        if first is not None:
            self.scrollToItem(first)

    def clear_rows(self) -> None:
        self.setRowCount(0)
        self.rows = {}


class EvaluationView(QWidget):
    """Validation metrics of one epoch with its confusion matrix and per-class scores; for language
    models (no classes) a table of the evaluations instead."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.summary = QLabel("Validation results appear after the first epoch.")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.summary)
        split = QSplitter()
        self.confusion_model = ConfusionModel(self)
        self.confusion = QTableView()
        self.confusion.setModel(self.confusion_model)
        self.confusion.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.confusion.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.confusion.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.confusion.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.confusion.setShowGrid(True)
        box = QWidget()
        v = QVBoxLayout(box)
        v.setContentsMargins(0, 0, 0, 0)
        caption = QLabel("Confusion matrix — rows: true class, columns: predicted class")
        caption.setProperty("role", "hint")
        v.addWidget(caption)
        v.addWidget(self.confusion)
        split.addWidget(box)
        self.per_class_model = PerClassModel(self)
        self.per_class = QTableView()
        self.per_class.setModel(self.per_class_model)
        self.per_class.verticalHeader().hide()
        self.per_class.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.per_class.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.per_class.setAlternatingRowColors(True)
        split.addWidget(self.per_class)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        self.epoch_table = EpochTable()
        self.pages = QStackedWidget()
        self.pages.addWidget(split)
        self.pages.addWidget(self.epoch_table)
        layout.addWidget(self.pages, 1)
        self.shown_epoch: int | None = None

    def show_epoch(self, ev: Any, best_epoch: int | None = None, final: bool = False) -> None:
        metrics = dict(ev.metrics)
        head = ("Best epoch" if final else "Epoch") + f" {ev.epoch}"
        if not final and best_epoch is not None:
            head += " (best so far)" if best_epoch == ev.epoch else f" (best so far: epoch {best_epoch})"
        self.summary.setText(f"<b>{head}</b> — {metric_line(metrics)}")
        if ev.confusion or ev.label_names:
            self.pages.setCurrentIndex(0)
            self.confusion_model.set_data(ev.confusion, ev.label_names)
            self.per_class_model.set_data(ev.per_class)
        else:  # a language model: every evaluation in a table
            self.pages.setCurrentIndex(1)
            self.epoch_table.show_epoch(ev, ev.epoch if final else best_epoch)
        self.shown_epoch = ev.epoch

    def clear(self) -> None:
        self.summary.setText("Validation results appear after the first epoch.")
        self.confusion_model.set_data([], [])
        self.per_class_model.set_data({})
        self.epoch_table.clear_rows()
        self.pages.setCurrentIndex(0)
        self.shown_epoch = None


class ScoreBars(QWidget):
    """Predicted classes with their scores as bars, best first."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setHorizontalSpacing(8)
        self._rows: list[tuple[QLabel, QProgressBar]] = []

    def show_scores(self, scores: dict[str, float], limit: int = 8) -> None:
        for label, bar in self._rows:
            label.deleteLater()
            bar.deleteLater()
        self._rows = []
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:limit]
        for i, (name, score) in enumerate(ranked):
            label = QLabel(f"<b>{name}</b>" if i == 0 else name)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(int(round(1000 * score)))
            bar.setFormat(f"{100 * score:.1f} %")
            bar.setFixedHeight(18)
            self.grid.addWidget(label, i, 0)
            self.grid.addWidget(bar, i, 1)
            self._rows.append((label, bar))
        self.grid.setColumnStretch(1, 1)


class DropLabel(QLabel):
    """Accepts a dropped image file."""

    dropped = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Drop an image here\nor choose one", parent)
        self.setAcceptDrops(True)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(160, 140)
        self.setFrameShape(QLabel.Shape.StyledPanel)
        self.setStyleSheet("QLabel { border: 1px dashed palette(mid); border-radius: 6px; }")

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].toLocalFile().lower().endswith(IMAGE_SUFFIXES):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        urls = event.mimeData().urls()
        if urls:
            self.dropped.emit(urls[0].toLocalFile())


class TryItBox(QWidget):
    """Type a text (or pick/drop an image) and see what the fine-tuned model predicts."""

    predictRequested = Signal(object)  # list[str]: texts or image paths

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.task = "text_classification"
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.inputs = QStackedWidget()
        text_page = QWidget()
        tv = QVBoxLayout(text_page)
        tv.setContentsMargins(0, 0, 0, 0)
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("Type a text to classify, e.g. a new support ticket…")
        self.text.setMaximumHeight(110)
        self.predict_button = QPushButton("Predict")
        self.predict_button.setDefault(True)
        self.predict_button.clicked.connect(self._predict_text)
        tv.addWidget(self.text)
        row = QHBoxLayout()
        row.addWidget(self.predict_button)
        row.addStretch(1)
        tv.addLayout(row)
        tv.addStretch(1)
        self.inputs.addWidget(text_page)
        image_page = QWidget()
        iv = QVBoxLayout(image_page)
        iv.setContentsMargins(0, 0, 0, 0)
        self.drop = DropLabel()
        self.drop.dropped.connect(self.predict_image)
        choose = QPushButton("Choose image…")
        choose.clicked.connect(self._choose_image)
        iv.addWidget(self.drop)
        iv.addWidget(choose)
        iv.addStretch(1)
        self.inputs.addWidget(image_page)
        layout.addWidget(self.inputs, 1)
        right = QVBoxLayout()
        self.status = QLabel("Available when a run has finished: it uses the run's best checkpoint.")
        self.status.setWordWrap(True)
        self.status.setProperty("role", "hint")
        self.bars = ScoreBars()
        right.addWidget(self.status)
        right.addWidget(self.bars)
        right.addStretch(1)
        layout.addLayout(right, 1)
        self.set_available(False)

    def set_task(self, task: str) -> None:
        self.task = task
        self.inputs.setCurrentIndex(1 if task == "image_classification" else 0)

    def set_available(self, available: bool, why: str = "") -> None:
        self.setEnabled(available)
        if why:
            self.status.setText(why)

    def _predict_text(self) -> None:
        text = self.text.toPlainText().strip()
        if not text:
            self.status.setText("Type a text first.")
            return
        self.status.setText("Predicting…")
        self.predictRequested.emit([text])

    def _choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose an image", "", "Images (" + " ".join(f"*{s}" for s in IMAGE_SUFFIXES) + ")"
        )
        if path:
            self.predict_image(path)

    def predict_image(self, path: str) -> None:
        if not Path(path).is_file():
            self.status.setText(f"Not a file: {path}")
            return
        pix = QPixmap(path)
        if not pix.isNull():
            self.drop.setPixmap(
                pix.scaled(150, 150, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
            )
        self.status.setText("Predicting…")
        self.predictRequested.emit([path])

    def show_result(self, inputs: list[str], scores: list[dict[str, float]]) -> None:
        if not scores:
            return
        best = max(scores[0].items(), key=lambda kv: kv[1])
        self.status.setText(f"Predicted class: <b>{best[0]}</b> ({100 * best[1]:.1f} %)")
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.bars.show_scores(scores[0])

    def show_error(self, message: str, hint: str) -> None:
        self.status.setText(message + (f" — {hint}" if hint else ""))
