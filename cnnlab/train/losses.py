"""The losses a model trains with, by the names in config.LOSSES."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.train.config import LOSSES


def squared_error(out: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """1/2 sum_k (t_k - softmax_k)^2 per example, averaged over the batch."""
    k = out.shape[1]
    t = F.one_hot(target, k).to(out.dtype) * (1 - smoothing) + smoothing / k
    return 0.5 * ((t - out.softmax(1)) ** 2).sum(1).mean()


def cross_entropy(out: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(out, target, label_smoothing=smoothing)


BY_NAME = dict(zip(LOSSES, (cross_entropy, squared_error), strict=True))


def make_loss(name: str, smoothing: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in BY_NAME:
        raise CnnlabError(f"unknown loss '{name}'; choose from {', '.join(LOSSES)}")
    loss = BY_NAME[name]
    return lambda out, y: loss(out, y, smoothing)
