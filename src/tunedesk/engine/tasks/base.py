"""The task interface (``Task``), the data a task prepares, and what the two classifiers share."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from tunedesk.engine import freezing
from tunedesk.engine.config import RunConfig
from tunedesk.engine.datasets.versions import VersionExamples, load_version_examples
from tunedesk.engine.errors import DataError
from tunedesk.engine.files import META_FILE, MODEL_FILE
from tunedesk.engine.freezing import ResolvedPlan
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


class Task:
    """What a task plug-in is: the runner and the trainer call only what is declared here.

    A task overrides the six hooks that raise ``NotImplementedError`` and may override the others,
    whose defaults suit a classifier that trains its whole model (or the plan's share of it). Register
    a new task with one line in ``tasks/registry.py``.
    """

    name: ClassVar[str] = ""
    primary_metric: ClassVar[str] = "val_loss"  # the metric that picks the best checkpoint
    higher_is_better: ClassVar[bool] = False
    # How the run's summary explains the higher learning rate of parameters that start from random weights.
    new_params_note: ClassVar[str] = "the new head trains at {lr:g} because it starts from random weights"
    # Set by the runner before load_examples/prepare: long steps (tokenising millions of texts) say how far.
    progress: Callable[[str], None] | None = None
    channels_last: ClassVar[bool] = False  # image batches (``pixel_values``) in channels-last memory on CUDA

    # ---- required --------------------------------------------------------------------------------

    def load_examples(self, config: RunConfig) -> Any:
        """Read the configured data (a file, a folder or a stored version); raise DataError with a hint."""
        raise NotImplementedError

    def build_model(self, config: RunConfig, label_names: list[str], device: str = "cpu") -> LoadedModel:
        """The model to train (``device="meta"``: structure only, no weights, for views)."""
        raise NotImplementedError

    def prepare(self, config: RunConfig, loaded: LoadedModel, examples: Any) -> PreparedData:
        """Split and encode the examples into training and validation data sets."""
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        """One forward pass; what it returns goes to ``loss`` and to the evaluation state."""
        raise NotImplementedError

    def loss(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def new_eval_state(self, num_labels: int, device: torch.device) -> EvalAccumulator:
        """Accumulates one validation pass on the device (see ``EvalAccumulator``)."""
        raise NotImplementedError

    # ---- optional, with defaults -----------------------------------------------------------------

    def label_names(self, examples: Any) -> list[str]:
        """The classes a classifier head predicts; none for tasks without labels."""
        return []

    @property
    def chat(self) -> bool:
        """Trained on conversations: prompts go through the chat template (recorded with the run)."""
        return False

    def adapt_plan(self, config: RunConfig, loaded: LoadedModel, plan: ResolvedPlan) -> ResolvedPlan:
        """Change the model and its freeze plan after the plan is resolved (e.g. wrap layers in adapters)."""
        return plan

    def describe_plan(self, config: RunConfig, plan: ResolvedPlan) -> str:
        """The plan in words for the run's summary."""
        return freezing.describe(config.freeze, plan)

    def generate_samples(
        self, model: nn.Module, loaded: LoadedModel, config: RunConfig, device: torch.device
    ) -> list[tuple[str, str]]:
        """(prompt, output) pairs shown at each evaluation, so a change can be followed; none by default."""
        return []

    def best_files(
        self, model: nn.Module, loaded: LoadedModel, label_names: list[str], metrics: dict[str, float]
    ) -> list[tuple[str, Callable[[Path], None]]]:
        """The best checkpoint's files, each a (name, writer of that path) pair: by default the whole model
        plus what rebuilds it. The checkpoint writer (run/checkpoint.py) writes them into a folder aside
        and swaps it in as one unit."""
        from safetensors.torch import save_model

        meta = {
            "architecture": loaded.architecture,
            "kind": loaded.kind,
            "source_path": loaded.path,
            "label_names": list(label_names),
            "head_paths": loaded.head_paths,
            "metrics": metrics,
        }
        return [
            (MODEL_FILE, lambda p: save_model(model, str(p))),
            (META_FILE, lambda p: p.write_text(json.dumps(meta, indent=2), encoding="utf-8")),
        ]


class EvalAccumulator(Protocol):
    """A validation pass: ``update`` per batch (on the device, no host sync), ``compute`` once at the end
    returning (metrics, confusion matrix, per-class metrics)."""

    def update(self, output: Any, labels: torch.Tensor, loss: torch.Tensor) -> None: ...

    def compute(
        self, label_names: list[str]
    ) -> tuple[dict[str, float], list[list[int]], dict[str, dict[str, float]]]: ...


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


def labelled_version(config: RunConfig, kind: str) -> VersionExamples:
    """The usable items of the configured text or image data set version, with its stored split (a
    version saved before any split has none: ``data.val_fraction`` and the seed split it), first
    ``data.max_items`` only. ``data.path`` may name the TuneDesk home or database holding it."""
    d = config.data
    ex = load_version_examples(d.dataset_version or "", kind, d.path or None)
    if d.max_items is not None and len(ex.items) > d.max_items:
        ex.warnings.append(f"data.max_items: using the first {d.max_items} of {len(ex.items)} items")
        ex.items, ex.labels = ex.items[: d.max_items], ex.labels[: d.max_items]
        if ex.split is not None:
            ex.split = ex.split[: d.max_items]
    return ex


def report_warnings(report: Any) -> list[str]:
    """The first data problems of a DataReport as warning lines (the rest counted)."""
    warnings = [str(i) for i in report.issues[:MAX_LISTED_ISSUES]]
    if len(report.issues) > MAX_LISTED_ISSUES:
        warnings.append(f"... and {len(report.issues) - MAX_LISTED_ISSUES} more data problems")
    return warnings


class ClassifierTask(Task):
    """What text and image classification share: labels, split, loss, metrics, stored versions."""

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
