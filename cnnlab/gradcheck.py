"""Whole-model gradient check: central finite differences against backprop, in float64.

For each layer with parameters, a few entries chosen at random are nudged by +-eps and the
loss difference (L(w+eps) - L(w-eps)) / 2 eps is compared with the autograd gradient.
Entries where the one-sided differences disagree sit on a kink (a ReLU or max-pool switch
within eps) and are counted, not compared. The model runs in evaluation mode so that dropout
and stochastic pooling are deterministic.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def gradcheck_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    classes: int,
    per_layer: int = 4,
    batch: int = 2,
    eps: float = 1e-6,
    seed: int = 0,
) -> list[dict]:
    """One row per layer with parameters: entries checked and the worst relative error."""
    gen = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(model).double().eval()
    x = torch.randn(batch, *input_shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (batch,), generator=gen)
    model.zero_grad()
    loss = _loss(model, x, y)
    loss.backward()
    base = loss.item()
    rows = []
    for name, layer in model.named_children():
        params = [(pname, p) for pname, p in layer.named_parameters() if p.requires_grad]
        if not params:
            continue
        worst, worst_at, checked, kinks = 0.0, "", 0, 0
        for pname, p in params:
            flat, grad = p.data.view(-1), p.grad.view(-1)
            picks = torch.randperm(flat.numel(), generator=gen)[:per_layer]
            with torch.no_grad():
                for i in picks.tolist():
                    orig = flat[i].item()
                    flat[i] = orig + eps
                    up = _loss(model, x, y).item()
                    flat[i] = orig - eps
                    down = _loss(model, x, y).item()
                    flat[i] = orig
                    ahead, behind = (up - base) / eps, (base - down) / eps
                    if abs(ahead - behind) > 1e-3 * max(abs(ahead), abs(behind)) + 1e-6:
                        kinks += 1  # a ReLU or max-pool switch lies within eps: skip it
                        continue
                    numeric, analytic = (up - down) / (2 * eps), grad[i].item()
                    err = abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-6)
                    checked += 1
                    if err >= worst:
                        worst, worst_at = err, f"{pname}[{i}]"
        rows.append(
            {
                "layer": name,
                "checked": checked,
                "kinks": kinks,
                "worst_rel_error": worst,
                "at": worst_at,
            }
        )
    return rows
