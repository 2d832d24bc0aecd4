"""Task plug-ins: each knows how to load its data and model, batch, compute the loss and metrics."""

from __future__ import annotations

from tunedesk.engine.errors import ConfigError


def get_task(name: str):
    if name == "text_classification":
        from tunedesk.engine.tasks.text_classification import TextClassification

        return TextClassification()
    if name == "image_classification":
        from tunedesk.engine.tasks.image_classification import ImageClassification

        return ImageClassification()
    if name == "causal_lm":
        try:
            from tunedesk.engine.tasks.causal_lm import CausalLM
        except ImportError as exc:
            raise ConfigError("task", "causal_lm is not available in this build", "update TuneDesk") from exc
        return CausalLM()
    raise ConfigError("task", f"unknown task {name!r}", "use text_classification or image_classification")
