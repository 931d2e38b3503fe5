"""Image folders: a root with one sub-folder per class, each holding that class's images."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cnnlab.data import cache
from cnnlab.data.dataset import ImageSet
from cnnlab.data.decode import Chunk, Recipe, decode_files
from cnnlab.data.images import (
    GRAY_MODES,
    MAX_PIXELS,
    probe_image,
    save_array,
)
from cnnlab.data.lazy import LazyImages, memory_budget
from cnnlab.data.listing import Listing, class_dirs, scan

__all__ = ["Listing", "class_dirs", "scan", "list_images", "load_folder", "save_folder"]
from cnnlab.errors import CnnlabError


def list_images(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """All (file, class index) pairs under root, sorted, and the class names."""
    listing = scan(root)
    return [(Path(p), label) for p, label in zip(listing.paths, listing.labels, strict=True)], (
        listing.classes
    )


def load_folder(
    root: str | os.PathLike,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    skip_bad: bool = False,
    max_pixels: int = MAX_PIXELS,
    progress: bool = True,
    cached: bool = True,
    workers: int | None = None,
) -> ImageSet:
    """Load an image folder into memory (or stream it from disk when it would exceed the
    memory budget). Channels are inferred (1 if every image is gray).

    In memory, files are decoded by `workers` processes (os.cpu_count() by default) and the
    result is cached (cnnlab/data/cache.py), so the next load of the same files is a read of
    one tensor; the files --skip-bad skipped come back with it."""
    root = Path(root)
    if size is not None and size[0] * size[1] > max_pixels:
        raise CnnlabError(
            f"--size {size[0]}x{size[1]}: {size[0] * size[1]} pixels "
            f"is over the cap of {max_pixels}"
        )
    listing = scan(root)
    budget = memory_budget()
    if _estimated_bytes(listing, channels, size, max_pixels) > budget:
        return _lazy_folder(root, listing, channels, size, skip_bad, max_pixels)
    recipe = {"channels": channels, "size": list(size) if size else None, "max_pixels": max_pixels}
    name = cache.key(root, listing, recipe) if cached else None
    hit = cache.read(name) if name else None
    if hit is not None and hit[2] == listing.classes:
        images, labels, classes, skipped = hit
        if skipped and not skip_bad:  # what the uncached load would have stopped at
            raise CnnlabError(f"{skipped[0]} (pass --skip-bad to skip such files)")
        return ImageSet(images, labels, classes, str(root), skipped)
    data = _decode(
        root, listing, Recipe(channels, size, max_pixels), skip_bad, budget, progress, workers
    )
    if data is None:  # the first image misjudged the rest: stream instead
        return _lazy_folder(root, listing, channels, size, skip_bad, max_pixels)
    if name:
        cache.write(name, data.images, data.labels, data.classes, data.skipped)
    return data


def _decode(root, listing, recipe, skip_bad, budget, progress, workers) -> ImageSet | None:
    """Every file decoded in memory, or None once they pass the memory budget."""
    chunks, skipped, held = [], [], 0
    bar = tqdm(
        total=len(listing.paths),
        desc=f"reading {root.name}",
        unit="img",
        disable=None if progress else True,
    )
    with bar, contextlib.closing(decode_files(listing.paths, listing.sizes, recipe, workers)) as it:
        for chunk in it:
            for _, message in chunk.errors:
                if not skip_bad:
                    raise CnnlabError(f"{message} (pass --skip-bad to skip such files)")
                skipped.append(message)
            held += sum(a.nbytes for a in chunk.rows())
            if held > budget:
                return None
            chunks.append(chunk)
            bar.update(len(chunk.kept) + len(chunk.errors))
    kept = [i for chunk in chunks for i in chunk.kept]
    if not kept:
        raise CnnlabError(f"{root}: every image failed to decode")
    images = _assemble(root, chunks, len(kept), recipe.channels)
    labels = torch.tensor([listing.labels[i] for i in kept])
    return ImageSet(torch.from_numpy(images), labels, listing.classes, str(root), skipped)


def _assemble(root: Path, chunks: list[Chunk], n: int, channels: int | None) -> np.ndarray:
    """One (N, C, H, W) array from the chunks; gray rows repeat their plane when any is colour."""
    blocks = [b for chunk in chunks for b in _blocks(chunk)]
    if channels is None:
        channels = max(b.shape[1] for b in blocks)
    sizes = {b.shape[2:] for b in blocks}
    if len(sizes) > 1:
        raise CnnlabError(
            f"{root}: images differ in size ({len(sizes)} sizes, e.g. "
            f"{', '.join(f'{h}x{w}' for h, w in sorted(sizes)[:3])}); set one with --size HxW"
        )
    out = np.empty((n, channels, *sizes.pop()), np.uint8)
    i = 0
    for block in blocks:
        out[i : i + len(block)] = block  # a gray (k, 1, H, W) block broadcasts to 3 channels
        i += len(block)
    return out


def _blocks(chunk: Chunk) -> list[np.ndarray]:
    return [chunk.stacked] if chunk.stacked is not None else [a[None] for a in chunk.arrays]


def _estimated_bytes(listing: Listing, channels, size, max_pixels) -> int:
    """In-memory size of the decoded set, judged from the header of its first readable image
    (a bad file is reported by the pass that reads them all)."""
    for path in listing.paths:
        try:
            h, w, mode = probe_image(path, max_pixels)
        except CnnlabError:
            continue
        h, w = size or (h, w)
        c = channels or (1 if mode in GRAY_MODES else 3)
        return len(listing.paths) * c * h * w
    return 0


def _lazy_folder(root, listing, channels, size, skip_bad, max_pixels) -> ImageSet:
    """Check every file's header (no decoding) and return an ImageSet that decodes on demand."""
    kept, labels, skipped, sizes, gray = [], [], [], set(), True
    files = list(zip(listing.paths, listing.labels, strict=True))
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
        kept.append(Path(path))
        labels.append(label)
    if not kept:
        raise CnnlabError(f"{root}: every image failed to decode")
    if size is None and len(sizes) > 1:
        raise CnnlabError(
            f"{root}: images differ in size ({len(sizes)} sizes); set one with --size HxW"
        )
    size = size or sizes.pop()
    images = LazyImages(
        kept,
        channels or (1 if gray else 3),
        tuple(size),
        max_pixels=max_pixels,
        labels=labels,
        skip_bad=skip_bad,
    )
    data = ImageSet(
        images,  # type: ignore[arg-type]
        torch.tensor(labels),
        listing.classes,
        str(root),
    )
    data.skipped = skipped
    return data


def save_folder(data: ImageSet, root: str | os.PathLike) -> Path:
    """Write an ImageSet as ROOT/<class>/<index>.png (lossless, so a round trip is exact)."""
    root = Path(root)
    if data.sequences or data.dtype != "uint8":
        raise CnnlabError(
            f"{data.source}: {data.dtype} {'sequences' if data.sequences else 'images'} are "
            "not pixels an image file holds exactly; write them with --to npz"
        )
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
