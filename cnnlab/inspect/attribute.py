"""Which input pixels a class score depends on, by the methods of the attribution literature.

Every method is Captum's (the library the field uses); this module picks sensible defaults,
checks the user's choices in one line, and reduces each attribution to one (H, W) map:

- saliency, smoothgrad: |gradient|, the largest over colour channels (non-negative);
- integrated-gradients, guided-backprop, deconvolution: summed over colour channels (signed;
  integrated gradients then sum to f(x) - f(baseline), which the tests check);
- gradcam: the rectified, channel-weighted map of one layer, upsampled bilinearly (non-negative);
- occlusion: the drop of the score when a window around a pixel is set to the baseline,
  averaged over the windows that cover it (signed).

Methods that hook modules (guided backprop, deconvolution, Grad-CAM) run on a private copy
of the model whose in-place activations are made out-of-place: Captum's backward hooks on a
ReLU need its output to be its own, and a hook on the caller's model would be seen by any
other thread using it (the server shares one model between requests). Gradients are taken of
the input only, so no parameter's .grad, buffer or train/eval flag changes.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.inspect.maps import evaluating

METHODS: dict[str, str] = {
    "saliency": "|d score / d pixel| (Simonyan et al. 2013)",
    "smoothgrad": "saliency averaged over noisy copies of the input (Smilkov et al. 2017)",
    "integrated-gradients": (
        "gradients summed along the path from a baseline; they add up to f(x) - f(baseline) "
        "(Sundararajan et al. 2017)"
    ),
    "guided-backprop": (
        "the gradient with only positive signals passed back through each ReLU "
        "(Springenberg et al. 2014)"
    ),
    "deconvolution": (
        "Zeiler-Fergus deconvnet: the score sent back down with each ReLU applied to the signal "
        "itself"
    ),
    "gradcam": (
        "a conv layer's maps weighted by their mean gradient, rectified and upsampled "
        "(Selvaraju et al. 2017)"
    ),
    "occlusion": (
        "how much the score drops when a window around each pixel is blanked (Zeiler & Fergus 2014)"
    ),
}
SIGNED = frozenset({"integrated-gradients", "guided-backprop", "deconvolution", "occlusion"})
OPTIONS: dict[str, dict[str, object]] = {
    "saliency": {},
    "smoothgrad": {"samples": 16, "noise": 0.15, "seed": 0},
    "integrated-gradients": {"steps": 64, "baseline": 0.0},
    "guided-backprop": {},
    "deconvolution": {},
    "gradcam": {},
    "occlusion": {"window": None, "stride": None, "baseline": 0.0},
}
# Layer kinds whose output is a stage of convolutional features: where Grad-CAM looks by default.
CONV_STAGES = ("conv", "gabor", "residual", "inception", "dense_block", "transition")
BATCH = 16  # noisy copies or path steps per forward and backward pass
OCCLUDED_BYTES = 8 << 20  # occluded copies of the input per forward pass, up to 256
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")


class _AsReLU(nn.ReLU):
    """Another rectifier (leaky ReLU, softplus) computed as itself but seen by Captum's ReLU
    rules, so guided backprop and the deconvnet rectify the signal there too."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def hookable_copy(model: nn.Module) -> nn.Module:
    """A private copy of the model for Captum's module hooks: in eval mode, parameters frozen,
    every in-place activation out-of-place, every rectifier a ReLU to Captum."""
    twin = copy.deepcopy(model).eval().requires_grad_(False)
    for module in list(twin.modules()):
        if hasattr(module, "inplace"):
            module.inplace = False
        for name, child in module.named_children():
            if isinstance(child, (nn.LeakyReLU, nn.Softplus)):
                setattr(module, name, _AsReLU(child))
    return twin


def spatial_layers(model: nn.Module) -> list[str]:
    shapes = getattr(model, "shapes", {})
    return [name for name, shape in shapes.items() if len(shape) == 3]


def applicable(model: nn.Module) -> list[str]:
    """The methods that apply to a model: Grad-CAM needs a layer with spatial maps."""
    return [m for m in METHODS if m != "gradcam" or spatial_layers(model)]


def default_layer(model: nn.Module) -> str:
    """Grad-CAM's layer when none is named: the last convolutional stage with spatial maps
    (the last conv layer of a plain net, the last block of a ResNet, GoogLeNet or DenseNet)."""
    spatial = spatial_layers(model)
    if not spatial:
        raise CnnlabError(f"{_name(model)} has no layer with spatial maps for Grad-CAM")
    stages = [n for n in spatial if model.kinds.get(n) in CONV_STAGES]
    return (stages or spatial)[-1]


def check_gradcam_layer(model: nn.Module, layer: str) -> None:
    spatial = spatial_layers(model)
    if layer not in spatial:
        what = "no layer" if layer not in getattr(model, "shapes", {}) else "no spatial maps in"
        raise CnnlabError(
            f"Grad-CAM: {what} '{layer}'; layers with spatial maps: {', '.join(spatial) or 'none'}"
        )


def check_method(method: str) -> None:
    if method not in METHODS:
        raise CnnlabError(f"unknown attribution method '{method}'; methods: {', '.join(METHODS)}")


def _name(model: nn.Module) -> str:
    return getattr(model, "spec", {}).get("name", type(model).__name__)


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] != 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise CnnlabError(f"attribution needs ONE image input (1, C, H, W); got {shape}")


def _check_class(cls: int | None, scores: torch.Tensor) -> int:
    classes = scores.shape[1]
    if cls is None:
        return int(scores.argmax(1))
    if isinstance(cls, bool) or not isinstance(cls, int) or not 0 <= cls < classes:
        raise CnnlabError(f"class {cls!r} is out of range (0..{classes - 1})")
    return cls


