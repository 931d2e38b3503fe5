"""One training step: prepare the batch, forward, loss, backward, optimizer, weight average,
curvature probe and the next step's learning rate."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from cnnlab.data.augment import Augment
from cnnlab.infer import Normalize
from cnnlab.train.average import WeightAverage
from cnnlab.train.curvature import CurvatureTracker, lecun_rate
from cnnlab.train.schedule import LearningRate


class Diverged(Exception):
    """The loss stopped being a finite number."""

    def __init__(self, value: float):
        super().__init__(f"loss became {value}")
        self.value = value


class Step:
    def __init__(
        self,
        net: nn.Module,
        loss_fn,
        optimizer,
        rate: LearningRate,
        augment: Augment,
        norm: Normalize,
        channels_last: bool = False,
        average: WeightAverage | None = None,
        tracker: CurvatureTracker | None = None,
        amp_dtype: torch.dtype | None = None,
    ):
        self.net, self.loss_fn, self.optimizer, self.rate = net, loss_fn, optimizer, rate
        self.augment, self.norm, self.channels_last = augment, norm, channels_last
        self.average, self.tracker, self.amp_dtype = average, tracker, amp_dtype
        self.count = 0  # optimizer steps taken over the whole run
        self.rate.apply(0)

    def inputs(self, raw: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 (or float32) batch -> augmented, normalised float batch in the model's layout."""
        x = raw.float() / 255 if raw.dtype == torch.uint8 else raw
        if self.augment:
            x = self.augment(x, gen)
        x = self.norm(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __call__(
        self, raw: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[float, int]:
        """Train on one batch; returns its loss and how many it got right (before the update)."""
        x = self.inputs(raw, gen)
        self._follow_curvature(x, y)
        with self._autocast():
            out = self.net(x)
        loss = self.loss_fn(out.float(), y)
        value = loss.item()
        if not math.isfinite(value):
            raise Diverged(value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.count += 1
        self.rate.apply(self.count)
        if self.average is not None:
            self.average.update(self.count)
        return value, int((out.argmax(1) == y).sum())

    def _follow_curvature(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """--lr auto: refine lambda_max and set the base rate from it."""
        if self.tracker is None or not self.tracker.due(self.count):
            return
        lam = self.tracker.update(x, y)
        if lam > 0:
            self.rate.base = lecun_rate(lam)
            self.rate.apply(self.count)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        device = next(self.net.parameters()).device.type
        return torch.autocast(device, self.amp_dtype)

    def state_dict(self) -> dict:
        return {"count": self.count, "base_lr": self.rate.base}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        self.rate.base = float(state["base_lr"])
        self.rate.apply(self.count)
