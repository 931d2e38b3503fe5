"""Image folders too large for memory: decoded from disk on demand, batch by batch.

`LazyImages` stands in for the (N, C, H, W) uint8 tensor of an ImageSet: indexing it with
a tensor of indices (or a slice) decodes just those files. The trainer feeds it through a
DataLoader with worker processes, in the same order and with the same batch augmentation
as the in-memory path, so both give the same results.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnlab.data.images import MAX_PIXELS, open_image, to_array

MEMORY_FRACTION = 0.25  # folders larger than this share of RAM are streamed


def memory_budget() -> int:
    """Bytes an in-memory dataset may take: $CNNLAB_MEMORY_BUDGET, else a quarter of RAM."""
    if os.environ.get("CNNLAB_MEMORY_BUDGET"):
        return int(float(os.environ["CNNLAB_MEMORY_BUDGET"]))
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(total * MEMORY_FRACTION)


class LazyImages:
    """Behaves like a uint8 tensor (N, C, H, W) whose rows are decoded from files when read."""

    dtype = torch.uint8
    ndim = 4

    def __init__(self, files: list[Path], channels: int, size: tuple[int, int], pad: tuple[int, int] = (0, 0),
                 max_pixels: int = MAX_PIXELS):  # fmt: skip
        self.files, self.channels, self.size = files, channels, size
        self.pad, self.max_pixels = pad, max_pixels

    @property
    def shape(self) -> torch.Size:
        h, w = self.size
        return torch.Size(
            (len(self.files), self.channels, h + 2 * self.pad[0], w + 2 * self.pad[1])
        )

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> np.ndarray:
        a = to_array(
            open_image(self.files[i], max_pixels=self.max_pixels), self.channels, self.size
        )
        ph, pw = self.pad
        return np.pad(a, ((0, 0), (ph, ph), (pw, pw))) if ph or pw else a

    def __getitem__(self, index) -> torch.Tensor | LazyImages:
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        elif torch.is_tensor(index):
            index = index.tolist()
        if isinstance(index, int):
            return torch.from_numpy(self.load(index))
        return (
            torch.from_numpy(np.stack([self.load(i) for i in index]))
            if len(index)
            else torch.empty(0, *self.shape[1:], dtype=torch.uint8)
        )

    def select(self, index: torch.Tensor) -> LazyImages:
        """A lazy subset (what ImageSet.subset needs), without decoding anything."""
        return LazyImages(
            [self.files[i] for i in index.tolist()],
            self.channels,
            self.size,
            self.pad,
            self.max_pixels,
        )

    def padded(self, ph: int, pw: int) -> LazyImages:
        return LazyImages(self.files, self.channels, self.size, (ph, pw), self.max_pixels)

    def to(self, device) -> LazyImages:
        return self  # rows move to the device batch by batch


class Rows(Dataset):
    """Dataset view of LazyImages for a DataLoader: item i -> (uint8 (C, H, W), label)."""

    def __init__(self, images: LazyImages, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.images.load(i)), self.labels[i]
