"""CIFAR-10's binary batches: records of 1 label byte then 3072 pixel bytes (R, G, B planes of
32x32)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnlab.data.dataset import ImageSet, from_numpy
from cnnlab.data.lazy import check_budget
from cnnlab.data.names import read_names
from cnnlab.errors import CnnlabError

RECORD = 1 + 3 * 32 * 32
CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILES = ["test_batch.bin"]


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 images (N, 3, 32, 32), int64 labels (N,))."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % RECORD:
        raise CnnlabError(
            f"{path}: {size} bytes is not a whole number of {RECORD}-byte CIFAR records"
        )
    _check_budget([path])
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD)
    labels = raw[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise CnnlabError(f"{path}: label byte {labels.max()} is not a CIFAR-10 class (0..9)")
    return raw[:, 1:].reshape(-1, 3, 32, 32), labels


def _check_budget(files: list[Path]) -> None:
    """The batches are read whole: refuse before reading when they would not fit in memory."""
    total = sum(f.stat().st_size for f in files)
    check_budget(total, f"{files[0].parent}: {total} bytes of CIFAR batches")


def is_cifar_dir(root: Path) -> bool:
    return root.is_dir() and any((root / f).is_file() for f in TRAIN_FILES + TEST_FILES)


def load_cifar(root: str | os.PathLike, split: str = "train") -> ImageSet:
    """Load the train (data_batch_1..5) or test (test_batch) split of a CIFAR-10 binary folder."""
    root = Path(root)
    names = TRAIN_FILES if split == "train" else TEST_FILES
    files = [root / n for n in names if (root / n).is_file()]
    if not files:
        raise CnnlabError(f"{root}: no CIFAR-10 {split} batches ({', '.join(names)})")
    _check_budget(files)
    parts = [read_batch(f) for f in files]
    classes = CLASSES
    meta = root / "batches.meta.txt"
    if meta.is_file():
        classes = read_names(meta, len(CLASSES))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return from_numpy(images, labels, classes, f"{root} ({split})")
