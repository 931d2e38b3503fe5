"""One self-contained HTML report of a run: every picture embedded, no scripts, no server."""

from __future__ import annotations

import base64
import html
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from cnnlab.checkpoint import Checkpoint
from cnnlab.data.images import png_data_url
from cnnlab.infer import logits
from cnnlab.infer.evaluate import eval_data, metrics, normalizer, plot_confusion
from cnnlab.inspect import draw
from cnnlab.inspect.attribute import applicable
from cnnlab.inspect.figures import (
    activations_figure,
    attributions,
    conv_stages,
    draw_attributions,
    embedding_files,
    kernels_figure,
    load_input,
    top_patches_pages,
)
from cnnlab.inspect.maps import conv_layers
from cnnlab.inspect.patches import sample
from cnnlab.inspect.sparsity import sparsity

GALLERY = 24
ATTRIBUTED = 3  # test errors whose attribution maps are drawn
PATCH_SAMPLE = 10_000  # images searched for the top patches
EMBED_SAMPLE = 1000  # images on the 2-D map
SPARSITY_SAMPLE = 1000  # images over which zeros are counted


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _wrong(ckpt: Checkpoint, data) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities of every image, and the indices of the misclassified ones."""
    probs = logits(ckpt.model, data.images, normalizer(ckpt)).softmax(1)
    return probs, torch.nonzero(probs.argmax(1) != data.labels).flatten()


def _misclassified(ckpt: Checkpoint, data, probs: torch.Tensor, wrong: torch.Tensor) -> str:
    wrong = wrong[:GALLERY].tolist()
    cells = []
    for i in wrong:
        values, idx = probs[i].topk(min(3, probs.shape[1]))
        guesses = ", ".join(
            f"{html.escape(ckpt.classes[j])} {100 * v:.0f}%"
            for v, j in zip(values.tolist(), idx.tolist(), strict=True)
        )
        true = html.escape(ckpt.classes[int(data.labels[i])])
        item = data.images[i].numpy()
        shown = sequence_svg(item) if item.ndim == 2 else _picture(item, f"test image {i}")
        cells.append(
            f"<figure>{shown}<figcaption>#{i} true {true}<br>{guesses}</figcaption></figure>"
        )
    return "".join(cells)


def _confused_pairs(m: dict, top: int = 8) -> str:
    cm = np.array(m["confusion"])
    np.fill_diagonal(cm, 0)
    order = np.dstack(np.unravel_index(np.argsort(-cm, axis=None), cm.shape))[0][:top]
    rows = "".join(
        f"<tr><td>{html.escape(m['classes'][t])}</td><td>{html.escape(m['classes'][p])}</td>"
        f"<td>{cm[t, p]}</td></tr>"
        for t, p in order
        if cm[t, p] > 0
    )
    return (
        "<table><tr><th>true</th><th>predicted as</th><th>count</th></tr>"
        f"{rows or '<tr><td colspan=3>none</td></tr>'}</table>"
    )


def _attribution_section(ckpt: Checkpoint, data, probs, wrong, tmp: Path) -> str:
    rows = []
    for i in wrong[:ATTRIBUTED].tolist():
        prepared, x = load_input(ckpt, data.images[i].numpy())
        pred = int(probs[i].argmax())
        maps, _ = attributions(ckpt, x, applicable(ckpt.model), pred)
        label = f"#{i}: {ckpt.classes[int(data.labels[i])]} taken for {ckpt.classes[pred]}"
        rows.append((label, prepared.astype(float), maps))
    if not rows:
        return "<p>no errors to explain</p>"
    title = "what each method says made the model choose its (wrong) class, over the input"
    return _img(draw_attributions(rows, tmp / "attribution.png", title, maps_too=False), title)


def _sparsity_table(ckpt: Checkpoint, data) -> str:
    images = data.images[sample(len(data), SPARSITY_SAMPLE)]
    zeros = sparsity(ckpt.model, images, normalizer(ckpt))
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(ckpt.model.kinds[name])}</td>"
        f"<td>{100 * z:.1f}%</td>"
        f'<td><div class="bar" style="width:{200 * z:.0f}px"></div></td></tr>'
        for name, z in zeros.items()
    )
    return (
        f"<p>Fraction of each layer's outputs that are exactly 0, over {len(images)} images.</p>"
        f"<table><tr><th>layer</th><th>type</th><th>zeros</th><th></th></tr>{rows}</table>"
    )


def _unit_sections(ckpt: Checkpoint, data, split: str, tmp: Path) -> list[tuple[str, str]]:
    """Top patches of the last convolutional stage, and the 2-D map of the features."""
    sections = []
    stages = conv_stages(ckpt)
    if stages:
        images = data.images[sample(len(data), PATCH_SAMPLE)]
        pages = top_patches_pages(ckpt, images, tmp / "patches.png", stages[-1:], 9, data.source)
        sections.append(
            (
                f"What each channel of {stages[-1]} responds to "
                f"(top 9 of {len(images)} {split} images)",
                "".join(_img(p, "top patches") for p in pages),
            )
        )
    if len(data) >= 4:
        # PCA: t-SNE takes most of a minute for 1000 points on 2 cores (`cnnlab inspect embed`)
        _, png, used = embedding_files(ckpt, data, tmp / "embed", EMBED_SAMPLE, "pca")
        sections.append((f"Penultimate features in 2-D ({used})", _img(png, "embedding")))
    return sections


def _picture(image: np.ndarray, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{png_data_url(image)}">'


def sequence_svg(values: np.ndarray, width: int = 120, height: int = 40) -> str:
    """A sequence (C, L) as an inline SVG line per channel, each scaled to its own range."""
    lines = []
    for row in np.asarray(values, dtype=np.float64):
        lo, hi = float(row.min()), float(row.max())
        ys = height - 2 - (row - lo) * ((height - 4) / max(hi - lo, 1e-12))
        xs = np.linspace(0, width, len(row))
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
        lines.append(f'<polyline fill="none" stroke="#1d2330" points="{points}"/>')
    box = f'viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
    return f"<svg {box}>{''.join(lines)}</svg>"


def build_report(ckpt: Checkpoint, out: str | os.PathLike, data: str | None = None) -> Path:
    out = Path(out)
    dataset, split = eval_data(ckpt, data)
    m = metrics(ckpt, dataset)
    meta = ckpt.meta
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sections = []
        history = meta.get("history") or []
        if history:
            sections.append(
                (
                    "Training curves",
                    _img(draw.curves(history, tmp / "curves.png"), "training curves"),
                )
            )
        sections.append(
            ("Confusion matrix", _img(plot_confusion(m, tmp / "cm.png"), "confusion matrix"))
        )
        sections.append(("Most confused pairs", _confused_pairs(m)))
        probs, wrong = _wrong(ckpt, dataset)
        gallery = _misclassified(ckpt, dataset, probs, wrong)
        sections.append(
            (
                f"Misclassified {split} images (first {GALLERY}) with top-3 guesses",
                f'<div class="gallery">{gallery or "none"}</div>',
            )
        )
        if conv_layers(ckpt.model):
            pages = kernels_figure(ckpt, tmp / "kernels.png")
            sections.append(("First-layer kernels", "".join(_img(p, "kernels") for p in pages)))
            pages = activations_figure(ckpt, dataset.images[0].numpy(), tmp / "maps.png")
            sections.append(
                (
                    f"Feature maps of {split} image 0",
                    "".join(_img(p, "feature maps") for p in pages),
                )
            )
        if len(ckpt.model.input_shape) == 3:
            sections.append(
                (
                    f"Attribution of the first {ATTRIBUTED} errors",
                    _attribution_section(ckpt, dataset, probs, wrong, tmp),
                )
            )
            sections += _unit_sections(ckpt, dataset, split, tmp)
        sections.append(("Sparsity per layer", _sparsity_table(ckpt, dataset)))
        body = "".join(
            f"<section><h2>{html.escape(t)}</h2>{content}</section>" for t, content in sections
        )
    config = html.escape(yaml.safe_dump(meta.get("config", {}), sort_keys=False))
    head = (
        f"<h1>{html.escape(ckpt.model.spec['name'])}: "
        f"{100 * m['accuracy']:.2f}% on {m['count']} {split} images</h1>"
        f"<p>{m['errors']} errors; checkpoint {html.escape(str(ckpt.path))}; "
        f"cnnlab {html.escape(str(meta.get('cnnlab_version')))}, "
        f"torch {html.escape(str(meta.get('torch_version')))}</p>"
        f"<section><h2>Configuration</h2><pre>{config}</pre></section>"
    )
    page = f"""<!doctype html><html lang="en">
<head><meta charset="utf-8"><title>cnnlab report</title><style>
body{{font:14px system-ui,sans-serif;max-width:1100px;margin:20px auto;color:#1d2330}}
img{{max-width:100%}} section{{margin:18px 0}} pre{{background:#f4f5f7;padding:8px;font-size:12px}}
table{{border-collapse:collapse}}
td,th{{padding:2px 10px;border-bottom:1px solid #e3e6eb;text-align:left}}
.bar{{height:10px;background:#5d86c0}} .gallery{{display:flex;flex-wrap:wrap;gap:8px}}
figure{{margin:0;width:120px;font-size:11px}} figure img{{width:110px;image-rendering:pixelated}}
</style></head><body>{head}{body}</body></html>"""
    out.write_text(page, encoding="utf-8")
    return out
