import numpy as np
import pytest

from cnnlab.data import load_data
from cnnlab.data.cifar import RECORD, read_batch
from cnnlab.errors import CnnlabError


def _write_batch(path, labels, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    records = np.concatenate(
        [np.array(labels, np.uint8)[:, None], pixels.reshape(len(labels), -1)], 1
    )
    path.write_bytes(records.tobytes())
    return pixels


def test_records_decode_to_the_right_pixels(tmp_path):
    pixels = _write_batch(tmp_path / "data_batch_1.bin", [3, 9, 0])
    images, labels = read_batch(tmp_path / "data_batch_1.bin")
    assert labels.tolist() == [3, 9, 0]
    np.testing.assert_array_equal(images, pixels)
    # the format stores the red plane first, row-major: byte 1 of record 0 is R at (0, 0)
    raw = (tmp_path / "data_batch_1.bin").read_bytes()
    assert raw[1] == pixels[0, 0, 0, 0] and raw[1 + 1024] == pixels[0, 1, 0, 0]
    assert raw[RECORD + 1 + 32] == pixels[1, 0, 1, 0]


def test_folder_of_batches_gives_splits_and_names(tmp_path):
    _write_batch(tmp_path / "data_batch_1.bin", [1, 2])
    _write_batch(tmp_path / "data_batch_2.bin", [3], seed=1)
    _write_batch(tmp_path / "test_batch.bin", [4, 5, 6], seed=2)
    train, test = load_data(str(tmp_path), "train"), load_data(str(tmp_path), "test")
    assert len(train) == 3 and len(test) == 3 and train.shape == (3, 32, 32)
    assert train.classes[1] == "automobile"


def test_wrong_size_and_bad_label(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00" * (RECORD + 5))
    with pytest.raises(CnnlabError, match="not a whole number of 3073-byte"):
        read_batch(tmp_path / "x.bin")
    (tmp_path / "y.bin").write_bytes(b"\x0c" + b"\x00" * (RECORD - 1))
    with pytest.raises(CnnlabError, match="label byte 12"):
        read_batch(tmp_path / "y.bin")
