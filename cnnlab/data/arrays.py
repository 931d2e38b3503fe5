"""NumPy arrays as data: a .npz file, or a pair of .npy files, of images or of sequences.

  DATA.npz          arrays `x` and `y` (or Keras's `x_train` and `y_train`); optional
                    `x_test` and `y_test` (the test split), `classes` (one name per class)
                    and `layout` (one of LAYOUTS, naming the axes of x)
  X.npy,Y.npy       one set, like the IDX pair form; class names from classes.txt beside X

x holds images (N, H, W), (N, C, H, W) or (N, H, W, C), or sequences (N, L) or (N, C, L).
A rank-3 x is (N, H, W) images unless `layout` says NCL or the model reading it takes
sequences (its input is (C, L)). uint8 values are kept as they are (and scaled /255 by the
model's normalisation like any image); float values are kept as float32 and normalised
with their own per-channel mean and std; other integers must lie in 0..255.

Every file is read with allow_pickle=False, and every array's header is checked before its
data is read: a dtype that is numbers (never objects), a size within the memory budget and,
for a plain .npy file, within the file. A compressed member is inflated only as far as its
header says, so a bomb stops there.
"""

from __future__ import annotations

import lzma
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from cnnlab.atomic import atomic_path
from cnnlab.data.dataset import MAX_CLASSES, ImageSet, _class_indices, _first, _pixels
from cnnlab.data.lazy import check_budget
from cnnlab.data.names import encode_name, read_names
from cnnlab.errors import CnnlabError

LAYOUTS = {"NL": 2, "NCL": 3, "NHW": 3, "NCHW": 4, "NHWC": 4}
VALUE_KINDS = "uif"  # unsigned, signed, float: numbers; never objects, strings or records
MAX_NAME_CHARS = 1000
CLASSES_FILE = "classes.txt"


def is_array_source(data: str) -> bool:
    """DATA names a .npz file or an X.npy,Y.npy pair."""
    if "," in data:
        return all(part.lower().endswith(".npy") for part in data.split(",", 1))
    return data.lower().endswith(".npz")


# ---------------------------------------------------------------- reading one array, bounded
def _header(f, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f)
    except (ValueError, EOFError, SyntaxError) as e:
        raise CnnlabError(f"{name}: not a NumPy .npy array ({_brief(e)})") from None
    raise CnnlabError(
        f"{name}: not a NumPy .npy array cnnlab reads (format version {version[0]}.{version[1]}; "
        "it reads 1.0 and 2.0)"
    )


def _brief(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:160] + "..."


def _check_dtype(dtype: np.dtype, name: str, kinds: str) -> None:
    if dtype.hasobject:
        raise CnnlabError(
            f"{name}: holds Python objects (dtype {dtype}), which would need unpickling; "
            "cnnlab reads arrays of numbers only"
        )
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in kinds:
        raise CnnlabError(f"{name}: dtype {dtype} is not {_kinds_text(kinds)}")


def _kinds_text(kinds: str) -> str:
    words = {"u": "unsigned", "i": "signed", "f": "float", "U": "text", "S": "bytes"}
    return "an array of " + " or ".join(words[k] for k in kinds) + " values"


def read_array(f, name: str, kinds: str = VALUE_KINDS, available: int | None = None) -> np.ndarray:
    """One .npy array from an open file, its header checked first (see the module docstring).
    `available`: bytes the file holds after its start, when known (a plain file)."""
    start = f.tell()
    shape, fortran, dtype = _header(f, name)
    _check_dtype(dtype, name, kinds)
    if any(d < 0 for d in shape):
        raise CnnlabError(f"{name}: the header's shape {shape} has a negative dimension")
    need = math.prod(shape) * dtype.itemsize
    text = f"the header's {'x'.join(map(str, shape)) or 'scalar'} of {dtype}"
    check_budget(need, f"{name}: {text} needs {need} bytes")
    if available is not None:
        have = available - (f.tell() - start)
        if have != need:
            raise CnnlabError(
                f"{name}: data for {text} needs {need} bytes but the file holds {have}"
            )
    f.seek(start)
    try:
        array = np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise CnnlabError(
            f"{name}: data for {text} is truncated or corrupt ({_brief(e)})"
        ) from None
    if available is None and f.read(1):  # (a plain file's size was checked above)
        raise CnnlabError(f"{name}: more data than {text}")
    return np.ascontiguousarray(array).astype(dtype.newbyteorder("="), copy=False)


