"""The arithmetic of one unit: the numbers that make one output value of one layer.

`explain_unit(model, x, layer, index)` returns, for ONE normalised input, the real inputs
and parameters that produce the value at `index` of `layer`'s output, as plain lists:

    conv         the window it reads (every input channel of its group), the kernel, the
                 partial sum of each channel, the bias, the pre-activation
    pool         the window, what lies inside the (padded) input, and the rule applied
                 (max, mean, sum, stochastic's sum p_i a_i at test time, adaptive, global)
    relu, ...    the input value, the parameters, the output (dropout at test time: identity)
    batchnorm    x, running mean and variance, eps, gamma, beta
    lrn          the neighbouring channels' values and k, alpha, beta, size
    dense        every input and weight (up to MAX_VECTOR), the largest contributions,
                 bias, total
    softmax      logits, exponentials, their sum, probabilities (SOFTMAX is the model's
                 output layer: cnnlab models return logits, prediction applies softmax)
    blocks       residual: body + shortcut then relu; inception: which branch made the
                 channel; dense block: which layer; transition: its final 2x2 average

Every explanation also gives the model's own value, the receptive field on the input
(a box, inclusive, clipped to the image) and, when the next layer is an activation, its
value. `trace_block` lists the outputs of a block's inner modules.

The model is only read: eval mode inside (`evaluating`, every flag restored after), no
gradients, no hooks (a server runs several requests on one model at once).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cnnlab import layers as L
from cnnlab.errors import CnnlabError
from cnnlab.inspect.maps import evaluating, layer_names
from cnnlab.model.net import Net

SOFTMAX = "@softmax"  # the probabilities after the last layer; '@' is in no layer name
MAX_CHANNELS = 16  # input channels of a conv unit returned with their window and kernel
MAX_VECTOR = 1024  # a dense unit's inputs and weights returned in full up to this many
MAX_WINDOW = 4096  # pooled values returned (a global pool over a larger map gives its result only)
TOP = 12  # a dense unit's largest contributions listed
ACTIVATIONS = {"relu", "leaky_relu", "softplus", "tanh", "sigmoid"}


# ---------------------------------------------------------------- positions
def unit_position(shape: Sequence[int], index: int | Sequence[int]) -> tuple[int, ...]:
    """A flat index or a position (channel, y, x) -> a checked position in `shape`."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer, Sequence)):
        raise CnnlabError(f"a unit is a flat index or a position, got {index!r}")
    if isinstance(index, (int, np.integer)):
        total = math.prod(shape)
        if not 0 <= index < total:
            raise CnnlabError(f"unit index {index} is out of range 0..{total - 1}")
        return tuple(int(i) for i in np.unravel_index(int(index), tuple(shape)))
    pos = tuple(int(i) for i in index)
    if len(pos) != len(shape):
        raise CnnlabError(f"a unit position needs {len(shape)} numbers for shape {list(shape)}")
    for name, i, n in zip(("channel", "y", "x")[-len(shape) :], pos, shape, strict=True):
        if not 0 <= i < n:
            raise CnnlabError(f"unit {name} {i} is out of range 0..{n - 1}")
    return pos


