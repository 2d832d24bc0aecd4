"""The Train area: setup form, live plots, log, evaluation and "try it" (see panel.py)."""

from tunedesk.ui.training.panel import TrainingPanel

__all__ = ["TrainingPanel"]
