"""Two CPU processes under torchrun (gloo, loopback) match one process on the same global batch."""

import os
import socket
import subprocess
import sys

import torch
from safetensors.torch import load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tiny, tmp_path):
    data, spec = tiny
    # no dropout, no augmentation, no batch norm: each rank's half-batch must add up to the whole
    args = [
        "train",
        "--model",
        str(spec),
        "--data",
        str(data),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--optimizer",
        "momentum",
        "--lr",
        "0.05",
        "--augment",
        "none",
        "--threads",
        "1",
    ]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "cnnlab", *args, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert single.returncode == 0, single.stderr
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
    ]
    double = subprocess.run(
        [*torchrun, "-m", "cnnlab", *args, "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert double.returncode == 0, double.stderr[-2000:]
    assert "x 2 processes" in double.stdout
    assert double.stdout.count("test accuracy") == 1  # rank 0 alone prints
    one = load_file(tmp_path / "one/checkpoints/last.safetensors")
    two = load_file(tmp_path / "two/checkpoints/last.safetensors")
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), key
