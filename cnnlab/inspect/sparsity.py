"""How sparse each layer's output is: the fraction of exactly-zero activations over a sample.

Rectified layers are where zeros appear, and in a trained net the fraction tends to grow with depth.
"""

from __future__ import annotations

import torch

from cnnlab.errors import CnnlabError
from cnnlab.infer import Normalize
from cnnlab.inspect.maps import evaluating
from cnnlab.inspect.patches import chunk_size
from cnnlab.model.net import Net


@torch.no_grad()
def sparsity(model: Net, images: torch.Tensor, norm: Normalize) -> dict[str, float]:
    """Layer name -> fraction of its outputs that are exactly 0, over uint8 images (N, C, H, W)."""
    if len(images) == 0:
        raise CnnlabError("no images to measure sparsity on")
    names = list(model.shapes)
    zeros = dict.fromkeys(names, 0)
    total = dict.fromkeys(names, 0)
    step = chunk_size(model, names[-1])
    with evaluating(model):
        for first in range(0, len(images), step):
            for name, out in model.features(norm(images[first : first + step])).items():
                zeros[name] += int((out == 0).sum())
                total[name] += out.numel()
    return {name: zeros[name] / max(total[name], 1) for name in names}
