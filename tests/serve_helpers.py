"""Start a real `cnnlab serve` process on a free loopback port, and what the server tests and
benchmarks/serve.py send it."""

import contextlib
import io
import math
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(run, *extra, preexec_fn=None):
    """Yield (base URL, process); the process's output goes to the file at `proc.log_path`."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cnnlab", "serve", str(run), "--port", str(port), *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                preexec_fn=preexec_fn,
            )
        proc.log_path = log_path
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    proc.wait()
                    raise RuntimeError(f"server did not start: {log_path.read_text()}") from None
                time.sleep(0.2)
        try:
            yield base, proc
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def server_log(proc) -> str:
    return proc.log_path.read_text()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def _digit(mode: str, side: int, paper, ink):
    from PIL import Image, ImageDraw

    img = Image.new(mode, (side, side), paper)
    ImageDraw.Draw(img).line(
        [(side * 0.35, side * 0.2), (side * 0.7, side * 0.2), (side * 0.47, side * 0.85)],
        fill=ink,
        width=max(4, side // 25),
    )
    return img


def big_uploads(pixels: int, webp_pixels: int | None = None) -> dict[str, tuple[bytes, str]]:
    """The costliest uploads to decode at a pixel count: name -> (body, content type).

    A drawn 7 on white paper compresses to well under 1 MB even at 12M pixels, so these fit
    the default body cap. A progressive JPEG makes libjpeg keep every coefficient of the
    whole image (CMYK: four full-size components); RGBA is PNG's and WebP's widest mode.
    """
    side = math.isqrt(pixels)
    made = {
        "JPEG progressive CMYK": (
            _digit("CMYK", side, (0, 0, 0, 0), (0, 0, 0, 255)),
            "JPEG",
            {"quality": 90, "progressive": True, "subsampling": 0},
        ),
        "JPEG progressive RGB 4:4:4": (
            _digit("RGB", side, "white", "black"),
            "JPEG",
            {"quality": 90, "progressive": True, "subsampling": 0},
        ),
        "PNG RGBA": (_digit("RGBA", side, "white", "black"), "PNG", {"compress_level": 9}),
    }
    if webp_pixels:
        webp = _digit("RGBA", math.isqrt(webp_pixels), "white", "black")
        made["WebP RGBA lossless"] = (webp, "WEBP", {"lossless": True, "method": 0})
    out = {}
    for name, (img, fmt, options) in made.items():
        buf = io.BytesIO()
        img.save(buf, format=fmt, **options)
        out[f"{name} {img.width}x{img.height}"] = (buf.getvalue(), f"image/{fmt.lower()}")
    return out


def post_json(base: str, path: str, payload: dict, timeout: float = 60) -> tuple[int, dict]:
    """POST a JSON object; (status, decoded JSON answer), 4xx and 5xx included."""
    import json
    import urllib.error

    req = urllib.request.Request(
        base + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def model_input(ckpt, data_url: str):
    """The normalised input (1, C, H, W) a model saw, from the PNG data URL of the uint8 image
    the server says it prepared (its "input" or "input_image")."""
    import base64

    import numpy as np
    import torch
    from PIL import Image

    from cnnlab.evaluate import normalizer

    raw = base64.b64decode(data_url.split(",", 1)[1])
    a = np.array(Image.open(io.BytesIO(raw)))
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return normalizer(ckpt)(torch.from_numpy(np.ascontiguousarray(a))[None])
