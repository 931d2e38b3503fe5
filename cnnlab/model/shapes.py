"""Output-size arithmetic: (W - F + P) / S + 1 per dimension, shown when it does not fit."""

from __future__ import annotations

import math

Shape = tuple[int, ...]


def per_dim(v, rank: int) -> list[int]:
    v = v if isinstance(v, list) else [v] * rank
    if len(v) != rank:
        raise ValueError(f"expected {rank} value(s) for a {rank}-D input, got {v}")
    return list(v)


def out_size(size: int, kernel: int, stride: int, pad: int, rounding: str, dim: str) -> int:
    """One output dimension; shows the arithmetic when the configuration does not fit."""
    num = size - kernel + pad
    if num < 0:
        raise ValueError(
            f"{dim}: kernel {kernel} is larger than the input {size} plus padding {pad}"
        )
    if num % stride and rounding == "exact":
        raise ValueError(
            f"{dim}: input {size}, kernel {kernel}, padding {pad}, stride {stride} gives "
            f"({size}-{kernel}+{pad})/{stride}+1 = {num / stride + 1:g}, not an integer "
            "(add rounding: floor to drop the remainder)"
        )
    out = num // stride + 1
    if rounding == "ceil" and num % stride:
        out += 1
    return out


def padding_pairs(
    padding, sizes: list[int], kernels: list[int], strides: list[int]
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim."""
    rank = len(sizes)
    if padding == "valid":
        return [(0, 0)] * rank
    if padding == "same":
        pads = []
        for size, k, s in zip(sizes, kernels, strides, strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        return pads
    if isinstance(padding, int):
        return [(padding, padding)] * rank
    if len(padding) == 2 * rank:
        return [(padding[2 * i], padding[2 * i + 1]) for i in range(rank)]
    if len(padding) == rank:
        return [(p, p) for p in padding]
    raise ValueError(f"padding {padding} does not fit a {rank}-D input")


DIM_NAMES = {1: ["length"], 2: ["height", "width"]}


def spatial_dims(shape: Shape, f: dict, kernel_key: str, stride_key: str, rounding: str) -> tuple:
    rank = len(shape) - 1
    if rank not in (1, 2):
        raise ValueError(f"needs a (C, H, W) or (C, L) input, got {shape}")
    kernels = per_dim(f[kernel_key], rank)
    strides = per_dim(f[stride_key], rank)
    dilation = per_dim(f.get("dilation", 1), rank)
    effective = [d * (k - 1) + 1 for k, d in zip(kernels, dilation, strict=True)]
    pads = padding_pairs(f.get("padding", 0), list(shape[1:]), effective, strides)
    out = [
        out_size(size, k, s, a + b, rounding, name)
        for size, k, s, (a, b), name in zip(
            shape[1:], effective, strides, pads, DIM_NAMES[rank], strict=True
        )
    ]
    return rank, kernels, strides, dilation, pads, out


def symmetric(pads):
    return all(a == b for a, b in pads)
