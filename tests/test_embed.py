"""The 2-D map of the penultimate features: PCA that keeps a planar cloud's distances,
t-SNE where scikit-learn is installed (PCA and a plain statement where it is not), and an
HTML page without scripts whose points show their image, with class names as text."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.inspect import embed as embed_module
from cnnlab.inspect.embed import embed_2d, embedding_html, pca_2d


def test_pca_keeps_the_distances_of_points_on_a_plane():
    gen = torch.Generator().manual_seed(0)
    plane = torch.randn(60, 2, generator=gen) * torch.tensor([5.0, 1.0])
    basis, _ = torch.linalg.qr(torch.randn(30, 2, generator=gen))  # a plane in 30-d
    features = plane @ basis.T + 3.0
    coords = pca_2d(features)
    np.testing.assert_allclose(
        torch.cdist(torch.from_numpy(coords), torch.from_numpy(coords)),
        torch.cdist(plane.double(), plane.double()),
        rtol=1e-5,
        atol=1e-5,
    )
    assert coords[:, 0].var() > coords[:, 1].var()  # the first axis carries the most variance
    # signs fixed: each axis's largest coordinate is positive, so a mirrored input maps the same
    assert (coords[np.abs(coords).argmax(0), [0, 1]] > 0).all()
    np.testing.assert_allclose(pca_2d(-features), coords, atol=1e-9)


def test_auto_uses_tsne_when_installed_and_says_so_otherwise(monkeypatch):
    features = torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    if embed_module.tsne_available():
        coords, used = embed_2d(features, "auto")
        assert used == "t-SNE" and coords.shape == (40, 2) and np.isfinite(coords).all()
    monkeypatch.setattr(embed_module, "tsne_available", lambda: False)
    coords, used = embed_2d(features, "auto")
    assert used == "PCA" and coords.shape == (40, 2)
    with pytest.raises(
        CnnlabError, match=r"t-SNE needs scikit-learn: pip install 'cnnlab\[tsne\]'"
    ):
        embed_2d(features, "tsne")
    with pytest.raises(CnnlabError, match="a 2-D map needs at least 4 images, got 3"):
        embed_2d(features[:3], "pca")


def test_the_page_has_no_script_and_escapes_class_names(tmp_path):
    classes = ['<img src=x onerror="alert(1)">', "a & b"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 1, 8, 8)).astype(np.uint8)
    labels, predicted = np.array([0, 1, 0, 1, 1]), np.array([0, 1, 1, 1, 0])
    path = embedding_html(
        rng.normal(size=(5, 2)),
        images,
        labels,
        predicted,
        classes,
        "t <x>",
        tmp_path / "e.html",
        ids=[10, 11, 12, 13, 14],
    )
    text = path.read_text()
    assert "<script" not in text.lower() and 'onerror="' not in text and "<img src=x" not in text
    assert text.count('class="d') == 5 and text.count('class="d wrong"') == 2
    assert "#12 true &lt;img src=x onerror=&quot;alert(1)&quot;&gt;, predicted a &amp; b" in text
    assert text.count("data:image/png;base64,") == 5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.conftest import train_tiny

    root = tmp_path_factory.mktemp("embed")
    train_tiny(root, epochs=2)
    return root


def test_cli_embed_writes_a_page_and_a_picture_that_a_browser_shows(run, tmp_path):
    from PIL import Image

    from tests.test_page import CHROMIUM

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnlab",
            "inspect",
            "embed",
            str(run / "run"),
            "--data",
            str(run / "data"),
            "--n",
            "120",
            "--method",
            "pca",
            "--out",
            str(tmp_path / "e.html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(tmp_path / "e.html"), str(tmp_path / "e.png")]
    assert out.stderr.strip() == "embedding: PCA"
    text = (tmp_path / "e.html").read_text()
    assert "PCA of the penultimate features (16-d) of 120" in text and text.count('class="d') == 120
    with Image.open(tmp_path / "e.png") as img:
        assert img.format == "PNG" and img.width > 400
    from pathlib import Path

    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium here")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.goto((tmp_path / "e.html").as_uri())
        first = page.locator(".d").first
        hidden = first.locator("figure").is_visible()
        first.hover()
        shown = first.locator("figure img").is_visible()
        size = first.locator("figure img").evaluate("i => i.naturalWidth")
        browser.close()
    assert not hidden and shown and size == 12
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnlab",
            "inspect",
            "embed",
            str(run / "run"),
            "--data",
            str(run / "data"),
            "--n",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--n" in bad.stderr and "Traceback" not in bad.stderr
