"""The one in-memory form of every dataset: uint8 images (N, C, H, W), int64 labels, class names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cnnlab.errors import CnnlabError


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)
    classes: list[str]
    source: str = ""
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise CnnlabError(
                f"{self.source}: images must be uint8 (N, C, H, W), "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (len(self.images),):
            raise CnnlabError(
                f"{self.source}: {len(self.images)} images but labels of shape "
                f"{tuple(self.labels.shape)}"
            )
        self.labels = self.labels.to(torch.int64)
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise CnnlabError(
                f"{self.source}: labels span {int(self.labels.min())}..{int(self.labels.max())} "
                f"but there are {len(self.classes)} classes"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def streamed(self) -> bool:
        """True when images are decoded from disk on demand (a folder too large for memory)."""
        return not torch.is_tensor(self.images)

    def subset(self, index: torch.Tensor) -> ImageSet:
        images = self.images.select(index) if self.streamed else self.images[index]
        return ImageSet(images, self.labels[index], self.classes, self.source)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()

    def split(self, val_fraction: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """Seeded, stratified split: each class gives the same fraction to validation."""
        if not 0 < val_fraction < 1:
            raise CnnlabError(f"validation fraction must be between 0 and 1, got {val_fraction}")
        gen = torch.Generator().manual_seed(seed)
        val_parts, train_parts = [], []
        for c in range(len(self.classes)):
            idx = torch.nonzero(self.labels == c).flatten()
            idx = idx[torch.randperm(len(idx), generator=gen)]
            n_val = round(len(idx) * val_fraction)
            val_parts.append(idx[:n_val])
            train_parts.append(idx[n_val:])
        train_idx = torch.cat(train_parts).sort().values
        val_idx = torch.cat(val_parts).sort().values
        return self.subset(train_idx), self.subset(val_idx)

    def stats(self) -> tuple[list[float], list[float]]:
        """Per-channel pixel mean and std on the 0..1 scale, exact: from histograms of the uint8 values."""
        c = self.shape[0]
        counts = torch.zeros(c, 256, dtype=torch.float64)
        images, count = self.images, len(self)
        if self.streamed and count > 5000:
            # a seeded sample: reading every file twice costs too much
            pick = torch.randperm(count, generator=torch.Generator().manual_seed(0))[:5000]
            images, count = images.select(pick.sort().values), 5000
        for start in range(0, count, 8192):
            chunk = images[start : start + 8192]
            for channel in range(c):
                counts[channel] += torch.bincount(chunk[:, channel].reshape(-1), minlength=256)
        values = torch.arange(256, dtype=torch.float64) / 255.0
        n = counts.sum(1).clamp_min(1)
        mean = (counts * values).sum(1) / n
        std = ((counts * values**2).sum(1) / n - mean * mean).clamp_min(0).sqrt()
        return mean.tolist(), std.tolist()


def from_numpy(
    images: np.ndarray, labels: np.ndarray, classes: list[str] | None, source: str
) -> ImageSet:
    """Build an ImageSet from arrays of shape (N, H, W), (N, C, H, W) or (N, H, W, C)."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    elif images.ndim != 4:
        raise CnnlabError(f"{source}: expected images of rank 3 or 4, got shape {images.shape}")
    if images.dtype != np.uint8:
        if images.min() < 0 or images.max() > 255:
            raise CnnlabError(f"{source}: pixel values must lie in 0..255 (dtype {images.dtype})")
        images = np.rint(images).astype(np.uint8)
    labels = labels.astype(np.int64)
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    return ImageSet(
        torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), classes, source
    )
