"""Seeded random mutations of a valid IDX pair, of images and of a spec: whatever the bytes,
the library raises CnnlabError or nothing (never another exception type), and never hangs
(each case runs under an alarm; it is a guard against hangs, not a speed test)."""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import random
import reprlib
import signal
import struct
import zlib

import numpy as np
import yaml
from PIL import Image

from cnnlab.data import load_data
from cnnlab.data.idx import write_idx
from cnnlab.data.images import open_image, to_array
from cnnlab.errors import CnnlabError
from cnnlab.spec import KINDS, build, load_spec

CASE_SECONDS = 20  # far beyond any case here (milliseconds): only a hang reaches it


@contextlib.contextmanager
def deadline(what: str):
    def alarm(*_):
        raise TimeoutError(f"{what}: still running after {CASE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def survives(what: str, action) -> bool:
    """True if action() returned, False if it raised CnnlabError; anything else fails the test."""
    with deadline(what):
        try:
            action()
            return True
        except CnnlabError:
            return False


# ---------------------------------------------------------------- byte mutations
def mutate_bytes(rng: random.Random, data: bytes, header: int) -> bytes:
    raw = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["flip", "flip-header", "dim", "truncate", "append", "insert"])
        if op == "flip" and raw:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        elif op == "flip-header" and raw:
            raw[rng.randrange(min(header, len(raw)))] = rng.randrange(256)
        elif op == "dim" and len(raw) >= 8:
            at = rng.randrange(4, max(5, min(header, len(raw)) - 3))
            value = rng.choice([0, 1, 2, 255, 2**16, 2**31, 2**32 - 1, rng.randrange(2**32)])
            raw[at : at + 4] = struct.pack(">I", value)
        elif op == "truncate":
            del raw[rng.randrange(len(raw) + 1) :]
        elif op == "append":
            raw += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif op == "insert":
            at = rng.randrange(len(raw) + 1)
            raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(raw)


def test_idx_pairs(tmp_path):
    rng = random.Random(0)
    arrays = np.random.default_rng(0)
    images = write_idx(tmp_path / "i", arrays.integers(0, 256, (6, 5, 5), dtype=np.uint8))
    floats = write_idx(tmp_path / "f", arrays.random((6, 5, 5)).astype(np.float32) * 255)
    labels = write_idx(tmp_path / "l", np.array([0, 1, 2, 0, 1, 2], np.uint8))
    bases = [(images.read_bytes(), 16), (floats.read_bytes(), 16), (labels.read_bytes(), 8)]
    loaded = 0
    for case in range(200):
        pair = [bases[0][0] if case % 2 else bases[1][0], bases[2][0]]
        which = rng.randrange(2)
        pair[which] = mutate_bytes(rng, pair[which], bases[2 * which][1])
        for k in range(2):
            if rng.random() < 0.3:
                pair[k] = gzip.compress(pair[k], 1)
            (tmp_path / f"m{k}").write_bytes(pair[k])
        source = f"{tmp_path / 'm0'},{tmp_path / 'm1'}"
        loaded += survives(f"IDX case {case}", lambda source=source: load_data(source))
    assert 0 < loaded < 200  # some mutations keep the pair readable, most do not


# ---------------------------------------------------------------- images
def _image_bases() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    out = []
    for img, fmt in [
        (rgb, "PNG"),
        (rgb.convert("L"), "PNG"),
        (rgb.convert("P"), "GIF"),
        (rgb, "BMP"),
        (rgb, "TIFF"),
        (rgb, "JPEG"),
        (rgb, "WEBP"),
        (rgb.convert("L"), "PPM"),
        (Image.fromarray(rng.integers(0, 65536, (8, 8), dtype=np.uint16)), "PNG"),
    ]:
        buf = io.BytesIO()
        img.save(buf, fmt)
        out.append(buf.getvalue())
    return out


def _fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC of a PNG-like byte string, so Pillow judges the content."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, at = bytearray(data[:8]), 8
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        body = data[at + 4 : at + 8 + length]
        if at + 12 + length > len(data):
            out += data[at:]
            break
        out += data[at : at + 4] + body + struct.pack(">I", zlib.crc32(body))
        at += 12 + length
    return bytes(out)


def test_images():
    rng = random.Random(1)
    bases = _image_bases()
    decoded = 0
    for case in range(300):
        data = mutate_bytes(rng, rng.choice(bases), header=40)
        if rng.random() < 0.5:
            data = _fix_png_crcs(data)

        channels = rng.choice([1, 3])

        def decode(data=data, channels=channels):
            to_array(open_image(data, "fuzzed image"), channels, (8, 8))

        decoded += survives(f"image case {case}", decode)
    assert 0 < decoded < 300


