"""Nearest neighbours of an image in the network's feature space and in pixel space.

Feature space is the input to the last layer (the penultimate representation). Images that
are close there share a class even when their pixels differ, e.g. the same digit shifted.
"""

from __future__ import annotations

import torch

from cnnlab.infer import Normalize
from cnnlab.inspect.maps import evaluating
from cnnlab.model.net import Net


@torch.no_grad()
def embed(
    model: Net, images: torch.Tensor, norm: Normalize, batch_size: int = 1000
) -> torch.Tensor:
    """Penultimate features (N, D) for uint8 images, in batches so memory stays bounded."""
    names = [n for n, _ in model.named_children()]
    upto = names[-2] if len(names) > 1 else names[-1]
    parts = []
    with evaluating(model):
        for i in range(0, len(images), batch_size):
            feats = model.features(norm(images[i : i + batch_size]), upto=upto)[upto]
            parts.append(feats.flatten(1).float())
    return torch.cat(parts)


def nearest(
    query: torch.Tensor, bank: torch.Tensor, k: int, chunk: int = 20000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and distances of the k rows of bank nearest (L2) to the single row query."""
    dists = torch.cat(
        [
            torch.cdist(query[None].float(), bank[i : i + chunk].float())[0]
            for i in range(0, len(bank), chunk)
        ]
    )
    d, idx = dists.topk(min(k, len(bank)), largest=False)
    return idx, d


def neighbors(
    model: Net, image: torch.Tensor, bank: torch.Tensor, norm: Normalize, k: int = 8
) -> dict:
    """k nearest of a uint8 image (C, H, W) among bank (N, C, H, W) in features and in pixels."""
    feats = embed(model, bank, norm)
    query = embed(model, image[None], norm)[0]
    f_idx, f_d = nearest(query, feats, k)
    p_idx, p_d = nearest(image.flatten().float(), bank.flatten(1).float(), k)
    return {"feature": (f_idx, f_d), "pixel": (p_idx, p_d)}


neighbours = neighbors  # the 0.1 spelling
