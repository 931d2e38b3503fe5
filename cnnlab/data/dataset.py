"""The one in-memory form of every dataset: uint8 or float32 images (N, C, H, W) or sequences
(N, C, L), int64 labels, class names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cnnlab.errors import CnnlabError

VALUE_TYPES = (torch.uint8, torch.float32)


@dataclass
class ImageSet:
    """Images (N, C, H, W) or sequences (N, C, L): uint8 (pixels, read on the 0..1 scale) or
    float32 (values as they are, from arrays); int64 labels; class names."""

    images: torch.Tensor  # uint8 or float32, (N, C, H, W) or (N, C, L)
    labels: torch.Tensor  # int64, (N,)
    classes: list[str]
    source: str = ""
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype not in VALUE_TYPES or self.images.ndim not in (3, 4):
            raise CnnlabError(
                f"{self.source}: images must be uint8 or float32 (N, C, H, W) or (N, C, L), "
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
    def shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image, or (C, L) of one sequence."""
        return tuple(self.images.shape[1:])

    @property
    def sequences(self) -> bool:
        return self.images.ndim == 3

    @property
    def dtype(self) -> str:
        """'uint8' or 'float32': what a model trained on this set expects its inputs in."""
        return str(self.images.dtype).removeprefix("torch.")

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
        """Per-channel pixel mean and std on the 0..1 scale, exact: from histograms of the uint8
        values. Float values: their own mean and std, in float64 (two passes)."""
        if self.images.dtype == torch.float32:
            return _float_stats(self.images)
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


def _float_stats(values: torch.Tensor) -> tuple[list[float], list[float]]:
    dims = [0, *range(2, values.ndim)]
    n = values.numel() // values.shape[1]
    total = torch.zeros(values.shape[1], dtype=torch.float64)
    for start in range(0, len(values), 8192):
        total += values[start : start + 8192].double().sum(dims)
    mean = total / n
    shape = (1, -1) + (1,) * (values.ndim - 2)
    squares = torch.zeros_like(total)
    for start in range(0, len(values), 8192):
        squares += ((values[start : start + 8192].double() - mean.view(shape)) ** 2).sum(dims)
    return mean.tolist(), (squares / n).sqrt().tolist()


MAX_CLASSES = 100_000  # far above any classification set; a label past it is corrupt data


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
    if len(images) == 0:
        raise CnnlabError(f"{source}: holds no images")
    if 0 in images.shape:
        raise CnnlabError(f"{source}: images of shape {images.shape[1:]} hold no pixels")
    labels = _class_indices(labels, source)
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1)]
    if len(classes) > MAX_CLASSES:
        raise CnnlabError(f"{source}: {len(classes)} classes, more than the cap of {MAX_CLASSES}")
    return ImageSet(
        torch.from_numpy(np.ascontiguousarray(_pixels(images, source))),
        torch.from_numpy(labels),
        classes,
        source,
    )


def _first(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def _pixels(images: np.ndarray, source: str) -> np.ndarray:
    """uint8 pixels; other dtypes must hold finite values in 0..255 (rounded)."""
    if images.dtype == np.uint8:
        return images
    flat = images.reshape(len(images), -1)
    if images.dtype.kind == "f":
        finite = np.isfinite(flat).all(axis=1)
        if not finite.all():
            raise CnnlabError(
                f"{source}: image {_first(~finite)} holds a NaN or infinite pixel value"
            )
    outside = ((flat < 0) | (flat > 255)).any(axis=1)
    if outside.any():
        i = _first(outside)
        raise CnnlabError(
            f"{source}: pixel values must lie in 0..255 (dtype {images.dtype}); image {i} "
            f"holds {flat[i].min()}..{flat[i].max()}"
        )
    return np.rint(images).astype(np.uint8)


def _class_indices(labels: np.ndarray, source: str) -> np.ndarray:
    """int64 labels, refusing what is not a class index: fractions, NaN, negatives, huge values."""
    if labels.dtype.kind not in "uif":
        raise CnnlabError(f"{source}: labels of dtype {labels.dtype} are not class indices")
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            i = _first(bad)
            raise CnnlabError(f"{source}: label {labels[i]} (item {i}) is not a whole number")
    if len(labels) and labels.min() < 0:
        i = _first(labels < 0)
        raise CnnlabError(f"{source}: label {labels[i]} (item {i}) is negative")
    if len(labels) and labels.max() >= MAX_CLASSES:
        i = _first(labels >= MAX_CLASSES)
        raise CnnlabError(
            f"{source}: label {labels[i]} (item {i}) is past the cap of {MAX_CLASSES} classes"
        )
    return labels.astype(np.int64)
