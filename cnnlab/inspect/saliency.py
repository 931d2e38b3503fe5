"""Saliency: the gradient of a class score with respect to the input pixels.

Simonyan et al. 2013 take |d score / d pixel| (max over colour channels); SmoothGrad
(Smilkov et al. 2017) averages it over copies of the input with Gaussian noise added.
Both are Captum's (`Saliency`, `NoiseTunnel`), through `cnnlab.inspect.attribute`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnlab.inspect.attribute import attribute


def saliency(
    model: nn.Module,
    x: torch.Tensor,
    cls: int | None = None,
    smooth: int = 0,
    noise: float = 0.15,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """(H, W) saliency in [0, 1] for ONE normalised input (1, C, H, W), and the class used.

    Gradients are taken with respect to the input alone, so the parameters' .grad is left as
    it was (a server runs several of these at once on one shared model). SmoothGrad's noise
    has standard deviation `noise` times the input's range and is drawn from `seed`.
    """
    if smooth > 0:
        sal, cls = attribute(model, x, "smoothgrad", cls, samples=smooth, noise=noise, seed=seed)
    else:
        sal, cls = attribute(model, x, "saliency", cls)
    return sal / max(float(sal.max()), 1e-12), cls
