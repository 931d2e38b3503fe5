"""What every benchmark table states about the machine it ran on."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch


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
        "bf16": False,
        "commit": commit,
    }


def headline() -> str:
    p = provenance()
    return f"torch {p['torch']}, {p['threads']} threads, {p['cpu']}, bf16 off, commit {p['commit'] or 'unknown'}"
