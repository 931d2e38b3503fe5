"""Zeiler & Fergus's deconvnet (arXiv:1311.2901): project one activation back to pixel space.

The strongest activation of a channel is kept, everything else at that layer is zeroed, and
the signal is sent back down: max pooling is undone with the switches recorded on the way
up, convolutions by their transposed filters, and ReLUs rectify the signal itself. Every
linear step is exactly the adjoint that autograd computes, so the walk below asks autograd
for it layer by layer and only replaces what happens at the non-linearities.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.inspect.maps import check_layer, evaluating
from cnnlab.spec import Net

RECTIFIERS = (nn.ReLU, nn.LeakyReLU, nn.Softplus)


def deconv(
    model: Net, x: torch.Tensor, layer: str, channel: int | None = None
) -> tuple[torch.Tensor, int, tuple]:
    """Reconstruction (1, C, H, W) of the strongest activation in `layer`; the channel and its position."""
    check_layer(model, layer)
    shape = model.shapes[layer]
    if len(shape) != 3:
        raise CnnlabError(
            f"layer '{layer}' has no spatial maps (shape {shape}); pick a conv or pool layer"
        )
    with evaluating(model):
        with torch.no_grad():
            feats = model.features(x, upto=layer)
        names = list(feats)
        modules = [getattr(model, name) for name in names]
        inputs = [x, *(feats[name] for name in names[:-1])]
        h = feats[layer]
        if channel is None:
            channel = int(h[0].flatten(1).amax(1).argmax())
        if not 0 <= channel < shape[0]:
            raise CnnlabError(
                f"channel {channel} is out of range for '{layer}' (0..{shape[0] - 1})"
            )
        fmap = h[0, channel]
        pos = divmod(int(fmap.argmax()), fmap.shape[1])
        signal = torch.zeros_like(h)
        signal[0, channel, pos[0], pos[1]] = fmap[pos].clamp_min(0)
        for module, inp in zip(reversed(modules), reversed(inputs), strict=True):
            if isinstance(module, RECTIFIERS):
                signal = torch.relu(signal)
                continue
            # a copy, so that an in-place layer inside `module` cannot overwrite a kept input
            inp = inp.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                out = module(inp)
                (signal,) = torch.autograd.grad(out, inp, grad_outputs=signal)
    return signal.detach(), channel, pos
