"""NumPy arrays as data: .npz files and X.npy,Y.npy pairs of images or sequences, read with
their headers checked first and never unpickled."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import load_data, save_npz
from cnnlab.data.arrays import read_npy, read_sample
from cnnlab.errors import CnnlabError


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_images_of_every_layout_and_a_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    path = _npz(
        tmp_path / "a.npz",
        x=x,
        y=y,
        x_test=x[:2],
        y_test=y[:2],
        classes=np.array(["cat", "dog", "émeu"]),
    )
    train, test = load_data(path), load_data(path, "test")
    assert train.shape == (1, 5, 4) and train.dtype == "uint8" and not train.sequences
    assert (train.images[:, 0].numpy() == x).all() and train.labels.tolist() == y.tolist()
    assert train.classes == ["cat", "dog", "émeu"] and len(test) == 2
    nhwc = load_data(
        _npz(tmp_path / "b.npz", x_train=np.zeros((2, 4, 4, 3), np.uint8), y_train=[0, 1])
    )
    assert nhwc.shape == (3, 4, 4) and nhwc.classes == ["0", "1"]
    assert load_data(_npz(tmp_path / "c.npz", x=x, y=y), "test", required=False) is None


def test_sequences_by_rank_by_layout_or_by_what_the_model_takes(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    y = np.array([0, 1, 0, 1])
    plain = _npz(tmp_path / "plain.npz", x=x, y=y)
    assert load_data(plain).shape == (1, 2, 3)  # rank 3 alone: (N, H, W) images
    assert load_data(plain, sequences=True).shape == (2, 3)
    declared = _npz(tmp_path / "ncl.npz", x=x, y=y, layout=np.array("NCL"))
    data = load_data(declared)
    assert data.sequences and data.shape == (2, 3) and data.dtype == "float32"
    assert load_data(_npz(tmp_path / "nl.npz", x=x[:, 0], y=y)).shape == (1, 3)
    with pytest.raises(CnnlabError, match="layout NCHW needs rank 4"):
        load_data(_npz(tmp_path / "bad.npz", x=x, y=y, layout=np.array("NCHW")))


def test_float_values_are_kept_and_their_own_statistics_normalise_them(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal([[-3.0], [40.0]], [[0.5], [7.0]], (500, 2, 16)).astype(np.float64)
    data = load_data(_npz(tmp_path / "f.npz", x=x, y=np.zeros(500, int)), sequences=True)
    assert data.images.dtype == torch.float32
    mean, std = data.stats()
    np.testing.assert_allclose(mean, x.astype(np.float32).mean((0, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, x.astype(np.float32).std((0, 2)), rtol=1e-4)


CASES = {
    "int16 out of 0..255": (np.full((2, 3, 3), 300, np.int16), r"pixel values must lie in 0..255"),
    "NaN": (np.array([[[0.0]], [[np.nan]]]), r"item 1 holds a NaN or infinite value"),
    "past float32": (np.array([[[0.0]], [[1e300]]]), r"item 1 holds a value beyond float32"),
    "booleans": (
        np.ones((2, 3, 3), bool),
        r"dtype bool is not an array of unsigned or signed or float",
    ),
    "text": (np.array([["a"], ["b"]]), r"dtype <U1 is not"),
    "rank 5": (np.zeros((2, 1, 1, 1, 1), np.uint8), r"expected \(N, L\) or \(N, C, L\) sequences"),
    "empty": (np.zeros((0, 3, 3), np.uint8), r"holds no items"),
}


@pytest.mark.parametrize("case", CASES)
def test_values_that_are_not_data_are_refused_in_one_line(tmp_path, case):
    x, message = CASES[case]
    path = _npz(tmp_path / "x.npz", x=x, y=np.zeros(len(x), int))
    with pytest.raises(CnnlabError, match=message):
        load_data(path)


class Trap:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code from a data file ran"))


def test_object_arrays_are_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    objects = np.array([Trap(marker), Trap(marker)], dtype=object)
    path = _npz(tmp_path / "evil.npz", x=objects, y=np.zeros(2, int))
    with pytest.raises(
        CnnlabError,
        match=r"array 'x': holds Python objects \(dtype object\), which would need unpickling",
    ):
        load_data(path)
    np.save(tmp_path / "evil.npy", objects, allow_pickle=True)
    with pytest.raises(CnnlabError, match="evil.npy: holds Python objects"):
        read_npy(tmp_path / "evil.npy")
    assert not marker.exists()


def _header(shape, dtype="|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()  # the magic string, then the header


def test_sizes_are_checked_against_the_file_and_the_budget_before_reading(tmp_path, monkeypatch):
    (tmp_path / "huge.npy").write_bytes(_header((10**12,)))
    with pytest.raises(
        CnnlabError,
        match=r"huge.npy: the header's 1000000000000 of uint8 needs .* over the memory budget",
    ):
        read_npy(tmp_path / "huge.npy")
    (tmp_path / "short.npy").write_bytes(_header((100,)) + bytes(10))
    with pytest.raises(
        CnnlabError, match=r"short.npy: data for .* needs 100 bytes but the file holds 10"
    ):
        read_npy(tmp_path / "short.npy")
    (tmp_path / "neg.npy").write_bytes(_header((-5, 3)))
    with pytest.raises(CnnlabError, match="negative dimension"):
        read_npy(tmp_path / "neg.npy")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY but then nothing")
    with pytest.raises(CnnlabError, match="junk.npy: not a NumPy .npy array"):
        read_npy(tmp_path / "junk.npy")
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(CnnlabError, match="zip.npz: not a .npz file"):
        load_data(str(tmp_path / "zip.npz"))


def test_a_compressed_member_is_inflated_only_as_far_as_its_header_says(tmp_path):
    """A 10-item header followed by 512 MB of zeros that deflate to under a megabyte."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            f.write(_header((10, 1, 1)))
            for _ in range(512):
                f.write(bytes(1 << 20))
        z.writestr(
            "y.npy", (lambda b: (np.save(b, np.zeros(10, np.uint8)), b.getvalue())[1])(io.BytesIO())
        )
    assert path.stat().st_size < 2 << 20
    with pytest.raises(
        CnnlabError, match=r"array 'x': more data than the header's 10x1x1 of uint8"
    ):
        load_data(str(path))


