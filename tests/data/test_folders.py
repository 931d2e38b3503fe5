import numpy as np
import pytest
from PIL import Image

from cnnlab.data import load_data, save_idx_set
from cnnlab.data.folders import load_folder, save_folder
from cnnlab.errors import CnnlabError


def _make_folder(root, mode="RGB", n=3, size=(6, 5), classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    expected = []
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            shape = (size[0], size[1], 3) if mode == "RGB" else size
            arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(arr, mode).save(root / name / f"{i}.png")
            expected.append((arr, label))
    return expected


def test_rgb_folder_loads_in_order_with_exact_pixels(tmp_path):
    expected = _make_folder(tmp_path)
    data = load_folder(tmp_path, progress=False)
    assert data.classes == ["cat", "dog"] and data.shape == (3, 6, 5)
    for i, (arr, label) in enumerate(expected):
        np.testing.assert_array_equal(data.images[i].numpy().transpose(1, 2, 0), arr)
        assert data.labels[i] == label


def test_gray_is_inferred_and_channels_can_be_forced(tmp_path):
    _make_folder(tmp_path, mode="L")
    assert load_folder(tmp_path, progress=False).shape == (1, 6, 5)
    forced = load_folder(tmp_path, channels=3, progress=False)
    assert forced.shape == (3, 6, 5)
    assert (forced.images[:, 0] == forced.images[:, 2]).all()


def test_resize_and_mixed_sizes(tmp_path):
    _make_folder(tmp_path)
    Image.new("RGB", (9, 9)).save(tmp_path / "cat" / "big.png")
    with pytest.raises(CnnlabError, match="differ in size.*--size"):
        load_folder(tmp_path, progress=False)
    assert load_folder(tmp_path, size=(4, 4), progress=False).shape == (3, 4, 4)


def test_corrupt_and_non_image_files_are_named(tmp_path):
    _make_folder(tmp_path)
    good = (tmp_path / "cat" / "0.png").read_bytes()
    (tmp_path / "dog" / "broken.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "dog" / "text.jpg").write_text("not a picture")
    with pytest.raises(CnnlabError, match=r"broken\.png.*--skip-bad"):
        load_folder(tmp_path, progress=False)
    data = load_folder(tmp_path, skip_bad=True, progress=False)
    assert len(data) == 6
    assert len(data.skipped) == 2
    assert any("broken.png" in s for s in data.skipped) and any(
        "text.jpg" in s for s in data.skipped
    )


def test_pixel_cap_refuses_bombs(tmp_path):
    _make_folder(tmp_path, n=1)
    with pytest.raises(CnnlabError, match="over the cap of 20"):
        load_folder(tmp_path, max_pixels=20, progress=False)


def test_folder_idx_folder_round_trip_is_exact(tmp_path):
    _make_folder(tmp_path / "src", classes=("a", "b", "c"))
    original = load_folder(tmp_path / "src", progress=False)
    save_idx_set(original, tmp_path / "idx")
    as_idx = load_data(str(tmp_path / "idx"))
    assert as_idx.classes == ["a", "b", "c"]
    assert (as_idx.images == original.images).all() and (as_idx.labels == original.labels).all()
    save_folder(as_idx, tmp_path / "back")
    back = load_folder(tmp_path / "back", progress=False)
    assert back.classes == original.classes
    assert (back.images == original.images).all() and (back.labels == original.labels).all()


def test_train_test_subfolders(tmp_path):
    _make_folder(tmp_path / "train")
    _make_folder(tmp_path / "test", n=1)
    assert len(load_data(str(tmp_path), "train")) == 6
    assert len(load_data(str(tmp_path), "test")) == 2


def test_empty_and_missing(tmp_path):
    with pytest.raises(CnnlabError, match="no class sub-folders"):
        load_folder(tmp_path)
    with pytest.raises(CnnlabError, match="no such file or directory"):
        load_data(str(tmp_path / "nope"))
