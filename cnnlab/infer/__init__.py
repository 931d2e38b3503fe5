"""Turning stored uint8 images into model inputs, and running a model over many of them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError


class Normalize:
    """(uint8 or 0..1 float) -> (x - mean) / std per channel, with the training set's statistics;
    images (N, C, H, W) or sequences (N, C, L). A float32 dataset's values are taken as they
    are (its statistics were computed on them)."""

    def __init__(self, mean: list[float], std: list[float]):
        self.mean, self.std = list(mean), [max(s, 1e-6) for s in std]
        self._m = torch.tensor(self.mean).view(1, -1, 1, 1)
        self._s = torch.tensor(self.std).view(1, -1, 1, 1)

    def _per_channel(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.to(x.device).view(1, -1, *[1] * (x.ndim - 2))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255
        return (x - self._per_channel(self._m, x)) / self._per_channel(self._s, x)

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Model input -> pixels on the 0..1 scale."""
        return x * self._per_channel(self._s, x) + self._per_channel(self._m, x)


def plan_fit(have: tuple[int, int], want: tuple[int, int], channels: int) -> dict:
    """The recipe that brings images of size `have` to a model input of size `want`.

    A small gap is zero-padded, the way LeNet-5 read 28x28 MNIST digits at 32x32 (the digit
    keeps its size and a border of background appears); anything else is resized, so the
    picture fills the frame as it did for the images the model was designed for.
    """
    gaps = [w - h for h, w in zip(have, want, strict=True)]
    if all(0 <= g <= w // 4 and g % 2 == 0 for g, w in zip(gaps, want, strict=True)):
        return {"channels": channels, "size": list(have), "pad": [g // 2 for g in gaps]}
    return {"channels": channels, "size": list(want), "pad": [0, 0]}


def conform(images: torch.Tensor, recipe: dict, source: str) -> torch.Tensor:
    """Apply an input recipe: convert to its channel count and resize to its size where the
    images differ (with Pillow, exactly as image files are read), then zero-pad."""
    c, h, w = images.shape[1:]
    want = (recipe["channels"], *recipe["size"])
    if (c, h, w) != want:
        if hasattr(images, "padded"):  # a streamed folder is decoded by workers at its own size
            raise CnnlabError(
                f"{source}: streamed images are {c}x{h}x{w}, expected {'x'.join(map(str, want))}"
            )
        if images.dtype != torch.uint8:  # Pillow resizes pixels, not arbitrary values
            raise CnnlabError(
                f"{source}: float32 images of {c}x{h}x{w} cannot be resized or converted to "
                f"{'x'.join(map(str, want))}; give arrays of the model's input size"
            )
        images = convert_images(images, want[0], want[1:])
    ph, pw = recipe["pad"]
    if ph or pw:
        images = (
            images.padded(ph, pw) if hasattr(images, "padded") else F.pad(images, (pw, pw, ph, ph))
        )
    return images


def convert_images(images: torch.Tensor, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, C, H, W) to `channels` and `size`, image by image with Pillow, exactly as image
    files are read (gray to RGB repeats the plane; RGB to gray is Pillow's luminance)."""

    from cnnlab.data.images import to_array, to_pil

    arrays = images.numpy()
    if arrays.shape[1] not in (1, 3):
        raise CnnlabError(f"cannot convert images of {arrays.shape[1]} channels to {channels}")
    out = [to_array(to_pil(a), channels, size) for a in arrays]
    return torch.from_numpy(np.stack(out)) if out else images.new_empty((0, channels, *size))


def fit_images(
    images: torch.Tensor, input_shape: tuple[int, ...], source: str, recipe: dict | None = None
) -> torch.Tensor:
    """Bring images to a model's input (C, H, W): with a checkpoint's recorded recipe when there
    is one, else with `plan_fit`'s. Sequences (C, L) are never resized: they must fit."""
    if images.ndim == 3 or len(input_shape) == 2:
        if tuple(images.shape[1:]) != tuple(input_shape):
            raise CnnlabError(
                f"{source}: items of {'x'.join(map(str, images.shape[1:]))}, but the model "
                f"takes {'x'.join(map(str, input_shape))}"
            )
        return images
    if recipe is None:
        recipe = plan_fit(tuple(images.shape[2:]), tuple(input_shape[1:]), input_shape[0])
    return conform(images, recipe, source)


@torch.no_grad()
def logits(
    model: nn.Module, images: torch.Tensor, norm: Normalize, batch_size: int = 1000
) -> torch.Tensor:
    """Model outputs for uint8 images (N, C, H, W), computed in batches in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    try:
        parts = [
            model(norm(images[i : i + batch_size].to(device))).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0)


Normalise = Normalize  # the 0.1 spelling