def test_a_pair_of_npy_files_with_class_names_beside_them(tmp_path):
    np.save(tmp_path / "X.npy", np.zeros((3, 2, 8), np.float32))
    np.save(tmp_path / "Y.npy", np.array([0, 1, 1], np.uint8))
    (tmp_path / "classes.txt").write_text("low\nhigh\n")
    data = load_data(f"{tmp_path / 'X.npy'},{tmp_path / 'Y.npy'}", sequences=True)
    assert data.shape == (2, 8) and data.classes == ["low", "high"]
    np.save(tmp_path / "Y2.npy", np.array([0, 1], np.uint8))
    with pytest.raises(CnnlabError, match="3 items in x but 2 labels in y"):
        load_data(f"{tmp_path / 'X.npy'},{tmp_path / 'Y2.npy'}")


def test_npz_round_trip_keeps_dtype_layout_names_and_test_split(tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 3, 10)).astype(np.float32)
    path = _npz(
        tmp_path / "in.npz",
        x=x,
        y=np.arange(6) % 2,
        x_test=x[:2],
        y_test=[1, 0],
        layout=np.array("NCL"),
        classes=np.array(["a b", "line\\n"]),
    )
    train, test = load_data(path), load_data(path, "test")
    save_npz(train, test, tmp_path / "out.npz")
    again, again_test = (
        load_data(str(tmp_path / "out.npz")),
        load_data(str(tmp_path / "out.npz"), "test"),
    )
    assert (
        again.sequences
        and torch.equal(again.images, train.images)
        and again.classes == train.classes
    )
    assert torch.equal(again_test.labels, test.labels)


