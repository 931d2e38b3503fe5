"""Folders at real sizes: decoded by a pool of processes in file order, cached on disk keyed by
every file's path, size and modification time, and read back with their skip list."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import cache, decode
from cnnlab.data.folders import load_folder
from cnnlab.data.images import open_image, to_array
from cnnlab.data.lazy import LazyImages
from cnnlab.data.listing import scan
from cnnlab.errors import CnnlabError


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A folder cache of this test's own, and chunks of 3 files so that 12 files take a pool."""
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNLAB_FOLDER_CACHE", raising=False)
    monkeypatch.setattr(decode, "CHUNK", 3)
    return tmp_path / "cache" / "folders"


def _mixed(seed: int, i: int) -> Image.Image:
    """Every mode a folder meets: gray, colour, palette, alpha, 16-bit."""
    rng = np.random.default_rng(seed * 100 + i)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    kind = i % 6
    if kind == 0:
        return Image.fromarray(rgb[..., 0])
    if kind == 1:
        return Image.fromarray(rgb)
    if kind == 2:
        return Image.fromarray(rgb).convert("P")
    if kind == 3:
        return Image.fromarray(rgb).convert("RGBA")
    if kind == 4:
        return Image.fromarray(rgb[..., 0]).convert("LA")
    return Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)


def make_folder(root: Path, n: int = 12, classes=("b", "a"), seed: int = 0, gray=False) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n // len(classes)):
            img = _mixed(seed, i * len(classes) + c)
            (img.convert("L") if gray else img).save(root / name / f"{i:03d}.png")
    return root


def _reference(root: Path, channels: int, size=None) -> np.ndarray:
    """One file at a time, the way a single image is read anywhere else in cnnlab."""
    return np.stack([to_array(open_image(p), channels, size) for p in scan(root).paths])


def _no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded although the cache holds these files")

    monkeypatch.setattr("cnnlab.data.folders.decode_files", refuse)


def test_a_pool_of_workers_gives_exactly_what_one_file_at_a_time_gives(tmp_path):
    root = make_folder(tmp_path / "data")
    pooled = load_folder(root, workers=2, cached=False, progress=False)
    alone = load_folder(root, workers=1, cached=False, progress=False)
    assert pooled.shape == (3, 6, 5)  # colour present: gray images repeat their plane
    np.testing.assert_array_equal(pooled.images.numpy(), _reference(root, 3))
    assert (pooled.images == alone.images).all() and (pooled.labels == alone.labels).all()
    assert pooled.labels.tolist() == [0] * 6 + [1] * 6 and pooled.classes == ["a", "b"]
    resized = load_folder(root, channels=1, size=(4, 3), workers=2, cached=False, progress=False)
    np.testing.assert_array_equal(resized.images.numpy(), _reference(root, 1, (4, 3)))
    gray = load_folder(make_folder(tmp_path / "gray", gray=True), workers=2, cached=False)
    assert gray.shape == (1, 6, 5)


def test_the_first_bad_file_in_file_order_is_named_whichever_worker_met_it(tmp_path):
    root = make_folder(tmp_path / "data")
    files = scan(root).paths
    Path(files[10]).write_bytes(b"not a picture")
    Path(files[4]).write_bytes(Path(files[4]).read_bytes()[:40])  # header intact, data cut
    with pytest.raises(CnnlabError) as err:
        load_folder(root, workers=2, progress=False)
    assert str(err.value).startswith(f"{files[4]}: ") and str(err.value).endswith(
        "(pass --skip-bad to skip such files)"
    )
    data = load_folder(root, workers=2, skip_bad=True, progress=False)
    assert len(data) == 10 and [s.split(": ")[0] for s in data.skipped] == [files[4], files[10]]


def test_the_second_load_reads_the_cache_and_gets_the_same_set(tmp_path, own_cache, monkeypatch):
    root = make_folder(tmp_path / "data")
    first = load_folder(root, size=(4, 4), progress=False)
    assert len(list(own_cache.glob("*.npy"))) == len(list(own_cache.glob("*.json"))) == 1
    _no_decoding(monkeypatch)
    again = load_folder(root, size=(4, 4), progress=False)
    assert (again.images == first.images).all() and (again.labels == first.labels).all()
    assert again.classes == first.classes and again.source == str(root)
    with pytest.raises(AssertionError, match="decoded although"):  # another size: another entry
        load_folder(root, size=(5, 5), progress=False)


@pytest.mark.parametrize(
    "change", ["rewritten", "copied-keeping-size-and-mtime", "added", "removed", "touched"]
)
def test_a_changed_file_is_decoded_afresh(tmp_path, change):
    root = make_folder(tmp_path / "data", gray=True)
    before = load_folder(root, progress=False)
    target = Path(scan(root).paths[3])
    if change == "rewritten":  # same name, other pixels, written in place
        Image.fromarray(255 - np.asarray(Image.open(target))).save(target)
    elif change.startswith("copied"):  # as cp -p or rsync -a bring in another version
        old = target.stat()
        other = tmp_path / "other.png"
        pixels = np.asarray(Image.open(target))
        Image.fromarray(pixels[::-1].copy()).save(other)  # the same pixels upside down
        assert other.stat().st_size == old.st_size  # (a PNG of the same values, reordered rows)
        os.replace(other, target)
        os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    elif change == "added":
        Image.new("L", (5, 6), 7).save(root / "a" / "zzz.png")
    elif change == "removed":
        target.unlink()
    else:
        os.utime(target, ns=(0, 0))
    after = load_folder(root, progress=False)
    np.testing.assert_array_equal(after.images.numpy(), _reference(root, 1))
    if change in ("rewritten", "copied-keeping-size-and-mtime"):
        assert not (after.images == before.images).all()


