"""Process-wide settings that make CPU training faster: applied by `train`, never on import."""

from __future__ import annotations

import ctypes
import sys

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
