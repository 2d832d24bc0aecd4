"""Examples held as tensors, so a batch is one gather by index (on the device when the data fit there).

``TokenTensors``: tokenised texts padded once to the longest text, with their lengths; a batch is
cut to its own longest text (dynamic padding) from lengths kept on the host, so no step waits for
the device. ``ImageFiles``: image paths and labels; the feed decodes them once into a uint8 cache
(``data.decoded``) and crops, flips and normalises on the device.

Both are also ordinary map-style datasets (one example per index) for code that wants a DataLoader.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import torch


def batch_width(lengths: torch.Tensor, idx: list[int], multiple: int, width: int) -> int:
    """The padded length of a batch: its longest text rounded up to ``multiple``, at most ``width``."""
    longest = int(lengths[idx].max())
    return min(-(-longest // multiple) * multiple, width)


def unpadded(lengths: torch.Tensor, idx: list[int], width: int) -> bool:
    """Whether every text of the batch fills its ``width`` (long texts cut at max_length)."""
    return int(lengths[idx].min()) >= width


class TokenTensors(torch.utils.data.Dataset):
    def __init__(self, encodings: dict[str, list[list[int]]], labels: Sequence[int], pad_id: int = 0) -> None:
        lengths = np.fromiter((len(ids) for ids in encodings["input_ids"]), dtype=np.int64)
        self.lengths = torch.from_numpy(lengths)
        longest = int(lengths.max()) if len(lengths) else 1
        # where each row's tokens go in the padded array: one scatter of all tokens per key instead of a
        # copy per row (32,000 texts of ~100 tokens: 1.1 s -> about 0.2 s)
        filled = np.arange(longest) < lengths[:, None]
        self.tensors: dict[str, torch.Tensor] = {}
        for key, rows in encodings.items():
            fill = pad_id if key == "input_ids" else 0
            out = np.full((len(rows), longest), fill, dtype=np.int64)
            out[filled] = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
            self.tensors[key] = torch.from_numpy(out)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = int(self.lengths[i])
        item: dict[str, Any] = {k: v[i, :n].tolist() for k, v in self.tensors.items()}
        item["labels"] = int(self.labels[i])
        return item

    def batch(
        self, idx: list[int], stored: dict[str, torch.Tensor], index: torch.Tensor, multiple: int = 1
    ) -> dict[str, torch.Tensor]:
        """The examples ``idx`` from ``stored`` (these tensors, perhaps moved to the device), cut to the
        batch's longest text, rounded up to a ``multiple`` (within the stored width). ``index`` is ``idx``
        as a tensor on the stored tensors' device. The cut comes first, so the gather reads and writes only
        the batch's own width and its result is contiguous.

        A batch in which every text fills the width has no ``attention_mask``, as the model's own "no
        padding" case: transformers would otherwise check an all-ones mask on the device every forward
        (a host wait per step) before dropping it, and SDPA without a mask may run the flash kernel."""
        width = next(iter(self.tensors.values())).shape[1] if self.tensors else 1
        longest = batch_width(self.lengths, idx, multiple, width)
        keys = [k for k in self.tensors if k != "attention_mask" or not unpadded(self.lengths, idx, longest)]
        out = {k: stored[k][:, :longest].index_select(0, index) for k in keys}
        out["labels"] = stored["labels"].index_select(0, index)
        return out

    def stored(self) -> dict[str, torch.Tensor]:
        return {**self.tensors, "labels": self.labels}


class ImageFiles(torch.utils.data.Dataset):
    """Image files with labels. The training path decodes them once (``decoded_images``); one example at
    a time (``__getitem__``, the evaluation view) is for other callers such as the LR finder."""

    def __init__(
        self, paths: Sequence[str], labels: Sequence[int], size: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        self.paths = list(paths)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from tunedesk.engine.data.decoded import _decode_one, device_images, stored_size

        img = _decode_one(self.paths[i], stored_size(self.size))
        pixels = device_images(img.unsqueeze(0), self.size, self.mean, self.std)[0]
        return {"pixel_values": pixels, "labels": int(self.labels[i])}
