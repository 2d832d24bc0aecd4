"""The task registry: a run's ``task`` name -> its ``Task`` class.

Built-in tasks are registered below by import path: a task's module (and what it pulls in: transformers,
peft, torchvision) is imported when the task is first used. Adding a task is one new module in this
package (a ``Task`` subclass) and one ``register`` line here.
"""

from __future__ import annotations

import importlib

from tunedesk.engine.errors import ConfigError
from tunedesk.engine.tasks.base import Task

_REGISTRY: dict[str, type[Task] | str] = {}


def register(name: str, task: type[Task] | str) -> None:
    """Make ``task`` (a Task subclass, or ``"package.module:Class"``) the one that runs ``name``."""
    if not name or not isinstance(name, str):
        raise ValueError("a task needs a name")
    _REGISTRY[name] = task


def names() -> tuple[str, ...]:
    """The registered task names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Task:
    """A fresh instance of the task that runs ``name`` (tasks keep per-run state)."""
    target = _REGISTRY.get(name)
    if target is None:
        raise ConfigError("task", f"{name!r} is not a known task", f"use one of {', '.join(names())}")
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        if not (isinstance(target, type) and issubclass(target, Task)):
            raise TypeError(f"{_REGISTRY[name]} is not a Task subclass")
        _REGISTRY[name] = target
    return target()


register("text_classification", "tunedesk.engine.tasks.text_classification:TextClassification")
register("image_classification", "tunedesk.engine.tasks.image_classification:ImageClassification")
register("causal_lm", "tunedesk.engine.tasks.causal_lm:CausalLM")
