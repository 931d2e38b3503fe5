"""Zeiler & Fergus's deconvnet (arXiv:1311.2901): project one activation back to pixel space.

The strongest activation of a channel is kept, everything else at that layer is zeroed, and
the signal is sent back down: max pooling is undone with the switches recorded on the way
up, convolutions by their transposed filters, and every ReLU (at any depth, inside residual,
inception and dense blocks too; leaky ReLU and softplus count as ReLUs) rectifies the signal
itself. This is Captum's `NeuronDeconvolution`, on a private copy of the model (see
`cnnlab.inspect.attribute.hookable_copy`), scaled by the activation's value.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.inspect.attribute import hookable_copy
from cnnlab.inspect.maps import check_layer, evaluating
from cnnlab.model.net import Net


def deconv(
    model: Net, x: torch.Tensor, layer: str, channel: int | None = None
) -> tuple[torch.Tensor, int, tuple]:
    """Reconstruction (1, C, H, W) of the strongest activation in `layer`; the channel and its
    position."""
    from captum.attr import NeuronDeconvolution

    check_layer(model, layer)
    shape = model.shapes[layer]
    if len(shape) != 3:
        raise CnnlabError(
            f"layer '{layer}' has no spatial maps (shape {shape}); pick a conv or pool layer"
        )
    with evaluating(model):
        with torch.no_grad():
            h = model.features(x, upto=layer)[layer]
        if channel is None:
            channel = int(h[0].flatten(1).amax(1).argmax())
        if not 0 <= channel < shape[0]:
            raise CnnlabError(
                f"channel {channel} is out of range for '{layer}' (0..{shape[0] - 1})"
            )
        fmap = h[0, channel]
        pos = divmod(int(fmap.argmax()), fmap.shape[1])
        # only the layers up to `layer` take part: copy and run just those
        names = list(model.shapes)
        twin = hookable_copy(nn.Sequential(*list(model.children())[: names.index(layer) + 1]))
        grad = NeuronDeconvolution(twin, twin[-1]).attribute(
            x.detach().clone().requires_grad_(True), neuron_selector=(channel, *pos)
        )
    return grad.detach() * fmap[pos].clamp_min(0), channel, pos
