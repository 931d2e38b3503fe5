"""Architecture specs -> torch.nn.Module, with every shape inferred and every error named.

A spec is a mapping (from YAML or from Python):

    name: mnist-1conv
    input: [1, 28, 28]        # (C, H, W); (C, L) for sequences
    classes: 10
    layers:
      - {type: conv, filters: 8, kernel: 13}
      - {type: relu}
      - {type: pool, mode: max, size: 4}
      - {type: dense, units: 200}
      - {type: relu}
      - {type: dense}         # units default to `classes` for the final layer

Sizes follow (W - F + P) / S + 1 with P the total padding. A non-integer result is an
error unless the layer says `rounding: floor` (or `ceil` for pooling). The built model
returns logits; softmax belongs to the loss and to prediction.
"""

from __future__ import annotations

import copy
import math
import os
import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from cnnlab import layers as L
from cnnlab.data.dataset import MAX_CLASSES
from cnnlab.errors import CnnlabError

Shape = tuple[int, ...]
REQUIRED = object()
TOP_LEVEL = {"name", "description", "input", "classes", "layers"}

# Bounds that keep a spec (from a file, a --set, or a checkpoint's JSON) from hanging or
# exhausting memory. Each is checked before anything is allocated; the zoo's largest models
# use a fraction of each (vgg16: 138M parameters, 15.5G multiply-adds, 3.2M values per map).
MAX_SPEC_BYTES = 4 << 20  # a spec file; the zoo's largest is 3 KB
MAX_SPEC_NODES = 1_000_000  # YAML values after aliases are expanded (a "billion laughs" stops here)
MAX_SPEC_DEPTH = 32  # YAML nesting; a spec needs 4
MAX_INT = 2**31 - 1  # any integer field
MAX_LAYERS = 10_000  # layers after repeats, a dense_block's layers included
MAX_PARAMETERS = 1_000_000_000  # weights and buffers of the whole model (4 GB of float32)
MAX_ACTIVATION = 1 << 28  # values in any one tensor a layer makes, per example (1 GB of float32)
MAX_MACS = 10**12  # multiply-adds per example, about a minute of one CPU core
MAX_GABOR_WORK = 1 << 22  # filters x kernel^2 of a Gabor bank, each filter drawn in Python


class SpecError(CnnlabError):
    pass


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 40
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 4
_SHORT.maxlevel = 2


def _brief(v) -> str:
    """repr(v) cut short: an error message stays one short line whatever the spec holds."""
    text = _SHORT.repr(v).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------ field checkers
def _int(v, lo=1, hi=MAX_INT):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"expected an integer >= {lo}, got {_brief(v)}")
    if v > hi:
        raise ValueError(f"expected an integer <= {hi}, got {_brief(v)}")
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
        f"expected valid, same, an integer, [h, w] or [top, bottom, left, right], got {_brief(v)}"
    )


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {_brief(v)}")
    return v


def _number(lo=0.0, hi=math.inf, hi_open=False, lo_open=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"expected a number, got {_brief(v)}")
        try:
            finite = math.isfinite(v)
        except OverflowError:  # an integer beyond any float
            finite = False
        if not finite:
            raise ValueError(f"expected a finite number, got {_brief(v)}")
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
            raise ValueError(f"expected one of {', '.join(options)}, got {_brief(v)}")
        return v

    return check


def _text(v):
    if not isinstance(v, str) or not v or not all(c.isalnum() or c in "_-." for c in v):
        raise ValueError(f"expected a name of letters, digits, _ - or ., got {_brief(v)}")
    if len(v) > 100:
        raise ValueError(f"expected a name of at most 100 characters, got {len(v)}")
    return v


ROUNDING = _choice("exact", "floor")
POOL_ROUNDING = _choice("exact", "floor", "ceil")
COMMON = {"name": (_text, None), "repeat": (lambda v: _int(v, 1, MAX_LAYERS), 1)}


# ------------------------------------------------------------------ size arithmetic
def _per_dim(v, rank: int) -> list[int]:
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