def test_skip_bad_on_a_cached_load_brings_the_skipped_files_back(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data")
    bad = Path(scan(root).paths[7])
    bad.write_bytes(b"GIF89a and then nothing")
    with pytest.raises(CnnlabError) as uncached:
        load_folder(root, cached=False, progress=False)
    first = load_folder(root, skip_bad=True, progress=False)
    _no_decoding(monkeypatch)
    again = load_folder(root, skip_bad=True, progress=False)
    assert (
        again.skipped == first.skipped and len(again.skipped) == 1 and str(bad) in again.skipped[0]
    )
    assert (again.images == first.images).all() and (again.labels == first.labels).all()
    with pytest.raises(CnnlabError) as cached:  # without --skip-bad: the same one-line error
        load_folder(root, progress=False)
    assert str(cached.value) == str(uncached.value)


def test_the_cache_stays_under_its_bound_and_can_be_turned_off(tmp_path, own_cache, monkeypatch):
    roots = [make_folder(tmp_path / f"d{i}", seed=i) for i in range(3)]
    load_folder(roots[0], progress=False)
    entry = sum(f.stat().st_size for f in own_cache.iterdir())
    monkeypatch.setenv("CNNLAB_FOLDER_CACHE", str(int(entry * 1.5)))  # room for one entry
    for root in roots[1:]:
        load_folder(root, progress=False)
    assert sum(f.stat().st_size for f in own_cache.iterdir()) <= entry * 1.5
    assert len(list(own_cache.glob("*.json"))) == 1  # the most recent one
    _no_decoding(monkeypatch)
    load_folder(roots[2], progress=False)
    monkeypatch.setenv("CNNLAB_FOLDER_CACHE", "0")
    with pytest.raises(AssertionError, match="decoded although"):
        load_folder(roots[2], progress=False)
    monkeypatch.setenv("CNNLAB_FOLDER_CACHE", "lots")
    with pytest.raises(CnnlabError, match="CNNLAB_FOLDER_CACHE='lots': expected a number"):
        load_folder(roots[2], progress=False)


class Trap:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code from the cache ran"))


@pytest.mark.parametrize("damage", ["truncated", "garbage-json", "pickled", "wrong-count"])
def test_a_damaged_entry_is_decoded_afresh_and_never_unpickled(tmp_path, own_cache, damage):
    root = make_folder(tmp_path / "data")
    good = load_folder(root, progress=False)
    array, meta = next(own_cache.glob("*.npy")), next(own_cache.glob("*.json"))
    marker = tmp_path / "ran"
    if damage == "truncated":
        array.write_bytes(array.read_bytes()[:100])
    elif damage == "garbage-json":
        meta.write_text("{not json")
    elif damage == "pickled":
        np.save(array, np.array([Trap(marker)], dtype=object), allow_pickle=True)
    else:
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "labels": [0]}))
    again = load_folder(root, progress=False)
    assert (again.images == good.images).all() and not marker.exists()
    assert cache.read(meta.stem) is not None  # and the entry is whole again


def test_listing_order_is_sorted_paths_including_nested_and_hidden_files(tmp_path):
    root = tmp_path / "data"
    names = ["a.png", "a/b.png", "a-c.png", ".hidden.png", "B.png", "x/y/z.png", "noext", "t.txt"]
    for name in names:
        path = root / "cls" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (2, 2)).save(path, format="PNG")
    (root / ".not-a-class").mkdir()
    (root / "cls" / "link").symlink_to(root / "cls" / "x", target_is_directory=True)
    (root / "cls" / "f.png").symlink_to(root / "cls" / "a.png")
    expected = [
        str(f)
        for f in sorted((root / "cls").rglob("*"))
        if f.is_file() and f.suffix.lower() in {".png"}
    ]
    assert scan(root).paths == expected and len(expected) == 7


def test_a_large_jpeg_is_decoded_at_reduced_scale_alike_in_memory_and_streamed(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "data" / "c").mkdir(parents=True)
    path = tmp_path / "data" / "c" / "big.jpg"
    smooth = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((1024, 768))
    smooth.save(path, quality=95)
    assert open_image(path, draft=(64, 64)).size == (128, 96)  # 1/8 scale, still >= 64x64
    in_memory = load_folder(tmp_path / "data", size=(64, 64), progress=False)
    streamed = LazyImages([path], 3, (64, 64))[0]
    assert (in_memory.images[0] == streamed).all()
    full = to_array(open_image(path), 3, (64, 64)).astype(int)
    assert np.abs(in_memory.images[0].numpy().astype(int) - full).mean() < 3
