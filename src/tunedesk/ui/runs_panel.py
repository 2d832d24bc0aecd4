"""Runs area: the panel lives in the ``tunedesk.ui.runs`` package; this name stays importable."""

from tunedesk.ui.runs import RunsPanel

__all__ = ["RunsPanel"]