def test_one_sample_for_predict(tmp_path):
    np.save(tmp_path / "s.npy", np.arange(8, dtype=np.float64))
    got = read_sample(tmp_path / "s.npy", (1, 8), "float32")
    assert got.shape == (1, 8) and got.dtype == np.float32
    with pytest.raises(
        CnnlabError, match=r"s.npy: an array of shape \(8,\), but the model takes \(2, 4\)"
    ):
        read_sample(tmp_path / "s.npy", (2, 4), "float32")
    np.save(tmp_path / "p.npy", np.full((1, 8), 300.0))
    with pytest.raises(CnnlabError, match="pixel values must lie in 0..255"):
        read_sample(tmp_path / "p.npy", (1, 8), "uint8")


def test_a_model_of_float_images_reads_a_picture_as_eval_reads_it(tmp_path):
    """Pictures reach a model trained on float arrays as the values 0..255 on every path."""
    from PIL import Image

    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.evaluate import load_for, normalizer, prepare_image
    from cnnlab.infer import logits
    from cnnlab.train import TrainConfig, train

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, 1, 12, 12)).astype(np.float32)
    data = _npz(tmp_path / "f.npz", x=x, y=np.arange(64) % 2)
    spec = tmp_path / "s.yaml"
    spec.write_text("input: [1, 12, 12]\nclasses: 2\nlayers: [{type: dense}]\n")
    train(
        TrainConfig(
            model=str(spec),
            data=data,
            epochs=1,
            batch_size=32,
            val_split=0.0,
            augment="none",
            out=str(tmp_path / "run"),
        )
    )
    ckpt = load_checkpoint(tmp_path / "run")
    picture = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    for label in ("a", "b"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        Image.fromarray(picture).save(tmp_path / "pics" / label / "p.png")
    as_eval = load_for(ckpt, str(tmp_path / "pics"), "train").images[:1]
    as_predict = torch.from_numpy(prepare_image(ckpt, tmp_path / "pics" / "a" / "p.png"))[None]
    assert as_predict.dtype == torch.float32 and torch.equal(as_predict, as_eval)
    norm = normalizer(ckpt)
    assert torch.allclose(logits(ckpt.model, as_predict, norm), logits(ckpt.model, as_eval, norm))


def test_a_damaged_compressed_array_is_one_line(tmp_path):
    path = tmp_path / "c.npz"
    np.savez_compressed(path, x=np.zeros((50, 8, 8), np.uint8), y=np.zeros(50, np.int64))
    with zipfile.ZipFile(path) as z:
        offset = z.getinfo("x.npy").header_offset
    raw = bytearray(path.read_bytes())
    names = int.from_bytes(raw[offset + 26 : offset + 28], "little")
    extra = int.from_bytes(raw[offset + 28 : offset + 30], "little")
    start = offset + 30 + names + extra  # the first bytes of x's deflate stream
    raw[start : start + 4] = b"\xff" * 4  # block type 3: no such deflate block
    path.write_bytes(bytes(raw))
    with pytest.raises(CnnlabError, match=r"c.npz: a compressed array cannot be read \(Error -3"):
        load_data(str(path), "train")


def test_the_class_count_comes_from_both_splits(tmp_path):
    data = _npz(
        tmp_path / "s.npz",
        x=np.zeros((6, 4, 4), np.uint8),
        y=np.array([0, 1, 2, 3, 4, 0]),
        x_test=np.zeros((3, 4, 4), np.uint8),
        y_test=np.array([0, 1, 1]),
    )
    train, test = load_data(data, "train"), load_data(data, "test")
    assert train.classes == test.classes == ["0", "1", "2", "3", "4"]
    data = _npz(
        tmp_path / "t.npz",
        x=np.zeros((2, 4, 4), np.uint8),
        y=np.array([0, 1]),
        x_test=np.zeros((2, 4, 4), np.uint8),
        y_test=np.array([0, 2]),
    )
    assert load_data(data, "train").classes == ["0", "1", "2"]


def test_float_images_are_shown_over_their_own_range():
    from cnnlab.data.images import to_pil

    values = np.linspace(-3.0, 5.0, 16, dtype=np.float32).reshape(1, 4, 4)
    shown = np.asarray(to_pil(values))
    assert shown.min() == 0 and shown.max() == 255 and (np.diff(shown.ravel()) >= 0).all()
