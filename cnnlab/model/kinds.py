"""Every layer kind a spec can name: its fields (checker and default) and its builder.

A builder takes (fields, input shape, spec) and returns (module, output shape); the field
checkers raise ValueError with what was expected, which spec.py prefixes with the layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from cnnlab.model import layers as L
from cnnlab.model.blocks import dense_block, inception, residual, transition
from cnnlab.model.bounds import MAX_INT, MAX_LAYERS, brief
from cnnlab.model.shapes import per_dim, spatial_dims, symmetric

REQUIRED = object()


# ------------------------------------------------------------------ field checkers
def _int(v, lo=1, hi=MAX_INT):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"expected an integer >= {lo}, got {brief(v)}")
    if v > hi:
        raise ValueError(f"expected an integer <= {hi}, got {brief(v)}")
    return v


def _units(v):
    return v if v == "classes" else _int(v)


def _size(v):
    if isinstance(v, list) and len(v) in (1, 2):
        return [_int(x) for x in v]
    return _int(v)


def _padding(v):
    if v in ("valid", "same"):
        return v
    if isinstance(v, list) and len(v) in (2, 4):
        return [_int(x, 0) for x in v]
    if isinstance(v, int) and not isinstance(v, bool):
        return _int(v, 0)
    raise ValueError(
        f"expected valid, same, an integer, [h, w] or [top, bottom, left, right], got {brief(v)}"
    )


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {brief(v)}")
    return v


def _number(lo=0.0, hi=math.inf, hi_open=False, lo_open=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"expected a number, got {brief(v)}")
        try:
            finite = math.isfinite(v)
        except OverflowError:  # an integer beyond any float
            finite = False
        if not finite:
            raise ValueError(f"expected a finite number, got {brief(v)}")
        if v < lo or v > hi or (hi_open and v == hi) or (lo_open and v == lo):
            raise ValueError(
                f"expected a number in {'(' if lo_open else '['}{lo}, "
                f"{hi}{')' if hi_open else ']'}, got {v!r}"
            )
        return float(v)

    return check


def _choice(*options):
    def check(v):
        if not isinstance(v, str) or v not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {brief(v)}")
        return v

    return check


def _text(v):
    if not isinstance(v, str) or not v or not all(c.isalnum() or c in "_-." for c in v):
        raise ValueError(f"expected a name of letters, digits, _ - or ., got {brief(v)}")
    if len(v) > 100:
        raise ValueError(f"expected a name of at most 100 characters, got {len(v)}")
    return v


ROUNDING = _choice("exact", "floor")
POOL_ROUNDING = _choice("exact", "floor", "ceil")
COMMON = {"name": (_text, None), "repeat": (lambda v: _int(v, 1, MAX_LAYERS), 1)}


# ------------------------------------------------------------------ layer builders
def _pad_module(pads) -> nn.Module:
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad order: last dim first
    return nn.ZeroPad2d(flat) if len(pads) == 2 else nn.ConstantPad1d(flat, 0.0)


# ------------------------------------------------------------------ layer builders
# Each takes (fields, input shape, spec) and returns (module, output shape).
def _conv(f, shape, spec):
    rank, k, s, d, pads, out = spatial_dims(shape, f, "kernel", "stride", f["rounding"])
    cin, groups = shape[0], f["groups"]
    filters = spec["classes"] if f["filters"] == "classes" else f["filters"]
    if cin % groups or filters % groups:
        raise ValueError(
            f"groups {groups} must divide both input channels {cin} and filters {filters}"
        )
    conv_cls = nn.Conv2d if rank == 2 else nn.Conv1d
    sym = symmetric(pads)
    conv = conv_cls(
        cin, filters, k, s, [a for a, _ in pads] if sym else 0, d, groups, bias=f["bias"]
    )
    module = conv if sym else nn.Sequential(_pad_module(pads), conv)
    return module, (filters, *out)


def _gabor(f, shape, spec):
    if len(shape) != 3:
        raise ValueError(f"needs a (C, H, W) input, got {shape}")
    _, k, s, _, pads, out = spatial_dims(shape, f, "kernel", "stride", f["rounding"])
    if k[0] != k[1]:
        raise ValueError("Gabor kernels are square: give one kernel size")
    if not symmetric(pads):
        raise ValueError("padding must be symmetric for a Gabor bank")
    module = L.GaborConv2d(
        shape[0], f["filters"], k[0], f["seed"], tuple(s), tuple(a for a, _ in pads)
    )
    return module, (f["filters"], *out)


POOL_MODULES = {
    ("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d,
    ("mean", 1): nn.AvgPool1d, ("mean", 2): nn.AvgPool2d,
}  # fmt: skip


def _pool(f, shape, spec):
    f = {**f, "stride": f.get("stride") or f["size"]}
    rank, k, s, _, pads, out = spatial_dims(shape, f, "size", "stride", f["rounding"])
    mode = "mean" if f["mode"] == "avg" else f["mode"]
    if not symmetric(pads):
        raise ValueError("pooling padding must be the same on both sides")
    pad = [a for a, _ in pads]
    if any(p > kk // 2 for p, kk in zip(pad, k, strict=True)):
        raise ValueError(f"padding {pad} must be at most half the window {k}")
    ceil = f["rounding"] == "ceil"
    if (mode, rank) in POOL_MODULES:
        cls = POOL_MODULES[(mode, rank)]
        kwargs = {"ceil_mode": ceil} | ({"count_include_pad": False} if mode == "mean" else {})
        return cls(
            k if rank == 2 else k[0],
            s if rank == 2 else s[0],
            pad if rank == 2 else pad[0],
            **kwargs,
        ), (shape[0], *out)
    if ceil:
        raise ValueError(f"{mode} pooling supports exact or floor rounding")
    if rank == 1:
        cls = L.SumPool1d if mode == "sum" else L.StochasticPool1d
        return cls(k[0], s[0], pad[0]), (shape[0], *out)
    cls = L.SumPool2d if mode == "sum" else L.StochasticPool2d
    return cls(tuple(k), tuple(s), tuple(pad)), (shape[0], *out)


GLOBAL_POOLS = {
    ("avg", 1): nn.AdaptiveAvgPool1d, ("avg", 2): nn.AdaptiveAvgPool2d,
    ("max", 1): nn.AdaptiveMaxPool1d, ("max", 2): nn.AdaptiveMaxPool2d,
}  # fmt: skip


def _global_pool(f, shape, spec):
    if len(shape) < 2:
        raise ValueError(f"needs a spatial input, got {shape}")
    pool = GLOBAL_POOLS[(f["mode"], len(shape) - 1)]
    return nn.Sequential(pool(1), nn.Flatten()), (shape[0],)


def _adaptive_pool(f, shape, spec):
    if len(shape) != 3:
        raise ValueError(f"needs a (C, H, W) input, got {shape}")
    size = per_dim(f["size"], 2)
    cls = nn.AdaptiveAvgPool2d if f["mode"] == "avg" else nn.AdaptiveMaxPool2d
    return cls(tuple(size)), (shape[0], *size)


def _channel_pool(f, shape, spec):
    if shape[0] % f["group"]:
        raise ValueError(f"group {f['group']} does not divide the {shape[0]} input channels")
    return L.ChannelMaxPool(f["group"]), (shape[0] // f["group"], *shape[1:])


def _dense(f, shape, spec):
    units = spec["classes"] if f["units"] == "classes" else f["units"]
    return L.Dense(math.prod(shape), units, bias=f["bias"]), (units,)


def _batchnorm(f, shape, spec):
    cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
    return cls(shape[0], eps=f["eps"], momentum=f["momentum"]), shape


def _dropout(f, shape, spec):
    if f["channelwise"] and len(shape) == 3:
        return nn.Dropout2d(f["rate"]), shape
    return nn.Dropout(f["rate"]), shape


def _simple(factory: Callable[[dict], nn.Module]):
    return lambda f, shape, spec: (factory(f), shape)


# kind -> (fields with checker and default, builder)
KINDS: dict[str, tuple[dict[str, tuple[Callable, Any]], Callable]] = {
    "conv": ({"filters": (_units, REQUIRED), "kernel": (_size, REQUIRED), "stride": (_size, 1),
              "padding": (_padding, "valid"), "dilation": (_size, 1), "groups": (_int, 1),
              "bias": (_bool, True), "rounding": (ROUNDING, "exact")}, _conv),
    "gabor": ({"filters": (_int, REQUIRED), "kernel": (_int, REQUIRED), "stride": (_size, 1),
               "padding": (_padding, "valid"), "seed": (lambda v: _int(v, 0), 0),
               "rounding": (ROUNDING, "exact")}, _gabor),
    "pool": ({"mode": (_choice("max", "mean", "avg", "sum", "stochastic"), "max"),
              "size": (_size, REQUIRED), "stride": (_size, None), "padding": (_padding, 0),
              "rounding": (POOL_ROUNDING, "exact")}, _pool),
    "global_pool": ({"mode": (_choice("avg", "max"), "avg")}, _global_pool),
    "adaptive_pool": ({"mode": (_choice("avg", "max"), "avg"), "size": (_size, REQUIRED)},
                      _adaptive_pool),
    "channel_pool": ({"group": (_int, REQUIRED)}, _channel_pool),
    "dense": ({"units": (_units, "classes"), "bias": (_bool, True)}, _dense),
    "flatten": ({}, lambda f, shape, spec: (nn.Flatten(), (math.prod(shape),))),
    "relu": ({}, _simple(lambda f: nn.ReLU(inplace=True))),
    "leaky_relu": ({"slope": (_number(), 0.01)},
                   _simple(lambda f: nn.LeakyReLU(f["slope"], inplace=True))),
    "softplus": ({"beta": (_number(1e-6), 1.0)}, _simple(lambda f: nn.Softplus(f["beta"]))),
    "tanh": ({}, _simple(lambda f: nn.Tanh())),
    "sigmoid": ({}, _simple(lambda f: nn.Sigmoid())),
    "softmax": ({}, _simple(lambda f: nn.Softmax(dim=1))),
    "log_softmax": ({}, _simple(lambda f: nn.LogSoftmax(dim=1))),
    "dropout": ({"rate": (_number(0, 1, hi_open=True), 0.5),
                 "channelwise": (_bool, False)}, _dropout),
    "batchnorm": ({"eps": (_number(0), 1e-5), "momentum": (_number(0, 1), 0.1)}, _batchnorm),
    "lrn": ({"size": (_int, 5), "alpha": (_number(0), 1e-4), "beta": (_number(0), 0.75),
             "k": (_number(0), 2.0)},
            _simple(lambda f: nn.LocalResponseNorm(f["size"], f["alpha"], f["beta"], f["k"]))),
    "residual": ({"filters": (_int, REQUIRED), "stride": (_int, 1), "bottleneck": (_bool, False),
                  "expansion": (_int, 4), "shortcut": (_choice("projection", "pad"), "projection")},
                 residual),
    "inception": ({k: (_int, REQUIRED)
                   for k in ("b1", "b3_reduce", "b3", "b5_reduce", "b5", "pool_proj")}
                  | {"b5_kernel": (_int, 5)}, inception),
    "dense_block": ({"layers": (_int, REQUIRED), "growth": (_int, 32), "bn_size": (_int, 4),
                     "dropout": (_number(0, 1, hi_open=True), 0.0)}, dense_block),
    "transition": ({"compression": (_number(0, 1, lo_open=True), 0.5),
                    "filters": (_int, None)}, transition),
}  # fmt: skip
OUTPUT_KINDS = {"softmax", "log_softmax"}
