"""Image folders: a root with one sub-folder per class, each holding that class's images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from cnnlab.data.dataset import ImageSet
from cnnlab.data.images import (
    EXTENSIONS,
    GRAY_MODES,
    MAX_PIXELS,
    is_gray,
    open_image,
    save_array,
    to_array,
)
from cnnlab.data.lazy import LazyImages, memory_budget
from cnnlab.errors import CnnlabError


def class_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise CnnlabError(f"{root}: not a directory")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise CnnlabError(f"{root}: no class sub-folders (expected ROOT/<class>/<image>)")
    return dirs


def list_images(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """All (file, class index) pairs under root, sorted, and the class names."""
    dirs = class_dirs(root)
    files = [
        (f, label)
        for label, d in enumerate(dirs)
        for f in sorted(d.rglob("*"))
        if f.is_file() and f.suffix.lower() in EXTENSIONS
    ]
    if not files:
        raise CnnlabError(
            f"{root}: no images ({', '.join(sorted(EXTENSIONS))}) in its class folders"
        )
    return files, [d.name for d in dirs]


def load_folder(
    root: str | os.PathLike,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    skip_bad: bool = False,
    max_pixels: int = MAX_PIXELS,
    progress: bool = True,
) -> ImageSet:
    """Load an image folder into memory. Channels are inferred (1 if every image is gray)."""
    root = Path(root)
    files, classes = list_images(root)
    if _estimated_bytes(files, channels, size, max_pixels) > memory_budget():
        return _lazy_folder(root, files, classes, channels, size, skip_bad, max_pixels)
    decoded, labels, skipped = [], [], []
    for path, label in tqdm(files, desc=f"reading {root.name}", unit="img", disable=not progress):
        try:
            decoded.append(open_image(path, max_pixels=max_pixels))
            labels.append(label)
        except CnnlabError as e:
            if not skip_bad:
                raise CnnlabError(f"{e} (pass --skip-bad to skip such files)") from None
            skipped.append(str(e))
    if not decoded:
        raise CnnlabError(f"{root}: every image failed to decode")
    if channels is None:
        channels = 1 if all(is_gray(img) for img in decoded) else 3
    if size is None:
        sizes = {(img.height, img.width) for img in decoded}
        if len(sizes) > 1:
            raise CnnlabError(
                f"{root}: images differ in size ({len(sizes)} sizes, e.g. "
                f"{', '.join(f'{h}x{w}' for h, w in sorted(sizes)[:3])}); set one with --size HxW"
            )
        size = sizes.pop()
    arrays = np.stack([to_array(img, channels, size) for img in decoded])
    data = ImageSet(torch.from_numpy(arrays), torch.tensor(labels), classes, str(root))
    data.skipped = skipped
    return data


def _estimated_bytes(files, channels, size, max_pixels) -> int:
    """In-memory size of the decoded set, judged from its first image."""
    first = open_image(files[0][0], max_pixels=max_pixels)
    h, w = size or (first.height, first.width)
    c = channels or (1 if is_gray(first) else 3)
    return len(files) * c * h * w


def _lazy_folder(root, files, classes, channels, size, skip_bad, max_pixels) -> ImageSet:
    """Check every file's header (no decoding) and return an ImageSet that decodes on demand."""
    kept, labels, skipped, sizes, gray = [], [], [], set(), True
    for path, label in tqdm(files, desc=f"indexing {root.name}", unit="img", disable=None):
        try:
            with Image.open(path) as img:
                if img.width * img.height > max_pixels:
                    raise CnnlabError(
                        f"{path}: {img.width}x{img.height} pixels is over the cap of {max_pixels}"
                    )
                sizes.add((img.height, img.width))
                gray = gray and (img.mode in GRAY_MODES)
        except (OSError, CnnlabError) as e:
            message = (
                str(e) if isinstance(e, CnnlabError) else f"{path}: not an image Pillow can read"
            )
            if not skip_bad:
                raise CnnlabError(f"{message} (pass --skip-bad to skip such files)") from None
            skipped.append(message)
            continue
        kept.append(path)
        labels.append(label)
    if size is None and len(sizes) > 1:
        raise CnnlabError(
            f"{root}: images differ in size ({len(sizes)} sizes); set one with --size HxW"
        )
    size = size or sizes.pop()
    images = LazyImages(kept, channels or (1 if gray else 3), tuple(size), max_pixels=max_pixels)
    data = ImageSet(images, torch.tensor(labels), classes, str(root))  # type: ignore[arg-type]
    data.skipped = skipped
    return data


def save_folder(data: ImageSet, root: str | os.PathLike) -> Path:
    """Write an ImageSet as ROOT/<class>/<index>.png (lossless, so a round trip is exact)."""
    root = Path(root)
    for name in data.classes:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise CnnlabError(f"class name {name!r} cannot be a folder name")
        (root / name).mkdir(parents=True, exist_ok=True)
    width = len(str(max(len(data) - 1, 0)))
    images = data.images.numpy()
    for i, label in enumerate(data.labels.tolist()):
        save_array(images[i], root / data.classes[label] / f"{i:0{width}d}.png")
    return root