# ---------------------------------------------------------------- specs
BASE_SPEC = {
    "name": "fuzz",
    "input": [3, 16, 16],
    "classes": 5,
    "layers": [
        {"type": "conv", "filters": 8, "kernel": 3, "padding": "same"},
        {"type": "batchnorm"},
        {"type": "relu"},
        {"type": "residual", "filters": 8},
        {"type": "pool", "size": 2},
        {"type": "dense_block", "layers": 2, "growth": 4},
        {"type": "transition"},
        {
            "type": "inception",
            "b1": 2,
            "b3_reduce": 2,
            "b3": 2,
            "b5_reduce": 2,
            "b5": 2,
            "pool_proj": 2,
        },
        {"type": "lrn", "size": 3},
        {"type": "dropout", "rate": 0.1},
        {"type": "global_pool"},
        {"type": "dense", "units": 6},
        {"type": "dense"},
    ],
}
VALUES = [
    0,
    -1,
    1,
    2,
    3,
    7,
    10**9,
    2**31,
    2**63,
    10**30,
    -(10**9),
    0.5,
    1e308,
    float("nan"),
    float("inf"),
    -0.0,
    "",
    "x",
    "same",
    "valid",
    "classes",
    "floor",
    None,
    True,
    False,
    [],
    [0],
    [1, 2],
    [3, 3, 3, 3],
    [[1]],
    {},
    {"a": 1},
    "9" * 50,
]
LAUGH: list = ["x"] * 10
for _ in range(12):  # 10**13 leaves, shared: anything that walks it hangs
    LAUGH = [LAUGH] * 10
VALUES.append(LAUGH)
FIELDS = sorted(
    {key for fields, _ in KINDS.values() for key in fields} | {"repeat", "name", "type"}
)


def mutate_spec(rng: random.Random) -> dict:
    spec = copy.deepcopy(BASE_SPEC)
    for _ in range(rng.randint(1, 3)):
        where = rng.random()
        if where < 0.15:
            spec[rng.choice(["input", "classes", "name", "layers", "description"])] = rng.choice(
                VALUES + [[1, 16, 16], [3, 1, 1], [3, 100000, 100000], [1, 2**31]]
            )
        elif where < 0.25 and isinstance(spec.get("layers"), list):
            spec["layers"].insert(
                rng.randrange(len(spec["layers"]) + 1), {"type": rng.choice(sorted(KINDS))}
            )
        elif isinstance(spec.get("layers"), list) and spec["layers"]:
            layer = rng.choice(spec["layers"])
            if isinstance(layer, dict):
                layer[rng.choice(FIELDS)] = rng.choice(VALUES + sorted(KINDS))
    return spec


def test_specs(tmp_path):
    rng = random.Random(2)
    assert survives("the base spec", lambda: build(copy.deepcopy(BASE_SPEC)))
    built = 0
    for case in range(150):
        spec = mutate_spec(rng)
        built += survives(f"spec case {case}: {reprlib.repr(spec)}", lambda spec=spec: build(spec))
    for case in range(60):  # the same as YAML text with characters changed
        text = list(yaml.safe_dump(mutate_spec(rng), default_flow_style=None))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(text))
            text[at : at + rng.randint(0, 2)] = rng.choice(
                ["[", "]", "{", "}", ":", "&a ", "*a", "-", "\n", "9", ""]
            )
        path = tmp_path / f"case{case}.yaml"
        path.write_text("".join(text))
        built += survives(f"spec file case {case}", lambda path=path: build(load_spec(path)[0]))
    assert 0 < built < 210


def test_every_field_at_extreme_values():
    """Each field of each layer type set alone to a value far out of range: refused or small."""
    rng = random.Random(3)
    for kind, (fields, _) in sorted(KINDS.items()):
        for key in sorted(fields):
            for value in (10**9, 2**31 - 1, 10**12):
                layer = {"type": kind, **_required(kind), key: value}
                spec = {"input": [3, 16, 16], "classes": 5, "layers": [layer, {"type": "dense"}]}
                if rng.random() < 0.5:
                    spec["layers"].insert(0, {"type": "conv", "filters": 4, "kernel": 1})
                survives(f"{kind}.{key}={value}", lambda spec=spec: build(spec))


def _required(kind: str) -> dict:
    defaults = {
        "filters": 4,
        "kernel": 3,
        "size": 2,
        "group": 1,
        "layers": 1,
        "b1": 1,
        "b3_reduce": 1,
        "b3": 1,
        "b5_reduce": 1,
        "b5": 1,
        "pool_proj": 1,
    }
    fields = KINDS[kind][0]
    return {k: v for k, v in defaults.items() if k in fields}
