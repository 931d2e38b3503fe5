"""Preparing an arbitrary image the way a model's training data was made.

For MNIST models this repeats how MNIST itself was built: digits are white on black, the
ink is scaled to fit a 20x20 box keeping its aspect ratio, and the box is placed in a 28x28
field so that the centre of mass of the ink sits at the centre.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from cnnlab.data.images import to_array


def mnist_digit(img: Image.Image, size: int = 28, box: int = 20) -> np.ndarray:
    """Any photo or drawing of one digit -> uint8 (1, 28, 28), white ink on black."""
    gray = to_array(img, 1)[0].astype(np.float64)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 127:  # dark ink on light paper: invert to MNIST's white on black
        gray, border = 255 - gray, 255 - border
    gray = np.clip(gray - np.median(border), 0, 255)  # paper is rarely a perfect white
    if gray.max() <= 0:
        return np.zeros((1, size, size), np.uint8)
    ink = gray > 0.15 * gray.max()
    rows, cols = np.nonzero(ink)
    crop = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    patch = np.asarray(
        Image.fromarray(crop.astype(np.uint8)).resize((new_w, new_h), Image.Resampling.LANCZOS),
        np.float64,
    )
    patch = patch * (255 / max(patch.max(), 1))
    total = patch.sum()
    ys, xs = np.indices(patch.shape)
    cy, cx = (ys * patch).sum() / total, (xs * patch).sum() / total
    top, left = int(round(size / 2 - cy - 0.5)), int(round(size / 2 - cx - 0.5))
    top, left = min(max(top, 0), size - new_h), min(max(left, 0), size - new_w)
    out = np.zeros((size, size))
    out[top : top + new_h, left : left + new_w] = patch
    return np.clip(out, 0, 255).astype(np.uint8)[None]


def for_model(img: Image.Image, preprocess: str, input_shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (C, H, W) ready for a model with the given stored preprocessing and input shape."""
    c, h, w = input_shape
    if preprocess == "mnist-digit":
        digit = mnist_digit(img)
        pad_h, pad_w = (h - 28) // 2, (w - 28) // 2
        if pad_h >= 0 and pad_w >= 0:
            return np.pad(digit, ((0, 0), (pad_h, h - 28 - pad_h), (pad_w, w - 28 - pad_w)))
    return to_array(img, c, (h, w))
