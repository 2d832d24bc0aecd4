"""Validation passes: one loader kept for the run, halved batches when the GPU runs out of memory."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from tunedesk.engine.tasks.base import Task

Metrics = tuple[dict[str, float], list[list[int]], dict[str, dict[str, float]]]


class Validator:
    """Evaluates the model on the validation split through the run's feed (cached features included)."""

    def __init__(
        self,
        task: Task,
        feed: Any,
        device: torch.device,
        label_names: list[str],
        batch_size: int,
        say: Callable[[str], None],
    ) -> None:
        self.task, self.feed, self.device, self.label_names = task, feed, device, label_names
        self.batch_size = max(batch_size, 32)
        self.say = say
        self._loader: Iterable[dict[str, Any]] | None = None

    def __call__(self, model: nn.Module, autocast_dtype: torch.dtype | None) -> Metrics:
        """Evaluate, halving the validation batch while it runs out of GPU memory."""
        while True:
            if self._loader is None:
                self._loader = self.feed.val_batches(self.batch_size)
            try:
                return self.evaluate(model, self._loader, autocast_dtype)
            except torch.OutOfMemoryError:
                if self.batch_size <= 1:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.batch_size //= 2
                self._loader = None
                self.say(f"out of GPU memory while validating: continuing with batches of {self.batch_size}")

    def evaluate(
        self, model: nn.Module, loader: Iterable[dict[str, Any]], autocast_dtype: torch.dtype | None
    ) -> Metrics:
        model.eval()
        state = self.task.new_eval_state(len(self.label_names), self.device)
        with torch.inference_mode():
            for batch in loader:
                batch = self.feed.to_device(batch)
                with torch.autocast(self.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    logits = self.feed.forward(model, batch)
                    loss = self.task.loss(logits, batch)
                state.update(logits, batch["labels"], loss)
        return state.compute(self.label_names)
