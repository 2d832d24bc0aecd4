"""Layers area: the selected model's module tree with freeze checkboxes, presets and a live summary.

``LayerTreePanel(state)`` is the window's panel; ``FreezeTreeWidget(read_only=...)`` is the tree on its
own (the runs panel shows a past run's freeze map with it: ``set_model(loaded_or_tree, spec)``,
``spec()``, ``specChanged(FreezeSpec)``). Importing this package does not import torch.
"""

from tunedesk.ui.layer_tree.item_model import FreezeTreeModel
from tunedesk.ui.layer_tree.panel import LayerTreePanel
from tunedesk.ui.layer_tree.tree import FreezeTreeWidget

__all__ = ["FreezeTreeModel", "FreezeTreeWidget", "LayerTreePanel"]
