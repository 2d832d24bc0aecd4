"""The Train area lives in the ``tunedesk.ui.training`` package; this name stays for the main window."""

from tunedesk.ui.training.panel import TrainingPanel

__all__ = ["TrainingPanel"]