def read_npy(path: str | os.PathLike, kinds: str = VALUE_KINDS) -> np.ndarray:
    """A plain .npy file, bounded and never unpickled."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            return read_array(f, str(path), kinds, available=path.stat().st_size)
    except OSError as e:
        raise CnnlabError(f"{path}: cannot read ({e.strerror or e})") from None


def _members(path: Path, skip: set[str]) -> tuple[dict[str, np.ndarray], set[str]]:
    """The arrays of a .npz file cnnlab knows, each read bounded, except those in `skip`
    (others are never read); and the names of all the known arrays the file holds."""
    wanted = {
        "x": VALUE_KINDS,
        "y": VALUE_KINDS,
        "x_train": VALUE_KINDS,
        "y_train": VALUE_KINDS,
        "x_test": VALUE_KINDS,
        "y_test": VALUE_KINDS,
        "classes": "US",
        "layout": "US",
    }
    if not path.is_file():
        raise CnnlabError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as z:
            names = {info.filename: info for info in z.infolist()}
            found = {}
            present = {key for key in wanted if key + ".npy" in names}
            for key, kinds in wanted.items():
                if key in present and key not in skip:
                    with z.open(names[key + ".npy"]) as f:
                        found[key] = read_array(f, f"{path}: array '{key}'", kinds)
            if not found:
                shown = ", ".join(n.removesuffix(".npy") for n in sorted(names)[:8])
                raise CnnlabError(f"{path}: no array x or y (it holds: {shown or 'nothing'})")
            return found, present
    except CnnlabError:
        raise
    except (zlib.error, lzma.LZMAError, NotImplementedError, RuntimeError) as e:
        # a damaged deflate stream, an encrypted member, a compression zipfile lacks
        raise CnnlabError(f"{path}: a compressed array cannot be read ({_brief(e)})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise CnnlabError(f"{path}: not a .npz file ({_brief(e)})") from None
    except OSError as e:
        raise CnnlabError(f"{path}: cannot read ({e.strerror or e})") from None


# ---------------------------------------------------------------- arrays -> ImageSet
def _text(array: np.ndarray, name: str) -> list[str]:
    if array.dtype.kind == "S":
        try:
            return [v.decode("utf-8") for v in array.reshape(-1).tolist()]
        except UnicodeDecodeError:
            raise CnnlabError(f"{name}: not UTF-8 text") from None
    return [str(v) for v in array.reshape(-1).tolist()]


def _class_names(array: np.ndarray | None, name: str) -> list[str] | None:
    if array is None:
        return None
    if array.ndim != 1 or len(array) > MAX_CLASSES:
        raise CnnlabError(
            f"{name}: expected a list of at most {MAX_CLASSES} names, got shape {array.shape}"
        )
    if array.dtype.itemsize > 4 * MAX_NAME_CHARS:
        raise CnnlabError(f"{name}: names longer than {MAX_NAME_CHARS} characters")
    names = _text(array, name)
    for i, n in enumerate(names):
        if not n.strip():
            raise CnnlabError(f"{name}: name {i} is blank; each class needs a name")
    return names


def _layout(array: np.ndarray | None, name: str) -> str | None:
    if array is None:
        return None
    values = _text(array, name) if array.size == 1 else []
    if len(values) != 1 or values[0] not in LAYOUTS:
        raise CnnlabError(f"{name}: expected one of {', '.join(LAYOUTS)}")
    return values[0]


def _pick_layout(
    shape: tuple[int, ...], layout: str | None, sequences: bool | None, name: str
) -> str:
    if layout is not None:
        if LAYOUTS[layout] != len(shape):
            raise CnnlabError(
                f"{name}: layout {layout} needs rank {LAYOUTS[layout]}, got shape {shape}"
            )
        return layout
    if len(shape) == 2:
        return "NL"
    if len(shape) == 3:
        return "NCL" if sequences else "NHW"
    if len(shape) == 4:
        return "NHWC" if shape[1] not in (1, 3) and shape[3] in (1, 3) else "NCHW"
    raise CnnlabError(
        f"{name}: expected (N, L) or (N, C, L) sequences, or (N, H, W), (N, C, H, W) or "
        f"(N, H, W, C) images; got shape {shape}"
    )


def _values(x: np.ndarray, name: str) -> np.ndarray:
    """uint8 kept; float -> float32, finite; other integers must lie in 0..255 (-> uint8)."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind != "f":
        return _pixels(x, name)
    flat = x.reshape(len(x), -1)
    with np.errstate(over="ignore"):
        as32 = flat.astype(np.float32)
    finite = np.isfinite(as32).all(axis=1)
    if not finite.all():
        i = _first(~finite)
        what = (
            "a NaN or infinite value"
            if not np.isfinite(flat[i]).all()
            else "a value beyond float32"
        )
        raise CnnlabError(f"{name}: item {i} holds {what}")
    return as32.reshape(x.shape)


def to_set(
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str] | None,
    source: str,
    layout: str | None = None,
    sequences: bool | None = None,
) -> ImageSet:
    """Arrays -> ImageSet of images (N, C, H, W) or sequences (N, C, L)."""
    if y.ndim != 1:
        raise CnnlabError(f"{source}: labels must be 1-D, got shape {y.shape}")
    layout = _pick_layout(x.shape, layout, sequences, source)
    if len(x) != len(y):
        raise CnnlabError(f"{source}: {len(x)} items in x but {len(y)} labels in y")
    if layout in ("NL", "NHW"):
        x = x[:, None]
    elif layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    if len(x) == 0:
        raise CnnlabError(f"{source}: holds no items")
    if 0 in x.shape:
        raise CnnlabError(f"{source}: items of shape {x.shape[1:]} hold no values")
    labels = _class_indices(y, source)
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1)]
    images = torch.from_numpy(np.ascontiguousarray(_values(x, source)))
    return ImageSet(images, torch.from_numpy(labels), classes, source)


