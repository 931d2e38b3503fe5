"""Looking inside trained models: properties of each picture's arrays, and the PNGs themselves."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.checkpoint import load_checkpoint
from cnnlab.data.idx import write_idx
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import normalizer
from cnnlab.inspect import figures
from cnnlab.inspect.deconv import deconv
from cnnlab.inspect.neighbors import neighbors
from cnnlab.inspect.optimize import invert, maximize
from cnnlab.inspect.saliency import saliency
from cnnlab.train import TrainConfig, train

BLOCK_SPEC = """\
name: block
input: [1, 12, 12]
classes: 2
layers:
  - {type: conv, filters: 4, kernel: 3, padding: same}
  - {type: relu}
  - {type: pool, size: 2}
  - {type: conv, filters: 8, kernel: 3, padding: same}
  - {type: relu}
  - {type: dense}
"""


@pytest.fixture(scope="module")
def block_run(tmp_path_factory):
    """A task where only the 3x3 block at rows 2-4, columns 7-9 decides the class."""
    root = tmp_path_factory.mktemp("block")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 3000), ("t10k", 300)):
        x = rng.integers(0, 256, size=(n, 12, 12)).astype(np.uint8)
        y = rng.integers(0, 2, n).astype(np.uint8)
        # the block is dark (0..95) for class 0 and bright (160..255) for class 1; the rest is noise
        x[:, 2:5, 7:10] = (rng.integers(0, 96, size=(n, 3, 3)) + 160 * y[:, None, None]).astype(
            np.uint8
        )
        write_idx(root / "data" / f"{prefix}-images-idx3-ubyte", x)
        write_idx(root / "data" / f"{prefix}-labels-idx1-ubyte", y)
    (root / "block.yaml").write_text(BLOCK_SPEC)
    result = train(
        TrainConfig(
            model=str(root / "block.yaml"),
            data=str(root / "data"),
            epochs=6,
            batch_size=64,
            optimizer="adam",
            lr=0.01,
            augment="none",
            label_smoothing=0.0,
            out=str(root / "run"),
        )
    )
    assert result["test_acc"] > 0.9
    return root


def _input(ckpt, seed=1):
    rng = np.random.default_rng(seed)
    prepared = rng.integers(0, 256, size=(1, 12, 12)).astype(np.uint8)
    return prepared, normalizer(ckpt)(torch.from_numpy(prepared)[None])


def test_saliency_concentrates_on_the_pixels_that_decide(block_run):
    ckpt = load_checkpoint(block_run / "run")
    ratios, peaks = [], 0
    for seed in range(10):
        _, x = _input(ckpt, seed)
        sal, _ = saliency(ckpt.model, x, smooth=8, seed=seed)
        inside = np.zeros_like(sal, dtype=bool)
        inside[2:5, 7:10] = True
        ratios.append(sal[inside].mean() / sal[~inside].mean())
        peaks += bool(inside.flat[sal.argmax()])
    # only 9 of the 144 pixels decide: their saliency per pixel should dwarf the rest's
    assert np.median(ratios) > 4 and peaks >= 8, (ratios, peaks)


def test_deconv_stays_inside_the_receptive_field(block_run):
    ckpt = load_checkpoint(block_run / "run")
    _, x = _input(ckpt)
    recon, channel, (i, j) = deconv(ckpt.model, x, "relu2")
    r = recon[0, 0].abs().numpy()
    # relu2 at (i, j) sees conv2's 3x3 over pool1 (stride 2, 2x2) over conv1's 3x3 (same padding)
    rows, cols = np.nonzero(r > 0)
    assert len(rows) > 0
    lo_r, hi_r = 2 * (i - 1) - 1, 2 * (i + 1) + 1 + 1
    lo_c, hi_c = 2 * (j - 1) - 1, 2 * (j + 1) + 1 + 1
    assert rows.min() >= lo_r and rows.max() <= hi_r and cols.min() >= lo_c and cols.max() <= hi_c
    with pytest.raises(
        CnnlabError, match="no layer 'conv9'; layers: conv1, relu1, pool1, conv2, relu2, dense1"
    ):
        deconv(ckpt.model, x, "conv9")
    with pytest.raises(CnnlabError, match=r"channel 8 is out of range for 'conv2' \(0..7\)"):
        deconv(ckpt.model, x, "conv2", 8)


def test_maximize_excites_its_channel_and_invert_recovers_features(block_run):
    ckpt = load_checkpoint(block_run / "run")
    model = ckpt.model
    x = maximize(model, "conv2", 3, steps=60)
    noise = torch.randn(1, 1, 12, 12) * 0.1
    act = lambda inp: model.features(inp, upto="conv2")["conv2"][0, 3].mean().item()  # noqa: E731
    assert act(x) > act(noise) + 1.0
    assert torch.equal(x, maximize(model, "conv2", 3, steps=60))  # seeded
    _, target = _input(ckpt)
    guess, err = invert(model, target, "relu1", steps=200)
    assert err < 0.1 and guess.shape == target.shape
    with pytest.raises(CnnlabError, match=r"class 5 is out of range \(0..1\)"):
        maximize(model, cls=5)


def test_neighbours_in_feature_space_survive_a_shift(mnist_run):
    from cnnlab.data import load_data

    ckpt = load_checkpoint(mnist_run)
    train_set = load_data("mnist", "train")
    bank = train_set.images[:6000]
    labels = train_set.labels[:6000]
    test = load_data("mnist", "test")
    same_feature = same_pixel = 0
    for i in range(12):
        shifted = torch.roll(test.images[i], shifts=(2, 2), dims=(1, 2))  # the same digit, moved
        found = neighbors(ckpt.model, shifted, bank, normalizer(ckpt), k=5)
        same_feature += int((labels[found["feature"][0]] == test.labels[i]).sum())
        same_pixel += int((labels[found["pixel"][0]] == test.labels[i]).sum())
    print(f"same-class neighbours of 60: feature space {same_feature}, pixel space {same_pixel}")
    assert same_feature >= same_pixel + 6, (same_feature, same_pixel)


def _png_ok(path, min_w=200, min_h=100):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= min_w and img.height >= min_h
        return img.size


def test_every_figure_is_a_png_of_the_expected_layout(block_run, mnist_run, tmp_path):
    ckpt = load_checkpoint(mnist_run)
    digit = np.zeros((200, 160), np.uint8) + 240
    digit[40:170, 70:90] = 10  # a dark vertical bar on light paper
    Image.fromarray(digit).save(tmp_path / "one.png")
    pages = figures.kernels_figure(ckpt, tmp_path / "k.png")
    assert len(pages) == 1 and _png_ok(pages[0])
    pages = figures.activations_figure(ckpt, str(tmp_path / "one.png"), tmp_path / "a.png")
    assert len(pages) == 1  # input + 8 conv maps + 8 pool maps fit one page
    w, h = _png_ok(pages[0])
    assert h > 250  # at least three rows of panels
    _png_ok(figures.saliency_figure(ckpt, str(tmp_path / "one.png"), tmp_path / "s.png", None, 4))
    _png_ok(
        figures.deconv_figure(ckpt, str(tmp_path / "one.png"), tmp_path / "d.png", "pool1", None)
    )
    _png_ok(figures.maximize_figure(ckpt, tmp_path / "m.png", None, None, 1, 20, 0), min_w=100)
    _png_ok(
        figures.invert_figure(ckpt, str(tmp_path / "one.png"), tmp_path / "i.png", "conv1", 30, 0)
    )
    block = load_checkpoint(block_run / "run")
    pages = figures.kernels_figure(block, tmp_path / "k2.png", "conv2")  # 8 filters x 4 inputs
    assert len(pages) == 1 and _png_ok(pages[0])
    with pytest.raises(
        CnnlabError, match="layer 'relu1' is not a convolution; convolutions: conv1, conv2"
    ):
        figures.kernels_figure(block, tmp_path / "k3.png", "relu1")


def test_many_channels_are_drawn_in_pages(tmp_path):
    from cnnlab.inspect import draw

    pages = draw.grid(
        [(str(i), np.random.rand(4, 4)) for i in range(150)], tmp_path / "g.png", "many"
    )
    assert [p.name for p in pages] == ["g-1.png", "g-2.png", "g-3.png"]


def test_convolve_reproduces_the_worked_example(tmp_path):
    # the 5x5 binary image and 3x3 filter of the classic worked example
    image = np.array(
        [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]],
        np.uint8,
    )
    Image.fromarray(image * 255).save(tmp_path / "x.png")
    (tmp_path / "k.txt").write_text("1 0 1\n0 1 0\n1 0 1\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnlab",
            "convolve",
            str(tmp_path / "x.png"),
            "--kernel",
            str(tmp_path / "k.txt"),
            "--print",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    fmap = out.stdout.split("feature map (3x3):")[1].split()[:9]
    assert [int(v) for v in fmap] == [4, 3, 4, 2, 4, 3, 2, 3, 4]
    out = subprocess.run(
        [sys.executable, "-m", "cnnlab", "convolve", str(tmp_path / "x.png"), "--kernel", "blurry"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and "not a kernel name (identity, box-blur" in out.stderr


def test_report_opens_in_a_browser_with_every_image(mnist_run, tmp_path):
    from tests.test_page import CHROMIUM

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnlab",
            "report",
            str(mnist_run),
            "--out",
            str(tmp_path / "r.html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "r.html").read_text()
    assert "<script" not in text and "http" not in text.split("<body>")[1]
    for heading in (
        "Training curves",
        "Confusion matrix",
        "Most confused pairs",
        "Misclassified",
        "First-layer kernels",
        "Feature maps",
        "Attribution of the first 3 errors",
        "What each channel of conv1 responds to (top 9 of 10000 test images)",
        "Penultimate features in 2-D (PCA)",
        "Sparsity per layer",
    ):
        assert heading in text
    zeros = {
        row.split("</td><td>")[0]: row.split("</td><td>")[2]
        for row in text.split("<tr><td>")[1:]
        if "%</td>" in row
    }
    assert zeros["conv1"] == "0.0%" and float(zeros["relu1"].rstrip("%")) > 10
    from pathlib import Path

    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium here")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.goto((tmp_path / "r.html").as_uri())
        count = page.locator("img").count()
        loaded = page.evaluate(
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
        browser.close()
    assert count >= 9 and loaded


def test_cli_errors_list_what_exists(mnist_run, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    run = [sys.executable, "-m", "cnnlab", "inspect"]
    out = subprocess.run(
        [*run, "deconv", str(mnist_run), str(tmp_path / "notes.txt"), "--layer", "conv1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and "notes.txt: not an image" in out.stderr
    digit = tmp_path / "d.png"
    Image.new("L", (28, 28), 255).save(digit)
    out = subprocess.run(
        [*run, "invert", str(mnist_run), str(digit), "--layer", "fc9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        out.returncode == 1 and "no layer 'fc9'; layers: conv1, relu1, pool1, dense1" in out.stderr
    )


def test_figure_titles_show_class_names_as_typed_not_as_mathtext(tmp_path):
    from cnnlab.inspect import draw

    name = r"$\notacommand{x}$"  # mathtext would raise on this when the figure is saved
    [page] = draw.grid([(name, np.zeros((4, 4)))], tmp_path / "g.png", title=name)
    assert page.stat().st_size > 0
