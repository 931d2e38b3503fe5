"""Training and inference speed of zoo models, and peak memory of a default MNIST run.

    python benchmarks/throughput.py             # all rows plus a full default training run
    python benchmarks/throughput.py --no-memory # skip the training run
    python benchmarks/throughput.py --roofline  # training FLOPs against the machine's matmul peak

Training: images/s of forward + backward + Nesterov step at batch 256 (channels-last, heap
reuse on, as `cnnlab train` runs).
Inference: batch-1 latency (median of 200) and batch-256 images/s, eval mode, no grad.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.model.spec import build
from cnnlab.summary import summarize
from cnnlab.train.optim import make_optimizer
from cnnlab.train.runtime import keep_freed_memory, native_bf16

sys.path.insert(0, str(Path(__file__).parent))
from common import headline  # noqa: E402

MODELS = ["lenet5", "mnist-1conv", "mnistnet", "mnistnet-wide", "mnistnet-deep", "resnet20"]


def _timed(fn, seconds: float = 3.0) -> float:
    """Calls per second of fn after a warm-up, over about `seconds`."""
    for _ in range(3):
        fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def train_rate(name: str, batch: int = 256) -> float:
    model = build(name).to(memory_format=torch.channels_last).train()
    opt = make_optimizer("nesterov", model.parameters(), 0.01, 5e-4)
    x = torch.randn(batch, *model.input_shape).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.spec["classes"], (batch,))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _timed(step) * batch


@torch.no_grad()
def infer(name: str) -> tuple[float, float]:
    model = build(name).eval().to(memory_format=torch.channels_last)
    one = torch.randn(1, *model.input_shape)
    for _ in range(10):
        model(one)
    times = []
    for _ in range(200):
        start = time.perf_counter()
        model(one)
        times.append(time.perf_counter() - start)
    many = torch.randn(256, *model.input_shape).contiguous(memory_format=torch.channels_last)
    return 1000 * statistics.median(times), _timed(lambda: model(many)) * 256


def peak_memory_of_default_run() -> tuple[float, float]:
    """(peak resident MB, wall seconds) of `cnnlab train` with every default."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "cnnlab", "train", "--out", tmp], check=True, capture_output=True
        )
        wall = time.perf_counter() - start
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, wall


def matmul_peak(dtype: torch.dtype, n: int = 2048) -> float:
    """GFLOP/s of an n x n matrix product: what this CPU's GEMM reaches, the practical ceiling."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return _timed(lambda: a @ b, seconds=3.0) * 2 * n**3 / 1e9


def training_flops(name: str) -> float:
    """FLOPs to train on one image: 2 per multiply-add forward, twice that again backward
    (gradients of the inputs and of the weights)."""
    return 2 * 3 * summarize(build(name))["totals"]["macs"]


def epoch_rate() -> float:
    """Images/s of one epoch of the default recipe as `cnnlab train` runs it (data in memory)."""
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.setup import make_trainer

    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(TrainConfig(out=tmp, val_split=0.0))
        return trainer.train_epoch(1)["images_per_s"]


def roofline() -> None:
    peaks = {"fp32": matmul_peak(torch.float32)}
    if native_bf16():
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    print(
        "matmul peak (2048 x 2048): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
    )
    print(
        f"{'model':<14} {'train MFLOP/img':>16} {'train img/s':>12} {'GFLOP/s':>8} "
        f"{'of fp32 peak':>13}"
    )
    rows = [(name, train_rate(name)) for name in MODELS]
    rows.append(("mnistnet epoch", epoch_rate()))
    for name, rate in rows:
        flops = training_flops(name.split()[0])
        achieved = flops * rate / 1e9
        print(
            f"{name:<14} {flops / 1e6:>16.2f} {rate:>12.0f} {achieved:>8.1f} "
            f"{achieved / peaks['fp32']:>12.1%}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--roofline", action="store_true", help="Only the FLOP table.")
    args = parser.parse_args()
    keep_freed_memory()
    print(headline() + ", channels-last on")
    if args.roofline:
        roofline()
        return
    print(
        f"{'model':<14} {'input':>9} {'train img/s':>12} {'batch-1 ms':>11} {'batch-256 img/s':>16}"
    )
    for name in MODELS:
        model = build(name)
        latency, rate = infer(name)
        shape = "x".join(map(str, model.input_shape))
        print(
            f"{name:<14} {shape:>9} {train_rate(name):>12.0f} {latency:>11.2f} {rate:>16.0f}",
            flush=True,
        )
    if not args.no_memory:
        mb, wall = peak_memory_of_default_run()
        print(
            f"\ndefault `cnnlab train` (mnistnet, MNIST): peak resident memory {mb:.0f} MB, "
            f"wall {wall:.0f}s"
        )


if __name__ == "__main__":
    main()
