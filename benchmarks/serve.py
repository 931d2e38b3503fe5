"""Latency and throughput of `cnnlab serve` on loopback, at concurrency 1 and 8.

    python benchmarks/serve.py RUN [--requests 400]

Starts a real server process for the checkpoint in RUN on a free 127.0.0.1 port, sends a
fixed number of POST /api/predict requests (a PNG digit as raw bytes) from a thread pool,
and prints p50 / p99 latency, requests per second and the error count.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.serve_helpers import running_server  # noqa: E402


def digit_png() -> bytes:
    img = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(img).line([(70, 40), (140, 40), (95, 170)], fill=0, width=14)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def one(base: str, body: bytes) -> tuple[float, bool]:
    start = time.perf_counter()
    req = urllib.request.Request(
        base + "/api/predict", data=body, headers={"Content-Type": "image/png"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            ok = r.status == 200 and bool(r.read())
    except OSError:
        ok = False
    return time.perf_counter() - start, ok


def measure(base: str, body: bytes, concurrency: int, count: int) -> dict:
    for _ in range(5):  # warm-up
        one(base, body)
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: one(base, body), range(count)))
    wall = time.perf_counter() - start
    latencies = sorted(t for t, _ in results)
    return {
        "concurrency": concurrency, "requests": count,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "rps": count / wall, "errors": sum(not ok for _, ok in results),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", help="run directory or checkpoint to serve")
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    body = digit_png()
    with running_server(args.run) as (base, _):
        rows = [measure(base, body, c, args.requests) for c in (1, 8)]
    print(
        f"{'concurrency':>11} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6}"
    )
    for r in rows:
        print(
            f"{r['concurrency']:>11} {r['requests']:>8} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['rps']:>8.1f} {r['errors']:>6}"
        )


if __name__ == "__main__":
    main()
