import gzip
import struct

import numpy as np
import pytest

from cnnlab.data.idx import read_idx, read_idx_pair, write_idx
from cnnlab.errors import CnnlabError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 2, 2)])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_every_dtype_and_rank_round_trips(tmp_path, dtype, shape, suffix):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info:
        arr = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        arr = rng.standard_normal(shape).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == shape
    np.testing.assert_array_equal(back, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_header_is_big_endian_per_the_format(tmp_path):
    path = write_idx(tmp_path / "x", np.array([[1, 2, 3]], dtype=np.int16))
    raw = path.read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0B, 2])
    assert struct.unpack(">II", raw[4:12]) == (1, 3)
    assert struct.unpack(">3h", raw[12:]) == (1, 2, 3)


def _raw(tmp_path, data: bytes, name="bad", gz=False):
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_wrong_magic(tmp_path, gz):
    with pytest.raises(CnnlabError, match="not an IDX file"):
        read_idx(_raw(tmp_path, b"\x01\x02\x08\x01" + b"\x00" * 8, gz=gz))


@pytest.mark.parametrize("gz", [False, True])
def test_unknown_dtype(tmp_path, gz):
    with pytest.raises(CnnlabError, match="unknown IDX dtype code 0x0A"):
        read_idx(_raw(tmp_path, b"\x00\x00\x0a\x01" + struct.pack(">I", 1) + b"\x00", gz=gz))


@pytest.mark.parametrize("gz", [False, True])
def test_dims_larger_than_file_is_an_error_not_an_allocation(tmp_path, gz):
    # claims 4 billion x 4 billion float64s; must fail from the size check (plain) or the
    # memory budget (gzip, whose inflated size is unknown until read), instantly
    header = b"\x00\x00\x0e\x02" + struct.pack(">II", 2**32 - 1, 2**32 - 1)
    expected = "over the memory budget" if gz else "but the file holds"
    with pytest.raises(CnnlabError, match=rf"needs \d+ bytes.* {expected}"):
        read_idx(_raw(tmp_path, header + b"\x00" * 64, gz=gz))


def test_extra_trailing_data_is_an_error(tmp_path):
    header = b"\x00\x00\x08\x01" + struct.pack(">I", 2)
    with pytest.raises(CnnlabError, match="needs 2 bytes but the file holds 3"):
        read_idx(_raw(tmp_path, header + b"abc"))
    with pytest.raises(CnnlabError, match="more data than the header"):
        read_idx(_raw(tmp_path, header + b"abc", name="g", gz=True))


def test_truncated_gzip(tmp_path):
    full = gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 5000) + bytes(range(256)) * 20)
    path = tmp_path / "t.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(CnnlabError, match=r"t.gz: .*truncated"):
        read_idx(path)


def test_header_shorter_than_its_dimensions(tmp_path):
    with pytest.raises(CnnlabError, match="the header needs 12 bytes"):
        read_idx(_raw(tmp_path, b"\x00\x00\x08\x03\x00\x00"))


def test_pair_count_mismatch(tmp_path):
    images = write_idx(tmp_path / "i", np.zeros((4, 2, 2), np.uint8))
    labels = write_idx(tmp_path / "l", np.zeros(3, np.uint8))
    with pytest.raises(CnnlabError, match="holds 4 images but .* holds 3 labels"):
        read_idx_pair(images, labels)


def test_missing_file(tmp_path):
    with pytest.raises(CnnlabError, match="no such file"):
        read_idx(tmp_path / "nope")


def test_write_leaves_no_partial_file_on_error(tmp_path):
    with pytest.raises(CnnlabError):
        write_idx(tmp_path / "x", np.zeros(3, np.complex64))
    assert list(tmp_path.iterdir()) == []
