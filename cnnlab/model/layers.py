"""The layers of the classic CNN texts that PyTorch does not ship, as plain functions plus thin
modules.

Everything else (convolution, max/mean pooling, activations, dropout, batch norm, local
response normalisation, linear layers) is PyTorch's own module, used as is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Pair = int | tuple[int, int]


def _pair(v: Pair) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _windows(x: torch.Tensor, kernel: Pair, stride: Pair, padding: Pair):
    """(N, C, H, W) -> windows (N, C, k*k, L) and the output (H, W)."""
    n, c, h, w = x.shape
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    cols = F.unfold(x.reshape(n * c, 1, h, w), (kh, kw), padding=(ph, pw), stride=(sh, sw))
    out_h, out_w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    return cols.view(n, c, kh * kw, out_h * out_w), (out_h, out_w)


def stochastic_pool2d(
    x: torch.Tensor,
    kernel_size: Pair,
    stride: Pair | None = None,
    padding: Pair = 0,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Stochastic pooling (Zeiler & Fergus, 2013, arXiv:1301.3557).

    In each window the activations a_i >= 0 define p_i = a_i / sum(a). Training picks one
    location from that multinomial and passes its value (so only it receives gradient);
    evaluation returns the expectation sum(p_i * a_i). A window of zeros gives 0.
    Negative inputs are treated as 0, as the method assumes rectified activations.
    """
    stride = kernel_size if stride is None else stride
    a, (out_h, out_w) = _windows(x.clamp_min(0), kernel_size, stride, padding)
    if training:
        # Inverse-CDF sampling: the first location whose cumulative mass exceeds u * total.
        # The total is the CDF's own last entry, so rounding can never select past it.
        cdf = a.detach().cumsum(dim=2)
        u = torch.rand(cdf[:, :, -1:].shape, generator=generator, device=x.device, dtype=x.dtype)
        index = (cdf <= u * cdf[:, :, -1:]).sum(dim=2, keepdim=True).clamp_max(a.shape[2] - 1)
        out = a.gather(2, index)
    else:
        total = a.sum(dim=2, keepdim=True)
        safe = torch.where(total > 0, total, torch.ones_like(total))
        out = torch.where(
            total > 0, (a * a).sum(dim=2, keepdim=True) / safe, torch.zeros_like(total)
        )
    return out.view(x.shape[0], x.shape[1], out_h, out_w)


class StochasticPool2d(nn.Module):
    def __init__(self, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0):
        super().__init__()
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = kernel_size if stride is None else stride
        self.generator: torch.Generator | None = None  # set to make sampling reproducible

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.training, self.generator
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def sum_pool2d(
    x: torch.Tensor, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0
) -> torch.Tensor:
    """Sum of each window: mean pooling times the window area (padding counts as zeros)."""
    kh, kw = _pair(kernel_size)
    stride = kernel_size if stride is None else stride
    return F.avg_pool2d(x, (kh, kw), stride, padding, count_include_pad=True) * (kh * kw)


class SumPool2d(nn.Module):
    def __init__(self, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0):
        super().__init__()
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = kernel_size if stride is None else stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class SumPool1d(SumPool2d):
    """Sum pooling of (N, C, L) sequences: the 2-D layer on (N, C, 1, L), windows of 1 x k."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum_pool2d(
            x[:, :, None], (1, self.kernel_size), (1, self.stride), (0, self.padding)
        )[:, :, 0]


class StochasticPool1d(StochasticPool2d):
    """Stochastic pooling of (N, C, L) sequences: the 2-D layer on (N, C, 1, L), windows of
    1 x k."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_pool2d(
            x[:, :, None],
            (1, self.kernel_size),
            (1, self.stride),
            (0, self.padding),
            self.training,
            self.generator,
        )[:, :, 0]


def channel_max_pool(x: torch.Tensor, group: int) -> torch.Tensor:
    """Cross-channel (maxout) pooling: the max over each run of `group` adjacent channels."""
    n, c = x.shape[:2]
    return x.view(n, c // group, group, *x.shape[2:]).amax(dim=2)


class ChannelMaxPool(nn.Module):
    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_max_pool(x, self.group)

    def extra_repr(self) -> str:
        return f"group={self.group}"


def gabor_kernel(
    size: int, theta: float, wavelength: float, phase: float, aspect: float, sigma: float
) -> torch.Tensor:
    """One Gabor filter: a sinusoid of the given wavelength under a Gaussian envelope."""
    half = (size - 1) / 2
    coords = torch.linspace(-half, half, size, dtype=torch.float64)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    xr = x * math.cos(theta) + y * math.sin(theta)
    yr = -x * math.sin(theta) + y * math.cos(theta)
    envelope = torch.exp(-(xr**2 + (aspect * yr) ** 2) / (2 * sigma**2))
    return envelope * torch.cos(2 * math.pi * xr / wavelength + phase)


def gabor_bank(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """`count` random Gabor filters (count, size, size), zero-mean and unit-norm, seeded."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))

    kernels = []
    for _ in range(count):
        wavelength = uniform(max(2.0, size / 6), max(3.0, size / 1.5))
        k = gabor_kernel(
            size,
            theta=uniform(0, math.pi),
            wavelength=wavelength,
            phase=uniform(0, 2 * math.pi),
            aspect=uniform(0.3, 1.0),
            sigma=wavelength * uniform(0.35, 0.7),
        )
        k = k - k.mean()
        kernels.append(k / k.norm().clamp_min(1e-12))
    return torch.stack(kernels).float()


class GaborConv2d(nn.Module):
    """A frozen bank of random Gabor filters used in place of a learned first convolution.

    Each filter is applied to the mean of the input channels, so the layer fits gray and
    colour inputs alike. The weights are a buffer: they are saved, never trained.
    """

    def __init__(
        self,
        in_channels: int,
        filters: int,
        kernel_size: int,
        seed: int = 0,
        stride: Pair = 1,
        padding: Pair = 0,
    ):
        super().__init__()
        self.in_channels, self.filters, self.kernel_size, self.seed = (
            in_channels,
            filters,
            kernel_size,
            seed,
        )
        self.stride, self.padding = stride, padding
        bank = gabor_bank(filters, kernel_size, seed)[:, None].repeat(1, in_channels, 1, 1)
        self.register_buffer("weight", bank / in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.filters}, kernel_size={self.kernel_size}, "
            f"seed={self.seed}, frozen"
        )


class Dense(nn.Linear):
    """A fully connected layer that flattens its input first, so no flatten size is written by
    hand."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


class Residual(nn.Module):
    """y = relu(body(x) + shortcut(x)) - the building block of ResNet (He et al., 2015)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module):
        super().__init__()
        self.body, self.shortcut = body, shortcut
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class PadShortcut(nn.Module):
    """ResNet's parameter-free 'option A' shortcut: subsample by stride, zero-pad new channels."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


class Concat(nn.Module):
    """Runs branches on the same input and concatenates their outputs along channels."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class DenseLayer(nn.Module):
    """One DenseNet layer: its new feature maps are appended to everything before it."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, GaborConv2d)


def conv_of(module: nn.Module) -> nn.Module | None:
    """The convolution a spec layer is built as: the layer itself, or the convolution behind
    the explicit padding of an asymmetric 'same' (Sequential(pad, conv)); None for any other."""
    if (
        isinstance(module, nn.Sequential)
        and len(module) == 2
        and isinstance(module[1], CONVOLUTIONS)
    ):
        return module[1]
    return module if isinstance(module, CONVOLUTIONS) else None
