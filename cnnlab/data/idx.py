"""The IDX ("ubyte") file format of MNIST, read and written in full.

Header: two zero bytes, a dtype code, the number of dimensions, then one big-endian
uint32 per dimension; the data follows in C order, big-endian. Files may be gzipped.
Before any array is allocated the header is checked against the memory budget and, for a
plain file, against the file's real size; a gzip stream is inflated into the array the
header sized, never further, so a header that claims gigabytes and a small file that
inflates to gigabytes both cost nothing.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from cnnlab.atomic import atomic_path
from cnnlab.data.lazy import check_budget
from cnnlab.errors import CnnlabError

DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODES: dict[str, int] = {dt.newbyteorder("=").str[1:]: code for code, dt in DTYPES.items()}
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
MAX_DIMS = 32  # NumPy 1.x's own limit; IDX files in use have 1 to 4


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _read_exactly(f, n: int, path: Path, what: str) -> bytes:
    """Read n bytes in chunks (memory grows with real data only), failing if short."""
    parts, got = [], 0
    while got < n:
        part = f.read(min(_CHUNK, n - got))
        if not part:
            raise CnnlabError(f"{path}: {what} needs {n} bytes but the file holds only {got}")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _parse_header(f, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    head = f.read(4)
    if len(head) < 4:
        raise CnnlabError(f"{path}: too short to be an IDX file ({len(head)} bytes)")
    if head[:2] != b"\x00\x00":
        raise CnnlabError(f"{path}: not an IDX file (magic {head.hex()}, expected 0000xxxx)")
    code, ndim = head[2], head[3]
    if code not in DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in DTYPES)
        raise CnnlabError(f"{path}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    if ndim == 0 or ndim > MAX_DIMS:
        raise CnnlabError(f"{path}: IDX header declares {ndim} dimensions (1 to {MAX_DIMS})")
    dims = struct.unpack(f">{ndim}I", _read_exactly(f, 4 * ndim, path, "the header"))
    return DTYPES[code], tuple(dims), 4 + 4 * ndim


def _check_budget(path: Path, dtype: np.dtype, dims: tuple[int, ...]) -> None:
    """Refuse a header whose array would not fit the memory budget (zero dimensions count as 1,
    since NumPy refuses such shapes as well)."""
    size = math.prod(max(d, 1) for d in dims) * dtype.itemsize
    shape = "x".join(map(str, dims))
    check_budget(size, f"{path}: the header's {shape} of {dtype.name} needs {size} bytes")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian NumPy array."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path}: no such file")
    try:
        if _is_gzip(path):
            return _read_stream(gzip.open(path, "rb"), path)
        return _read_plain(path)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise CnnlabError(f"{path}: corrupt or truncated gzip data ({e})") from None
    except OSError as e:
        raise CnnlabError(f"{path}: cannot read ({e.strerror or e})") from None


def _payload_size(dtype: np.dtype, dims: tuple[int, ...]) -> int:
    return int(np.prod(dims, dtype=object)) * dtype.itemsize


def _read_plain(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        dtype, dims, header = _parse_header(f, path)
    need, have = _payload_size(dtype, dims), path.stat().st_size - header
    if need != have:
        shape = "x".join(map(str, dims))
        raise CnnlabError(
            f"{path}: data for the header's {shape} of {dtype.name} needs {need} bytes "
            f"but the file holds {have}"
        )
    _check_budget(path, dtype, dims)  # a sparse file can be as large as it claims
    data = np.fromfile(path, dtype=dtype, offset=header)
    return data.reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def _read_stream(f, path: Path) -> np.ndarray:
    """Inflate exactly the header's payload into its array, then make sure nothing follows."""
    with f:
        dtype, dims, _ = _parse_header(f, path)
        _check_budget(path, dtype, dims)
        need = _payload_size(dtype, dims)
        shape = "x".join(map(str, dims))
        data = np.empty(need // dtype.itemsize, dtype=dtype)
        view, got = memoryview(data.view(np.uint8)), 0
        while got < need:
            n = f.readinto(view[got : got + _CHUNK])
            if not n:
                raise CnnlabError(
                    f"{path}: data for the header's {shape} of {dtype.name} needs {need} bytes "
                    f"but the file holds only {got}"
                )
            got += n
        if f.read(1):
            raise CnnlabError(f"{path}: more data than the header's {shape} of {dtype.name}")
    return data.reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write an array as IDX; gzip when the name ends in .gz (or compress=True). Atomic."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    key = array.dtype.newbyteorder("=").str[1:]
    if key not in CODES:
        raise CnnlabError(f"{path}: IDX cannot hold dtype {array.dtype} (use {sorted(CODES)})")
    if array.ndim == 0 or array.ndim > 255:
        raise CnnlabError(f"{path}: IDX needs 1 to 255 dimensions, got {array.ndim}")
    code = CODES[key]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = array.astype(DTYPES[code], copy=False).tobytes()
    compress = path.suffix == ".gz" if compress is None else compress
    with atomic_path(path) as tmp:
        opener = gzip.open if compress else open
        with opener(tmp, "wb") as f:
            f.write(header)
            f.write(body)
    return path


def read_idx_pair(
    images: str | os.PathLike, labels: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and its label file, checking that they describe the same items."""
    x, y = read_idx(images), read_idx(labels)
    if y.ndim != 1:
        raise CnnlabError(f"{labels}: labels must be 1-D, got shape {y.shape}")
    if x.ndim < 2:
        raise CnnlabError(f"{images}: images need at least 2 dimensions, got shape {x.shape}")
    if len(x) != len(y):
        raise CnnlabError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return x, y
