"""Evaluation of a checkpoint on a dataset, and prediction for image files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnlab.checkpoint import Checkpoint
from cnnlab.data import load_data
from cnnlab.data.arrays import as_dtype, read_sample
from cnnlab.data.dataset import ImageSet
from cnnlab.data.images import EXTENSIONS, MAX_PIXELS, open_image, to_array
from cnnlab.errors import CnnlabError
from cnnlab.infer import Normalize, fit_images, logits
from cnnlab.infer.prepare import for_model


def normalizer(ckpt: Checkpoint) -> Normalize:
    return Normalize(ckpt.meta.get("mean", [0.0]), ckpt.meta.get("std", [1.0]))


def input_recipe(ckpt: Checkpoint) -> dict | None:
    """How images are brought to this model's input: recorded at training (None in older runs,
    which then get `plan_fit`'s recipe from each dataset's size)."""
    return ckpt.meta.get("input_recipe")


def input_dtype(ckpt: Checkpoint) -> str:
    """What the model's training set held: uint8 pixels, or float32 values (from arrays)."""
    return ckpt.meta.get("input_dtype", "uint8")


def load_for(ckpt: Checkpoint, data: str, split: str, required: bool = True) -> ImageSet | None:
    """A dataset read and brought to the model's input the way its training data was."""
    recipe = input_recipe(ckpt)
    shape = tuple(ckpt.meta["input_shape"])
    options = {"channels": recipe["channels"], "size": tuple(recipe["size"])} if recipe else {}
    found = load_data(data, split, required=required, sequences=len(shape) == 2, **options)
    if found is not None:
        found.images = as_dtype(found.images, input_dtype(ckpt), found.source)
        found.images = fit_images(found.images, shape, found.source, recipe)
    return found


def eval_data(ckpt: Checkpoint, data: str | None) -> tuple[ImageSet, str]:
    """The test split of DATA (default: the data the model was trained on), else its train split."""
    name = data or ckpt.meta.get("data")
    if not name:
        raise CnnlabError(f"{ckpt.path}: no data recorded in the checkpoint; pass --data")
    found, split = load_for(ckpt, name, "test", required=False), "test"
    if found is None:
        found, split = load_for(ckpt, name, "train"), "train"
    if len(found.classes) != len(ckpt.classes):
        raise CnnlabError(
            f"{found.source}: {len(found.classes)} classes, "
            f"but the model predicts {len(ckpt.classes)}"
        )
    return found, split


def confusion(pred: np.ndarray, true: np.ndarray, k: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    return np.bincount(true * k + pred, minlength=k * k).reshape(k, k)


def metrics(ckpt: Checkpoint, data: ImageSet, batch_size: int = 1000) -> dict:
    out = logits(ckpt.model, data.images, normalizer(ckpt), batch_size)
    pred, true = out.argmax(1).numpy(), data.labels.numpy()
    k = len(ckpt.classes)
    cm = confusion(pred, true, k)
    tp = np.diag(cm).astype(float)
    precision = tp / np.maximum(cm.sum(0), 1)
    recall = tp / np.maximum(cm.sum(1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    per_class = [
        {"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for c, p, r, f, s in zip(ckpt.classes, precision, recall, f1, cm.sum(1), strict=True)
    ]
    return {
        "data": data.source,
        "count": len(true),
        "accuracy": float((pred == true).mean()) if len(true) else 0.0,
        "errors": int((pred != true).sum()),
        "per_class": per_class,
        "confusion": cm.tolist(),
        "classes": ckpt.classes,
    }


def format_metrics(m: dict) -> str:
    lines = [
        f"accuracy {100 * m['accuracy']:.2f}%  "
        f"({m['errors']} errors in {m['count']} images of {m['data']})",
        "",
    ]
    width = max(5, *(len(c) for c in m["classes"]))
    lines.append(f"{'class':<{width}}  precision  recall      f1  support")
    for r in m["per_class"]:
        lines.append(
            f"{r['class']:<{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  "
            f"{r['f1']:6.4f}  {r['support']:7d}"
        )
    lines += ["", "confusion (rows: true, columns: predicted)"]
    cm = np.array(m["confusion"])
    cell = max(4, len(str(cm.max())) + 1, *(len(c) + 1 for c in m["classes"]))
    lines.append(" " * width + "".join(f"{c:>{cell}}" for c in m["classes"]))
    for name, row in zip(m["classes"], cm, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


def plot_confusion(m: dict, path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(m["confusion"])
    k = len(m["classes"])
    fig, ax = plt.subplots(figsize=(1 + 0.5 * k, 0.8 + 0.5 * k) if k > 10 else (6, 5))
    im = ax.imshow(cm, cmap="viridis")
    # class names are data: `$...$` must show as typed, not as matplotlib's mathtext
    ax.set_xticks(range(k), m["classes"], rotation=90 if k > 10 else 0, parse_math=False)
    ax.set_yticks(range(k), m["classes"], parse_math=False)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix - accuracy {100 * m['accuracy']:.2f}% on {m['count']} images")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if cm[i, j] > cm.max() / 2 else "white",
                )
    fig.colorbar(im, ax=ax, label="images")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def image_files(targets: list[str]) -> list[Path]:
    files = []
    for t in targets:
        path = Path(t)
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
            )
        elif path.is_file():
            files.append(path)
        else:
            raise CnnlabError(f"{t}: no such file or directory")
    if not files:
        raise CnnlabError(f"no images ({', '.join(sorted(EXTENSIONS))}) in {', '.join(targets)}")
    return files


def prepare_image(
    ckpt: Checkpoint, source, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """An image file or bytes -> uint8 (C, H, W) as the model expects it; a .npy file holds one
    input as it is ((C, L) or (C, H, W), in the training set's dtype)."""
    if not isinstance(source, bytes) and Path(source).suffix.lower() == ".npy":
        return read_sample(source, tuple(ckpt.meta["input_shape"]), input_dtype(ckpt))
    return fit_picture(ckpt, open_image(source, name, max_pixels))


def fit_picture(ckpt: Checkpoint, img: Image.Image) -> np.ndarray:
    """An opened picture -> (C, H, W) by the checkpoint's recipe: MNIST's digit recipe, or the
    channels, size and padding its training images were read with; uint8, or float32 for a
    model trained on float arrays."""
    preprocess, recipe = ckpt.meta.get("preprocess", "resize"), input_recipe(ckpt)
    if preprocess == "mnist-digit" or recipe is None:
        pixels = for_model(img, preprocess, tuple(ckpt.meta["input_shape"]))
    else:
        (ph, pw), size = recipe["pad"], tuple(recipe["size"])
        pixels = np.pad(to_array(img, recipe["channels"], size), ((0, 0), (ph, ph), (pw, pw)))
    # a model trained on float arrays read pixels as the values 0..255, as `eval` gives them
    return pixels.astype(np.float32) if input_dtype(ckpt) == "float32" else pixels


def top_k(ckpt: Checkpoint, prepared: np.ndarray, k: int = 3) -> list[dict]:
    out = logits(ckpt.model, torch.from_numpy(prepared)[None], normalizer(ckpt))
    probs = out.softmax(1)[0]
    values, idx = probs.topk(min(k, len(ckpt.classes)))
    return [
        {"class": ckpt.classes[i], "index": int(i), "probability": float(v)}
        for v, i in zip(values, idx, strict=True)
    ]


normaliser = normalizer  # the 0.1 spelling
