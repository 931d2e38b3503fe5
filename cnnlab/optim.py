"""Optimisers, learning-rate schedules, and LeCun's Hessian rule for choosing the rate."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from cnnlab.errors import CnnlabError

DEFAULT_LR = {
    "sgd": 0.05, "momentum": 0.1, "nesterov": 0.1,
    "adam": 1e-3, "adamw": 1e-3, "adadelta": 1.0,
}  # fmt: skip
SCHEDULES = ("constant", "step", "cosine", "onecycle")


def make_optimizer(
    name: str, params: Iterable, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr, weight_decay=weight_decay)
    if name in ("momentum", "nesterov"):
        return torch.optim.SGD(
            params, lr, momentum=momentum, nesterov=name == "nesterov", weight_decay=weight_decay
        )
    if name == "adam":
        return torch.optim.Adam(params, lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr, weight_decay=weight_decay)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr, weight_decay=weight_decay)
    raise CnnlabError(f"unknown optimizer '{name}'; choose from {', '.join(DEFAULT_LR)}")


def lr_factor(
    schedule: str, total_steps: int, steps_per_epoch: int, gamma: float = 0.7, warmup: float = 0.2
) -> Callable[[int], float]:
    """step -> multiplier of the base rate.

    step:     gamma ** epoch (PyTorch's MNIST example uses 0.7 per epoch)
    cosine:   half a cosine from 1 to 0 over the run
    onecycle: linear warm-up from 1/25 over the first `warmup` of the run, then linear to 0
    """
    total = max(total_steps, 1)
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "step":
        return lambda step: gamma ** (step // max(steps_per_epoch, 1))
    if schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if schedule == "onecycle":
        peak = max(int(total * warmup), 1)

        def onecycle(step: int) -> float:
            if step < peak:
                return 0.04 + 0.96 * step / peak
            return max(0.0, (total - step) / max(total - peak, 1))

        return onecycle
    raise CnnlabError(f"unknown schedule '{schedule}'; choose from {', '.join(SCHEDULES)}")


def largest_hessian_eigenvalue(
    model: nn.Module,
    loss_fn: Callable,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    iterations: int = 20,
    seed: int = 0,
) -> float:
    """lambda_max of the loss Hessian by power iteration on Hessian-vector products.

    Each iteration computes Hv = d/dw (grad L . v) averaged over the given batches
    (LeCun et al., "Efficient BackProp", 1998, section 9.4).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen).to(p) for p in params]
    norm = math.sqrt(sum(float((t * t).sum()) for t in v))
    v = [t / norm for t in v]
    estimate = 0.0
    for _ in range(iterations):
        hv = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            loss = loss_fn(model(x), y)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((g * t).sum() for g, t in zip(grads, v, strict=True))
            for acc, h in zip(hv, torch.autograd.grad(dot, params), strict=True):
                acc += h / len(batches)
        estimate = sum(
            float((h * t).sum()) for h, t in zip(hv, v, strict=True)
        )  # Rayleigh quotient
        norm = math.sqrt(sum(float((h * h).sum()) for h in hv))
        if norm == 0 or not math.isfinite(norm):
            raise CnnlabError("--lr auto: the Hessian-vector product vanished or overflowed")
        v = [h / norm for h in hv]
    return abs(estimate)


class CurvatureTracker:
    """lambda_max followed during training by a power iteration that never restarts.

    The curvature of a freshly initialised network is tiny and grows by orders of magnitude
    in the first hundred steps, so a single estimate at the start gives a rate that
    diverges. LeCun et al. (1998, section 9.4) therefore estimate lambda_max on-line; here
    one Hessian-vector product refines the same eigenvector every step at first and every
    `every` steps later, and the rate follows as 0.9 / lambda_max. Tracking the top
    eigenvalue keeps the run stable; the rate is conservative along flatter directions.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        warm_steps: int = 200,
        every: int = 10,
        seed: int = 0,
    ):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.model, self.loss_fn, self.warm_steps, self.every = model, loss_fn, warm_steps, every
        gen = torch.Generator().manual_seed(seed)
        v = [torch.randn(p.shape, generator=gen).to(p) for p in self.params]
        norm = math.sqrt(sum(float((t * t).sum()) for t in v))
        self.v = [t / norm for t in v]
        self.lam = 0.0

    def due(self, step: int) -> bool:
        return step < self.warm_steps or step % self.every == 0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = self.loss_fn(self.model(x), y)
        grads = torch.autograd.grad(loss, self.params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, self.v, strict=True))
        hv = torch.autograd.grad(dot, self.params)
        norm = math.sqrt(
            sum(float((h * h).sum()) for h in hv)
        )  # |Hv| >= v.Hv: errs on the safe side
        if norm > 0 and math.isfinite(norm):
            self.v = [h.detach() / norm for h in hv]
            self.lam = norm
        return self.lam
