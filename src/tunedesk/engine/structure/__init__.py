"""The layer tree's engine side: a model on the meta device, its modules as plain nodes, plan edits.

The layer tree shows what a run will train before any weight is loaded: ``build_meta_model`` (``meta``)
builds the same task model the run will build (same class, same new head) on the meta device.
``ModelTree`` (``tree``) turns it into plain Python nodes with parameter counts that follow a
``FreezeSpec``. The edit helpers (``edits``: ``toggle``, ``apply_glob``, ``set_preset``, ...) return new
specs: the UI never keeps check state of its own. This package only re-exports them.
"""

from tunedesk.engine.structure.edits import (
    MODIFIER_TOKENS,
    apply_glob,
    explain,
    glob_for,
    matching_nodes,
    modifier_state,
    prune,
    set_lr_multiplier,
    set_modifier,
    set_module_choice,
    set_preset,
    toggle,
    token_state,
)
from tunedesk.engine.structure.meta import CAUSAL, IMAGE, TEXT, build_meta_from_config, build_meta_model, task_of_model
from tunedesk.engine.structure.tree import ModelTree, ModuleNode, PlanSummary

__all__ = [
    "CAUSAL",
    "IMAGE",
    "MODIFIER_TOKENS",
    "TEXT",
    "ModelTree",
    "ModuleNode",
    "PlanSummary",
    "apply_glob",
    "build_meta_from_config",
    "build_meta_model",
    "explain",
    "glob_for",
    "matching_nodes",
    "modifier_state",
    "prune",
    "set_lr_multiplier",
    "set_modifier",
    "set_module_choice",
    "set_preset",
    "task_of_model",
    "toggle",
    "token_state",
]
