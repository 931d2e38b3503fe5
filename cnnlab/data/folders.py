"""Image folders: a root with one sub-folder per class, each holding that class's images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cnnlab.data.dataset import ImageSet
from cnnlab.data.images import (
    EXTENSIONS,
    GRAY_MODES,
    MAX_PIXELS,
    is_gray,
    open_image,
    probe_image,
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
    """Load an image folder into memory (or stream it from disk when it would exceed the
    memory budget). Channels are inferred (1 if every image is gray)."""
    root = Path(root)
    if size is not None and size[0] * size[1] > max_pixels:
        raise CnnlabError(
            f"--size {size[0]}x{size[1]}: {size[0] * size[1]} pixels is over the cap of {max_pixels}"
        )
    files, classes = list_images(root)
    budget = memory_budget()
    if _estimated_bytes(files, channels, size, max_pixels) > budget:
        return _lazy_folder(root, files, classes, channels, size, skip_bad, max_pixels)
    decoded, labels, skipped, held = [], [], [], 0
    for path, label in tqdm(
        files, desc=f"reading {root.name}", unit="img", disable=None if progress else True
    ):
        try:
            img = open_image(path, max_pixels=max_pixels)
        except CnnlabError as e:
            if not skip_bad:
                raise CnnlabError(f"{e} (pass --skip-bad to skip such files)") from None
            skipped.append(str(e))
            continue
        held += img.width * img.height * len(img.getbands())
        if held > budget:  # the first image misjudged the rest: stream instead
            return _lazy_folder(root, files, classes, channels, size, skip_bad, max_pixels)
        decoded.append(img)
        labels.append(label)
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
    """In-memory size of the decoded set, judged from the header of its first readable image
    (a bad file is reported by the pass that reads them all)."""
    for path, _ in files:
        try:
            h, w, mode = probe_image(path, max_pixels)
        except CnnlabError:
            continue
        h, w = size or (h, w)
        c = channels or (1 if mode in GRAY_MODES else 3)
        return len(files) * c * h * w
    return 0


def _lazy_folder(root, files, classes, channels, size, skip_bad, max_pixels) -> ImageSet:
    """Check every file's header (no decoding) and return an ImageSet that decodes on demand."""
    kept, labels, skipped, sizes, gray = [], [], [], set(), True
    for path, label in tqdm(files, desc=f"indexing {root.name}", unit="img", disable=None):
        try:
            h, w, mode = probe_image(path, max_pixels)
        except CnnlabError as e:
            if not skip_bad:
                raise CnnlabError(f"{e} (pass --skip-bad to skip such files)") from None
            skipped.append(str(e))
            continue
        sizes.add((h, w))
        gray = gray and mode in GRAY_MODES
        kept.append(path)
        labels.append(label)
    if not kept:
        raise CnnlabError(f"{root}: every image failed to decode")
    if size is None and len(sizes) > 1:
        raise CnnlabError(
            f"{root}: images differ in size ({len(sizes)} sizes); set one with --size HxW"
        )
    size = size or sizes.pop()
    images = LazyImages(kept, channels or (1 if gray else 3), tuple(size), max_pixels=max_pixels,
                        labels=labels, skip_bad=skip_bad)  # fmt: skip
    data = ImageSet(images, torch.tensor(labels), classes, str(root))  # type: ignore[arg-type]
    data.skipped = skipped
    return data


def save_folder(data: ImageSet, root: str | os.PathLike) -> Path:
    """Write an ImageSet as ROOT/<class>/<index>.png (lossless, so a round trip is exact)."""
    root = Path(root)
    for name in data.classes:
        separators = [sep for sep in (os.sep, os.altsep) if sep]
        if (
            not name
            or name in (".", "..")
            or "\0" in name
            or any(sep in name for sep in separators)
        ):
            raise CnnlabError(f"class name {name!r} cannot be a folder name")
        try:
            (root / name).mkdir(parents=True, exist_ok=True)
        except (OSError, UnicodeEncodeError) as e:
            raise CnnlabError(
                f"{root}: cannot make a folder for class {name!r} ({getattr(e, 'strerror', e)})"
            ) from None
    width = len(str(max(len(data) - 1, 0)))
    for i, label in enumerate(data.labels.tolist()):  # row by row: a streamed set works too
        save_array(data.images[i].numpy(), root / data.classes[label] / f"{i:0{width}d}.png")
    return root
