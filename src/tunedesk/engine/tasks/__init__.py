"""Task plug-ins: each knows how to load its data and model, batch, compute the loss and metrics.

``tasks.get(name)`` returns the task that runs a configuration's ``task``; ``tasks.register`` adds one.
The interface every task implements is ``tasks.base.Task``.
"""

from tunedesk.engine.tasks.registry import get, names, register

__all__ = ["get", "names", "register"]
