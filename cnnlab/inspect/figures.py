"""One function per `cnnlab inspect` picture: compute the arrays, then draw them to PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cnnlab.checkpoint import Checkpoint
from cnnlab.data import load_data
from cnnlab.data.dataset import ImageSet
from cnnlab.errors import CnnlabError
from cnnlab.infer import fit_images, logits
from cnnlab.infer.evaluate import load_for, normalizer, prepare_image, top_k
from cnnlab.inspect import draw
from cnnlab.inspect.attribute import (
    CONV_STAGES,
    SIGNED,
    applicable,
    attribute,
    check_gradcam_layer,
    check_method,
)
from cnnlab.inspect.deconv import deconv
from cnnlab.inspect.maps import conv_layers, feature_maps, kernels
from cnnlab.inspect.neighbors import neighbors
from cnnlab.inspect.optimize import invert, maximize
from cnnlab.inspect.patches import sample
from cnnlab.inspect.saliency import saliency


def load_input(
    ckpt: Checkpoint, image: str | os.PathLike | np.ndarray
) -> tuple[np.ndarray, torch.Tensor]:
    """An image file prepared as in `predict` (or an already prepared uint8 (C, H, W) array),
    and the normalised batch of one."""
    prepared = image if isinstance(image, np.ndarray) else prepare_image(ckpt, image)
    return prepared, normalizer(ckpt)(torch.from_numpy(prepared)[None])


def to_pixels(ckpt: Checkpoint, x: torch.Tensor) -> np.ndarray:
    """Undo normalisation: a model input (1, C, H, W) -> float pixels (C, H, W) on 0..1."""
    return normalizer(ckpt).invert(x)[0].clamp(0, 1).numpy()


def kernels_figure(ckpt: Checkpoint, out: Path, layer: str | None = None) -> list[Path]:
    model = ckpt.model
    convs = conv_layers(model)
    if not convs:
        raise CnnlabError(f"{model.spec['name']} has no convolution layers to draw")
    layer = layer or convs[0]
    w = kernels(model, layer)
    if w.shape[1] == 3:  # first layer of a colour model: each kernel as an RGB picture
        panels = [(f"{layer}[{i}]", k) for i, k in enumerate(w)]
        return draw.grid(panels, out, f"{layer}: {len(w)} kernels {w.shape[2]}x{w.shape[3]} (RGB)")
    if w.shape[1] == 1:
        panels = [(f"{layer}[{i}]", k[0]) for i, k in enumerate(w)]
    else:  # deeper layers: one panel per (filter, input channel)
        panels = [
            (f"{layer}[{i}] in {c}", k[c]) for i, k in enumerate(w) for c in range(k.shape[0])
        ]
    title = (
        f"{layer}: {w.shape[0]} kernels of {w.shape[1]}x{w.shape[2]}x{w.shape[3]} "
        "(weights, red > 0 > blue)"
    )
    return draw.grid(
        panels,
        out,
        title,
        cmap=draw.SIGNED,
        signed=True,
        colorbar="weight",
        ncols=w.shape[1] if 1 < w.shape[1] <= 8 else None,
    )


def activations_figure(ckpt: Checkpoint, image: str, out: Path) -> list[Path]:
    prepared, x = load_input(ckpt, image)
    maps = feature_maps(ckpt.model, x)
    pred = top_k(ckpt, prepared, 1)[0]
    panels = [
        (f"input -> {pred['class']} ({100 * pred['probability']:.0f}%)", prepared.astype(float))
    ]
    for name, fmaps in maps.items():
        kind = ckpt.model.kinds[name]
        if kind in (
            "conv",
            "gabor",
            "pool",
            "residual",
            "inception",
            "dense_block",
            "transition",
            "channel_pool",
        ):
            panels += [(f"{name}[{c}]", m) for c, m in enumerate(fmaps)]
    name = "a test image" if isinstance(image, np.ndarray) else Path(image).name
    title = f"feature maps of {ckpt.model.spec['name']} for {name}"
    return draw.grid(panels, out, title, cmap=draw.ACTIVATION)


def saliency_figure(ckpt: Checkpoint, image: str, out: Path, cls: int | None, smooth: int) -> Path:
    prepared, x = load_input(ckpt, image)
    check_class(ckpt, cls)
    sal, used = saliency(ckpt.model, x, cls, smooth)
    method = f"SmoothGrad x{smooth}" if smooth else "plain"
    return draw.side_by_side(
        [
            ("input", prepared.astype(float), "gray"),
            (f"|d score / d pixel|, {method}", sal, draw.ACTIVATION),
        ],
        out,
        f"saliency of class {ckpt.classes[used]}",
        overlay=(prepared.astype(float), sal),
    )


def deconv_figure(ckpt: Checkpoint, image: str, out: Path, layer: str, channel: int | None) -> Path:
    prepared, x = load_input(ckpt, image)
    recon, channel, pos = deconv(ckpt.model, x, layer, channel)
    r = recon[0].numpy()
    return draw.side_by_side(
        [
            ("input", prepared.astype(float), "gray"),
            (
                f"{layer}[{channel}] at {pos} projected down",
                r if r.shape[0] == 3 else r[0],
                draw.SIGNED,
            ),
        ],
        out,
        f"deconvnet reconstruction of the strongest activation of {layer} channel {channel}",
    )


def maximize_figure(
    ckpt: Checkpoint,
    out: Path,
    layer: str | None,
    channel: int | None,
    cls: int | None,
    steps: int,
    seed: int,
) -> Path:
    x = maximize(ckpt.model, layer, channel, cls, steps=steps, seed=seed)
    what = f"class {ckpt.classes[cls]}" if cls is not None else f"{layer} channel {channel}"
    return draw.side_by_side(
        [(what, to_pixels(ckpt, x), "gray")],
        out,
        f"activation maximisation: input that most excites {what} ({steps} steps, seed {seed})",
    )


def invert_figure(
    ckpt: Checkpoint, image: str, out: Path, layer: str, steps: int, seed: int
) -> Path:
    prepared, x = load_input(ckpt, image)
    guess, err = invert(ckpt.model, x, layer, steps=steps, seed=seed)
    return draw.side_by_side(
        [
            ("input", prepared.astype(float), "gray"),
            (f"from {layer} features (error {err:.3f})", to_pixels(ckpt, guess), "gray"),
        ],
        out,
        f"code inversion from layer {layer}",
    )


def neighbors_figure(ckpt: Checkpoint, image: str, data: str, out: Path, k: int) -> Path:
    prepared, _ = load_input(ckpt, image)
    bank = load_data(data, "train")
    images = fit_images(bank.images, tuple(ckpt.meta["input_shape"]), bank.source)
    found = neighbors(ckpt.model, torch.from_numpy(prepared), images, normalizer(ckpt), k)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, k + 1, figsize=(1.4 * (k + 1), 3.4), squeeze=False)
    for row, (space, (idx, dist)) in enumerate(found.items()):
        draw.show(axes[row][0], prepared.astype(float), "gray", title="query")
        axes[row][0].set_ylabel(f"{space} space", fontsize=8)
        for j, (i, d) in enumerate(zip(idx.tolist(), dist.tolist(), strict=True), 1):
            draw.show(
                axes[row][j],
                images[i].numpy().astype(float),
                "gray",
                title=f"{bank.classes[int(bank.labels[i])]} d={d:.1f}",
            )
    fig.suptitle(
        f"{k} nearest training images: penultimate features (top) vs pixels (bottom)", fontsize=10
    )
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(out)


# ---------------------------------------------------------------- attribution
def check_class(ckpt: Checkpoint, cls: int | None) -> None:
    if cls is not None and not 0 <= cls < len(ckpt.classes):
        raise CnnlabError(
            f"--class {cls} is out of range (0..{len(ckpt.classes) - 1}: {', '.join(ckpt.classes)})"
        )


def black(ckpt: Checkpoint, x: torch.Tensor) -> torch.Tensor:
    """The all-black image in the model's normalised input: the baseline that means 'no ink'."""
    return normalizer(ckpt)(torch.zeros(x.shape, dtype=torch.uint8))


