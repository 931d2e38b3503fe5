"""Saliency: the gradient of a class score with respect to the input pixels.

Simonyan et al. 2013 take |d score / d pixel| (max over colour channels); SmoothGrad
(Smilkov et al. 2017) averages it over copies of the input with Gaussian noise added.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnlab.inspect.maps import evaluating


def saliency(model: nn.Module, x: torch.Tensor, cls: int | None = None, smooth: int = 0,
             noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, int]:  # fmt: skip
    """(H, W) saliency in [0, 1] for ONE normalised input (1, C, H, W), and the class used.

    Gradients are taken with respect to the input alone, so the parameters' .grad is left as
    it was (a server runs several of these at once on one shared model).
    """
    with evaluating(model):
        with torch.no_grad():
            if cls is None:
                cls = int(model(x).argmax(1))
        gen = torch.Generator().manual_seed(seed)
        scale = noise * float(x.max() - x.min())
        copies = (
            [x]
            if smooth <= 0
            else [x + torch.randn(x.shape, generator=gen) * scale for _ in range(smooth)]
        )
        total = torch.zeros_like(x)
        for copy in copies:
            inp = copy.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(model(inp)[0, cls], inp)
            total += grad.abs()
    sal = total[0].amax(0)
    sal = sal / sal.max().clamp_min(1e-12)
    return sal.numpy(), cls
