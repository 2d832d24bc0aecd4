"""The model browser's parts: table model and filter, background scanner, details pane.

``tunedesk.ui.models.panel.ModelsPanel`` assembles them. Nothing here imports torch or
transformers at import time (the window must show before they load).
"""
