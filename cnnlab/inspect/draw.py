"""Drawing the arrays of cnnlab.inspect as PNG figures (matplotlib, no display needed).

One look throughout: inputs in gray, signed weights in a diverging map centred on zero,
activations and saliency in 'magma', every panel titled, colour bars where values matter.
Grids of more than PAGE panels are split into numbered pages rather than one huge image.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PAGE = 64
SIGNED = "RdBu_r"
ACTIVATION = "magma"


def plain_text(text: str) -> str:
    """Text that matplotlib shows as written where no parse_math=False reaches (legend labels):
    a '$' would otherwise start mathtext."""
    return text.replace("$", r"\$")


def show(ax, a: np.ndarray, cmap: str, signed: bool = False, title: str = ""):
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 3:  # colour image or RGB kernel, scaled to 0..1
        lo, hi = a.min(), a.max()
        im = ax.imshow(((a - lo) / max(hi - lo, 1e-12)).transpose(1, 2, 0), interpolation="nearest")
    else:
        a = a[0] if a.ndim == 3 else a
        if signed:
            m = max(np.abs(a).max(), 1e-12)
            im = ax.imshow(a, cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
        else:
            im = ax.imshow(a, cmap=cmap, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7, parse_math=False)
    return im


def grid(
    panels: list[tuple[str, np.ndarray]],
    path: str | os.PathLike,
    title: str,
    cmap: str = "gray",
    signed: bool = False,
    colorbar: str | None = None,
    ncols: int | None = None,
) -> list[Path]:
    """Save panels as one or more PNG pages; returns the paths written."""
    path = Path(path)
    pages = [panels[i : i + PAGE] for i in range(0, len(panels), PAGE)] or [[]]
    written = []
    for n, page in enumerate(pages, 1):
        cols = ncols or min(8, max(1, len(page)))
        rows = max(1, math.ceil(len(page) / cols))
        fig, axes = plt.subplots(
            rows, cols, figsize=(1.3 * cols + 1.2, 1.4 * rows + 0.8), squeeze=False
        )
        im = None
        for ax in axes.flat:
            ax.axis("off")
        for ax, (label, a) in zip(axes.flat, page, strict=False):
            ax.axis("on")
            im = show(ax, a, cmap, signed, label)
        suffix = f" (page {n} of {len(pages)})" if len(pages) > 1 else ""
        fig.suptitle(title + suffix, fontsize=10, parse_math=False)
        if colorbar and im is not None:
            fig.colorbar(im, ax=axes, shrink=0.8, label=colorbar)
        out = path if len(pages) == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        fig.savefig(out, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(out)
    return written


def side_by_side(
    panels: list[tuple[str, np.ndarray, str]],
    path: str | os.PathLike,
    title: str,
    overlay: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """A row of (title, array, colour map) panels; overlay=(image, heat) adds a blended last
    panel."""
    n = len(panels) + (overlay is not None)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 0.6, 3.0), squeeze=False)
    for ax, (label, a, cmap) in zip(axes[0], panels, strict=False):
        im = show(ax, a, cmap, cmap == SIGNED, label)
        if cmap != "gray" and not (np.asarray(a).ndim == 3 and np.asarray(a).shape[0] == 3):
            fig.colorbar(im, ax=ax, shrink=0.75)
    if overlay is not None:
        image, heat = overlay
        ax = axes[0][-1]
        show(ax, image, "gray", title="overlay")
        im = ax.imshow(heat, cmap=ACTIVATION, alpha=0.55, interpolation="bilinear")
        fig.colorbar(im, ax=ax, shrink=0.75)
    fig.suptitle(title, fontsize=10, parse_math=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def curves(history: list[dict], path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch, training and validation."""
    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    b.plot(epochs, [100 * r["train_acc"] for r in history], "o-", label="train")
    if history and "val_loss" in history[0]:
        a.plot(epochs, [r["val_loss"] for r in history], "s-", label="validation")
        b.plot(epochs, [100 * r["val_acc"] for r in history], "s-", label="validation")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