def _as_2d(t: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) or (1, C, L) -> (C, H, W) float64; a length L becomes 1 x L."""
    a = t[0].detach().double().numpy()
    return a[:, None, :] if a.ndim == 2 else a


def _yx(pos: tuple[int, ...]) -> tuple[int, int, int]:
    """(c, y, x) of a unit of a (C, H, W) or (C, L) output."""
    return (pos[0], 0, pos[1]) if len(pos) == 2 else (pos[0], pos[1], pos[2])


def _pair(v, rank: int = 2, fill: int = 1) -> tuple[int, int]:
    """A size, stride or padding as (height, width); a 1-D layer has height 1 (`fill`)."""
    v = tuple(int(i) for i in v) if isinstance(v, (tuple, list, torch.Size)) else (int(v),) * rank
    return (fill, v[0]) if len(v) == 1 else (v[0], v[1])


def _window(a: np.ndarray, top: int, left: int, size, step) -> tuple[np.ndarray, np.ndarray]:
    """a[..., rows, cols] of a (C, H, W) array at rows top + step*i: values (0 outside) and
    the mask of what lies inside the array."""
    rows = top + step[0] * np.arange(size[0])
    cols = left + step[1] * np.arange(size[1])
    inside = ((rows >= 0) & (rows < a.shape[1]))[:, None] & ((cols >= 0) & (cols < a.shape[2]))
    values = a[:, rows.clip(0, a.shape[1] - 1)][:, :, cols.clip(0, a.shape[2] - 1)]
    return np.where(inside, values, 0.0), inside


def _geometry(top: int, left: int, size, step, stride=None, padding=None) -> dict:
    return {
        "top": int(top),
        "left": int(left),
        "size": list(size),
        "dilation": list(step),
        "stride": None if stride is None else list(stride),
        "padding": None if padding is None else list(padding),
    }


# ---------------------------------------------------------------- one rule per layer type
def _conv(module: nn.Module, inp: torch.Tensor, pos) -> dict:
    pad_top = pad_left = 0
    conv = L.conv_of(module)
    if conv is not module:  # the asymmetric 'same': Sequential(pad, conv)
        p = module[0].padding  # F.pad order: (left, right[, top, bottom])
        pad_left, pad_top = p[0], (p[2] if len(p) == 4 else 0)
    rank = 1 if isinstance(conv, nn.Conv1d) else 2
    weight = conv.weight.detach().double().numpy()
    weight = weight[:, :, None, :] if weight.ndim == 3 else weight
    stride = _pair(conv.stride, rank)
    padding = _pair(conv.padding, rank, 0)
    dilation = _pair(getattr(conv, "dilation", 1), rank)
    groups = getattr(conv, "groups", 1)
    bias = getattr(conv, "bias", None)
    c, y, x = _yx(pos)
    a = _as_2d(inp)
    per_group = weight.shape[1]
    first = (c // (weight.shape[0] // groups)) * per_group
    top = y * stride[0] - padding[0] - pad_top
    left = x * stride[1] - padding[1] - pad_left
    size = weight.shape[2:]
    windows, inside = _window(a[first : first + per_group], top, left, size, dilation)
    kernel = weight[c]
    partials = (windows * kernel).sum(axis=(1, 2))
    shown = range(per_group)
    if per_group > MAX_CHANNELS:
        shown = sorted(np.argsort(-np.abs(partials), kind="stable")[:MAX_CHANNELS].tolist())
    b = 0.0 if bias is None else float(bias[c])
    return {
        "rule": "conv",
        "window": _geometry(
            top, left, size, dilation, stride, (padding[0] + pad_top, padding[1] + pad_left)
        ),
        "inside": inside.tolist(),
        "groups": groups,
        "input_channels": [first, first + per_group],
        "channels": [
            {
                "channel": first + i,
                "window": windows[i].tolist(),
                "kernel": kernel[i].tolist(),
                "partial": float(partials[i]),
            }
            for i in shown
        ],
        "partials": partials.tolist(),
        "bias": b,
        "has_bias": bias is not None,
        "pre_activation": float(partials.sum() + b),
    }


POOL_MODES = (
    (nn.MaxPool1d, "max"),
    (nn.MaxPool2d, "max"),
    (nn.AvgPool1d, "mean"),
    (nn.AvgPool2d, "mean"),
    (L.SumPool2d, "sum"),
    (L.StochasticPool2d, "stochastic"),
)


def _pool(module: nn.Module, inp: torch.Tensor, pos) -> dict:
    mode = next(m for cls, m in POOL_MODES if isinstance(module, cls))
    rank = 1 if isinstance(module, (nn.MaxPool1d, nn.AvgPool1d)) else 2
    size = _pair(module.kernel_size, rank)
    stride = _pair(module.stride, rank)
    padding = _pair(module.padding, rank, 0)
    dilation = _pair(getattr(module, "dilation", 1), rank)
    c, y, x = _yx(pos)
    top, left = y * stride[0] - padding[0], x * stride[1] - padding[1]
    values, inside = _window(_as_2d(inp)[c : c + 1], top, left, size, dilation)
    out = _pool_rule(mode, values[0], inside)
    geometry = _geometry(top, left, size, dilation, stride, padding)
    return {"rule": "pool", "channel": c, "window": geometry, **out}


def _pool_rule(mode: str, values: np.ndarray, inside: np.ndarray) -> dict:
    """The window's values and what the rule makes of them."""
    out: dict = {"mode": mode, "count": int(inside.sum())}
    if mode == "max":
        masked = np.where(inside, values, -np.inf)
        r, q = np.unravel_index(int(np.argmax(masked)), masked.shape)
        out |= {"argmax": [int(r), int(q)], "result": float(masked[r, q])}
    elif mode == "mean":
        out |= {"sum": float(values[inside].sum()), "result": float(values[inside].mean())}
    elif mode == "sum":
        out |= {"sum": float(values.sum()), "result": float(values.sum())}
    else:  # stochastic at test time: sum p_i a_i, p_i = a_i / sum a, a = max(x, 0)
        a = np.clip(values, 0, None)
        total = a.sum()
        p = a / total if total > 0 else np.zeros_like(a)
        out |= {"sum": float(total), "probabilities": p.tolist(), "result": float((p * a).sum())}
    if values.size <= MAX_WINDOW:
        out |= {"values": values.tolist(), "inside": inside.tolist()}
    return out


