"""Pictures made by gradient ascent on the input: activation maximisation and code inversion.

maximize: start from faint noise and climb the mean activation of one channel (or one
class score), with the usual image priors: L2 decay, random jitter each step and an
occasional Gaussian blur (Yosinski et al. 2015).
invert: start from noise and match one layer's features for a given image, with a total
variation prior that favours piecewise-smooth pictures (Mahendran & Vedaldi 2015).
"""

from __future__ import annotations

import torch

from cnnlab.data.augment import gaussian_blur
from cnnlab.errors import CnnlabError
from cnnlab.inspect.maps import check_layer, evaluating
from cnnlab.model.net import Net


def _blur(x: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    return gaussian_blur(x, sigma, radius=1, padding="replicate")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (
        x[..., :, 1:] - x[..., :, :-1]
    ).abs().mean()


def _target(model: Net, layer: str | None, channel: int | None, cls: int | None):
    """A function of the model input to maximise, checked against what the model has."""
    if cls is not None:
        classes = model.spec["classes"]
        if not 0 <= cls < classes:
            raise CnnlabError(f"class {cls} is out of range (0..{classes - 1})")
        return lambda x: model(x)[0, cls]
    if layer is None or channel is None:
        raise CnnlabError("give --layer and --channel, or --class")
    check_layer(model, layer)
    channels = model.shapes[layer][0]
    if not 0 <= channel < channels:
        raise CnnlabError(f"channel {channel} is out of range for '{layer}' (0..{channels - 1})")
    return lambda x: model.features(x, upto=layer)[layer][0, channel].mean()


def maximize(
    model: Net,
    layer: str | None = None,
    channel: int | None = None,
    cls: int | None = None,
    steps: int = 200,
    lr: float = 0.05,
    l2: float = 1e-3,
    jitter: int = 1,
    blur_every: int = 4,
    seed: int = 0,
) -> torch.Tensor:
    """A normalised input (1, C, H, W) that strongly excites the chosen channel or class."""
    objective = _target(model, layer, channel, cls)
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(1, *model.input_shape, generator=gen) * 0.1).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    with evaluating(model), torch.enable_grad():
        for step in range(steps):
            dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
            shifted = torch.roll(x, (dy, dx), dims=(2, 3))
            loss = -objective(shifted) + l2 * (x**2).sum()
            (x.grad,) = torch.autograd.grad(loss, x)  # the input's alone: parameters untouched
            opt.step()
            if blur_every and step % blur_every == 0:
                with torch.no_grad():
                    x.copy_(_blur(x))
    return x.detach()


def invert(
    model: Net,
    x: torch.Tensor,
    layer: str,
    steps: int = 300,
    lr: float = 0.05,
    tv: float = 0.05,
    seed: int = 0,
) -> tuple[torch.Tensor, float]:
    """An input reconstructed from `layer`'s features of x alone; and the final relative error."""
    check_layer(model, layer)
    gen = torch.Generator().manual_seed(seed)
    guess = (torch.randn(x.shape, generator=gen) * 0.1).requires_grad_(True)
    opt = torch.optim.Adam([guess], lr=lr)
    err = torch.tensor(1.0)
    with evaluating(model):
        with torch.no_grad():
            target = model.features(x, upto=layer)[layer]
        scale = target.pow(2).sum().clamp_min(1e-12)
        with torch.enable_grad():
            for _ in range(steps):
                feats = model.features(guess, upto=layer)[layer]
                err = (feats - target).pow(2).sum() / scale
                loss = err + tv * total_variation(guess)
                (guess.grad,) = torch.autograd.grad(loss, guess)
                opt.step()
    return guess.detach(), float(err.detach())
