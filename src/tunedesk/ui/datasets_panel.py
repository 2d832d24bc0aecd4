"""Datasets area: the panel lives in the ``tunedesk.ui.datasets`` package (import, label, clean, split,
version); this module keeps the name the main window loads."""

from tunedesk.ui.datasets.panel import DatasetsPanel

__all__ = ["DatasetsPanel"]
