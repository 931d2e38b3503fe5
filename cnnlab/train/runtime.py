"""Process-wide settings that make CPU training faster: applied by `train`, never on import."""

from __future__ import annotations

import ctypes
import sys

import torch

from cnnlab.errors import CnnlabError

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt() parameters from glibc's malloc.h


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Ask glibc's malloc to serve blocks up to `threshold` bytes from its heap and keep them.

    PyTorch's CPU tensors come straight from malloc. By default glibc maps every block over
    its mmap threshold (at most 32 MB) fresh from the kernel and unmaps it on free, so each
    batch page-faults its large activations in again: on a 2-core VM a batch-1000 forward
    of the first MNIST convolution took 75 ms this way and 15 ms with the heap reused.
    The price is that the process keeps its high-water mark of memory until it exits.
    Returns False (and changes nothing) where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(M_MMAP_THRESHOLD, threshold) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
        )
    except (OSError, AttributeError):
        return False


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """--amp auto|bf16|off -> the autocast dtype for training, or None for float32.

    auto turns bfloat16 on for GPUs that support it. On CPUs it stays off: with AMX or
    AVX512-BF16 it may pay, but that has not been measured against float32 accuracy here
    (this project's CPU emulates bf16, which is slower); `--amp bf16` forces it anywhere.
    """
    if amp not in ("auto", "bf16", "off"):
        raise CnnlabError(f"--amp: expected auto, bf16 or off, got {amp!r}")
    if amp == "off" or (
        amp == "auto" and not (device.type == "cuda" and torch.cuda.is_bf16_supported())
    ):
        return None
    if device.type not in ("cpu", "cuda"):
        raise CnnlabError(f"--amp bf16: mixed precision is not supported on {device.type}")
    return torch.bfloat16
