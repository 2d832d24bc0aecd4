"""A whole optimizer step as one CUDA graph, for a small trained part fed from cached features.

When a run trains only what comes after a cached frozen prefix (a head, or an image model's last stage
from cached activations), a step is a few small kernels and the host's work around them sets the pace:
each op costs more to launch (Python, the dispatcher, autograd) than to run. Capturing forward, loss,
backward, gradient clipping and the fused AdamW step once (``torch.cuda.graph``) and replaying it makes
the step one launch. What the loop still does per step: copy the batch into the graph's input buffers,
write the learning rates it holds on the device when the schedule changed them, replay.

Where it applies (``GraphedStep.reason_not`` says why not otherwise): CUDA; training batches from the
feature cache with a fixed shape (not texts of varying length); no gradient accumulation, no fp16 loss
scaling, one process; ``hparams.cuda_graph`` on. The first ``WARMUP`` steps run eagerly (they create the
optimizer's state and let cuBLAS and the allocator settle); a batch of another shape (an epoch's last,
shorter one) runs eagerly too, with the same optimizer.

The optimizer is the run's own (``capturable`` switched on before capture, which fused AdamW keeps on the
device anyway), so checkpoints and resume see nothing different: the learning rates in its parameter
groups stay plain numbers; the graph reads device copies of them, refreshed before a replay when the
schedule changed them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

log = logging.getLogger("tunedesk.graphed")

WARMUP = 3  # eager steps before the capture


class GraphedStep:
    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: list[torch.Tensor],
        forward_loss: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        max_grad_norm: float | None,
        autocast_dtype: torch.dtype | None,
        buffers: Sequence[torch.Tensor] = (),
        say: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.optimizer, self.params = optimizer, params
        self.buffers = list(buffers)
        self.forward_loss = forward_loss
        self.max_grad_norm = max_grad_norm
        self.autocast_dtype = autocast_dtype
        self.say = say
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict[str, torch.Tensor] = {}
        self.static_loss: torch.Tensor | None = None
        self.lr: list[torch.Tensor] = []
        self.lr_values: list[float] = []
        self.seen = 0
        self.disabled = False

    @staticmethod
    def reason_not(
        enabled: bool, device: torch.device, feed: Any, grad_accum: int, precision: str, distributed: bool
    ) -> str | None:
        """Why a run's steps cannot be one CUDA graph (None: they can)."""
        if not enabled:
            return "off (hparams.cuda_graph)"
        if device.type != "cuda":
            return "needs a CUDA GPU"
        split = getattr(feed, "split", None)
        if split is None or not getattr(feed, "train_cached", False):
            return "only for training from cached features"
        if split.variable_dim:
            return "texts of varying length change the shapes from step to step"
        if grad_accum != 1:
            return "not with gradient accumulation"
        if precision == "fp16":
            return "not with fp16 loss scaling (use bf16)"
        if distributed:
            return "not with several processes"
        return None

    # ---- one step -----------------------------------------------------------------------------------

    def step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Run a whole optimizer step on ``batch`` as the graph; None when this batch must go the eager
        way (warm-up, another shape, the graph switched off)."""
        if self.disabled:
            return None
        self.seen += 1
        if self.graph is None:
            if self.seen <= WARMUP:
                return None
            if not self._capture(batch):
                return None
        if not self._fits(batch):
            return None
        for k, v in self.static.items():
            v.copy_(batch[k], non_blocking=True)
        for i, group in enumerate(self.optimizer.param_groups):
            value = float(group["lr"])
            if value != self.lr_values[i]:
                self.lr[i].fill_(value)
                self.lr_values[i] = value
        assert self.graph is not None and self.static_loss is not None
        self.graph.replay()
        return self.static_loss

    def _fits(self, batch: dict[str, torch.Tensor]) -> bool:
        return batch.keys() == self.static.keys() and all(
            batch[k].shape == v.shape and batch[k].dtype == v.dtype for k, v in self.static.items()
        )

    def _body(self) -> torch.Tensor:
        with torch.autocast(
            "cuda", dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None, cache_enabled=False
        ):
            loss = self.forward_loss(self.static)
        loss.backward()
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
        self.optimizer.step()
        return loss.detach()

    def _warm_up_side_stream(self) -> None:
        """Forward and backward twice on a side stream before capturing (as torch's CUDA-graph recipe
        asks: the backward's worker thread sets up its cuBLAS handle and workspace for a new stream
        there, which it cannot do while a capture is under way). Nothing of it stays: the model's
        buffers (BatchNorm statistics), the random-number state and the gradients are put back."""
        buffers = [b for b in self.buffers if b.device.type == "cuda"]
        saved = [b.clone() for b in buffers]
        rng = torch.cuda.get_rng_state()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                    loss = self.forward_loss(self.static)
                loss.backward()
            for b, v in zip(buffers, saved):
                b.copy_(v)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.set_rng_state(rng)
        self.optimizer.zero_grad(set_to_none=True)  # the graph's backward writes the gradients, not adds

    def _capture(self, batch: dict[str, torch.Tensor]) -> bool:
        """Record the step on a copy of ``batch``; False (and eager from now on) if it cannot be recorded."""
        groups = self.optimizer.param_groups
        floats = [float(g["lr"]) for g in groups]
        flags = [g.get("capturable", False) for g in groups]
        device = self.params[0].device
        self.static = {
            k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor) and v.device.type == "cuda"
        }
        self.lr = [torch.tensor(v, dtype=torch.float32, device=device) for v in floats]
        self.lr_values = list(floats)
        graph = torch.cuda.CUDAGraph()
        try:
            self._warm_up_side_stream()
            for g, lr in zip(groups, self.lr):
                g["lr"], g["capturable"] = lr, True
            torch.cuda.synchronize()
            with torch.cuda.graph(graph):
                self.static_loss = self._body()
        except Exception as exc:
            log.info("CUDA graph capture failed", exc_info=True)
            self.disabled = True
            self.graph = None
            self.static = {}
            for g, flag in zip(groups, flags):
                g["capturable"] = flag
            self.say(f"one CUDA graph per step: not used, the step could not be recorded ({type(exc).__name__})")
            return False
        finally:
            for g, value in zip(groups, floats):
                g["lr"] = value
            self.optimizer.zero_grad(set_to_none=True)  # eager steps keep their own gradients
        self.graph = graph
        self.say(
            "one CUDA graph per step: the trained part's forward, backward and AdamW step are replayed as one launch"
        )
        return True
