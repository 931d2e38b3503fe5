"""Learning-rate schedules as step -> factor, and the rate policy that applies them."""

from __future__ import annotations

import math
from collections.abc import Callable

from cnnlab.errors import CnnlabError
from cnnlab.train.config import SCHEDULES


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


class LearningRate:
    """The rate of every step: a base rate (fixed, or 0.9/lambda_max under --lr auto) times the
    schedule's factor, times a parameter group's own `lr_scale` (--lr-head), written into the
    optimizer's parameter groups."""

    def __init__(self, optimizer, base: float, factor: Callable[[int], float]):
        self.optimizer, self.base, self.factor = optimizer, base, factor

    def apply(self, step: int) -> None:
        rate = self.base * self.factor(step)
        for group in self.optimizer.param_groups:
            group["lr"] = rate * group.get("lr_scale", 1.0)

    @property
    def current(self) -> float:
        """The rate of the body (the first group); a faster head's is lr_scale times it."""
        return self.optimizer.param_groups[0]["lr"]
