"""Convolution as image processing: classic 3x3 kernels applied to a picture."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError

KERNELS = {
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "box-blur": [[1 / 9] * 3] * 3,
    "gaussian-blur": [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "edge": [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
    "sobel-x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel-y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
}


def load_kernel(name_or_file: str) -> np.ndarray:
    """A named kernel, or a matrix from a text file (rows of numbers, spaces or commas)."""
    if name_or_file in KERNELS:
        return np.array(KERNELS[name_or_file], dtype=np.float64)
    path = Path(name_or_file)
    if not path.is_file():
        raise CnnlabError(
            f"--kernel {name_or_file!r}: not a kernel name ({', '.join(KERNELS)}) nor a file"
        )
    try:
        rows = [
            [float(v) for v in line.replace(",", " ").split()]
            for line in path.read_text().splitlines()
            if line.strip()
        ]
    except ValueError as e:
        raise CnnlabError(f"{path}: kernel file must hold rows of numbers ({e})") from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise CnnlabError(f"{path}: kernel rows must all have the same length")
    return np.array(rows, dtype=np.float64)


def convolve(
    image: np.ndarray, kernel: np.ndarray, stride: int = 1, padding: int | str = 0
) -> np.ndarray:
    """Apply one kernel to each channel of a (C, H, W) float image; returns (C, H', W').

    Like the CNN layers (and most image tools) this is cross-correlation: the kernel is not
    flipped, which is what the textbook worked examples compute.
    """
    k = torch.from_numpy(kernel)[None, None]
    x = torch.from_numpy(np.asarray(image, dtype=np.float64))[:, None]
    if padding == "same":
        padding = kernel.shape[0] // 2
    if kernel.shape[0] > x.shape[2] + 2 * padding or kernel.shape[1] > x.shape[3] + 2 * padding:
        raise CnnlabError(
            f"kernel {kernel.shape} is larger than the padded image {tuple(x.shape[2:])}"
        )
    return F.conv2d(x, k, stride=stride, padding=int(padding))[:, 0].numpy()


def format_matrix(a: np.ndarray, title: str) -> str:
    a = np.asarray(a)
    integral = np.allclose(a, np.round(a))
    cells = [[f"{v:.0f}" if integral else f"{v:.3g}" for v in row] for row in a]
    width = max(len(c) for row in cells for c in row)
    return "\n".join([title] + ["  " + " ".join(c.rjust(width) for c in row) for row in cells])


def save_result(result: np.ndarray, path: str | os.PathLike) -> Path:
    """Scale to 0..255 (clipping, as a viewer would) and save as an image."""
    from cnnlab.data.images import save_array

    save_array(np.clip(result, 0, 255).astype(np.uint8), path)
    return Path(path)
