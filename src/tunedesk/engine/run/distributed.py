"""Data-parallel training under torchrun: one worker process per GPU (or CPU process with gloo).

Each worker initialises the process group from torchrun's environment, wraps the trainable model in
DDP and trains its shard of every global batch (``EpochBatches(rank=, world=)``). Rank 0 alone
creates and records the run, writes checkpoints and emits events; the others train silently. The
launcher and the workers' entry point are in ``tunedesk.engine.launch``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

# the launcher and the workers share these through the environment
STOP_FILE_ENV = "TUNEDESK_STOP_FILE"  # present: the run stops at the next logging step (Ctrl-C, the app's Stop)
RESULT_FILE_ENV = "TUNEDESK_RESULT_FILE"  # rank 0 writes the run's id, then its result, here


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_setting: str = "auto") -> DistContext:
        """Join the process group torchrun describes: nccl on CUDA, gloo on CPU."""
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and device_setting in ("auto", "cuda")
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
        return cls(rank, world, local, device)

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: torch.nn.Module, task: Any = None) -> torch.nn.Module:
        """``model`` in DDP. A language model's fused loss calls the decoder around the wrapper
        (its gradients would not be averaged), so the task trains through the model's own loss."""
        if getattr(task, "fused_loss", False):
            task.fused_loss = False
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def agree(
        self, loss_sum: torch.Tensor, micro: int, samples: int, nonfinite: torch.Tensor, stop: bool
    ) -> tuple[float, bool, bool, int]:
        """The logging window's mean loss over all ranks, whether any rank saw a non-finite loss or
        wants to stop, and the samples all ranks trained: one all-reduce, at the logging cadence only."""
        packed = torch.stack(
            [
                loss_sum.detach().float(),
                torch.tensor(float(micro), device=loss_sum.device),
                torch.tensor(float(samples), device=loss_sum.device),
                nonfinite.float(),
                torch.tensor(1.0 if stop else 0.0, device=loss_sum.device),
            ]
        )
        dist.all_reduce(packed)
        total_loss, total_micro, total_samples, bad, stops = packed.tolist()
        return total_loss / max(total_micro, 1), bad > 0, stops > 0, int(total_samples)

    @staticmethod
    def feed_config(config: Any) -> Any:
        """The feature cache trains a part of the model outside DDP's wrapper: off for workers."""
        import copy

        config = copy.deepcopy(config)
        config.hparams.feature_cache = False
        return config

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def stop_file_requested() -> bool:
    path = os.environ.get(STOP_FILE_ENV)
    return path is not None and Path(path).exists()