def _pads(
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


def _spatial(shape: Shape, f: dict, kernel_key: str, stride_key: str, rounding: str) -> tuple:
    rank = len(shape) - 1
    if rank not in (1, 2):
        raise ValueError(f"needs a (C, H, W) or (C, L) input, got {shape}")
    kernels = _per_dim(f[kernel_key], rank)
    strides = _per_dim(f[stride_key], rank)
    dilation = _per_dim(f.get("dilation", 1), rank)
    effective = [d * (k - 1) + 1 for k, d in zip(kernels, dilation, strict=True)]
    pads = _pads(f.get("padding", 0), list(shape[1:]), effective, strides)
    out = [
        out_size(size, k, s, a + b, rounding, name)
        for size, k, s, (a, b), name in zip(
            shape[1:], effective, strides, pads, DIM_NAMES[rank], strict=True
        )
    ]
    return rank, kernels, strides, dilation, pads, out


def _symmetric(pads):
    return all(a == b for a, b in pads)


def _pad_module(pads) -> nn.Module:
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad order: last dim first
    return nn.ZeroPad2d(flat) if len(pads) == 2 else nn.ConstantPad1d(flat, 0.0)


# ------------------------------------------------------------------ layer builders
# Each takes (fields, input shape, spec) and returns (module, output shape).
def _conv(f, shape, spec):
    rank, k, s, d, pads, out = _spatial(shape, f, "kernel", "stride", f["rounding"])
    cin, groups = shape[0], f["groups"]
    filters = spec["classes"] if f["filters"] == "classes" else f["filters"]
    if cin % groups or filters % groups:
        raise ValueError(
            f"groups {groups} must divide both input channels {cin} and filters {filters}"
        )
    conv_cls = nn.Conv2d if rank == 2 else nn.Conv1d
    sym = _symmetric(pads)
    conv = conv_cls(
        cin, filters, k, s, [a for a, _ in pads] if sym else 0, d, groups, bias=f["bias"]
    )
    module = conv if sym else nn.Sequential(_pad_module(pads), conv)
    return module, (filters, *out)


def _gabor(f, shape, spec):
    if len(shape) != 3:
        raise ValueError(f"needs a (C, H, W) input, got {shape}")
    _, k, s, _, pads, out = _spatial(shape, f, "kernel", "stride", f["rounding"])
    if k[0] != k[1]:
        raise ValueError("Gabor kernels are square: give one kernel size")
    if not _symmetric(pads):
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
    rank, k, s, _, pads, out = _spatial(shape, f, "size", "stride", f["rounding"])
    mode = "mean" if f["mode"] == "avg" else f["mode"]
    if not _symmetric(pads):
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
    if rank != 2 or ceil:
        raise ValueError(f"{mode} pooling supports 2-D inputs with exact or floor rounding")
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
    size = _per_dim(f["size"], 2)
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


def _conv_bn_relu(cin, cout, kernel, stride=1, padding=0, eps=1e-5) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, padding, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
        nn.ReLU(inplace=True),
    ]


def _need_image(shape):
    if len(shape) != 3:
        raise ValueError(f"needs a (C, H, W) input, got {shape}")


