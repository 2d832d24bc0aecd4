"""A recorded run's model rebuilt on the meta device: its structure only, no weights, no memory.

The runs views use it to show a past run's plan in the layer tree and to compare freeze maps over
every parameter of the model (not only the ones some run trained). Imports torch: call it from a
worker thread in the UI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tunedesk.engine import tasks
from tunedesk.engine.config import RunConfig
from tunedesk.engine.models import LoadedModel
from tunedesk.engine.store.history import run_config
from tunedesk.engine.store.resolved import resolved


def meta_model(run: Mapping[str, Any]) -> LoadedModel | None:
    """The run's model built on the meta device with the head paths the run recorded; None when it
    cannot be built any more (files moved)."""
    try:
        config = RunConfig.from_dict(run_config(dict(run)))
        res = resolved(run)
        labels = res.label_names or ["a", "b"]
        loaded = tasks.get(config.task).build_model(config, list(labels), device="meta")
        if res.head_paths:
            loaded.head_paths = list(res.head_paths)
        return loaded
    except Exception:  # noqa: BLE001 - only makes views finer; the recorded names still work
        return None


def parameter_layout(run: Mapping[str, Any]) -> tuple[list[str], dict[str, int]] | None:
    """Every parameter name and size of the run's model; None when the model cannot be built any more."""
    loaded = meta_model(run)
    if loaded is None:
        return None
    names, sizes = [], {}
    for name, p in loaded.model.named_parameters():
        names.append(name)
        sizes[name] = int(p.numel())
    return names, sizes
