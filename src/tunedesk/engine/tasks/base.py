"""What every task plug-in provides, and the classification machinery the two classifiers share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from tunedesk.engine.config import RunConfig
from tunedesk.engine.models import LoadedModel


@dataclass
class PreparedData:
    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    collate: Callable[[list], dict[str, torch.Tensor]] | None
    label_names: list[str]
    name: str  # the data set's display name (file or folder, or version id)
    fingerprint: str  # content hash of the examples used
    summary: str  # what was read, kept and skipped
    warnings: list[str] = field(default_factory=list)
    train_labels: list[int] = field(default_factory=list)


class Task(Protocol):
    name: str
    primary_metric: str  # e.g. "val_accuracy" (higher is better) or "val_loss"
    higher_is_better: bool

    def load_examples(self, config: RunConfig) -> Any: ...

    def label_names(self, examples: Any) -> list[str]: ...

    def build_model(self, config: RunConfig, label_names: list[str], device: str = "cpu") -> LoadedModel: ...

    def prepare(self, config: RunConfig, loaded: LoadedModel, examples: Any) -> PreparedData: ...

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def loss(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def new_eval_state(self, num_labels: int, device: torch.device) -> EvalState: ...


def hash_examples(rows: Sequence[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for a, b in rows:
        h.update(a.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
        h.update(b.encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()[:16]


class EvalState:
    """Accumulates validation loss and a confusion matrix on the device; one host read at the end."""

    def __init__(self, num_labels: int, device: torch.device) -> None:
        self.k = num_labels
        self.confusion = torch.zeros(num_labels * num_labels, dtype=torch.long, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        preds = logits.argmax(dim=-1)
        self.confusion += torch.bincount(labels * self.k + preds, minlength=self.k * self.k)
        self.loss_sum += loss.detach().double() * labels.numel()
        self.count += labels.numel()

    def compute(self, label_names: list[str]) -> tuple[dict[str, float], list[list[int]], dict[str, dict[str, float]]]:
        cm = self.confusion.view(self.k, self.k).cpu()
        loss = float(self.loss_sum.cpu()) / max(self.count, 1)
        return classification_metrics(cm, label_names, loss)


def classification_metrics(
    cm: torch.Tensor, label_names: list[str], loss: float
) -> tuple[dict[str, float], list[list[int]], dict[str, dict[str, float]]]:
    """Accuracy, macro-F1 and per-class precision/recall/F1 from a confusion matrix (rows: truth)."""
    cm = cm.to(torch.float64)
    total = cm.sum().item()
    correct = cm.diag().sum().item()
    tp = cm.diag()
    predicted = cm.sum(0)
    actual = cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), torch.zeros_like(tp)
    )
    present = actual > 0
    macro_f1 = f1[present].mean().item() if present.any() else 0.0
    per_class = {
        name: {
            "precision": precision[i].item(),
            "recall": recall[i].item(),
            "f1": f1[i].item(),
            "support": int(actual[i].item()),
        }
        for i, name in enumerate(label_names)
    }
    metrics = {"val_loss": loss, "val_accuracy": correct / total if total else 0.0, "val_macro_f1": macro_f1}
    return metrics, cm.to(torch.long).tolist(), per_class


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {
        k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()
    }


MAX_LISTED_ISSUES = 20


def report_warnings(report: Any) -> list[str]:
    """The first data problems of a DataReport as warning lines (the rest counted)."""
    warnings = [str(i) for i in report.issues[:MAX_LISTED_ISSUES]]
    if len(report.issues) > MAX_LISTED_ISSUES:
        warnings.append(f"... and {len(report.issues) - MAX_LISTED_ISSUES} more data problems")
    return warnings


class ClassifierTask:
    """What text and image classification share: labels, split, loss, metrics."""

    name = ""
    primary_metric = "val_accuracy"
    higher_is_better = True

    def label_names(self, examples: Any) -> list[str]:
        from tunedesk.engine.data import check_labels

        return check_labels(examples.labels, examples.name)

    def split(self, config: RunConfig, examples: Any) -> tuple[list[int], list[int]]:
        """The stored split of a data set version, else a seeded stratified split."""
        if examples.split is not None:
            train_idx = [i for i, s in enumerate(examples.split) if s == "train"]
            val_idx = [i for i, s in enumerate(examples.split) if s in ("val", "validation", "test")]
            if not val_idx:
                from tunedesk.engine.errors import DataError

                raise DataError(
                    f"{examples.name} has no validation examples", "split the data set version before training"
                )
            return train_idx, val_idx
        from tunedesk.engine.data import stratified_split

        return stratified_split(examples.labels, config.data.val_fraction, config.seed)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.float(), batch["labels"])

    def new_eval_state(self, num_labels: int, device: torch.device) -> EvalState:
        return EvalState(num_labels, device)
