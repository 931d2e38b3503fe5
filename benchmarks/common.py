"""What every benchmark table states about the machine it ran on."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from cnnlab.train.runtime import native_bf16


def cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def provenance() -> dict:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "bf16": native_bf16(),
        "commit": commit,
    }


def headline() -> str:
    p = provenance()
    bf16 = "native bf16" if p["bf16"] else "no native bf16"
    commit = p["commit"] or "unknown"
    return f"torch {p['torch']}, {p['threads']} threads, {p['cpu']}, {bf16}, commit {commit}"