def _adaptive(module: nn.Module, inp: torch.Tensor, pos) -> dict:
    """Adaptive and global pooling: PyTorch's windows floor(i*H/O) .. ceil((i+1)*H/O)."""
    pool = module[0] if isinstance(module, nn.Sequential) else module
    mode = "max" if isinstance(pool, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)) else "mean"
    a = _as_2d(inp)
    if len(pos) == 1:  # global pooling: one window, the whole map
        (c, y, x), (out_h, out_w) = (pos[0], 0, 0), (1, 1)
    else:
        (c, y, x), (out_h, out_w) = _yx(pos), _pair(pool.output_size)
    h, w = a.shape[1:]
    top, bottom = (y * h) // out_h, -((-(y + 1) * h) // out_h)
    left, right = (x * w) // out_w, -((-(x + 1) * w) // out_w)
    values = a[c, top:bottom, left:right]
    out = _pool_rule(mode, values, np.ones(values.shape, bool))
    geometry = _geometry(top, left, (bottom - top, right - left), (1, 1))
    return {"rule": "pool", "channel": c, "window": geometry, **out}


def _activation(module: nn.Module, inp: torch.Tensor, pos) -> dict:
    x = float(inp[(0, *pos)])
    if isinstance(module, nn.LeakyReLU):
        return {"rule": "leaky_relu", "input": x, "slope": float(module.negative_slope)}
    if isinstance(module, nn.Softplus):
        beta, threshold = float(module.beta), float(module.threshold)
        return {"rule": "softplus", "input": x, "beta": beta, "threshold": threshold}
    for cls, rule in ((nn.ReLU, "relu"), (nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid")):
        if isinstance(module, cls):
            return {"rule": rule, "input": x}
    return {"rule": "identity", "input": x}  # dropout at test time


def _batchnorm(module: nn.Module, inp: torch.Tensor, pos) -> dict:
    c = pos[0]
    return {
        "rule": "batchnorm",
        "input": float(inp[(0, *pos)]),
        "channel": c,
        "mean": float(module.running_mean[c]),
        "var": float(module.running_var[c]),
        "eps": float(module.eps),
        "gamma": float(module.weight[c]) if module.weight is not None else 1.0,
        "beta": float(module.bias[c]) if module.bias is not None else 0.0,
    }


def _lrn(module: nn.Module, inp: torch.Tensor, pos) -> dict:
    """b_c = a_c / (k + alpha / size * sum of a^2 over c - size//2 .. c + (size-1)//2)^beta."""
    c, rest = pos[0], pos[1:]
    channels = inp.shape[1]
    lo, hi = max(0, c - module.size // 2), min(channels, c + (module.size - 1) // 2 + 1)
    values = inp[(0, slice(lo, hi), *rest)].double().numpy()
    return {
        "rule": "lrn",
        "input": float(inp[(0, *pos)]),
        "channels": [lo, hi],
        "neighbours": values.tolist(),
        "size": module.size,
        "alpha": float(module.alpha),
        "beta": float(module.beta),
        "k": float(module.k),
    }


def _channel_pool(module: nn.Module, inp: torch.Tensor, pos) -> dict:
    g, c, rest = module.group, pos[0], pos[1:]
    values = inp[(0, slice(c * g, (c + 1) * g), *rest)].double().numpy()
    return {
        "rule": "channel_pool",
        "channels": [c * g, (c + 1) * g],
        "values": values.tolist(),
        "result": float(values.max()),
    }


def _flatten(module: nn.Module, inp: torch.Tensor, pos) -> dict:
    source = np.unravel_index(pos[0], tuple(inp.shape[1:]))
    return {
        "rule": "flatten",
        "source": [int(i) for i in source],
        "input": float(inp[(0, *source)]),
    }


def _dense(module: nn.Module, inp: torch.Tensor, pos, in_shape: Sequence[int]) -> dict:
    a = inp[0].detach().double().flatten().numpy()
    w = module.weight[pos[0]].detach().double().numpy()
    products = a * w
    top = np.argsort(-np.abs(products), kind="stable")[:TOP]
    b = 0.0 if module.bias is None else float(module.bias[pos[0]])
    rest = np.delete(products, top)
    full = a.size <= MAX_VECTOR
    return {
        "rule": "dense",
        "top": [
            {
                "index": int(i),
                "position": [int(v) for v in np.unravel_index(int(i), tuple(in_shape))],
                "activation": float(a[i]),
                "weight": float(w[i]),
                "product": float(products[i]),
            }
            for i in top
        ],
        "others": {"count": int(rest.size), "sum": float(rest.sum())},
        "inputs": a.tolist() if full else None,
        "weights": w.tolist() if full else None,
        "bias": b,
        "has_bias": module.bias is not None,
        "total": float(products.sum() + b),
    }


def _softmax_numbers(logits: np.ndarray, chosen: int, log: bool = False) -> dict:
    shift = logits.max()
    exps = np.exp(logits - shift)
    total = exps.sum()
    p = exps / total
    return {
        "rule": "log_softmax" if log else "softmax",
        "chosen": chosen,
        "logits": logits.tolist(),
        "shift": float(shift),
        "exps": exps.tolist(),
        "sum": float(total),
        "probabilities": p.tolist(),
        "result": float(np.log(p[chosen]) if log else p[chosen]),
    }


def _softmax(module: nn.Module, inp: torch.Tensor, pos) -> dict:
    logits = inp[(0, slice(None), *pos[1:])].double().numpy()
    return _softmax_numbers(logits, pos[0], isinstance(module, nn.LogSoftmax))


# ---------------------------------------------------------------- blocks
def _run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One module's output, given a copy if it writes into its input (as Net.features does)."""
    return module(x.clone() if getattr(module, "inplace", False) else x)


def trace_block(module: nn.Module, x: torch.Tensor, prefix: str = "") -> list[tuple]:
    """(name, module, output) of each inner module of a block, in the order they run, the
    block's own output last. Runs the structure explicitly rather than through forward hooks,
    which would also fire for other requests running on the same model at the same time."""
    steps: list[tuple] = []

    def walk(m: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
        if isinstance(m, nn.Sequential):
            for child_name, child in m.named_children():
                x = walk(child, x, f"{name}.{child_name}" if name else child_name)
            return x
        if isinstance(m, L.Residual):
            body = walk(m.body, x, _join(name, "body"))
            shortcut = walk(m.shortcut, x, _join(name, "shortcut"))
            out = torch.relu(body + shortcut)
            steps.append((_join(name, "relu"), m.relu, out))
            return out
        if isinstance(m, L.Concat):
            outs = [walk(b, x, _join(name, f"branches.{i}")) for i, b in enumerate(m.branches)]
            out = torch.cat(outs, dim=1)
            steps.append((_join(name, "concat"), m, out))
            return out
        if isinstance(m, L.DenseLayer):
            out = torch.cat([x, walk(m.body, x, _join(name, "body"))], dim=1)
            steps.append((_join(name, "concat"), m, out))
            return out
        out = _run(m, x)
        steps.append((name or type(m).__name__, m, out))
        return out

    with torch.no_grad():
        walk(module, x, prefix)
    return steps


def _join(name: str, child: str) -> str:
    return f"{name}.{child}" if name else child


def _block(module: nn.Module, inp: torch.Tensor, pos) -> dict:
    c = pos[0]
    if isinstance(module, L.Residual):
        body, shortcut = _run(module.body, inp), _run(module.shortcut, inp)
        b, s = float(body[(0, *pos)]), float(shortcut[(0, *pos)])
        return {"rule": "residual", "body": b, "shortcut": s, "sum": b + s}
    if isinstance(module, L.Concat):
        sizes = [int(_run(branch, inp).shape[1]) for branch in module.branches]
        starts = np.cumsum([0, *sizes])
        branch = int(np.searchsorted(starts, c, side="right") - 1)
        return {
            "rule": "concat",
            "branch": branch,
            "branch_channel": c - int(starts[branch]),
            "branches": sizes,
        }
    if isinstance(module, nn.Sequential) and all(isinstance(m, L.DenseLayer) for m in module):
        x, source = inp, None
        for i, dense_layer in enumerate(module):
            before = x.shape[1]
            x = dense_layer(x)
            if source is None and before <= c < x.shape[1]:
                source = {"from": f"layer {i + 1}", "channel": c - before}
        source = source or {"from": "input", "channel": c}
        return {"rule": "dense_block", "source": source, "input_channels": int(inp.shape[1])}
    if isinstance(module, nn.Sequential) and isinstance(module[-1], nn.AvgPool2d):  # transition
        inner = module[:-1](inp.clone())
        out = _pool(module[-1], inner, pos)
        return out | {"inner": f"{type(module[-2]).__name__} output inside the block"}
    return {"rule": "value"}


# ---------------------------------------------------------------- receptive field
# A region is the set of rows and the set of columns it covers (a dilated window reads every
# d-th row, so a box's edge is exact only if the gaps are kept); None: the whole input.
Region = tuple[frozenset, frozenset] | None
WINDOWED = (
    *L.CONVOLUTIONS,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    L.SumPool2d,
    L.StochasticPool2d,
)
POINTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Softplus,
    nn.Tanh,
    nn.Sigmoid,
    nn.Dropout,
    nn.Dropout2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.LocalResponseNorm,
    nn.Identity,
    L.ChannelMaxPool,
    nn.Softmax,
    nn.LogSoftmax,
)


def _spread(rows: frozenset, kernel: int, stride: int, pad: int, dilation: int) -> frozenset:
    return frozenset(o * stride - pad + dilation * k for o in rows for k in range(kernel))


def _back(module: nn.Module, region: Region, in_shape: Sequence[int]) -> Region:
    """The input positions a module's output positions read (in the module's input coordinates,
    padding included: the caller clips to the real input)."""
    if region is None:
        return None
    conv = L.conv_of(module)
    if conv is not None and conv is not module:  # Sequential(pad, conv)
        return _back(module[0], _back(conv, region, in_shape), in_shape)
    if isinstance(module, (nn.ZeroPad2d, nn.ConstantPad1d)):
        p = module.padding  # F.pad order: (left, right[, top, bottom])
        top, left = (p[2], p[0]) if len(p) == 4 else (0, p[0])
        return frozenset(r - top for r in region[0]), frozenset(q - left for q in region[1])
    if isinstance(module, WINDOWED):
        rank = 1 if isinstance(module, (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d)) else 2
        size = module.weight.shape[2:] if isinstance(module, L.CONVOLUTIONS) else module.kernel_size
        k, s = _pair(size, rank), _pair(module.stride, rank)
        p, d = _pair(module.padding, rank, 0), _pair(getattr(module, "dilation", 1), rank)
        rows, cols = region
        return _spread(rows, k[0], s[0], p[0], d[0]), _spread(cols, k[1], s[1], p[1], d[1])
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        out = _pair(module.output_size)
        return tuple(
            frozenset(r for o in rows for r in range((o * n) // m, -((-(o + 1) * n) // m)))
            for rows, n, m in zip(region, in_shape[1:], out, strict=True)
        )
    if isinstance(module, nn.Sequential):
        for child in reversed(module):
            region = _back(child, region, in_shape)
        return region
    if isinstance(module, L.Residual):
        return _union(
            _back(module.body, region, in_shape), _back(module.shortcut, region, in_shape)
        )
    if isinstance(module, L.Concat):
        found = [_back(branch, region, in_shape) for branch in module.branches]
        return functools.reduce(_union, found)
    if isinstance(module, L.DenseLayer):
        return _union(region, _back(module.body, region, in_shape))
    if isinstance(module, L.PadShortcut):
        step = module.stride
        return frozenset(o * step for o in region[0]), frozenset(o * step for o in region[1])
    return region if isinstance(module, POINTWISE) else None  # dense, flatten: the whole input


def _union(a: Region, b: Region) -> Region:
    return None if a is None or b is None else (a[0] | b[0], a[1] | b[1])


def _sizes(shape: Sequence[int]) -> tuple[int, int]:
    return (1, shape[1]) if len(shape) == 2 else (shape[1], shape[2])


def receptive_field(model: Net, layer: str, pos: tuple[int, ...]) -> dict | None:
    """The box of input pixels that the unit at `pos` of `layer` reads, inclusive and clipped
    to the input: {"top", "bottom", "left", "right"}; None when it reads only padding.
    Exact through convolutions and pools; inside blocks it may take in a pixel more at an
    edge (their inner padding is not clipped)."""
    names = layer_names(model)
    region: Region = None
    if len(model.shapes[layer]) >= 2:
        _, y, x = _yx(pos)
        region = (frozenset([y]), frozenset([x]))
    for i in range(names.index(layer), -1, -1):
        in_shape = model.input_shape if i == 0 else model.shapes[names[i - 1]]
        region = _back(getattr(model, names[i]), region, in_shape)
        if region is not None:
            h, w = _sizes(in_shape)
            region = (
                frozenset(r for r in region[0] if 0 <= r < h),
                frozenset(q for q in region[1] if 0 <= q < w),
            )
            if not region[0] or not region[1]:
                return None
    if region is None:
        h, w = _sizes(model.input_shape)
        return {"top": 0, "bottom": h - 1, "left": 0, "right": w - 1}
    rows, cols = region
    return {"top": min(rows), "bottom": max(rows), "left": min(cols), "right": max(cols)}


# ---------------------------------------------------------------- the entry point
RULES = {
    "conv": _conv,
    "gabor": _conv,
    "pool": _pool,
    "global_pool": _adaptive,
    "adaptive_pool": _adaptive,
    "channel_pool": _channel_pool,
    "flatten": _flatten,
    "relu": _activation,
    "leaky_relu": _activation,
    "softplus": _activation,
    "tanh": _activation,
    "sigmoid": _activation,
    "dropout": _activation,
    "batchnorm": _batchnorm,
    "lrn": _lrn,
    "softmax": _softmax,
    "log_softmax": _softmax,
    "residual": _block,
    "inception": _block,
    "dense_block": _block,
    "transition": _block,
}


def check_unit_layer(model: Net, layer: str) -> None:
    if layer != SOFTMAX and layer not in model.shapes:
        names = ", ".join([*model.shapes, SOFTMAX])
        raise CnnlabError(f"no layer '{layer}'; layers: {names}")


@torch.no_grad()
def explain_unit(model: Net, x: torch.Tensor, layer: str, index: int | Sequence[int]) -> dict:
    """The numbers behind one unit of `layer` (or of SOFTMAX, the output probabilities) for
    ONE normalised input (1, C, H, W). `index` is a flat index into the layer's output or a
    position (channel, y, x) / (channel, x) / (unit,)."""
    check_unit_layer(model, layer)
    names = layer_names(model)
    with evaluating(model):
        if layer == SOFTMAX:
            logits = model(x)[0].double().numpy()
            pos = unit_position(logits.shape, index)
            out = _softmax_numbers(logits, pos[0])
            value = out["result"]
            return {
                "layer": SOFTMAX,
                "kind": "softmax",
                "input_layer": names[-1],
                "position": list(pos),
                "index": pos[0],
                "value": value,
                **out,
                "receptive_field": receptive_field(model, names[-1], ()),
                "next": None,
            }
        shape = model.shapes[layer]
        pos = unit_position(shape, index)
        at = names.index(layer)
        following = names[at + 1] if at + 1 < len(names) else None
        feats = model.features(x, upto=following or layer)
        inp = x if at == 0 else feats[names[at - 1]]
        module, kind = getattr(model, layer), model.kinds[layer]
        if kind == "dense":
            in_shape = model.input_shape if at == 0 else model.shapes[names[at - 1]]
            out = _dense(module, inp, pos, in_shape)
        else:
            out = RULES.get(kind, lambda m, i, p: {"rule": "value"})(module, inp, pos)
        nxt = None
        if following is not None and model.kinds[following] in ACTIVATIONS:
            nxt = {
                "layer": following,
                "kind": model.kinds[following],
                "value": float(feats[following][(0, *pos)]),
            }
        return {
            "layer": layer,
            "kind": kind,
            "input_layer": names[at - 1] if at else "input",
            "position": list(pos),
            "index": int(np.ravel_multi_index(pos, shape)),
            "value": float(feats[layer][(0, *pos)]),
            **out,
            "receptive_field": receptive_field(model, layer, pos),
            "next": nxt,
        }
