"""Per-layer table of a model: output shape, parameters, multiply-adds, receptive field.

For each convolution it also gives the weights a fully connected layer would need to map
the same input to the same output: the saving from local connections and weight sharing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnlab import layers as L
from cnnlab.spec import Net

POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, L.SumPool2d, L.StochasticPool2d)
GLOBAL = (
    L.Dense,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.Flatten,
)


def _first(v) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def rf_steps(module: nn.Module) -> list[tuple[int, int, int]] | None:
    """(kernel, stride, dilation) steps along the longest path; None once the field is global."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, L.GaborConv2d)):
        return [
            (
                _first(module.kernel_size),
                _first(module.stride),
                _first(getattr(module, "dilation", 1)),
            )
        ]
    if isinstance(module, POOLS):
        return [(_first(module.kernel_size), _first(module.stride or module.kernel_size), 1)]
    if isinstance(module, GLOBAL):
        return None
    if isinstance(module, L.Concat):
        options = [rf_steps(b) for b in module.branches]
        if any(o is None for o in options):
            return None
        return max(options, key=lambda steps: _grow(1, 1, steps)[0])
    if isinstance(module, L.Residual):
        return rf_steps(module.body)
    if isinstance(module, L.DenseLayer):
        return rf_steps(module.body)
    steps: list = []
    for child in module.children():
        sub = rf_steps(child)
        if sub is None:
            return None
        steps += sub
    return steps


def _grow(rf: int, jump: int, steps) -> tuple[int, int]:
    for k, s, d in steps:
        rf += (k - 1) * d * jump
        jump *= s
    return rf, jump


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
    rows, rf, jump, in_shape = [], 1, 1, tuple(model.input_shape)
    for name, module in tops.items():
        steps = rf_steps(module)
        rf, jump = (None, jump) if steps is None or rf is None else _grow(rf, jump, steps)
        out_shape = model.shapes[name]
        row = {
            "layer": name,
            "type": model.kinds[name],
            "output": list(out_shape),
            "params": sum(p.numel() for p in module.parameters()),
            "macs": macs[name],
            "receptive_field": rf,
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


def _human(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def format_summary(s: dict) -> str:
    head = ["layer", "type", "output", "params", "MACs", "RF", "FC would need"]
    body = [
        [
            r["layer"], r["type"], "x".join(map(str, r["output"])), f"{r['params']:,}",
            _human(r["macs"]), "all" if r["receptive_field"] is None else str(r["receptive_field"]),
            f"{r['fc_equivalent']:,}" if "fc_equivalent" in r else "",
        ]
        for r in s["layers"]
    ]  # fmt: skip
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
        f"total params {t['params']:,} (trainable {t['trainable']:,})   multiply-adds per image {_human(t['macs'])}"
    )
    return "\n".join(out)
