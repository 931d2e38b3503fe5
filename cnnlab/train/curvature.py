"""LeCun's rule for the learning rate: a little under 1/lambda_max of the loss Hessian.

lambda_max comes from power iteration on Hessian-vector products (LeCun et al., "Efficient
BackProp", 1998, section 9.4): once over a few batches, or followed on-line during training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.train.state import like


@contextmanager
def buffers_kept(model: nn.Module) -> Iterator[None]:
    """Undo what forward passes inside the block do to buffers (batch-norm running statistics).

    Hessian-vector products need train-mode forwards, which would otherwise nudge the
    running statistics towards the probed batches once more per probe.
    """
    saved = [b.clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved, strict=True):
                buffer.copy_(value)


def lecun_rate(lam: float) -> float:
    """A little under 1/lambda_max, the fastest rate that is stable along every direction."""
    return 0.9 / lam


def _norm(tensors) -> float:
    return math.sqrt(sum(float((t * t).sum()) for t in tensors))


def _random_unit_vector(params: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    v = [like(p, torch.randn(p.shape, generator=gen), "start vector") for p in params]
    norm = _norm(v)
    return [t / norm for t in v]


def hessian_vector_product(
    model: nn.Module,
    loss_fn: Callable,
    params: list[torch.Tensor],
    v: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Hv = d/dw (grad L . v) on one batch, leaving batch-norm running statistics as they were."""
    with buffers_kept(model):
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, v, strict=True))
        return torch.autograd.grad(dot, params)


def largest_hessian_eigenvalue(
    model: nn.Module,
    loss_fn: Callable,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    iterations: int = 20,
    seed: int = 0,
) -> float:
    """lambda_max by power iteration, each iteration's Hv averaged over the given batches."""
    params = [p for p in model.parameters() if p.requires_grad]
    v = _random_unit_vector(params, seed)
    estimate = 0.0
    for _ in range(iterations):
        hv = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            for acc, h in zip(
                hv, hessian_vector_product(model, loss_fn, params, v, x, y), strict=True
            ):
                acc += h / len(batches)
        estimate = sum(
            float((h * t).sum()) for h, t in zip(hv, v, strict=True)
        )  # Rayleigh quotient
        norm = _norm(hv)
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
    `every` steps later, and the rate follows as `lecun_rate(lambda_max)`. Tracking the top
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
        self.v = _random_unit_vector(self.params, seed)
        self.lam = 0.0

    def due(self, step: int) -> bool:
        return step < self.warm_steps or step % self.every == 0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> float:
        hv = hessian_vector_product(self.model, self.loss_fn, self.params, self.v, x, y)
        norm = _norm(hv)  # |Hv| >= v.Hv: errs on the safe side
        if norm > 0 and math.isfinite(norm):
            # kept in the parameters' layout, as a resumed vector is: the next product's sums
            # then run in the same order whether or not the run was resumed
            self.v = [
                like(p, h.detach() / norm, "eigenvector")
                for p, h in zip(self.params, hv, strict=True)
            ]
            self.lam = norm
        return self.lam

    def state_dict(self) -> dict:
        return {"v": list(self.v), "lambda_max": self.lam}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("v") or []
        if len(saved) != len(self.params):
            raise CnnlabError(
                f"the --lr auto eigenvector has {len(saved)} parts but the model has "
                f"{len(self.params)} trainable tensors"
            )
        self.v = [
            like(p, v, f"--lr auto eigenvector part {i}")
            for i, (p, v) in enumerate(zip(self.params, saved, strict=True))
        ]
        self.lam = float(state["lambda_max"])