def attributions(
    ckpt: Checkpoint,
    x: torch.Tensor,
    methods: list[str],
    cls: int | None = None,
    layer: str | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """Each method's map for one normalised input, all for the same class (default: predicted).
    Integrated gradients and occlusion start from (and blank to) the black image."""
    for method in methods:
        check_method(method)
    check_class(ckpt, cls)
    if layer is not None:  # checked even when Grad-CAM is not asked for: a typo is never ignored
        check_gradcam_layer(ckpt.model, layer)
    maps = {}
    for method in methods:
        options = (
            {"baseline": black(ckpt, x)} if method in ("integrated-gradients", "occlusion") else {}
        )
        maps[method], cls = attribute(ckpt.model, x, method, cls, layer, **options)
    return maps, cls


def _attribution_row(
    axes, image: np.ndarray, maps: dict[str, np.ndarray], label: str, overlay: bool
):
    draw.show(axes[0], image, "gray", title=label)
    for ax, (method, amap) in zip(axes[1:], maps.items(), strict=True):
        signed = method in SIGNED
        lim = max(float(np.abs(amap).max()), 1e-12)
        cmap = draw.SIGNED if signed else draw.ACTIVATION
        if overlay:
            draw.show(ax, image, "gray", title=method)
            ax.imshow(
                amap,
                cmap=cmap,
                alpha=0.6,
                vmin=-lim if signed else 0,
                vmax=lim,
                interpolation="bilinear",
            )
        else:
            draw.show(ax, amap, cmap, signed=signed, title=method)


def draw_attributions(
    rows: list[tuple[str, np.ndarray, dict[str, np.ndarray]]],
    path: str | os.PathLike,
    title: str,
    maps_too: bool,
) -> Path:
    """One row per image: the input, then each method's map over it (with maps_too, a row of the
    bare maps above each row of overlays)."""
    import matplotlib.pyplot as plt

    per = 2 if maps_too else 1
    cols = 1 + len(rows[0][2])
    fig, axes = plt.subplots(
        per * len(rows),
        cols,
        figsize=(1.75 * cols + 0.4, 1.95 * per * len(rows) + 0.5),
        squeeze=False,
    )
    for n, (label, image, maps) in enumerate(rows):
        if maps_too:
            _attribution_row(axes[per * n], image, maps, label, overlay=False)
            _attribution_row(axes[per * n + 1], image, maps, "", overlay=True)
            axes[per * n + 1][0].set_visible(False)
        else:
            _attribution_row(axes[n], image, maps, label, overlay=True)
    fig.suptitle(title, fontsize=10, parse_math=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def attribution_figure(
    ckpt: Checkpoint,
    image: str,
    out: Path,
    methods: list[str] | None = None,
    cls: int | None = None,
    layer: str | None = None,
) -> Path:
    prepared, x = load_input(ckpt, image)
    maps, used = attributions(ckpt, x, methods or applicable(ckpt.model), cls, layer)
    pred = top_k(ckpt, prepared, 1)[0]
    label = f"input -> {pred['class']} ({100 * pred['probability']:.0f}%)"
    name = "a test image" if isinstance(image, np.ndarray) else Path(image).name
    title = (
        f"attribution of class {ckpt.classes[used]!r} for {name}: "
        "maps (red > 0 > blue where signed), "
        "then over the input"
    )
    rows = [(label, prepared.astype(float), maps)]
    return draw_attributions(rows, out, title, maps_too=True)


# ---------------------------------------------------------------- what units respond to
def dataset_for(ckpt: Checkpoint, data: str | None, split: str) -> ImageSet:
    """DATA (default: the data the model was trained on) brought to the model's input."""
    name = data or ckpt.meta.get("data")
    if not name:
        raise CnnlabError(f"{ckpt.path}: no data recorded in the checkpoint; pass --data")
    return load_for(ckpt, name, split)


def conv_stages(ckpt: Checkpoint) -> list[str]:
    shapes, kinds = ckpt.model.shapes, ckpt.model.kinds
    return [n for n in shapes if kinds[n] in CONV_STAGES and len(shapes[n]) == 3]


def _outside_colour():
    import matplotlib

    return matplotlib.colormaps["gray"].with_extremes(bad="#5d86c0")


def top_patches_pages(
    ckpt: Checkpoint,
    images: torch.Tensor,
    out: Path,
    layers: list[str] | None = None,
    k: int = 9,
    source: str = "",
) -> list[Path]:
    """One set of pages per layer: each channel's k most exciting images, cropped to the
    receptive field of the unit that fired; blue marks the field's part beyond the border."""
    from cnnlab.inspect.patches import channel_patches, montage, top_activations

    layers = layers or conv_stages(ckpt)
    if not layers:
        raise CnnlabError(f"{ckpt.model.spec['name']} has no convolutional layer to look into")
    tops = top_activations(ckpt.model, images, normalizer(ckpt), layers, k)
    written = []
    for layer, top in tops.items():
        panels = []
        for channel in range(len(top.values)):
            crops = channel_patches(top, images, channel)
            a = montage(crops)
            if a.shape[0] == 3:  # colour: draw.show scales RGB itself, so blank the NaNs to gray
                a = np.where(np.isnan(a), 128.0, a)
            panels.append((f"{layer}[{channel}] {float(top.values[channel, 0]):.2f}", a))
        path = out if len(layers) == 1 else out.with_name(f"{out.stem}-{layer}{out.suffix}")
        h, w = top.field.size
        title = (
            f"{layer}: the {k} of {len(images)} {source} images that excite each channel most "
            f"(strongest first), cropped to the unit's {h}x{w} receptive field"
        )
        written += draw.grid(panels, path, title, cmap=_outside_colour())
    return written


def top_patches_figure(
    ckpt: Checkpoint,
    data: str | None,
    out: Path,
    layers: list[str] | None,
    k: int,
    split: str = "train",
    limit: int | None = None,
) -> list[Path]:
    dataset = dataset_for(ckpt, data, split)
    images = dataset.images[sample(len(dataset), limit)] if limit else dataset.images
    return top_patches_pages(ckpt, images, out, layers, k, dataset.source)


def embedding_files(
    ckpt: Checkpoint,
    dataset: ImageSet,
    out: Path,
    n: int | None = 2000,
    method: str = "auto",
    seed: int = 0,
) -> tuple[Path, Path, str]:
    """The 2-D map of n sampled images' penultimate features: (HTML, PNG, method used)."""
    from cnnlab.inspect.embed import embed_2d, embedding_html, embedding_png
    from cnnlab.inspect.neighbors import embed

    if len(dataset.classes) != len(ckpt.classes):
        raise CnnlabError(
            f"{dataset.source}: {len(dataset.classes)} classes, "
            f"but the model predicts {len(ckpt.classes)}"
        )
    pick = sample(len(dataset), n, seed)
    images, labels = dataset.images[pick], dataset.labels[pick]
    feats = embed(ckpt.model, images, normalizer(ckpt))
    coords, used = embed_2d(feats, method, seed)
    predicted = logits(ckpt.model, images, normalizer(ckpt)).argmax(1).numpy()
    title = (
        f"{ckpt.model.spec['name']}: {used} of the penultimate features ({feats.shape[1]}-d) "
        f"of {len(pick)} {dataset.source} images"
    )
    labels = labels.numpy()
    html_path = embedding_html(
        coords,
        images.numpy(),
        labels,
        predicted,
        ckpt.classes,
        title,
        out.with_suffix(".html"),
        pick.tolist(),
    )
    png_path = embedding_png(
        coords, labels, predicted, ckpt.classes, title, out.with_suffix(".png")
    )
    return html_path, png_path, used
