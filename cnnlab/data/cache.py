"""Decoded image folders kept on disk, so the second run of the same folder starts at once.

An entry is two files under CACHE/folders/ (CACHE: $CNNLAB_CACHE_DIR or ~/.cache/cnnlab):
KEY.npy, the uint8 images as a plain NumPy array (read back in one read, never unpickled),
and KEY.json with the labels, the class names and the files --skip-bad skipped. KEY is a
SHA-256 of everything the decoded tensor depends on: the folder's path, every file's path,
class, size and modification time, the channel and size choice, the pixel cap, the format
and Pillow's version. A file that changes, appears or disappears changes the key, so a stale
entry is never read; it ages out instead.

Entries are written atomically, the JSON last (an entry is complete once it is visible), and
the directory is kept under a size bound ($CNNLAB_FOLDER_CACHE bytes, default 8 GiB; 0 turns
caching off) by removing the entries used least recently. Nothing in an entry is executable:
an array and JSON text. An entry that does not read back as expected is decoded afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import PIL
import torch

from cnnlab.atomic import atomic_path
from cnnlab.data.arrays import read_npy
from cnnlab.data.listing import Listing
from cnnlab.data.mnist import cache_dir
from cnnlab.errors import CnnlabError

FORMAT = "cnnlab-folder-1"  # bump when decoding changes what a file becomes
DEFAULT_LIMIT = 8 << 30


def limit() -> int:
    """Bytes the folder cache may hold: $CNNLAB_FOLDER_CACHE, else DEFAULT_LIMIT."""
    text = os.environ.get("CNNLAB_FOLDER_CACHE")
    if not text:
        return DEFAULT_LIMIT
    try:
        return max(0, int(float(text)))
    except (ValueError, OverflowError):
        raise CnnlabError(f"CNNLAB_FOLDER_CACHE={text!r}: expected a number of bytes") from None


def folder_dir() -> Path:
    return cache_dir() / "folders"


def key(root: Path, listing: Listing, recipe: dict) -> str:
    """SHA-256 naming the decoded tensor of every listed file (path, class, bytes, mtime)
    under `recipe` (channels, size, pixel cap)."""
    digest = hashlib.sha256()
    head = {"format": FORMAT, "pillow": PIL.__version__, "root": str(root.resolve()), **recipe}
    digest.update(json.dumps(head, sort_keys=True).encode())
    digest.update("\0".join(listing.paths).encode("utf-8", "surrogateescape"))
    for column in (listing.labels, listing.sizes, listing.mtimes, listing.inodes, listing.ctimes):
        digest.update(np.asarray(column, np.int64).tobytes())
    return digest.hexdigest()


def read(name: str) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]] | None:
    """(images, labels, classes, skipped) of entry `name`, or None when there is none (or it
    does not read back as an entry should)."""
    folder = folder_dir()
    meta_path, array_path = folder / f"{name}.json", folder / f"{name}.npy"
    if limit() == 0 or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        labels, classes, skipped = meta["labels"], meta["classes"], meta["skipped"]
        if not (
            meta.get("format") == FORMAT
            and _all(labels, int)
            and _all(classes, str)
            and _all(skipped, str)
        ):
            return None
        images = read_npy(array_path, kinds="u")  # bounded by its file and the memory budget
    except (CnnlabError, OSError, KeyError, ValueError, TypeError, EOFError):
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        return None
    with contextlib.suppress(OSError):
        os.utime(meta_path)  # recently used: the last to be evicted
    return torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64), classes, skipped


def _all(value, kind) -> bool:
    return isinstance(value, list) and all(isinstance(v, kind) for v in value)


def write(
    name: str, images: torch.Tensor, labels: torch.Tensor, classes: list[str], skipped: list[str]
) -> None:
    """Store an entry, first making room under the size bound; a cache that cannot be written
    is said in one line and the load goes on without it."""
    bound, size = limit(), images.numel() + 16 * labels.numel()
    if size > bound:
        return
    folder = folder_dir()
    meta = {"format": FORMAT, "labels": labels.tolist(), "classes": classes, "skipped": skipped}
    try:
        _evict(folder, bound - size)
        with atomic_path(folder / f"{name}.npy") as tmp, open(tmp, "wb") as f:
            np.lib.format.write_array(f, images.numpy(), allow_pickle=False)
        with atomic_path(folder / f"{name}.json") as tmp:  # last: it makes the entry visible
            tmp.write_text(json.dumps(meta))
    except OSError as e:
        print(f"note: decoded images not cached in {folder} ({e.strerror or e})", file=sys.stderr)


def _evict(folder: Path, room: int) -> None:
    """Remove the least recently used entries until the rest take at most `room` bytes."""
    if not folder.is_dir():
        return
    for part in folder.glob(".*.part"):  # left by a process killed while writing
        with contextlib.suppress(OSError):
            if time.time() - part.stat().st_mtime > 3600:
                part.unlink()
    entries = []
    for meta in folder.glob("*.json"):
        array = meta.with_suffix(".npy")
        with contextlib.suppress(OSError):
            used = meta.stat().st_mtime
            size = meta.stat().st_size + (array.stat().st_size if array.exists() else 0)
            entries.append((used, size, meta, array))
    for array in folder.glob("*.npy"):  # an array whose entry never got its JSON
        if not array.with_suffix(".json").exists():
            with contextlib.suppress(OSError):
                if time.time() - array.stat().st_mtime > 3600:
                    array.unlink()
    total = sum(size for _, size, _, _ in entries)
    for _, size, meta, array in sorted(entries):
        if total <= room:
            break
        with contextlib.suppress(OSError):
            meta.unlink()  # first: the entry is gone before its array
            array.unlink()
            total -= size
