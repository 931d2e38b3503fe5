"""Decode image files safely: a size cap before decoding, one-line errors naming the file.

Only the formats people mean by "an image" are opened (PNG, JPEG, BMP, GIF, TIFF, WebP,
PPM/PGM), whatever the file is called: never PostScript (which Pillow hands to Ghostscript)
or any other plugin format. Every decoded image leaves `open_image` in an 8-bit mode that
`to_array` converts without loss of range: 16-bit and 32-bit integer pixels are scaled to
8 bits (65535 -> 255), float pixels in 0..1 or 0..255 likewise, colour spaces become RGB.
"""

from __future__ import annotations

import base64
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnlab.errors import CnnlabError

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")  # Pillow's names; PPM reads PGM
EXTENSIONS = {
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
}
MAX_PIXELS = 40_000_000  # about 6300x6300: far above any photo a CNN needs, far below a bomb
SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "P;gray"} | SIXTEEN_BIT
KEPT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA"}  # to_array converts these as they are


class PixelCapError(CnnlabError):
    """An image with more pixels than the cap allows (a decompression bomb, or just too big)."""


def _opened(fp, name: str, max_pixels: int) -> Image.Image:
    """Image.open restricted to FORMATS, with the pixel cap checked on the header."""
    try:
        img = Image.open(fp, formats=FORMATS)
    except UnidentifiedImageError:
        raise CnnlabError(
            f"{name}: not an image in a format cnnlab reads ({', '.join(FORMATS)})"
        ) from None
    w, h = img.size
    if w * h > max_pixels:
        raise PixelCapError(f"{name}: {w}x{h} = {w * h} pixels is over the cap of {max_pixels}")
    return img


def _guarded(name: str, max_pixels: int, action):
    """Run action() with Pillow's failures, its decompression-bomb error and warning
    included, turned into one-line errors naming the file."""
    try:
        with warnings.catch_warnings():
            # metadata Pillow cannot parse (EXIF, TIFF tags) is not worth a line; bombs are errors
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return action()
    except CnnlabError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PixelCapError(f"{name}: image is over the pixel cap of {max_pixels}") from None
    except Exception as e:  # a hostile file can make a decoder raise almost anything
        raise CnnlabError(f"{name}: corrupt or truncated image ({_brief(e)})") from None


def _brief(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def open_image(
    source: str | os.PathLike | bytes,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    """Open and fully decode an image, refusing oversized, corrupt or foreign files with a
    clear error; the result is in one of KEPT_MODES. With `draft` (H, W), a JPEG far larger
    than that is decoded at a reduced scale (1/2, 1/4 or 1/8, never below the size asked)."""
    name = name or (str(source) if not isinstance(source, bytes) else "image")

    def decode() -> Image.Image:
        with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as fp:
            img = _opened(fp, name, max_pixels)
            if draft is not None and img.format == "JPEG":
                img.draft(img.mode, (draft[1], draft[0]))
            img.load()
            return eight_bit(img, name)

    return _guarded(name, max_pixels, decode)


def probe_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> tuple[int, int, str]:
    """(height, width, mode) from the header alone, with open_image's checks and errors."""
    name = str(path)

    def header() -> tuple[int, int, str]:
        with open(path, "rb") as fp, _opened(fp, name, max_pixels) as img:
            return img.height, img.width, img.mode

    return _guarded(name, max_pixels, header)


def eight_bit(img: Image.Image, name: str = "image") -> Image.Image:
    """The image in one of KEPT_MODES: deep pixels scaled (not clipped) to 0..255, other colour
    spaces converted to RGB; a mode that cannot be converted is a one-line error."""
    if img.mode in KEPT_MODES:
        return img
    if img.mode in SIXTEEN_BIT or img.mode in ("I", "F"):
        return Image.fromarray(_scaled(np.asarray(img), img.mode, name), "L")
    try:
        return img.convert("RGBA" if "A" in img.getbands() else "RGB")
    except (ValueError, OSError):
        raise CnnlabError(f"{name}: pixels of mode {img.mode} cannot be converted to RGB") from None


def _scaled(a: np.ndarray, mode: str, name: str) -> np.ndarray:
    """16/32-bit integer or float gray -> uint8 over the whole range the values can span."""
    if mode == "F":
        if not np.isfinite(a).all():
            raise CnnlabError(f"{name}: float pixels include NaN or infinity")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 255:
            raise CnnlabError(f"{name}: float pixels span {lo:g}..{hi:g}; expected 0..1 or 0..255")
        return np.rint(a * (255.0 if hi <= 1 else 1.0)).astype(np.uint8)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 65535:
        raise CnnlabError(
            f"{name}: integer pixels span {lo}..{hi}; expected 16-bit values (0..65535)"
        )
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def is_gray(img: Image.Image) -> bool:
    if img.mode == "P":
        palette = np.asarray(img.convert("RGBA"))  # (to RGB warns of a transparent palette)
        return bool(
            (palette[..., 0] == palette[..., 1]).all()
            and (palette[..., 1] == palette[..., 2]).all()
        )
    return img.mode in GRAY_MODES


def to_array(img: Image.Image, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """Image -> uint8 array (C, H, W) with the given channel count, resized to (H, W) if asked."""
    img = eight_bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency onto white, which is how a viewer shows it.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    want = "L" if channels == 1 else "RGB"
    if img.mode != want:  # (convert would copy an image already in that mode)
        img = img.convert(want)
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def to_pil(arr: np.ndarray) -> Image.Image:
    """A uint8 image, (H, W) or (C, H, W) with C in 1 or 3, as a Pillow image (L or RGB). Float
    values (an image from a float array) are shown scaled from their own range to 0..255."""
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = np.nan_to_num((arr - lo) * (255 / max(hi - lo, 1e-12)))
        arr = np.rint(arr).astype(np.uint8)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))


def png_data_url(arr: np.ndarray) -> str:
    """A uint8 image, (H, W) or (C, H, W) with C in 1 or 3, as a PNG data URL for HTML."""
    buf = io.BytesIO()
    to_pil(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def save_array(arr: np.ndarray, path: str | os.PathLike) -> None:
    """Save a uint8 (C, H, W) array as an image file (format from the suffix)."""
    to_pil(arr).save(Path(path))
