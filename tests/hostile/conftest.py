"""Shared by the hostile-input tests: the command-line runner, one small trained run, and
builders of hostile files."""

from __future__ import annotations

import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_SPEC
from tests.hostile.runner import Cli

# Class names that are data, not markup or maths: mathtext, HTML, spaces at both ends, a
# line break and a backslash. Sorted as the folder loader sorts them.
HOSTILE_NAMES = sorted([" two spaces ", "$\\frac$ & $x^2$", "<i>&amp;", "line\nbreak\\n"])


@pytest.fixture(scope="session")
def cli():
    runner = Cli()
    yield runner
    runner.close()


def quadrant_images(n: int, seed: int = 0, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """The 4-class task of tests/conftest.make_tiny_idx: a bright square in one quadrant."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    images = rng.integers(0, 40, size=(n, size, size)).astype(np.uint8)
    half = size // 2
    for i, c in enumerate(labels):
        top, left = (c // 2) * half + 1, (c % 2) * half + 1
        images[i, top : top + half - 2, left : left + half - 2] = 200
    return images, labels


def write_folder(root: Path, n: int = 80, names=HOSTILE_NAMES, seed: int = 0) -> Path:
    images, labels = quadrant_images(n, seed)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(img).save(root / names[label] / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> Path:
    """One run trained on a folder whose class names are hostile; tests copy it to tamper."""
    from cnnlab.train import TrainConfig, train

    base = tmp_path_factory.mktemp("hostile-run")
    folder = write_folder(base / "folder")
    (base / "tiny.yaml").write_text(TINY_SPEC)
    train(
        TrainConfig(
            model=str(base / "tiny.yaml"),
            data=str(folder),
            epochs=2,
            batch_size=16,
            optimizer="adam",
            lr=0.01,
            augment="none",
            val_split=0.25,
            out=str(base / "run"),
        )
    )
    return base / "run"


@pytest.fixture
def run_copy(run, tmp_path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def one_line_error(reply: dict, *patterns: str) -> str:
    """Exit status 1, in time, exactly one stderr line `Error: ...` that is not an internal
    error, matching every pattern. Returns the line."""
    assert not reply["timed_out"], f"still running after {reply['seconds']:.0f} s"
    lines = reply["stderr"].strip().splitlines()
    assert "Traceback" not in reply["stderr"], reply["stderr"][-3000:]
    assert reply["rc"] == 1 and len(lines) == 1, reply
    assert lines[0].startswith("Error: ") and "internal error" not in lines[0], lines[0]
    for pattern in patterns:
        assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    return lines[0]


def succeeded(reply: dict) -> dict:
    assert not reply["timed_out"], f"still running after {reply['seconds']:.0f} s"
    assert reply["rc"] == 0 and "Traceback" not in reply["stderr"], reply
    return reply


# ---------------------------------------------------------------- hostile file builders
def sparse_file(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of `size` bytes that costs no disk: `head`, then a hole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def idx_header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def gzip_bomb(head: bytes, inflated: int) -> bytes:
    """A gzip file of a few MB holding `head` and then `inflated` zero bytes: many identical
    members of 16 MiB of zeros each, which gzip readers concatenate."""
    chunk = 16 << 20
    member = _gzip(bytes(chunk))
    return _gzip(head) + member * (inflated // chunk)


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (gray) with a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 12 12\nnewpath 0 0 moveto showpage\n%%EOF\n"


def truncated_png(seed: int = 0, size: int = 12) -> bytes:
    """A PNG whose header is intact (it passes a header check) but whose pixel data stops."""
    import io

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(buf, "PNG")
    raw = buf.getvalue()
    return raw[: len(raw) // 2 + 20]