def load_arrays(data: str, split: str, sequences: bool | None = None) -> ImageSet | None:
    """The `split` of an array source (None when it has no such split)."""
    if "," in data:
        if split != "train":
            return None
        xs, ys = data.split(",", 1)
        classes_file = Path(xs).parent / CLASSES_FILE
        names = read_names(classes_file, MAX_CLASSES) if classes_file.is_file() else None
        return to_set(read_npy(xs), read_npy(ys), names, data, sequences=sequences)
    path = Path(data)
    # one split's images in memory, never both; every split's labels, for the class count
    found, present = _members(path, {"x_test"} if split == "train" else {"x", "x_train"})
    if "x" in present and "x_train" in present:
        raise CnnlabError(f"{path}: holds both x and x_train; keep one")
    if not ({"x", "x_train"} & present and {"y", "y_train"} & present):
        raise CnnlabError(f"{path}: needs arrays x and y (or x_train and y_train)")
    if ("x_test" in present) != ("y_test" in present):
        raise CnnlabError(f"{path}: x_test and y_test come together; it holds only one of them")
    classes = _class_names(found.get("classes"), f"{path}: array 'classes'")
    layout = _layout(found.get("layout"), f"{path}: array 'layout'")
    y_train, y_test = found.get("y", found.get("y_train")), found.get("y_test")
    if classes is None:  # as many as the largest label of either split says
        labels = [
            _class_indices(y, str(path)) for y in (y_train, y_test) if y is not None and y.size
        ]
        classes = [str(i) for i in range(max(int(v.max()) for v in labels) + 1)] if labels else None
    if split == "test":
        if "x_test" not in present:
            return None
        return to_set(found["x_test"], y_test, classes, f"{path} (test)", layout, sequences)
    x = found.get("x", found.get("x_train"))
    return to_set(x, y_train, classes, f"{path} ({split})", layout, sequences)


# ---------------------------------------------------------------- writing
def layout_of(data: ImageSet) -> str:
    return "NCL" if len(data.shape) == 2 else "NCHW"


def save_npz(train: ImageSet, test: ImageSet | None, out: str | os.PathLike) -> Path:
    """Write OUT.npz: x, y, classes and layout, with x_test and y_test for a test split."""
    out = Path(out)
    for data in (train, test):
        if data is not None and data.streamed:
            raise CnnlabError(
                f"{data.source}: {len(data)} images are too many to hold in memory (over the "
                "memory budget, see CNNLAB_MEMORY_BUDGET), and a .npz file is written whole"
            )
    for name in train.classes:
        encode_name(name)  # the same names a classes.txt can hold
    arrays = {
        "x": train.images.numpy(),
        "y": train.labels.numpy(),
        "classes": np.array(train.classes, dtype=str),
        "layout": np.array(layout_of(train)),
    }
    if test is not None:
        arrays |= {"x_test": test.images.numpy(), "y_test": test.labels.numpy()}
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return out


# ---------------------------------------------------------------- one sample, for predict
def read_sample(path: str | os.PathLike, input_shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A .npy file holding one model input: (C, L) or (C, H, W), or without C when C is 1;
    its values as the training set held them (`dtype`: uint8 or float32)."""
    array = read_npy(path)
    shape = tuple(input_shape)
    if array.shape == shape[1:] and shape[0] == 1:
        array = array[None]
    if array.shape != shape:
        raise CnnlabError(
            f"{path}: an array of shape {array.shape}, but the model takes {shape}"
            + (f" (or {shape[1:]})" if shape[0] == 1 else "")
        )
    return as_dtype(torch.from_numpy(array[None]), dtype, str(path))[0].numpy()


def as_dtype(values: torch.Tensor, dtype: str, source: str) -> torch.Tensor:
    """Values brought to what a model was trained on: float32 (values as they are) or uint8
    (integers 0..255, as from_numpy admits them)."""
    if dtype not in ("uint8", "float32"):
        raise CnnlabError(
            f"{source}: the checkpoint's input_dtype {dtype!r} is not uint8 or float32"
        )
    if str(values.dtype) == f"torch.{dtype}":  # (also a streamed folder, never read here)
        return values
    array = values.numpy()
    if dtype == "uint8":
        return torch.from_numpy(np.ascontiguousarray(_pixels(array, source)))
    if array.dtype.kind in "ui":
        return torch.from_numpy(array.astype(np.float32))
    return torch.from_numpy(np.ascontiguousarray(_values(array, source)))
