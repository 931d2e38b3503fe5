"""Images in every mode Pillow produces, foreign formats and bombs, decoded (or refused) alike."""

import io

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from cnnlab.data.images import PixelCapError, eight_bit, open_image, probe_image, to_array
from cnnlab.errors import CnnlabError
from tests.hostile.conftest import EPS, png_claiming, truncated_png


def _saved(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_postscript_never_reaches_its_plugin(monkeypatch):
    calls = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: calls.append(self))
    with pytest.raises(
        CnnlabError, match=r"photo.png: not an image in a format cnnlab reads \(PNG, JPEG"
    ):
        open_image(EPS, "photo.png")
    assert calls == []


@pytest.mark.parametrize(
    "img,fmt,expected",
    [
        (Image.fromarray(np.array([[0, 257, 32896, 65535]], np.uint16)), "PNG", [0, 1, 128, 255]),
        (Image.fromarray(np.array([[0, 257, 32896, 65535]], np.uint16)), "TIFF", [0, 1, 128, 255]),
        (
            Image.fromarray(np.array([[0, 257, 32896, 65535]], np.uint16)).convert("I"),
            "TIFF",
            [0, 1, 128, 255],
        ),
        (Image.fromarray(np.array([[0.0, 0.5, 1.0, 0.25]], np.float32)), "TIFF", [0, 128, 255, 64]),
        (
            Image.fromarray(np.array([[0.0, 100.0, 255.0, 2.0]], np.float32)),
            "TIFF",
            [0, 100, 255, 2],
        ),
        (Image.new("1", (4, 1), 1), "PNG", [255] * 4),
        (Image.new("LA", (4, 1), (0, 0)), "PNG", [255] * 4),  # fully transparent: white paper
    ],
)
def test_deep_and_odd_gray_modes_are_scaled_not_clipped(img, fmt, expected):
    out = to_array(open_image(_saved(img, fmt)), 1)
    assert out.dtype == np.uint8 and out[0, 0].tolist() == expected


@pytest.mark.parametrize("mode", ["LAB", "CMYK", "YCbCr", "HSV", "RGBX", "RGBa", "PA", "P"])
def test_colour_modes_convert(mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 4, 3), np.uint8))
    img = rgb.convert(mode) if mode not in ("PA",) else Image.new("PA", (4, 5))
    out = to_array(img, 3)
    assert out.shape == (3, 5, 4) and out.dtype == np.uint8


@pytest.mark.parametrize(
    "img,message",
    [
        (Image.fromarray(np.array([[np.nan, 1]], np.float32)), "float pixels include NaN"),
        (Image.fromarray(np.array([[-1.0, 1]], np.float32)), r"float pixels span -1..1"),
        (Image.fromarray(np.array([[0, 70000]], np.int32)), r"integer pixels span 0..70000"),
        (Image.new("La", (2, 2)), "pixels of mode La cannot be converted"),
    ],
)
def test_modes_that_cannot_be_scaled_are_named(img, message):
    with pytest.raises(CnnlabError, match=message):
        eight_bit(img, "x.tif")


def test_bombs_by_pillows_error_its_warning_and_the_cap():
    cases = [
        (png_claiming(20_000, 20_000), 10**9),  # over twice Pillow's limit: its error
        (png_claiming(10_000, 10_000), 2 * 10**8),  # over Pillow's limit: its warning
        (png_claiming(7_000, 7_000), 40_000_000),  # over cnnlab's cap
    ]
    for data, cap in cases:
        with pytest.raises(PixelCapError, match="b.png: .*pixel"):
            open_image(data, "b.png", cap)


def test_probe_reads_the_header_only(tmp_path):
    (tmp_path / "t.png").write_bytes(truncated_png())
    assert probe_image(tmp_path / "t.png") == (12, 12, "L")
    with pytest.raises(CnnlabError, match="t.png: corrupt or truncated image"):
        open_image(tmp_path / "t.png")
    (tmp_path / "b.png").write_bytes(png_claiming(20_000, 20_000))
    with pytest.raises(PixelCapError):
        probe_image(tmp_path / "b.png")
