"""Decode image files safely: a size cap before decoding, one-line errors naming the file."""

from __future__ import annotations

import base64
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnlab.errors import CnnlabError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
MAX_PIXELS = 40_000_000  # about 6300x6300: far above any photo a CNN needs, far below a bomb
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P;gray"}


class PixelCapError(CnnlabError):
    """An image with more pixels than the cap allows (a decompression bomb, or just too big)."""


def open_image(
    source: str | os.PathLike | bytes, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Open and fully decode an image, refusing oversized or corrupt ones with a clear error."""
    name = name or (str(source) if not isinstance(source, bytes) else "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as fp:
                img = Image.open(fp)
                w, h = img.size
                if w * h > max_pixels:
                    raise PixelCapError(
                        f"{name}: {w}x{h} = {w * h} pixels is over the cap of {max_pixels}"
                    )
                img.load()
    except CnnlabError:
        raise
    except UnidentifiedImageError:
        raise CnnlabError(f"{name}: not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PixelCapError(f"{name}: image is over the pixel cap of {max_pixels}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise CnnlabError(f"{name}: corrupt or truncated image ({e})") from None
    return img


def is_gray(img: Image.Image) -> bool:
    if img.mode == "P":
        palette = np.asarray(img.convert("RGB"))
        return bool(
            (palette[..., 0] == palette[..., 1]).all()
            and (palette[..., 1] == palette[..., 2]).all()
        )
    return img.mode in GRAY_MODES


def to_array(img: Image.Image, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """Image -> uint8 array (C, H, W) with the given channel count, resized to (H, W) if asked."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency onto white, which is how a viewer shows it.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def png_data_url(arr: np.ndarray) -> str:
    """A uint8 image, (H, W) or (C, H, W) with C in 1 or 3, as a PNG data URL for HTML."""
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def save_array(arr: np.ndarray, path: str | os.PathLike) -> None:
    """Save a uint8 (C, H, W) array as an image file (format from the suffix)."""
    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    img.save(Path(path))
