"""Every way data gets in, resolved from one string.

DATA may be:
  mnist                       the MNIST set (fetched and verified on first use)
  DIR with class sub-folders  an image folder; DIR/train and DIR/test if both exist
  DIR with IDX files          train-/t10k- pairs (MNIST naming) or images-/labels- (one set)
  DIR with CIFAR-10 batches   data_batch_1..5.bin and test_batch.bin
  IMAGES.idx,LABELS.idx       an explicit IDX pair
  FILE.npz                    NumPy arrays x and y (and x_test, y_test): images or sequences
  X.npy,Y.npy                 a pair of NumPy arrays, like the IDX pair
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.data.arrays import is_array_source, load_arrays, save_npz
from cnnlab.data.cifar import is_cifar_dir, load_cifar
from cnnlab.data.dataset import MAX_CLASSES, ImageSet, from_numpy
from cnnlab.data.folders import load_folder
from cnnlab.data.idx import read_idx, read_idx_pair, write_idx
from cnnlab.data.mnist import fetch_mnist, load_mnist
from cnnlab.data.names import encode_name, read_names, write_names
from cnnlab.errors import CnnlabError

__all__ = [
    "ImageSet", "load_data", "read_idx", "write_idx", "read_idx_pair", "fetch_mnist",
    "load_mnist", "load_folder", "load_cifar", "load_arrays", "save_idx_set", "save_npz",
    "CLASSES_FILE",
]  # fmt: skip

CLASSES_FILE = "classes.txt"
SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def _find(root: Path, pattern: str) -> Path | None:
    hits = sorted(root.glob(pattern))
    return hits[0] if hits else None


def _read_classes(root: Path) -> list[str] | None:
    path = root / CLASSES_FILE
    return read_names(path, MAX_CLASSES) if path.is_file() else None


def _load_idx_dir(root: Path, split: str) -> ImageSet | None:
    prefix = SPLIT_PREFIX[split]
    images = _find(root, f"{prefix}-images-idx*-ubyte*")
    labels = _find(root, f"{prefix}-labels-idx1-ubyte*")
    if images is None and split == "train":
        images, labels = _find(root, "images-idx*-ubyte*"), _find(root, "labels-idx1-ubyte*")
    if images is None:
        return None
    if labels is None:
        raise CnnlabError(f"{images}: no matching labels-idx1-ubyte file beside it")
    x, y = read_idx_pair(images, labels)
    return from_numpy(x, y, _read_classes(root), f"{root} ({split})")


def load_data(
    data: str,
    split: str = "train",
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    skip_bad: bool = False,
    required: bool = True,
    sequences: bool | None = None,
) -> ImageSet | None:
    """Load the 'train' or 'test' split of DATA. A missing split is an error unless not required.

    channels, size and skip_bad apply to image folders. `sequences` says how a rank-3 array
    is read: (N, C, L) sequences when true (a model on (C, L) reads it), (N, H, W) images
    otherwise, unless the .npz file's `layout` says."""
    found = _load(data, split, channels, size, skip_bad, sequences)
    if found is None and required:
        raise CnnlabError(f"{data}: has no {split} split")
    return found


def _load(data, split, channels, size, skip_bad, sequences) -> ImageSet | None:
    if data == "mnist":
        return load_mnist(split)
    if is_array_source(data):
        return load_arrays(data, split, sequences)
    if "," in data:
        if split != "train":
            return None
        images, labels = data.split(",", 1)
        x, y = read_idx_pair(images, labels)
        return from_numpy(x, y, _read_classes(Path(images).parent), data)
    root = Path(data)
    if not root.exists():
        raise CnnlabError(f"{data}: no such file or directory (nor the name of a dataset: mnist)")
    if not root.is_dir():
        raise CnnlabError(
            f"{data}: expected a directory, 'mnist', IMAGES.idx,LABELS.idx, FILE.npz or X.npy,Y.npy"
        )
    if is_cifar_dir(root):
        return load_cifar(root, split) if _has_cifar_split(root, split) else None
    if _find(root, "*-idx*-ubyte*") is not None:
        return _load_idx_dir(root, split)
    if (root / "train").is_dir() and (root / "test").is_dir():
        return load_folder(root / split, channels, size, skip_bad)
    return load_folder(root, channels, size, skip_bad) if split == "train" else None


def _has_cifar_split(root: Path, split: str) -> bool:
    name = "data_batch_1.bin" if split == "train" else "test_batch.bin"
    return (root / name).is_file()


def save_idx_set(data: ImageSet, out: str | Path) -> list[Path]:
    """Write an ImageSet as OUT/images-idxN-ubyte, OUT/labels-idx1-ubyte and OUT/classes.txt."""
    out = Path(out)
    for name in data.classes:
        encode_name(name)  # refuse an unwritable name before any file is written
    if data.sequences or data.dtype != "uint8":
        raise CnnlabError(
            f"{data.source}: {data.dtype} {'sequences' if data.sequences else 'images'} are "
            "not pixels IDX and image files hold exactly; write them with --to npz"
        )
    if data.streamed:
        raise CnnlabError(
            f"{data.source}: {len(data)} images are too many to hold in memory "
            "(over the memory budget, see CNNLAB_MEMORY_BUDGET), and IDX files are written whole"
        )
    images = data.images.numpy()
    if data.shape[0] == 1:
        images = images[:, 0]
    files = [
        write_idx(out / f"images-idx{images.ndim}-ubyte", images),
        write_idx(
            out / "labels-idx1-ubyte",
            data.labels.numpy().astype("uint8")
            if len(data.classes) <= 256
            else data.labels.numpy().astype("int32"),
        ),
    ]
    return files + [write_names(out / CLASSES_FILE, data.classes)]