def _options(method: str, given: dict) -> dict:
    allowed = OPTIONS[method]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) or "no options"
        raise CnnlabError(f"{method}: unknown option {', '.join(unknown)}; it takes {takes}")
    return {**allowed, **given}


def _positive_int(method: str, name: str, value, lo: int = 1, hi: int = 1 << 16) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CnnlabError(f"{method}: {name} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _baseline(method: str, value, x: torch.Tensor) -> torch.Tensor:
    """A number (the same in every pixel, in the model's normalised input) or a tensor of x's
    shape."""
    if isinstance(value, torch.Tensor):
        if value.shape != x.shape:
            raise CnnlabError(
                f"{method}: baseline has shape {tuple(value.shape)}, the input {tuple(x.shape)}"
            )
        return value.to(x)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CnnlabError(f"{method}: baseline must be a finite number or a tensor, got {value!r}")
    return torch.full_like(x, float(value))


def _input(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


# ---------------------------------------------------------------- one function per method
def _saliency(model, x, cls, layer):
    from captum.attr import Saliency

    return Saliency(model).attribute(_input(x), target=cls, abs=True)[0].amax(0)


def _smoothgrad(model, x, cls, layer, samples, noise, seed):
    from captum.attr import Saliency

    samples = _positive_int("smoothgrad", "samples", samples, hi=4096)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 10:
        raise CnnlabError(f"smoothgrad: noise must be a number in 0..10, got {noise!r}")
    stdev = float(noise) * float(x.max() - x.min())
    # Captum's NoiseTunnel draws from the global generator, which other threads share: the
    # noise comes from a generator of this call's own, so calls run at once and repeat exactly
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    saliency, total = Saliency(model), torch.zeros_like(x)
    for start in range(0, samples, BATCH):
        n = min(BATCH, samples - start)
        draw = torch.randn((n, *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)
        grads = saliency.attribute(_input(x + stdev * draw), target=cls, abs=True)
        total += grads.sum(0, keepdim=True)
    return (total / samples)[0].amax(0)


def _integrated_gradients(model, x, cls, layer, steps, baseline):
    from captum.attr import IntegratedGradients

    steps = _positive_int("integrated-gradients", "steps", steps, lo=2, hi=4096)
    base = _baseline("integrated-gradients", baseline, x)
    attr = IntegratedGradients(model).attribute(
        _input(x), baselines=base, target=cls, n_steps=steps, internal_batch_size=BATCH
    )
    return attr[0].sum(0)


def _guided_backprop(model, x, cls, layer):
    from captum.attr import GuidedBackprop

    return GuidedBackprop(hookable_copy(model)).attribute(_input(x), target=cls)[0].sum(0)


def _deconvolution(model, x, cls, layer):
    from captum.attr import Deconvolution

    return Deconvolution(hookable_copy(model)).attribute(_input(x), target=cls)[0].sum(0)


def _gradcam(model, x, cls, layer):
    from captum.attr import LayerAttribution, LayerGradCam

    layer = layer or default_layer(model)
    check_gradcam_layer(model, layer)
    twin = hookable_copy(model)
    cam = LayerGradCam(twin, getattr(twin, layer)).attribute(
        _input(x), target=cls, relu_attributions=True
    )
    return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), "bilinear")[0, 0]


def occlusion_window(side: int) -> tuple[int, int]:
    """(window, stride) for one side: about 12 positions along it, windows overlapping by 2/3."""
    stride = max(1, round(side / 14))
    return min(side, 3 * stride), stride


def _occlusion(model, x, cls, layer, window, stride, baseline):
    from captum.attr import Occlusion

    sides = tuple(x.shape[2:])
    auto = [occlusion_window(s) for s in sides]
    if window is None:
        window = tuple(w for w, _ in auto)
        stride = tuple(s for _, s in auto) if stride is None else (stride, stride)
    else:  # a window given alone moves by a third of itself, as the automatic ones do
        window = (window, window)
        stride = (stride, stride) if stride is not None else (max(1, window[0] // 3),) * 2
    for w, s, side in zip(window, stride, sides, strict=True):
        _positive_int("occlusion", "window", w, hi=side)
        _positive_int("occlusion", "stride", s, hi=w)
    channels = x.shape[1]
    with torch.no_grad():
        attr = Occlusion(model).attribute(
            x.detach(),
            sliding_window_shapes=(channels, *window),
            strides=(channels, *stride),
            baselines=_baseline("occlusion", baseline, x),
            target=cls,
            perturbations_per_eval=max(1, min(256, OCCLUDED_BYTES // (4 * x.numel()))),
        )
    return attr[0].mean(0)  # a window spans every channel: each holds the same drop


RUNNERS = {
    "saliency": _saliency,
    "smoothgrad": _smoothgrad,
    "integrated-gradients": _integrated_gradients,
    "guided-backprop": _guided_backprop,
    "deconvolution": _deconvolution,
    "gradcam": _gradcam,
    "occlusion": _occlusion,
}


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    method: str,
    cls: int | None = None,
    layer: str | None = None,
    **options,
) -> tuple[np.ndarray, int]:
    """An (H, W) attribution map for ONE normalised input x (1, C, H, W), and the class used.

    cls defaults to the predicted class; layer is Grad-CAM's (default: `default_layer`).
    Options: smoothgrad samples/noise (x the input's range)/seed; integrated-gradients
    steps/baseline; occlusion window/stride/baseline (pixels; baseline in the normalised input).
    """
    check_method(method)
    _check_input(x)
    opts = _options(method, options)
    with evaluating(model):
        with torch.no_grad():
            cls = _check_class(cls, model(x))
        amap = RUNNERS[method](model, x, cls, layer, **opts)
    return amap.detach().cpu().numpy(), cls
