"""A 2-D map of the penultimate features: t-SNE when scikit-learn is installed (the optional
extra `cnnlab[tsne]`), else PCA by an exact SVD. Drawn as a PNG and as an HTML page whose
points show their image on hover (CSS only: no script, every image a data URL)."""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.images import png_data_url, to_pil
from cnnlab.errors import CnnlabError
from cnnlab.inspect import draw

EMBEDDINGS = ("auto", "tsne", "pca")
THUMB = 56  # largest side of a hover image, in pixels


def tsne_available() -> bool:
    try:
        import sklearn.manifold  # noqa: F401
    except ImportError:
        return False
    return True


def pca_2d(features: torch.Tensor) -> np.ndarray:
    """The first two principal components (N, 2), signs fixed so the map is reproducible."""
    x = features.double() - features.double().mean(0)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    coords = u[:, :2] * s[:2]
    if coords.shape[1] < 2:  # one feature only: a line
        coords = torch.cat([coords, torch.zeros(len(coords), 2 - coords.shape[1])], 1)
    signs = torch.sign(coords[coords.abs().argmax(0), torch.arange(2)])
    return (coords * torch.where(signs == 0, 1.0, signs)).numpy()


def tsne_2d(features: torch.Tensor, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = len(features)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(features.double().numpy())


def embed_2d(features: torch.Tensor, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(N, 2) coordinates and the name of the method used ('t-SNE' or 'PCA')."""
    if method not in EMBEDDINGS:
        raise CnnlabError(f"unknown embedding '{method}'; choose {', '.join(EMBEDDINGS)}")
    if len(features) < 4:
        raise CnnlabError(f"a 2-D map needs at least 4 images, got {len(features)}")
    if method == "tsne" and not tsne_available():
        raise CnnlabError("t-SNE needs scikit-learn: pip install 'cnnlab[tsne]' (or use PCA)")
    if method == "pca" or (method == "auto" and not tsne_available()):
        return pca_2d(features), "PCA"
    return tsne_2d(features, seed), "t-SNE"


def class_colours(count: int) -> list[str]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20" if count <= 20 else "hsv"]
    steps = [i / max(count, 1) for i in range(count)] if count > 20 else range(count)
    return [matplotlib.colors.to_hex(cmap(i)) for i in steps]


def _thumb(image: np.ndarray) -> str:
    """A uint8 (C, H, W) image as a PNG data URL no larger than THUMB on a side."""
    if max(image.shape[1:]) <= THUMB:
        return png_data_url(image)
    pil = to_pil(image)
    pil.thumbnail((THUMB, THUMB))
    a = np.asarray(pil)
    return png_data_url(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))


def _unit(coords: np.ndarray) -> np.ndarray:
    """Coordinates scaled into 0..1 per axis (a flat axis sits in the middle)."""
    lo, hi = coords.min(0), coords.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(hi > lo, (coords - lo) / span, 0.5)


def embedding_html(
    coords: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    classes: list[str],
    title: str,
    path: str | os.PathLike,
    ids: list[int] | None = None,
) -> Path:
    """One page: a dot per image, coloured by its true class, a ring where the model is wrong;
    hovering a dot shows the image, its index in the dataset (`ids`), true and predicted class.
    Class names go in as escaped text."""
    colours = class_colours(len(classes))
    pos = _unit(coords)
    ids = list(range(len(labels))) if ids is None else ids
    dots = []
    for n, (x, y), image, t, p in zip(ids, pos, images, labels, predicted, strict=True):
        true, guess = html.escape(classes[t]), html.escape(classes[p])
        wrong = " wrong" if t != p else ""
        caption = f"#{n} true {true}" + (f", predicted {guess}" if wrong else "")
        dots.append(
            f'<div class="d{wrong}" style="left:{100 * x:.2f}%;top:{100 * (1 - y):.2f}%;'
            f'background:{colours[t]}" title="{caption}"><figure><img alt="" src="{_thumb(image)}">'
            f"<figcaption>{caption}</figcaption></figure></div>"
        )
    legend = "".join(
        f'<span><i style="background:{c}"></i>{html.escape(name)}</span>'
        for name, c in zip(classes, colours, strict=True)
    )
    errors = int((labels != predicted).sum())
    intro = (
        f"{len(labels)} images; {errors} misclassified (ringed in black). "
        "Hover a point to see its image."
    )
    page = f"""<!doctype html><html lang="en">
<head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font:14px system-ui,sans-serif;margin:16px;color:#1d2330}}
.map{{position:relative;width:min(92vw,900px);height:min(92vw,900px);border:1px solid #ccd;
margin:12px}}
.d{{position:absolute;width:7px;height:7px;margin:-3.5px;border-radius:50%}}
.d.wrong{{width:9px;height:9px;margin:-4.5px;box-shadow:0 0 0 2px #000}}
.d figure{{display:none;position:absolute;left:10px;top:10px;margin:0;padding:4px;background:#fff;
border:1px solid #889;font-size:11px;white-space:pre}}
.d:hover{{z-index:10}} .d:hover figure{{display:block}}
.d img{{width:84px;image-rendering:pixelated}}
.legend span{{margin-right:12px;white-space:pre}}
.legend i{{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px}}
</style></head><body><h1>{html.escape(title)}</h1><p>{intro}</p>
<div class="legend">{legend}</div><div class="map">{"".join(dots)}</div></body></html>"""
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def embedding_png(
    coords: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    classes: list[str],
    title: str,
    path: str | os.PathLike,
) -> Path:
    import matplotlib.pyplot as plt

    colours = class_colours(len(classes))
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    for c, name in enumerate(classes):
        mine = labels == c
        if mine.any():
            ax.scatter(
                *coords[mine].T, s=7, color=colours[c], label=draw.plain_text(name), linewidths=0
            )
    wrong = labels != predicted
    if wrong.any():
        ax.scatter(
            *coords[wrong].T,
            s=30,
            marker="x",
            color="black",
            linewidths=0.9,
            label=f"misclassified ({int(wrong.sum())})",
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10, parse_math=False)
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
