"""Hostile files met as a user meets them: built on disk, given to the real command line in a
process of its own under a 3 GB address-space limit and a deadline (tests/hostile/runner.py).

Each failure must be exit status 1 and exactly one stderr line naming the file, field or
layer; each input that is merely unusual (odd modes, odd class names) must just work.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.idx import write_idx
from tests.conftest import TINY_SPEC, make_tiny_idx
from tests.hostile.conftest import (
    EPS,
    HOSTILE_NAMES,
    gzip_bomb,
    idx_header,
    one_line_error,
    png_claiming,
    quadrant_images,
    sparse_file,
    succeeded,
    truncated_png,
    write_folder,
)

GB = 1 << 30


def _pair(root, images, labels):
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / f"images-idx{images.ndim}-ubyte", images)
    write_idx(root / "labels-idx1-ubyte", labels)
    return root


# ---------------------------------------------------------------- data info: IDX and labels
LABEL_CASES = {
    "huge-label": (
        np.array([0, 2**31 - 1], np.int32),
        r"label 2147483647 \(item 1\) is past the cap of 100000 classes",
    ),
    "negative-label": (np.array([0, -1], np.int8), r"label -1 \(item 1\) is negative"),
    "fractional-label": (
        np.array([0, 0.5], np.float32),
        r"label 0.5 \(item 1\) is not a whole number",
    ),
    "nan-label": (np.array([0, np.nan], np.float64), r"label nan \(item 1\) is not a whole number"),
}


@pytest.mark.parametrize("case", LABEL_CASES)
def test_labels_that_are_not_class_indices(cli, tmp_path, case):
    labels, message = LABEL_CASES[case]
    root = _pair(tmp_path, np.zeros((2, 4, 4), np.uint8), labels)
    line = one_line_error(cli.run("data", "info", root))
    assert re.search(message, line), line


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_float_pixels(cli, tmp_path, value):
    images = np.zeros((3, 4, 4), np.float32)
    images[2, 1, 1] = value
    root = _pair(tmp_path, images, np.zeros(3, np.uint8))
    line = one_line_error(cli.run("data", "info", root))
    assert re.search(r"image 2 holds a NaN or infinite pixel value", line), line


def test_empty_dataset(cli, tmp_path):
    root = _pair(tmp_path, np.zeros((0, 4, 4), np.uint8), np.zeros(0, np.uint8))
    line = one_line_error(cli.run("data", "info", root))
    assert re.search(r"holds no images", line), line


def test_idx_with_more_dimensions_than_numpy_takes(cli, tmp_path):
    (tmp_path / "images-idx3-ubyte").write_bytes(idx_header(0x08, (1,) * 70) + b"\x00")
    write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(1, np.uint8))
    line = one_line_error(cli.run("data", "info", tmp_path))
    assert re.search(r"images-idx3-ubyte: IDX header declares 70 dimensions", line), line


def test_idx_dims_whose_product_overflows_beside_a_zero(cli, tmp_path):
    (tmp_path / "images-idx3-ubyte").write_bytes(idx_header(0x08, (0, 2**32 - 1, 2**32 - 1)))
    write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(0, np.uint8))
    line = one_line_error(cli.run("data", "info", tmp_path))
    assert re.search(r"images-idx3-ubyte: .* over the memory budget", line), line


def test_sparse_idx_as_large_as_its_header_claims(cli, tmp_path):
    head = idx_header(0x08, (3, 1 << 15, 1 << 15))  # 3 GB of uint8, on disk as a hole
    sparse_file(tmp_path / "images-idx3-ubyte", len(head) + (3 << 30), head)
    write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(3, np.uint8))
    line = one_line_error(cli.run("data", "info", tmp_path))
    assert re.search(r"images-idx3-ubyte: .* over the memory budget", line), line


def test_gzip_bomb_with_a_small_header_stops_at_the_header(cli, tmp_path):
    bomb = gzip_bomb(idx_header(0x08, (2, 4, 4)) + bytes(32), 4 * GB)
    (tmp_path / "images-idx3-ubyte.gz").write_bytes(bomb)
    write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(2, np.uint8))
    line = one_line_error(cli.run("data", "info", tmp_path))
    assert re.search(r"images-idx3-ubyte.gz: more data than the header's 2x4x4", line), line


def test_gzip_whose_header_claims_gigabytes_and_inflates_to_them(cli, tmp_path):
    bomb = gzip_bomb(idx_header(0x08, (4, 1 << 15, 1 << 15)), 4 * GB)
    (tmp_path / "images-idx3-ubyte.gz").write_bytes(bomb)
    write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(4, np.uint8))
    line = one_line_error(cli.run("data", "info", tmp_path))
    assert re.search(r"images-idx3-ubyte.gz: .* over the memory budget", line), line


# ---------------------------------------------------------------- data info: names files
def _idx_with_classes(root, text: bytes | None = None, size: int | None = None):
    _pair(root, np.zeros((3, 4, 4), np.uint8), np.array([0, 1, 2], np.uint8))
    if size is not None:
        sparse_file(root / "classes.txt", size)
    else:
        (root / "classes.txt").write_bytes(text)
    return root


def test_classes_file_of_gigabytes(cli, tmp_path):
    root = _idx_with_classes(tmp_path, size=3 * GB)
    line = one_line_error(cli.run("data", "info", root))
    assert re.search(r"classes.txt: \d+ bytes is too large for a list of class names", line), line


def test_classes_file_that_is_binary(cli, tmp_path):
    root = _idx_with_classes(tmp_path, bytes(range(128, 256)) * 4)
    line = one_line_error(cli.run("data", "info", root))
    assert re.search(r"classes.txt: not UTF-8 text", line), line


def test_blank_line_in_classes_file_is_refused_not_dropped(cli, tmp_path):
    root = _idx_with_classes(tmp_path, b"cat\n\ndog\nfish\n")
    line = one_line_error(cli.run("data", "info", root))
    assert re.search(r"classes.txt: line 2 is blank", line), line


def test_cifar_batch_of_gigabytes(cli, tmp_path):
    sparse_file(tmp_path / "data_batch_1.bin", 3073 * 1_000_000)
    line = one_line_error(cli.run("data", "info", tmp_path))
    assert re.search(r"CIFAR batches, over the memory budget", line), line


def test_cifar_names_file_that_is_binary(cli, tmp_path):
    record = bytes([3]) + bytes(3072)
    (tmp_path / "data_batch_1.bin").write_bytes(record * 2)
    (tmp_path / "batches.meta.txt").write_bytes(b"\xff\xfe\x00binary")
    line = one_line_error(cli.run("data", "info", tmp_path))
    assert re.search(r"batches.meta.txt: binary data", line), line


# ---------------------------------------------------------------- images in folders
def _folder(root, n=8):
    return write_folder(root, n=n, names=["a", "b", "c", "d"])


def test_postscript_is_never_opened_whatever_its_name(cli, tmp_path):
    root = _folder(tmp_path)
    (root / "a" / "0000.png").write_bytes(EPS)
    line = one_line_error(cli.run("data", "info", root))
    assert re.search(r"a/0000.png: not an image in a format cnnlab reads \(PNG, JPEG", line), line


def test_bombs_are_skipped_even_as_the_first_file(cli, tmp_path):
    root = _folder(tmp_path)
    bombs = {
        "0000.png": png_claiming(20_000, 20_000),  # Pillow's decompression-bomb error
        "0001.png": png_claiming(10_000, 10_000),  # Pillow's decompression-bomb warning
        "0002.png": png_claiming(7_000, 7_000),  # cnnlab's pixel cap
    }
    for name, data in bombs.items():
        (root / "a" / name).write_bytes(data)
    line = one_line_error(cli.run("data", "info", root))
    assert re.search(r"a/0000.png: .*pixel cap.*--skip-bad", line), line
    out = succeeded(cli.run("data", "info", root, "--skip-bad", "--json"))
    assert json.loads(out["stdout"])["train"]["count"] == 7
    assert all(f"a/{name}" in out["stderr"] for name in bombs), out["stderr"]


@pytest.mark.parametrize("budget", [None, "1"], ids=["in-memory", "streamed"])
def test_bombs_and_foreign_files_in_the_header_pass(cli, tmp_path, budget):
    root = _folder(tmp_path)
    (root / "b" / "0005.png").write_bytes(png_claiming(20_000, 20_000))
    (root / "b" / "0006.png").write_bytes(png_claiming(10_000, 10_000))
    (root / "c" / "0007.jpg").write_bytes(EPS)
    env = {"CNNLAB_MEMORY_BUDGET": budget} if budget else {}
    line = one_line_error(cli.run("data", "info", root, env=env))
    assert re.search(r"b/0005.png: .*pixel cap", line), line
    out = succeeded(cli.run("data", "info", root, "--skip-bad", "--json", env=env))
    assert json.loads(out["stdout"])["train"]["count"] == 7
    assert "skipped 3 unreadable file(s)" in out["stderr"] and "c/0007.jpg" in out["stderr"]
    assert "DecompressionBombWarning" not in out["stderr"]


def test_sixteen_bit_gray_is_scaled_not_clipped(cli, tmp_path):
    for label, value in enumerate([0, 32896, 65535]):  # 0, 128 and 255 once scaled
        (tmp_path / f"c{label}").mkdir()
        Image.fromarray(np.full((4, 4), value, np.uint16)).save(tmp_path / f"c{label}" / "0.png")
    out = succeeded(cli.run("data", "info", tmp_path, "--json"))
    info = json.loads(out["stdout"])["train"]
    assert info["shape"] == [1, 4, 4] and info["mean"] == [round((0 + 128 + 255) / 3 / 255, 4)]


def test_every_mode_converts_or_fails_per_file(cli, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 6, 3), np.uint8)
    images = {
        "lab.tif": Image.fromarray(rgb).convert("LAB"),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "ycbcr.jpg": Image.fromarray(rgb).convert("YCbCr"),
        "i16.tif": Image.new("I;16", (6, 6), 300),
        "float.tif": Image.new("F", (6, 6), 0.5),
        "la.png": Image.new("LA", (6, 6), (9, 128)),
        "pa.tif": Image.new("PA", (6, 6)),
        "one.png": Image.new("1", (6, 6), 1),
        "int32.tif": Image.new("I", (6, 6), 70_000),
        "nan.tif": Image.fromarray(np.full((6, 6), np.nan, np.float32)),
    }
    p = Image.new("P", (6, 6), 3)
    p.info["transparency"] = 3
    images["p.png"] = p
    (tmp_path / "x").mkdir()
    for name, img in images.items():
        img.save(tmp_path / "x" / name)
    line = one_line_error(cli.run("data", "info", tmp_path))
    assert re.search(r"x/int32.tif: integer pixels span 70000..70000", line), line
    out = succeeded(cli.run("data", "info", tmp_path, "--skip-bad", "--json"))
    assert json.loads(out["stdout"])["train"]["count"] == len(images) - 2
    assert "x/nan.tif: float pixels include NaN" in out["stderr"]


# ---------------------------------------------------------------- streamed folders
STREAM_SPEC = "input: [1, 4, 4]\nclasses: 2\nlayers:\n  - {type: dense}\n"


def _big_streamed_folder(root, bad_index: int | None):
    """5001 tiny images: one more than the sample the statistics read, so that the one image
    left out (bad_index, if given) is first decoded by a DataLoader worker during training
    (batches of 1667 use all 5001)."""
    n = 5001
    left_out = torch.randperm(n, generator=torch.Generator().manual_seed(0))[5000:].item()
    for label in (0, 1):
        (root / f"c{label}").mkdir(parents=True)
    files = [root / f"c{i * 2 // n}" / f"{i:05d}.png" for i in range(n)]
    for i, path in enumerate(files):
        Image.fromarray(np.full((4, 4), 200 * (i * 2 // n), np.uint8)).save(path)
    if bad_index is not None:
        files[left_out].write_bytes(truncated_png(size=4))
    return files[left_out]


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    bad = _big_streamed_folder(root / "data", bad_index=0)
    (root / "spec.yaml").write_text(STREAM_SPEC)
    return root, bad


def _train_streamed(cli, root, out, *extra):
    """One epoch on the streamed folder: a budget of 1 byte makes every load stream."""
    args = ["train", "--model", root / "spec.yaml", "--data", root / "data", "--epochs", "1",
            "--val-split", "0", "--batch-size", "1667", "--out", root / out, *extra]  # fmt: skip
    return cli.run(*args, env={"CNNLAB_MEMORY_BUDGET": "1"}, timeout=120)


def test_streamed_decode_error_in_a_worker_is_one_line(cli, streamed):
    root, bad = streamed
    reply = _train_streamed(cli, root, "run1")
    assert "streaming 5001 images from disk" in reply["stdout"]  # the worker, not the statistics
    line = one_line_error(reply)
    assert re.search(
        rf"{bad.parent.name}/{bad.name}: corrupt or truncated image.*--skip-bad", line
    ), line


def test_streamed_skip_bad_substitutes_and_reports(cli, streamed):
    root, bad = streamed
    reply = succeeded(_train_streamed(cli, root, "run2", "--skip-bad"))
    lines = [line for line in reply["stderr"].splitlines() if line.startswith("skipped")]
    assert len(lines) == 1 and bad.name in lines[0] and "in its place" in lines[0], reply["stderr"]


# ---------------------------------------------------------------- class names
def test_class_names_survive_eval_plot_report_and_an_idx_round_trip(cli, run, tmp_path):
    out = succeeded(cli.run("eval", run, "--json", "--plot", tmp_path / "cm.png"))
    assert json.loads(out["stdout"])["classes"] == HOSTILE_NAMES
    assert Image.open(tmp_path / "cm.png").size[0] > 300
    # every image under another class's name: the report lists them all as mistakes
    mislabelled = write_folder(
        tmp_path / "mislabelled", n=16, names=HOSTILE_NAMES[1:] + HOSTILE_NAMES[:1]
    )
    succeeded(cli.run("report", run, "--data", mislabelled, "--out", tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    assert all(html.escape(name) in page for name in HOSTILE_NAMES) and "<i>&amp;" not in page
    folder = json.loads((run / "checkpoints" / "best.json").read_text())["data"]
    succeeded(cli.run("data", "convert", folder, tmp_path / "idx", "--to", "idx"))
    info = json.loads(succeeded(cli.run("data", "info", tmp_path / "idx", "--json"))["stdout"])
    assert list(info["train"]["classes"]) == HOSTILE_NAMES
    succeeded(cli.run("data", "convert", tmp_path / "idx", tmp_path / "back", "--to", "folder"))
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == HOSTILE_NAMES


# ---------------------------------------------------------------- specs (summary)
def _spec(tmp_path, text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def _layers(*layers: str, input="[1, 12, 12]", classes=4) -> str:
    return f"input: {input}\nclasses: {classes}\nlayers:\n" + "".join(f"  - {x}\n" for x in layers)


# a "billion laughs": nine lines whose aliases would expand to 10**9 values, held by a
# field the spec allows, and named again by another
LAUGHS = "description:\n  - &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  - &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
SPEC_CASES = {
    "repeat": (
        _layers("{type: relu, repeat: 1000000000}", "{type: dense}"),
        r"layer 1 \(relu\): field 'repeat': expected an integer <= 10000",
    ),
    "repeated-total": (
        _layers("{type: relu, repeat: 6000}", "{type: relu, repeat: 6000}", "{type: dense}"),
        r"layer 2 \(relu\): the spec reaches 12000 layers",
    ),
    "billion-laughs": (
        LAUGHS + "name: *i\n" + _layers("{type: dense}"),
        r"spec.yaml: not valid YAML at line \d+ \(expands to more than 1000000 values",
    ),
    "deep-nesting": (
        "input: " + "[" * 100_000 + "]" * 100_000 + "\n",
        r"spec.yaml: not valid YAML at line 1 \(nested more than 32 levels deep",
    ),
    "huge-integer": (
        _layers("{type: conv, filters: " + "9" * 5000 + ", kernel: 3}", "{type: dense}"),
        r"spec.yaml: unreadable YAML value",
    ),
    "conv-filters": (
        _layers("{type: conv, filters: 1000000000, kernel: 3}", "{type: dense}"),
        r"layer 1 \(conv 'conv1'\): its output would hold 100000000000 values",
    ),
    "input": (
        _layers("{type: dense}", input="[3, 100000, 100000]"),
        r"field 'input': 3x100000x100000 = 30000000000 values per example, over the cap",
    ),
    "dense-units": (
        _layers("{type: dense, units: 100000000}", "{type: dense}"),
        r"layer 1 \(dense 'dense1'\): the model reaches \d+ parameters here, over the cap",
    ),
    "transition-compression": (
        _layers("{type: transition, compression: 0}", "{type: dense}"),
        r"layer 1 \(transition\): field 'compression': expected a number in \(0",
    ),
    "transition-one-channel": (
        _layers("{type: transition}", "{type: dense}"),
        r"layer 1 \(transition 'transition1'\): compression 0.5 of 1 channel\(s\) leaves 0",
    ),
    "dense-growth": (
        _layers("{type: dense_block, layers: 2, growth: 100000000}", "{type: dense}"),
        r"layer 1 \(dense_block 'dense_block1'\): .*over the cap",
    ),
    "dense-block-layers": (
        _layers("{type: dense_block, layers: 100000000, growth: 1}", "{type: dense}"),
        r"layer 1 \(dense_block\): the spec reaches 100000000 layers",
    ),
    "inception-zero": (
        _layers(
            "{type: inception, b1: 0, b3_reduce: 1, b3: 1, b5_reduce: 1, b5: 1, pool_proj: 1}",
            "{type: dense}",
        ),
        r"layer 1 \(inception\): field 'b1': expected an integer >= 1",
    ),
    "nan-eps": (
        _layers("{type: batchnorm, eps: .nan}", "{type: dense}"),
        r"layer 1 \(batchnorm\): field 'eps': expected a finite number",
    ),
    "padding-stride": (
        _layers(
            "{type: conv, filters: 1, kernel: 1, padding: [1000000, 0, 1000000, 0], stride: 1000000, rounding: floor}",
            "{type: dense}",
        ),
        r"layer 1 \(conv 'conv1'\): its padded input would hold",
    ),
    "lrn-size": (
        _layers("{type: lrn, size: 1000000000}", "{type: dense}"),
        r"layer 1 \(lrn 'lrn1'\): its padded squares would hold",
    ),
    "gabor-filters": (
        _layers("{type: gabor, filters: 1000000, kernel: 3}", "{type: dense}"),
        r"layer 1 \(gabor 'gabor1'\): 1000000 filters of 3x3 .* over the Gabor cap",
    ),
    "classes": (
        _layers("{type: dense}", classes=10**12),
        r"field 'classes': 1000000000000 is over the cap",
    ),
}


def test_transition_on_a_1x1_map_is_refused(cli, tmp_path):
    spec = _layers(
        "{type: conv, filters: 2, kernel: 12}", "{type: transition, filters: 2}", "{type: dense}"
    )
    line = one_line_error(cli.run("summary", _spec(tmp_path, spec)))
    assert re.search(
        r"layer 2 \(transition 'transition1'\): needs an input of at least 2x2 .* got 1x1", line
    ), line


@pytest.mark.parametrize("case", SPEC_CASES)
def test_specs_that_would_hang_or_exhaust_memory(cli, tmp_path, case):
    text, message = SPEC_CASES[case]
    line = one_line_error(cli.run("summary", _spec(tmp_path, text), timeout=30))
    assert re.search(message, line), line


def test_spec_file_too_large(cli, tmp_path):
    path = sparse_file(tmp_path / "spec.yaml", 1 * GB, b"# ")
    line = one_line_error(cli.run("summary", path))
    assert re.search(r"spec.yaml: \d+ bytes is too large for a spec", line), line


# ---------------------------------------------------------------- checkpoints (eval, predict)
def _edit(run_dir, **fields):
    path = run_dir / "checkpoints" / "best.json"
    meta = json.loads(path.read_text())
    meta.update(fields)
    path.write_text(json.dumps(meta))
    return meta


def test_checkpoint_json_of_gigabytes(cli, run_copy):
    sparse_file(run_copy / "checkpoints" / "best.json", 2 * GB, b"{" + b" " * 100)
    line = one_line_error(cli.run("eval", run_copy))
    assert re.search(r"best.json: \d+ bytes is too large for checkpoint metadata", line), line


def test_checkpoint_json_nested_100k_deep(cli, run_copy):
    (run_copy / "checkpoints" / "best.json").write_text("[" * 100_000 + "]" * 100_000)
    line = one_line_error(cli.run("eval", run_copy))
    assert re.search(r"best.json: corrupt checkpoint metadata \(nested too deeply\)", line), line


def test_empty_checksum_is_refused_not_skipped(cli, run_copy):
    weights = run_copy / "checkpoints" / "best.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-4:] = b"\x00\x00\xc0\x7f"  # a NaN in place of the last weight
    weights.write_bytes(bytes(raw))
    _edit(run_copy, weights_sha256="")
    line = one_line_error(cli.run("eval", run_copy))
    assert re.search(r"best.safetensors: the checksum recorded .* is not a SHA-256", line), line


def test_sparse_weights_file_is_refused_before_hashing(cli, run_copy):
    sparse_file(run_copy / "checkpoints" / "best.safetensors", 64 * GB)
    line = one_line_error(cli.run("eval", run_copy, timeout=20))
    assert re.search(r"best.safetensors: \d+ bytes is more than the model's weights", line), line


CHECKPOINT_CASES = {
    "classes-count": ({"classes": ["a", "b"]}, r"field 'classes': expected 4 names"),
    "classes-type": ({"classes": [1, 2, 3, 4]}, r"field 'classes': expected a list of class names"),
    "input-shape": (
        {"input_shape": [3, 12, 12]},
        r"field 'input_shape': expected the spec's input \[1, 12, 12\]",
    ),
    "std-zero": ({"std": [0.0]}, r"field 'std': expected a list of 1 positive number"),
    "mean-nan": ({"mean": [float("nan")]}, r"field 'mean': expected a list of 1 finite number"),
    "preprocess": ({"preprocess": "unzip"}, r"field 'preprocess': expected mnist-digit or resize"),
    "history": ({"history": "lots"}, r"field 'history': expected a list"),
    "spec-path": ({"spec": "/etc/passwd"}, r"field 'spec': expected a mapping"),
    "spec-size": (
        {
            "spec": {
                "input": [1, 12, 12],
                "classes": 4,
                "layers": [{"type": "conv", "filters": 10**9, "kernel": 3}, {"type": "dense"}],
            }
        },
        r"layer 1 \(conv 'conv1'\): its output would hold",
    ),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_checkpoint_fields_are_checked(cli, run_copy, case):
    fields, message = CHECKPOINT_CASES[case]
    _edit(run_copy, **fields)
    line = one_line_error(cli.run("eval", run_copy))
    assert re.search(r"checkpoints/best.json: ", line) and re.search(message, line), line


def test_predict_refuses_postscript_and_scales_16_bit(cli, run, tmp_path):
    (tmp_path / "photo.png").write_bytes(EPS)
    reply = cli.run("predict", run, tmp_path / "photo.png")
    lines = reply["stderr"].strip().splitlines()  # one line per file, then the count
    assert reply["rc"] == 1 and "Traceback" not in reply["stderr"], reply
    assert (
        lines[0]
        == f"Error: {tmp_path / 'photo.png'}: not an image in a format cnnlab reads (PNG, JPEG, BMP, GIF, TIFF, WEBP, PPM)"
    )
    images, _ = quadrant_images(4)
    Image.fromarray(images[3]).save(tmp_path / "eight.png")
    Image.fromarray(images[3].astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    out = json.loads(
        succeeded(
            cli.run(
                "predict",
                run,
                tmp_path / "eight.png",
                tmp_path / "sixteen.png",
                "--json",
                "--top-k",
                "4",
            )
        )["stdout"]
    )
    eight, sixteen = ({t["class"]: t["probability"] for t in r["top"]} for r in out)
    assert eight.keys() == sixteen.keys() and all(abs(eight[c] - sixteen[c]) < 1e-6 for c in eight)


# ---------------------------------------------------------------- train
def test_train_on_hostile_labels_is_one_line(cli, tmp_path):
    data = make_tiny_idx(tmp_path / "data", n_train=40, n_test=8)
    write_idx(data / "train-labels-idx1-ubyte", np.full(40, 2**31 - 1, np.int32))
    spec = _spec(tmp_path, TINY_SPEC)
    reply = cli.run(
        "train", "--model", spec, "--data", data, "--epochs", "1", "--out", tmp_path / "run"
    )
    line = one_line_error(reply)
    assert re.search(r"\(train\): label 2147483647 \(item 0\) is past the cap", line), line


def test_train_skip_bad_with_a_bad_first_file(cli, tmp_path):
    root = _folder(tmp_path / "data", n=40)
    (root / "a" / "0000.png").write_bytes(png_claiming(20_000, 20_000))
    spec = _spec(tmp_path, TINY_SPEC)
    args = [
        "train",
        "--model",
        spec,
        "--data",
        root,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        tmp_path / "run",
    ]
    line = one_line_error(cli.run(*args))
    assert re.search(r"a/0000.png: .*pixel cap.*--skip-bad", line), line
    succeeded(cli.run(*args, "--skip-bad"))


def test_the_real_entry_point_under_the_limit(tmp_path):
    """The same kind of case through `python -m cnnlab` itself, as a user runs it."""
    import resource

    root = _pair(tmp_path, np.zeros((2, 4, 4), np.uint8), np.array([0, 2**31 - 1], np.int32))

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 * GB, 3 * GB))

    proc = subprocess.run(
        [sys.executable, "-m", "cnnlab", "data", "info", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )
    line = one_line_error(
        {"rc": proc.returncode, "stderr": proc.stderr, "timed_out": False, "seconds": 0}
    )
    assert re.search(r"label 2147483647 \(item 1\) is past the cap", line), line
