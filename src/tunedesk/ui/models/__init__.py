"""The model browser's parts: table model and filter, background scanner, details pane.

``tunedesk.ui.models_panel.ModelsPanel`` assembles them. Nothing here imports torch or
transformers at import time (the window must show before they load).
"""

from tunedesk.ui.app import guard_signal_refcount_bug

guard_signal_refcount_bug()  # the scan emits many signals: PySide6 6.12 would abort the app without it
