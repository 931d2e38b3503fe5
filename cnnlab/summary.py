"""Per-layer table of a model: output shape, parameters, multiply-adds, receptive field.

For each convolution it also gives the weights a fully connected layer would need to map
the same input to the same output: the saving from local connections and weight sharing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from cnnlab import layers as L
from cnnlab.model.net import Net

POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, L.SumPool2d, L.StochasticPool2d)
GLOBAL = (
    L.Dense,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.Flatten,
)


class Field(NamedTuple):
    """Where each unit of a layer looks in the network's input, per spatial dimension: unit i
    sees input pixels start + i * jump up to start + i * jump + size - 1. `start` is negative
    where padding reaches past the border, so the field of a border unit is exact too. A
    block of parallel paths (inception branches, a body and its shortcut) has the union of
    their fields."""

    size: tuple[int, ...]
    jump: tuple[int, ...]
    start: tuple[int, ...]

    def span(self, index: tuple[int, ...]) -> list[tuple[int, int]]:
        """(first, one past the last) input pixel of the unit at `index`, per dimension."""
        return [
            (s + i * j, s + i * j + n)
            for s, i, j, n in zip(self.start, index, self.jump, self.size, strict=True)
        ]


class Step(NamedTuple):
    """One sliding window, per spatial dimension: kernel, stride, dilation, padding before."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pad: tuple[int, ...]


def _dims(v, rank: int) -> tuple[int, ...]:
    return tuple(int(a) for a in v) if isinstance(v, (tuple, list)) else (int(v),) * rank


def _window(module: nn.Module, rank: int, kernel) -> Step:
    return Step(
        _dims(kernel, rank),
        _dims(module.stride or kernel, rank),
        _dims(getattr(module, "dilation", 1), rank),
        _dims(module.padding, rank),
    )


def _identity(rank: int) -> Field:
    return Field((1,) * rank, (1,) * rank, (0,) * rank)


def grow(field: Field, steps: list[Step]) -> Field:
    size, jump, start = map(list, field)
    for step in steps:
        for d, (k, s, dil, p) in enumerate(zip(*step, strict=True)):
            start[d] -= p * jump[d]
            size[d] += (k - 1) * dil * jump[d]
            jump[d] *= s
    return Field(tuple(size), tuple(jump), tuple(start))


def _union(paths: list[list[Step]], rank: int) -> list[Step]:
    """Parallel paths (branches, a body beside its shortcut) as one step covering them all."""
    fields = [grow(_identity(rank), steps) for steps in paths]
    start = tuple(min(f.start[d] for f in fields) for d in range(rank))
    end = tuple(max(f.start[d] + f.size[d] for f in fields) for d in range(rank))
    size = tuple(e - s for s, e in zip(start, end, strict=True))
    return [Step(size, fields[0].jump, (1,) * rank, tuple(-s for s in start))]


def rf_steps(module: nn.Module, rank: int = 2) -> list[Step] | None:
    """The sliding windows a module applies, in order; None once the field is the whole input."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, L.GaborConv2d)):
        return [_window(module, rank, module.kernel_size)]
    if isinstance(module, POOLS):
        return [_window(module, rank, module.kernel_size)]
    if isinstance(module, (nn.ZeroPad2d, nn.ConstantPad1d)):  # (left, right[, top, bottom])
        before = tuple(reversed(module.padding[::2]))
        return [Step((1,) * rank, (1,) * rank, (1,) * rank, before)]
    if isinstance(module, L.PadShortcut):
        return [Step((1,) * rank, (module.stride,) * rank, (1,) * rank, (0,) * rank)]
    if isinstance(module, GLOBAL):
        return None
    if isinstance(module, (L.Concat, L.Residual, L.DenseLayer)):
        if isinstance(module, L.Concat):
            parts = list(module.branches)
        elif isinstance(module, L.Residual):
            parts = [module.body, module.shortcut]
        else:
            parts = [module.body, nn.Identity()]
        paths = [rf_steps(part, rank) for part in parts]
        return None if any(p is None for p in paths) else _union(paths, rank)
    steps: list = []
    for child in module.children():
        sub = rf_steps(child, rank)
        if sub is None:
            return None
        steps += sub
    return steps


def receptive_fields(model: Net) -> dict[str, Field | None]:
    """Each top-level layer's field in the input (None once it spans the whole input)."""
    rank = len(model.input_shape) - 1
    field: Field | None = _identity(rank)
    out = {}
    for name, module in model.named_children():
        steps = rf_steps(module, rank)
        field = None if steps is None or field is None else grow(field, steps)
        out[name] = field
    return out


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    per_item = out[0].numel()
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return per_item * module.in_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, L.GaborConv2d):
        return per_item * module.in_channels * module.kernel_size**2
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


