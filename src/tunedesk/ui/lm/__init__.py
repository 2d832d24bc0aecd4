"""Language-model widgets (issue 7), self-contained for the panels to mount:

* ``SampleGenerationsView``: sample replies per evaluation (training panel, runs panel).
* ``ChatTryItWidget``: a chat box over a run's fine-tuned model.
* ``LoraSettingsWidget`` / ``ModuleLoraDialog``: LoRA presets and per-module adapters (layer tree).
* ``LmRunSettingsWidget``: sample prompts, reply length, gradient checkpointing (training panel).

No torch at import time: the engine is imported when a widget needs it.
"""

from tunedesk.ui.lm.chat_widget import ChatTryItWidget
from tunedesk.ui.lm.lora_settings import LmRunSettingsWidget, LoraSettingsWidget, ModuleLoraDialog
from tunedesk.ui.lm.samples_view import SampleGenerationsView, SampleTableModel

__all__ = [
    "ChatTryItWidget",
    "LmRunSettingsWidget",
    "LoraSettingsWidget",
    "ModuleLoraDialog",
    "SampleGenerationsView",
    "SampleTableModel",
]
