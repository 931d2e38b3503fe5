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
from cnnlab.evaluate import eval_data, metrics, normaliser, plot_confusion
from cnnlab.infer import logits
from cnnlab.inspect import draw
from cnnlab.inspect.figures import activations_figure, kernels_figure
from cnnlab.inspect.maps import conv_layers

GALLERY = 24


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _misclassified(ckpt: Checkpoint, data) -> str:
    out = logits(ckpt.model, data.images, normaliser(ckpt))
    probs = out.softmax(1)
    pred = probs.argmax(1)
    wrong = torch.nonzero(pred != data.labels).flatten()[:GALLERY].tolist()
    cells = []
    for i in wrong:
        values, idx = probs[i].topk(min(3, probs.shape[1]))
        guesses = ", ".join(
            f"{html.escape(ckpt.classes[j])} {100 * v:.0f}%"
            for v, j in zip(values.tolist(), idx.tolist(), strict=True)
        )
        true = html.escape(ckpt.classes[int(data.labels[i])])
        src = png_data_url(data.images[i].numpy())
        cells.append(
            f'<figure><img alt="test image {i}" src="{src}"><figcaption>#{i} true {true}<br>{guesses}</figcaption></figure>'
        )
    return "".join(cells)


def _confused_pairs(m: dict, top: int = 8) -> str:
    cm = np.array(m["confusion"])
    np.fill_diagonal(cm, 0)
    order = np.dstack(np.unravel_index(np.argsort(-cm, axis=None), cm.shape))[0][:top]
    rows = "".join(
        f"<tr><td>{html.escape(m['classes'][t])}</td><td>{html.escape(m['classes'][p])}</td><td>{cm[t, p]}</td></tr>"
        for t, p in order if cm[t, p] > 0
    )  # fmt: skip
    return f"<table><tr><th>true</th><th>predicted as</th><th>count</th></tr>{rows or '<tr><td colspan=3>none</td></tr>'}</table>"


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
        gallery = _misclassified(ckpt, dataset)
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
        body = "".join(
            f"<section><h2>{html.escape(t)}</h2>{content}</section>" for t, content in sections
        )
    config = html.escape(yaml.safe_dump(meta.get("config", {}), sort_keys=False))
    head = (f"<h1>{html.escape(ckpt.model.spec['name'])}: {100 * m['accuracy']:.2f}% on {m['count']} {split} images</h1>"
            f"<p>{m['errors']} errors; checkpoint {html.escape(str(ckpt.path))}; cnnlab {html.escape(str(meta.get('cnnlab_version')))}, "
            f"torch {html.escape(str(meta.get('torch_version')))}</p>"
            f"<section><h2>Configuration</h2><pre>{config}</pre></section>")  # fmt: skip
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>cnnlab report</title><style>
body{{font:14px system-ui,sans-serif;max-width:1100px;margin:20px auto;color:#1d2330}} img{{max-width:100%}}
section{{margin:18px 0}} pre{{background:#f4f5f7;padding:8px;font-size:12px}}
table{{border-collapse:collapse}} td,th{{padding:2px 10px;border-bottom:1px solid #e3e6eb;text-align:left}}
.gallery{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0;width:120px;font-size:11px}} figure img{{width:110px;image-rendering:pixelated}}
</style></head><body>{head}{body}</body></html>"""
    out.write_text(page, encoding="utf-8")
    return out
