"""Feature maps and kernels, found through the model's named layers (never its architecture)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.model.layers import conv_of
from cnnlab.model.net import Net


def layer_names(model: Net) -> list[str]:
    return [name for name, _ in model.named_children()]


def check_layer(model: Net, layer: str) -> None:
    if layer not in model.shapes:
        raise CnnlabError(f"no layer '{layer}'; layers: {', '.join(layer_names(model))}")


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside; afterwards every module's train/eval flag is as it was found.

    Inspection reads a model that a caller may be training, so it must not leave it in eval
    mode (which would silently turn off dropout and batch-norm updates for them).
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@torch.no_grad()
def feature_maps(model: Net, x: torch.Tensor) -> dict[str, np.ndarray]:
    """The output of every layer with spatial maps, for ONE normalised input (1, C, H, W):
    name -> (C, H, W) array."""
    with evaluating(model):
        feats = model.features(x)
    return {name: t[0].float().numpy() for name, t in feats.items() if t.dim() == 4}


def conv_layers(model: Net) -> list[str]:
    return [name for name, m in model.named_children() if conv_of(m) is not None]


def producing_conv(model: Net, layer: str) -> str | None:
    """The last convolution at or before `layer` whose channels `layer` still carries."""
    check_layer(model, layer)
    names = layer_names(model)
    channels = model.shapes[layer][0]
    for name in reversed(names[: names.index(layer) + 1]):
        module = getattr(model, name)
        if conv_of(module) is not None:
            return name if model.shapes[name][0] == channels else None
        if model.shapes[name][0] != channels or list(module.children()):
            return None  # a block or a channel change: the link to one kernel is lost
    return None


def kernels(model: Net, layer: str) -> np.ndarray:
    """The weights of a convolution layer: (filters, in_channels / groups, kh, kw)."""
    check_layer(model, layer)
    conv = conv_of(getattr(model, layer))
    if conv is None:
        raise CnnlabError(
            f"layer '{layer}' is not a convolution; "
            f"convolutions: {', '.join(conv_layers(model)) or 'none'}"
        )
    w = conv.weight.detach().float().numpy()
    return w[:, :, None, :] if w.ndim == 3 else w