def _residual(f, shape, spec):
    _need_image(shape)
    cin, width, stride = shape[0], f["filters"], f["stride"]
    if f["bottleneck"]:
        cout = width * f["expansion"]
        body = nn.Sequential(
            *_conv_bn_relu(cin, width, 1),
            *_conv_bn_relu(width, width, 3, stride, 1),
            nn.Conv2d(width, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
    else:
        cout = width
        body = nn.Sequential(
            *_conv_bn_relu(cin, width, 3, stride, 1),
            nn.Conv2d(width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
        )
    if stride == 1 and cin == cout:
        shortcut: nn.Module = nn.Identity()
    elif f["shortcut"] == "pad":
        if cout < cin:
            raise ValueError(f"a pad shortcut cannot shrink {cin} channels to {cout}")
        shortcut = L.PadShortcut(stride, cout - cin)
    else:
        shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    out = [(s - 1) // stride + 1 for s in shape[1:]]
    return L.Residual(body, shortcut), (cout, *out)


def _inception(f, shape, spec):
    _need_image(shape)
    cin, eps, k5 = shape[0], 1e-3, f["b5_kernel"]
    branches = [
        nn.Sequential(*_conv_bn_relu(cin, f["b1"], 1, eps=eps)),
        nn.Sequential(*_conv_bn_relu(cin, f["b3_reduce"], 1, eps=eps),
                      *_conv_bn_relu(f["b3_reduce"], f["b3"], 3, 1, 1, eps=eps)),
        nn.Sequential(*_conv_bn_relu(cin, f["b5_reduce"], 1, eps=eps),
                      *_conv_bn_relu(f["b5_reduce"], f["b5"], k5, 1, k5 // 2, eps=eps)),
        nn.Sequential(nn.MaxPool2d(3, 1, 1), *_conv_bn_relu(cin, f["pool_proj"], 1, eps=eps)),
    ]  # fmt: skip
    if k5 % 2 == 0:
        raise ValueError(f"b5_kernel must be odd to keep the size, got {k5}")
    cout = f["b1"] + f["b3"] + f["b5"] + f["pool_proj"]
    return L.Concat(*branches), (cout, *shape[1:])


def _dense_block(f, shape, spec):
    _need_image(shape)
    c, growth, inner = shape[0], f["growth"], f["bn_size"] * f["growth"]
    blocks = []
    for _ in range(f["layers"]):
        body = [
            nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, inner, 1, bias=False),
            nn.BatchNorm2d(inner), nn.ReLU(inplace=True), nn.Conv2d(inner, growth, 3, 1, 1, bias=False),
        ]  # fmt: skip
        if f["dropout"]:
            body.append(nn.Dropout(f["dropout"]))
        blocks.append(L.DenseLayer(nn.Sequential(*body)))
        c += growth
    return nn.Sequential(*blocks), (c, *shape[1:])


def _transition(f, shape, spec):
    _need_image(shape)
    c = shape[0]
    cout = f.get("filters") or int(c * f["compression"])
    if cout < 1:
        raise ValueError(
            f"compression {f['compression']:g} of {c} channel(s) leaves {cout}; "
            "raise compression or give filters"
        )
    if min(shape[1:]) < 2:
        raise ValueError(
            f"needs an input of at least 2x2 for its 2x2 average pooling, got {shape[1]}x{shape[2]}"
        )
    module = nn.Sequential(
        nn.BatchNorm2d(c),
        nn.ReLU(inplace=True),
        nn.Conv2d(c, cout, 1, bias=False),
        nn.AvgPool2d(2, 2),
    )
    return module, (cout, shape[1] // 2, shape[2] // 2)


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
    "adaptive_pool": ({"mode": (_choice("avg", "max"), "avg"), "size": (_size, REQUIRED)}, _adaptive_pool),
    "channel_pool": ({"group": (_int, REQUIRED)}, _channel_pool),
    "dense": ({"units": (_units, "classes"), "bias": (_bool, True)}, _dense),
    "flatten": ({}, lambda f, shape, spec: (nn.Flatten(), (math.prod(shape),))),
    "relu": ({}, _simple(lambda f: nn.ReLU(inplace=True))),
    "leaky_relu": ({"slope": (_number(), 0.01)}, _simple(lambda f: nn.LeakyReLU(f["slope"], inplace=True))),
    "softplus": ({"beta": (_number(1e-6), 1.0)}, _simple(lambda f: nn.Softplus(f["beta"]))),
    "tanh": ({}, _simple(lambda f: nn.Tanh())),
    "sigmoid": ({}, _simple(lambda f: nn.Sigmoid())),
    "softmax": ({}, _simple(lambda f: nn.Softmax(dim=1))),
    "log_softmax": ({}, _simple(lambda f: nn.LogSoftmax(dim=1))),
    "dropout": ({"rate": (_number(0, 1, hi_open=True), 0.5), "channelwise": (_bool, False)}, _dropout),
    "batchnorm": ({"eps": (_number(0), 1e-5), "momentum": (_number(0, 1), 0.1)}, _batchnorm),
    "lrn": ({"size": (_int, 5), "alpha": (_number(0), 1e-4), "beta": (_number(0), 0.75),
             "k": (_number(0), 2.0)},
            _simple(lambda f: nn.LocalResponseNorm(f["size"], f["alpha"], f["beta"], f["k"]))),
    "residual": ({"filters": (_int, REQUIRED), "stride": (_int, 1), "bottleneck": (_bool, False),
                  "expansion": (_int, 4), "shortcut": (_choice("projection", "pad"), "projection")},
                 _residual),
    "inception": ({k: (_int, REQUIRED) for k in ("b1", "b3_reduce", "b3", "b5_reduce", "b5", "pool_proj")}
                  | {"b5_kernel": (_int, 5)}, _inception),
    "dense_block": ({"layers": (_int, REQUIRED), "growth": (_int, 32), "bn_size": (_int, 4),
                     "dropout": (_number(0, 1, hi_open=True), 0.0)}, _dense_block),
    "transition": ({"compression": (_number(0, 1, lo_open=True), 0.5), "filters": (_int, None)}, _transition),
}  # fmt: skip
OUTPUT_KINDS = {"softmax", "log_softmax"}


# ------------------------------------------------------------------ the model
class Net(nn.Sequential):
    """A plain nn.Sequential of named layers that also keeps its spec.

    `features(x)` returns every layer's output by name: the one way in that the inspection
    tools use, whatever the architecture.
    """

    def __init__(self, named: list[tuple[str, str, nn.Module, Shape]], spec: dict):
        super().__init__()
        for name, _, module, _ in named:
            self.add_module(name, module)
        self.spec = spec
        self.kinds = {name: kind for name, kind, _, _ in named}  # spec layer type of each layer
        self.shapes = {name: shape for name, _, _, shape in named}  # output shape, no batch

    @property
    def input_shape(self) -> Shape:
        return tuple(self.spec["input"])

    def features(self, x: torch.Tensor, upto: str | None = None) -> dict[str, torch.Tensor]:
        """Every layer's output by name (up to and including `upto`), each equal to what the
        prefix of the net ending at that layer returns.

        The layers run as in forward, except that a layer which writes into its input (the
        in-place relu that keeps training fast) is given a copy: otherwise it would overwrite
        the output kept for the layer before it, and any earlier output that one aliases
        (dropout in eval mode returns its input, flatten a view of it).
        """
        outputs = {}
        for name, module in self.named_children():
            x = module(x.clone() if writes_its_input(module) else x)
            outputs[name] = x
            if name == upto:
                break
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """As nn.Sequential's, except that the caller's tensor is never written to: a first
        layer that works in place is given a copy."""
        for i, module in enumerate(self):
            x = module(x.clone() if i == 0 and writes_its_input(module) else x)
        return x


def writes_its_input(module: nn.Module) -> bool:
    """True for a layer that overwrites its input (an in-place relu, or a block starting with one)."""
    while isinstance(module, nn.Sequential) and len(module):
        module = module[0]
    return bool(getattr(module, "inplace", False))


def _where(source: str, index: int, kind: str, name: Any = None) -> str:
    if name and not isinstance(name, str):
        name = _brief(name)
    label = f"{kind} '{name[:100]}'" if name else kind
    return f"{source}: layer {index} ({label})"


def _normalise_layer(raw: Any, index: int, source: str) -> dict:
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source}: layer {index}: expected a mapping like {{type: conv, ...}}, got {_brief(raw)}"
        )
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in KINDS:
        known = ", ".join(sorted(KINDS))
        shown = kind if isinstance(kind, str) else _brief(kind)
        raise SpecError(f"{_where(source, index, shown[:100])}: unknown layer type; known: {known}")
    fields, _ = KINDS[kind]
    allowed = fields | COMMON
    out = {"type": kind}
    for key in raw:
        if key != "type" and (not isinstance(key, str) or key not in allowed):
            raise SpecError(
                f"{_where(source, index, kind, raw.get('name'))}: unknown field {_brief(key)}; "
                f"{kind} takes {', '.join(sorted(allowed))}"
            )
    for key, (check, default) in allowed.items():
        if key in raw:
            try:
                out[key] = check(raw[key])
            except ValueError as e:
                raise SpecError(
                    f"{_where(source, index, kind, raw.get('name'))}: field '{key}': {e}"
                ) from None
        elif default is REQUIRED:
            raise SpecError(
                f"{_where(source, index, kind, raw.get('name'))}: missing field '{key}'"
            )
        elif default is not None and key not in COMMON:
            out[key] = default
    if "name" in raw:
        out["name"] = raw["name"]
    if raw.get("repeat", 1) != 1:
        out["repeat"] = raw["repeat"]
    return out


def normalise(spec: dict, source: str = "spec") -> dict:
    """Check a spec's structure and fill every default, so that it round-trips exactly."""
    if not isinstance(spec, dict):
        raise SpecError(f"{source}: a spec is a mapping with input, classes and layers")
    unknown = set(spec) - TOP_LEVEL
    if unknown:
        raise SpecError(
            f"{source}: unknown top-level field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(TOP_LEVEL))}"
        )
    for key in ("input", "classes", "layers"):
        if key not in spec:
            raise SpecError(f"{source}: missing top-level field '{key}'")
    shape = spec["input"]
    if not (
        isinstance(shape, (list, tuple))
        and len(shape) in (1, 2, 3)
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        raise SpecError(
            f"{source}: field 'input': expected [C, H, W] or [C, L] of positive integers, got {_brief(shape)}"
        )
    if math.prod(shape) > MAX_ACTIVATION:
        raise SpecError(
            f"{source}: field 'input': {'x'.join(map(str, shape))} = {math.prod(shape)} values "
            f"per example, over the cap of {MAX_ACTIVATION}"
        )
    classes = spec["classes"]
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise SpecError(
            f"{source}: field 'classes': expected a positive integer, got {_brief(classes)}"
        )
    if classes > MAX_CLASSES:
        raise SpecError(
            f"{source}: field 'classes': {classes} is over the cap of {MAX_CLASSES} classes"
        )
    layers = spec["layers"]
    if not isinstance(layers, list) or not layers:
        raise SpecError(f"{source}: field 'layers': expected a non-empty list")
    if len(layers) > MAX_LAYERS:
        raise SpecError(
            f"{source}: field 'layers': {len(layers)} layers, over the cap of {MAX_LAYERS}"
        )
    out = {"name": _label(spec, "name", Path(source).stem, source), "input": list(shape),
           "classes": classes}  # fmt: skip
    if spec.get("description"):
        out["description"] = _label(spec, "description", "", source)
    out["layers"] = [_normalise_layer(raw, i, source) for i, raw in enumerate(layers, 1)]
    _count_layers(out["layers"], source)
    return out


def _label(spec: dict, key: str, default: str, source: str) -> str:
    """A top-level text field: plain text (a number is taken as text), of bounded length."""
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SpecError(f"{source}: field '{key}': expected text, got {_brief(value)}")
    text = str(value)
    if len(text) > 10_000:
        raise SpecError(f"{source}: field '{key}': {len(text)} characters, at most 10000")
    return text


def _count_layers(layers: list[dict], source: str) -> None:
    """Refuse a spec whose layers, once repeated (and a dense_block's unrolled), pass MAX_LAYERS."""
    total = 0
    for index, layer in enumerate(layers, 1):
        total += layer.get("repeat", 1) * (layer["layers"] if layer["type"] == "dense_block" else 1)
        if total > MAX_LAYERS:
            raise SpecError(
                f"{_where(source, index, layer['type'], layer.get('name'))}: the spec reaches "
                f"{total} layers here once repeated, over the cap of {MAX_LAYERS}"
            )


def _expand(layers: list[dict]):
    """Yield (spec index, name, fields) with repeats unrolled and default names given."""
    counts: dict[str, int] = {}
    used: set[str] = set()
    for index, layer in enumerate(layers, 1):
        repeat = layer.get("repeat", 1)
        for j in range(repeat):
            fields = {k: v for k, v in layer.items() if k not in ("name", "repeat")}
            if j and "stride" in fields:
                fields["stride"] = 1  # a repeated block strides only in its first copy
            kind = layer["type"]
            if "name" in layer:
                name = layer["name"] if repeat == 1 else f"{layer['name']}_{j + 1}"
            else:
                counts[kind] = counts.get(kind, 0) + 1
                name = f"{kind}{counts[kind]}"
            if name in used:
                raise SpecError(f"layer {index}: name '{name}' is used twice")
            used.add(name)
            yield index, name, fields


def build(spec: dict | str | os.PathLike, source: str | None = None) -> Net:
    """Build a model from a spec (a mapping, a spec file, or a zoo name)."""
    if not isinstance(spec, dict):
        spec, source = load_spec(spec)
    if not source:
        name = spec.get("name")
        plain = isinstance(name, (str, int, float)) and not isinstance(name, bool)
        source = str(name)[:100] if plain and str(name) else "spec"
    spec = normalise(spec, source)
    shape: Shape = tuple(spec["input"])
    named = []
    expanded = list(_expand(spec["layers"]))
    _check_sizes(spec, expanded, source)
    for position, (index, name, fields) in enumerate(expanded):
        kind = fields["type"]
        if kind in OUTPUT_KINDS and position == len(expanded) - 1:
            raise SpecError(
                f"{_where(source, index, kind, name)}: remove the final {kind}: models return "
                "logits, and the loss and prediction apply softmax themselves"
            )
        try:
            module, shape = KINDS[kind][1](fields, shape, spec)
        except ValueError as e:
            raise SpecError(f"{_where(source, index, kind, name)}: {e}") from None
        named.append((name, kind, module, tuple(shape)))
    if shape != (spec["classes"],):
        raise SpecError(
            f"{source}: the last layer outputs shape {shape} but the spec declares "
            f"{spec['classes']} classes; end with a dense layer (or global pooling over "
            f"{spec['classes']} channels)"
        )
    return Net(named, spec)


# ------------------------------------------------------------------ size checks
def _check_sizes(spec: dict, expanded: list, source: str) -> None:
    """Run every builder on the meta device (shapes and sizes, no memory) and refuse the spec
    if a layer makes an empty map, or a tensor, the parameters or the multiply-adds pass
    their caps. Builder errors surface here, in the same words as in build."""
    shape: Shape = tuple(spec["input"])
    params = macs = 0
    for index, name, fields in expanded:
        kind = fields["type"]
        where = _where(source, index, kind, name)
        try:
            layer_params, out = _planned(kind, fields, shape, spec)
        except ValueError as e:
            raise SpecError(f"{where}: {e}") from None
        except (RuntimeError, OverflowError) as e:  # torch refusing a size the checks let by
            raise SpecError(f"{where}: {str(e).splitlines()[0]}") from None
        if min(out) < 1:
            raise SpecError(f"{where}: its output {tuple(out)} is empty")
        for what, n in _tensor_sizes(kind, fields, shape, out):
            if n > MAX_ACTIVATION:
                raise SpecError(
                    f"{where}: {what} would hold {n} values per example, over the cap of "
                    f"{MAX_ACTIVATION}"
                )
        params += layer_params
        if params > MAX_PARAMETERS:
            raise SpecError(
                f"{where}: the model reaches {params} parameters here, over the cap of "
                f"{MAX_PARAMETERS}"
            )
        spatial = math.prod(out[1:])
        if kind not in ("conv", "gabor"):  # blocks work at their input's size too
            spatial = max(spatial, math.prod(shape[1:])) if len(out) > 1 else 1
        macs += layer_params * spatial
        if macs > MAX_MACS:
            raise SpecError(
                f"{where}: the model reaches about {macs:.3g} multiply-adds per example here, "
                f"over the cap of {MAX_MACS:.0e}"
            )
        shape = tuple(out)


def _planned(kind: str, f: dict, shape: Shape, spec: dict) -> tuple[int, Shape]:
    """(parameter and buffer count, output shape) of one layer, without allocating it."""
    if kind == "gabor":  # its bank is drawn on the CPU in Python: bounded, then sized by hand
        work = f["filters"] * f["kernel"] ** 2
        if work > MAX_GABOR_WORK:
            raise ValueError(
                f"{f['filters']} filters of {f['kernel']}x{f['kernel']} ({work} values to draw) "
                f"is over the Gabor cap of {MAX_GABOR_WORK}"
            )
        if len(shape) != 3:
            raise ValueError(f"needs a (C, H, W) input, got {shape}")
        out = _spatial(shape, f, "kernel", "stride", f["rounding"])[-1]
        return f["filters"] * shape[0] * f["kernel"] ** 2, (f["filters"], *out)
    with torch.device("meta"):
        module, out = KINDS[kind][1](f, shape, spec)
    count = sum(t.numel() for t in module.parameters()) + sum(t.numel() for t in module.buffers())
    return count, tuple(out)


def _tensor_sizes(kind: str, f: dict, shape: Shape, out: Shape) -> list[tuple[str, int]]:
    """(what, values per example) of the tensors a layer makes: its output, and those inside."""
    spatial = math.prod(shape[1:])
    sizes = [("its output", math.prod(out))]
    if kind == "conv":  # symmetric padding stays implicit; uneven padding is a tensor
        pads = _spatial(shape, f, "kernel", "stride", f["rounding"])[4]
        if not _symmetric(pads):
            padded = math.prod(s + a + b for s, (a, b) in zip(shape[1:], pads, strict=True))
            sizes.append(("its padded input", shape[0] * padded))
    elif kind == "pool" and f["mode"] == "stochastic":
        window = math.prod(_per_dim(f["size"], len(shape) - 1))
        sizes.append(("its pooling windows", math.prod(out) * window))
    elif kind == "lrn":
        sizes.append(("its padded squares", (shape[0] + f["size"] - 1) * spatial))
    elif kind == "residual" and f["bottleneck"]:
        sizes.append(("its first 1x1 convolution", f["filters"] * spatial))
    elif kind == "inception":
        sizes.append(("a reducing 1x1 convolution", max(f["b3_reduce"], f["b5_reduce"]) * spatial))
    elif kind == "dense_block":
        sizes.append(("a bottleneck", f["bn_size"] * f["growth"] * spatial))
    elif kind == "transition":
        sizes.append(("its convolution", out[0] * spatial))
    return sizes


def to_spec(model: nn.Module) -> dict:
    """The normalised spec a cnnlab model was built from."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise CnnlabError(f"{type(model).__name__} was not built by cnnlab, so it carries no spec")
    return copy.deepcopy(spec)


def retarget(spec: dict, input_shape: Shape | None = None, classes: int | None = None) -> dict:
    """The same architecture for another input shape or class count (shapes re-inferred)."""
    spec = copy.deepcopy(spec)
    if input_shape is not None:
        spec["input"] = list(input_shape)
    if classes is not None:
        spec["classes"] = classes
    return spec


class _Refused(yaml.MarkedYAMLError):
    """A YAML document refused while it is composed, before any Python object is built."""


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that bounds nesting depth and what aliases expand to, counted node by
    node while the document is composed: a "billion laughs" spec, an alias to the node that
    holds it, or [[[[...]]]] is refused in a few milliseconds instead of being expanded."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> values under it, aliases expanded

    def _refuse(self, problem: str):
        raise _Refused(problem=problem, problem_mark=self.peek_event().start_mark)

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            target = self.anchors.get(self.peek_event().anchor)
            if target is not None and id(target) not in self._sizes:
                self._refuse("an alias refers to the node that contains it")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_SPEC_DEPTH:
            self._refuse(f"nested more than {MAX_SPEC_DEPTH} levels deep")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._sizes[id(child)] for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        if size > MAX_SPEC_NODES:
            self._refuse(
                f"expands to more than {MAX_SPEC_NODES} values (aliases repeat what they name)"
            )
        self._sizes[id(node)] = size
        return node


def load_yaml(text: str, what: str) -> Any:
    """Plain data from YAML text with the spec bounds; every failure is one SpecError line."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{what}: not valid YAML{where} ({getattr(e, 'problem', e)})") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more digits than Python reads
        raise SpecError(f"{what}: unreadable YAML value ({str(e).splitlines()[0][:200]})") from None


def load_spec(ref: str | os.PathLike) -> tuple[dict, str]:
    """A spec from a YAML file, or a zoo model by name. Returns (spec, source name)."""
    from cnnlab import zoo

    path = Path(ref)
    if not path.is_file():
        if str(ref) in zoo.names():
            return zoo.spec(str(ref)), str(ref)
        raise CnnlabError(
            f"{ref}: neither a spec file nor a zoo model (zoo: {', '.join(zoo.names())})"
        )
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(
                f"{path}: {size} bytes is too large for a spec (at most {MAX_SPEC_BYTES})"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read ({e})") from None
    return load_yaml(text, str(path)), str(path)


def dump_spec(spec: dict) -> str:
    return yaml.safe_dump(spec, sort_keys=False, default_flow_style=None)


def apply_overrides(spec: dict, assignments: list[str], source: str = "spec") -> dict:
    """Edit a spec with KEY=VALUE strings: `classes=100`, `input=[3,64,64]`, `pool1.mode=mean`.

    A layer is named as in the built model; VALUE is read as YAML (numbers, lists, true).
    Setting a field of one copy of a repeated layer sets it for every copy.
    """
    spec = copy.deepcopy(spec)
    names = {name: index for index, name, _ in _expand(normalise(spec, source)["layers"])}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. pool1.mode=mean")
        value = load_yaml(text, f"--set {item!r}: the value")
        if "." not in key:
            if key not in TOP_LEVEL - {"layers"}:
                raise SpecError(
                    f"--set {item!r}: top-level keys are name, description, input, classes"
                )
            spec[key] = value
            continue
        layer, field = key.split(".", 1)
        if layer not in names:
            raise SpecError(f"--set {item!r}: no layer '{layer}'; layers: {', '.join(names)}")
        spec["layers"][names[layer] - 1][field] = value
    return spec
