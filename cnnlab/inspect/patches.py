"""What each unit responds to: for every channel of a layer, the dataset images that excite it
most, cropped to the receptive field of the unit that fired (Zeiler & Fergus 2014's top-9).

A channel's response to an image is its largest activation over positions; the unit at that
position is the one whose field is cropped. Fields come from `cnnlab.summary.receptive_fields`,
exact at the border: pixels of a field that lie in the padding are NaN in the crop.
The whole dataset is read once in chunks (eval mode, no gradients), keeping a running top k.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.infer import Normalize
from cnnlab.inspect.maps import check_layer, evaluating
from cnnlab.model.net import Net
from cnnlab.summary import Field, receptive_fields

CHUNK_BYTES = 256 << 20  # activations kept per chunk of images


@dataclass
class Top:
    """The k strongest responses of each channel of one layer, strongest first."""

    layer: str
    field: Field
    values: torch.Tensor  # (channels, k) activation
    images: torch.Tensor  # (channels, k) index into the dataset
    positions: torch.Tensor  # (channels, k, 2) row and column of the unit in the layer's map


def check_patch_layer(model: Net, layer: str) -> Field:
    check_layer(model, layer)
    field = receptive_fields(model)[layer]
    if len(model.shapes[layer]) != 3 or field is None:
        spatial = [
            n
            for n, f in receptive_fields(model).items()
            if f is not None and len(model.shapes[n]) == 3
        ]
        raise CnnlabError(
            f"layer '{layer}' has no spatial maps of its own (shape {model.shapes[layer]}); "
            f"layers with them: {', '.join(spatial) or 'none'}"
        )
    return field


def chunk_size(model: Net, deepest: str, cap: int = 1000) -> int:
    """Images per forward pass such that every kept layer output fits CHUNK_BYTES."""
    names = list(model.shapes)
    per_image = sum(math.prod(model.shapes[n]) for n in names[: names.index(deepest) + 1]) * 4
    return max(1, min(cap, CHUNK_BYTES // max(per_image, 1)))


def _merge(
    best: tuple | None, values: torch.Tensor, images: torch.Tensor, positions: torch.Tensor, k: int
) -> tuple:
    """Running top k along dim 0 of (n, channels) candidates."""
    if best is not None:
        values = torch.cat([best[0], values])
        images = torch.cat([best[1], images])
        positions = torch.cat([best[2], positions])
    top, order = values.topk(min(k, len(values)), dim=0)
    return (top, images.gather(0, order), positions.gather(0, order[..., None].expand(-1, -1, 2)))


@torch.no_grad()
def top_activations(
    model: Net, images: torch.Tensor, norm: Normalize, layers: list[str], k: int = 9
) -> dict[str, Top]:
    """For each layer, each channel's k most exciting images among uint8 `images` (N, C, H, W)."""
    if len(images) == 0:
        raise CnnlabError("no images to search for top activations")
    fields = {layer: check_patch_layer(model, layer) for layer in layers}
    order = list(model.shapes)
    deepest = max(layers, key=order.index)
    step = chunk_size(model, deepest)
    best: dict[str, tuple | None] = dict.fromkeys(layers)
    # channels-last runs a one-channel first convolution about twice as fast on a CPU; on a
    # private copy, since converting a model converts it in place
    with evaluating(model):
        fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
        for first in range(0, len(images), step):
            chunk = norm(images[first : first + step]).contiguous(memory_format=torch.channels_last)
            feats = fast.features(chunk, upto=deepest)
            for layer in layers:
                act = feats[layer].float()
                n, c, _, w = act.shape
                values, where = act.flatten(2).max(2)  # (n, c)
                index = torch.arange(first, first + n)[:, None].expand(n, c)
                pos = torch.stack([where // w, where % w], dim=-1)
                best[layer] = _merge(best[layer], values, index, pos, k)
    return {
        layer: Top(
            layer, fields[layer], v.T.contiguous(), i.T.contiguous(), p.transpose(0, 1).contiguous()
        )
        for layer, (v, i, p) in best.items()
    }


def sample(count: int, n: int | None, seed: int = 0) -> torch.Tensor:
    """n indices of 0..count-1 drawn without replacement (all of them if n is None), sorted."""
    if n is None or n >= count:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def crop(image: np.ndarray, field: Field, position: tuple[int, int]) -> np.ndarray:
    """The pixels (C, size_h, size_w) that the unit at `position` sees, as floats; NaN where its
    field lies in the padding, beyond the image's border."""
    (top, bottom), (left, right) = field.span(tuple(position))
    c, h, w = image.shape
    out = np.full((c, bottom - top, right - left), np.nan)
    r0, r1, c0, c1 = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
    if r0 < r1 and c0 < c1:
        out[:, r0 - top : r1 - top, c0 - left : c1 - left] = image[:, r0:r1, c0:c1]
    return out


def montage(crops: list[np.ndarray], cols: int | None = None) -> np.ndarray:
    """Crops (C, h, w) tiled row by row with a 1-pixel NaN border between them: (C, H, W)."""
    c, h, w = crops[0].shape
    cols = cols or math.ceil(math.sqrt(len(crops)))
    rows = math.ceil(len(crops) / cols)
    out = np.full((c, rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for n, a in enumerate(crops):
        r, q = divmod(n, cols)
        out[:, r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = a
    return out


def channel_patches(top: Top, images: torch.Tensor, channel: int) -> list[np.ndarray]:
    """The crops of one channel's top images, strongest first."""
    return [
        crop(images[int(i)].numpy(), top.field, tuple(p.tolist()))
        for i, p in zip(top.images[channel], top.positions[channel], strict=True)
    ]
