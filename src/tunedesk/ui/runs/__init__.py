"""The Runs area: history table, run detail, comparison, export. ``RunsPanel`` is the panel class.

Nothing here imports torch, transformers or pyqtgraph at import time: the panel opens on a history of
10,000 runs in well under the window's start-up budget, and plots load when first shown.
"""

from tunedesk.ui.runs.panel import RunsPanel

__all__ = ["RunsPanel"]
