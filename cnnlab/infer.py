"""Turning stored uint8 images into model inputs, and running a model over many of them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError


class Normalise:
    """(uint8 or 0..1 float) -> (x - mean) / std per channel, with the training set's statistics."""

    def __init__(self, mean: list[float], std: list[float]):
        self.mean, self.std = list(mean), [max(s, 1e-6) for s in std]
        self._m = torch.tensor(self.mean).view(1, -1, 1, 1)
        self._s = torch.tensor(self.std).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255
        return (x - self._m.to(x.device)) / self._s.to(x.device)

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Model input -> pixels on the 0..1 scale."""
        return x * self._s.to(x.device) + self._m.to(x.device)


def fit_images(images: torch.Tensor, input_shape: tuple[int, ...], source: str) -> torch.Tensor:
    """Zero-pad smaller images to the model's input (28x28 MNIST -> LeNet's 32x32); refuse misfits."""
    c, h, w = images.shape[1:]
    want_c, want_h, want_w = input_shape
    if c != want_c:
        raise CnnlabError(
            f"{source}: images have {c} channel(s) but the model takes {want_c} "
            f"(rebuild it with --input {c},{want_h},{want_w}, or convert with --channels {want_c})"
        )
    if (h, w) == (want_h, want_w):
        return images
    if h > want_h or w > want_w or (want_h - h) % 2 or (want_w - w) % 2:
        raise CnnlabError(
            f"{source}: images are {h}x{w} but the model takes {want_h}x{want_w} "
            f"(rebuild it with --input {c},{h},{w}, or resize the data with --size {want_h}x{want_w})"
        )
    ph, pw = (want_h - h) // 2, (want_w - w) // 2
    return images.padded(ph, pw) if hasattr(images, "padded") else F.pad(images, (pw, pw, ph, ph))


@torch.no_grad()
def logits(
    model: nn.Module, images: torch.Tensor, norm: Normalise, batch_size: int = 1000
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
