"""Decoding many image files at once: chunks of files in a pool of worker processes, in order.

Each worker decodes its chunk with the same checks as one file (`open_image`: the format
list, the pixel cap, bombs as per-file errors) and hands back one uint8 array per chunk
when its images share a size, so the results cross the process boundary in a few large
pieces. Chunks come back in file order (`imap`), so the output never depends on which
worker was faster, and a bad file is reported in file order too: the first one, by name.

Without a channel count, each image comes back with 1 channel if it is gray, else 3; the
caller widens gray chunks by repeating the plane, which is exactly Pillow's own L -> RGB.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from cnnlab.data.images import MAX_PIXELS, is_gray, open_image, to_array
from cnnlab.errors import CnnlabError

CHUNK = 256  # files per task: large enough that a task's overhead is small beside its decoding
READ_WHOLE = 64 << 20  # files up to this size are read in one call, larger ones streamed by Pillow


@dataclass
class Chunk:
    """What a worker made of one chunk: arrays for the files that decoded (all stacked into one
    array when they share a shape), the errors of the others, in file order."""

    start: int
    kept: list[int] = field(default_factory=list)  # indices into the whole file list
    stacked: np.ndarray | None = None
    arrays: list[np.ndarray] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)

    def rows(self) -> Iterator[np.ndarray]:
        yield from (self.stacked if self.stacked is not None else self.arrays)


@dataclass(frozen=True)
class Recipe:
    """How every file is decoded: channels (None: 1 for gray, else 3), size (None: as stored)."""

    channels: int | None = None
    size: tuple[int, int] | None = None
    max_pixels: int = MAX_PIXELS


def decode_one(path: str, nbytes: int, recipe: Recipe) -> np.ndarray:
    """One file -> uint8 (C, H, W), or a one-line CnnlabError naming it."""
    source: str | bytes = path
    if 0 <= nbytes <= READ_WHOLE:
        try:
            with open(path, "rb") as f:  # one read: far cheaper than Pillow's many small ones
                source = f.read(READ_WHOLE + 1)
        except OSError as e:
            raise CnnlabError(f"{path}: cannot read ({e.strerror or e})") from None
    img = open_image(source, path, recipe.max_pixels, draft=recipe.size)
    channels = recipe.channels or (1 if is_gray(img) else 3)
    return to_array(img, channels, recipe.size)


def decode_chunk(task: tuple[int, list[str], list[int], Recipe]) -> Chunk:
    start, paths, sizes, recipe = task
    chunk, arrays = Chunk(start), []
    for offset, (path, nbytes) in enumerate(zip(paths, sizes, strict=True)):
        try:
            arrays.append(decode_one(path, nbytes, recipe))
            chunk.kept.append(start + offset)
        except CnnlabError as e:
            chunk.errors.append((start + offset, str(e)))
    if arrays and len({a.shape for a in arrays}) == 1:
        chunk.stacked = np.stack(arrays)
    else:
        chunk.arrays = [a if a.flags.writeable else a.copy() for a in arrays]
    return chunk


def _context():
    # fork shares the imported modules (a spawned worker would import torch again: seconds);
    # it is what PyTorch's DataLoader uses on Linux too
    return multiprocessing.get_context("fork" if sys.platform == "linux" else None)


def decode_files(
    paths: list[str],
    sizes: list[int],
    recipe: Recipe,
    workers: int | None = None,
    chunk: int | None = None,
) -> Iterator[Chunk]:
    """Decode every file, chunk after chunk in file order; in worker processes when there are
    enough files to pay for them (workers: os.cpu_count() unless given)."""
    chunk = chunk or CHUNK
    tasks = [
        (start, paths[start : start + chunk], sizes[start : start + chunk], recipe)
        for start in range(0, len(paths), chunk)
    ]
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    if workers <= 1:
        yield from map(decode_chunk, tasks)
        return
    pool = _context().Pool(workers)
    try:
        yield from pool.imap(decode_chunk, tasks)
    finally:  # also when the caller stops early: at a bad file, or over the memory budget
        pool.terminate()
        pool.join()
