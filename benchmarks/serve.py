"""Latency and throughput of `cnnlab serve` on loopback, at concurrency 1 and 8, and its
peak memory under the largest uploads its caps admit.

    python benchmarks/serve.py RUN [--requests 400] [--rounds 2] [--max-pixels N]

Starts a real server process for the checkpoint in RUN on a free 127.0.0.1 port, sends a
fixed number of POST /api/predict requests (a PNG digit as raw bytes) from a thread pool,
and prints p50 / p99 latency, requests per second and the error count. Then, for each
worst-case upload (a drawn digit at the pixel cap as progressive JPEG, PNG and WebP), a
fresh server takes 8 concurrent clients sending it `--rounds` times each, and the table
shows the server process's resident memory after start-up and its peak (VmHWM).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cnnlab.serve.limits import MAX_PIXELS, WEBP_COST  # noqa: E402
from tests.serve_helpers import big_uploads, peak_rss_mb, running_server  # noqa: E402


def digit_png() -> bytes:
    img = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(img).line([(70, 40), (140, 40), (95, 170)], fill=0, width=14)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def post(base: str, body: bytes, ctype: str = "image/png") -> int:
    """The status of one POST /api/predict (0 if the connection failed)."""
    req = urllib.request.Request(base + "/api/predict", data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status if r.read() else 0
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def one(base: str, body: bytes) -> tuple[float, bool]:
    start = time.perf_counter()
    ok = post(base, body) == 200
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
        "concurrency": concurrency,
        "requests": count,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "rps": count / wall,
        "errors": sum(not ok for _, ok in results),
    }


def latency(run: str, requests: int) -> None:
    body = digit_png()
    with running_server(run) as (base, _):
        rows = [measure(base, body, c, requests) for c in (1, 8)]
    print(
        f"{'concurrency':>11} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'req/s':>8} {'errors':>6}"
    )
    for r in rows:
        print(
            f"{r['concurrency']:>11} {r['requests']:>8} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['rps']:>8.1f} {r['errors']:>6}"
        )


def memory(run: str, name: str, body: bytes, ctype: str, rounds: int, extra: list[str]) -> dict:
    """A fresh server's RSS after one small request, then its peak under 8 concurrent uploads."""
    with running_server(run, *extra) as (base, proc):
        post(base, digit_png())
        idle = peak_rss_mb(proc.pid)
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: post(base, body, ctype), range(8 * rounds)))
        peak = peak_rss_mb(proc.pid)
        alive = proc.poll() is None and post(base, digit_png()) == 200
    counts = ", ".join(f"{statuses.count(s)} x {s}" for s in sorted(set(statuses)))
    return {
        "upload": name,
        "bytes": len(body),
        "statuses": counts,
        "idle_mb": idle,
        "peak_mb": peak,
        "alive": alive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", help="run directory or checkpoint to serve")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2, help="uploads per client (8 clients)")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help="pixel cap to serve with, and the size of the uploads",
    )
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    extra = ["--max-pixels", str(args.max_pixels)]
    if not args.skip_latency:
        latency(args.run, args.requests)
    uploads = big_uploads(args.max_pixels, args.max_pixels // WEBP_COST)
    rows = [
        memory(args.run, name, body, ctype, args.rounds, extra)
        for name, (body, ctype) in uploads.items()
    ]
    print(
        f"\nserver memory, 8 concurrent clients x {args.rounds} uploads each, "
        f"--max-pixels {args.max_pixels}"
    )
    print(f"{'upload':<40} {'bytes':>9} {'start MB':>8} {'peak MB':>8}  statuses (alive after)")
    for r in rows:
        print(
            f"{r['upload']:<40} {r['bytes']:>9} {r['idle_mb']:>8.0f} {r['peak_mb']:>8.0f}  "
            f"{r['statuses']} ({'yes' if r['alive'] else 'NO'})"
        )


if __name__ == "__main__":
    main()
