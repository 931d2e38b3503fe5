"""An exponential moving average of a model's weights: what --ema evaluates and saves."""

from __future__ import annotations

import copy

import torch
from torch import nn

from cnnlab.errors import CnnlabError


class WeightAverage:
    """An exponential moving average of a model's weights, kept in a copy of the model.

    After every optimizer step the copy moves a fraction 1 - d of the way to the live
    weights, with d = min(decay, (1 + t) / (10 + t)) so the average does not drag the
    random initialisation along early on. Evaluating the average instead of the last
    iterate removes most of SGD's step-to-step noise: the test accuracy climbs smoothly
    and reaches a target sooner. Batch-norm statistics are averaged the same way.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise CnnlabError(f"--ema must be between 0 and 1 (exclusive), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        pairs = list(
            zip(self.model.state_dict().values(), model.state_dict().values(), strict=True)
        )
        self.averaged = [a for a, _ in pairs if a.is_floating_point()]
        self.live = [b for a, b in pairs if a.is_floating_point()]
        self.counters = [(a, b) for a, b in pairs if not a.is_floating_point()]  # BN batch counts

    @torch.no_grad()
    def update(self, step: int) -> None:
        weight = 1 - min(self.decay, (1 + step) / (10 + step))
        if self.averaged:
            torch._foreach_lerp_(self.averaged, self.live, weight)
        for averaged, live in self.counters:
            averaged.copy_(live)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Copies into the averaged tensors in place, so they keep their memory layout."""
        self.decay = float(state["decay"])
        try:
            self.model.load_state_dict(state["weights"])
        except RuntimeError as e:
            raise CnnlabError(f"weight average: {str(e).splitlines()[0]}") from None