@torch.no_grad()
def summarize(model: Net) -> dict:
    """Rows for every top-level layer plus totals; runs one forward pass on zeros."""
    tops = dict(model.named_children())
    macs = dict.fromkeys(tops, 0)
    hooks = []

    def counter(name):
        return lambda m, i, o: macs.__setitem__(name, macs[name] + _macs(m, o))

    for name, top in tops.items():
        for leaf in top.modules():
            if next(leaf.children(), None) is None:
                hooks.append(leaf.register_forward_hook(counter(name)))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *model.input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows, in_shape, fields = [], tuple(model.input_shape), receptive_fields(model)
    for name, module in tops.items():
        field = fields[name]
        out_shape = model.shapes[name]
        row = {
            "layer": name,
            "type": model.kinds[name],
            "output": list(out_shape),
            "params": sum(p.numel() for p in module.parameters()),
            "macs": macs[name],
            "receptive_field": _field_size(field),
        }
        if L.conv_of(module) is not None:
            row["fc_equivalent"] = math.prod(in_shape) * math.prod(out_shape)
        rows.append(row)
        in_shape = out_shape
    totals = {
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "macs": sum(macs.values()),
    }
    return {
        "name": model.spec["name"],
        "input": list(model.input_shape),
        "layers": rows,
        "totals": totals,
    }


def _field_size(field: Field | None) -> int | list[int] | None:
    """One number for a square (or 1-D) field, [height, width] otherwise; None when global."""
    if field is None:
        return None
    return field.size[0] if len(set(field.size)) == 1 else list(field.size)


def _human(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _rf_text(rf) -> str:
    return "all" if rf is None else "x".join(map(str, rf)) if isinstance(rf, list) else str(rf)


def with_sparsity(s: dict, fractions: dict[str, float], images: int, source: str) -> dict:
    """The summary with each layer's fraction of exactly-zero outputs (see inspect.sparsity)."""
    for row in s["layers"]:
        row["sparsity"] = fractions[row["layer"]]
    s["sparsity_sample"] = {"images": images, "data": source}
    return s


def format_summary(s: dict) -> str:
    zeros = "sparsity_sample" in s
    head = ["layer", "type", "output", "params", "MACs", "RF", "FC would need"] + ["zeros"] * zeros
    body = [
        [
            r["layer"],
            r["type"],
            "x".join(map(str, r["output"])),
            f"{r['params']:,}",
            _human(r["macs"]),
            _rf_text(r["receptive_field"]),
            f"{r['fc_equivalent']:,}" if "fc_equivalent" in r else "",
        ]
        + [f"{100 * r['sparsity']:.1f}%"] * zeros
        for r in s["layers"]
    ]
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(
            c.rjust(w) if i >= 3 else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    t = s["totals"]
    out = [
        f"{s['name']}: input {'x'.join(map(str, s['input']))}",
        line(head),
        "-" * (sum(widths) + 2 * len(widths)),
    ]
    out += [line(row) for row in body]
    out.append("-" * (sum(widths) + 2 * len(widths)))
    out.append(
        f"total params {t['params']:,} (trainable {t['trainable']:,})   "
        f"multiply-adds per image {_human(t['macs'])}"
    )
    if zeros:
        sample = s["sparsity_sample"]
        out.append(
            f"zeros: fraction of exactly-zero outputs over {sample['images']} images "
            f"of {sample['data']}"
        )
    return "\n".join(out)
