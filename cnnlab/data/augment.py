"""Batched, seeded augmentation as tensor ops on float images in [0, 1], shape (N, C, H, W),
and on sequences (N, C, L), which take translate (a shift along L) and flip (time reversed).

An augmentation is written as a comma list, e.g. "translate=2,flip,color=0.2,pca=0.1,elastic":
  translate=S   shift by up to S pixels in each direction (zero fill)
  flip          mirror left-right with probability 1/2 (off by default: digits are not symmetric)
  color=A       scale each RGB channel by a factor in [1-A, 1+A]
  pca=S         AlexNet's lighting noise: add eigvec @ (alpha * eigval), alpha ~ N(0, S)
  elastic=A:G   elastic distortion (Simard et al. 2003): smoothed random displacement
                fields of strength A pixels and Gaussian width G (default 34:4 scaled to 28px)
  affine=R:S    rotate by up to R degrees and scale by a factor in [1-S, 1+S] about the
                centre (default 10:0.1)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError

DEFAULTS = {
    "translate": "2",
    "flip": "",
    "color": "0.2",
    "pca": "0.1",
    "elastic": "34:4",
    "affine": "10:0.1",
}


@dataclass
class Augment:
    ops: list[tuple[str, str]] = field(default_factory=list)
    pca_basis: torch.Tensor | None = None  # (3, 3) eigenvectors scaled by eigenvalues

    def __bool__(self) -> bool:
        return bool(self.ops)

    def check(self, images, text: str) -> None:
        """Refuse, before training, what cannot apply to these images: image-only operations on
        sequences, and those that assume the 0..1 pixel scale on float32 values."""
        for name, _ in self.ops:
            if images.ndim == 3 and name not in SEQUENCE_OPS:
                raise CnnlabError(
                    f"--augment {text}: {name} works on images (N, C, H, W); sequences (N, C, L) "
                    f"take {' and '.join(SEQUENCE_OPS)}"
                )
            if images.dtype == torch.float32 and name in PIXEL_SCALE_OPS:
                raise CnnlabError(
                    f"--augment {text}: {name} clamps to the 0..1 pixel scale, and this data holds "
                    "float32 values as they are"
                )

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for name, arg in self.ops:
            x = APPLY[name](self, x, arg, gen)
        return x


def parse(text: str | None) -> Augment:
    """'translate=2,flip' -> Augment. Empty or 'none' gives no augmentation."""
    if not text or text == "none":
        return Augment()
    ops = []
    for item in text.split(","):
        name, _, arg = item.strip().partition("=")
        if name not in DEFAULTS:
            raise CnnlabError(f"unknown augmentation '{name}'; choose from {', '.join(DEFAULTS)}")
        arg = arg or DEFAULTS[name]
        try:
            [float(v) for v in arg.split(":") if v]
        except ValueError:
            raise CnnlabError(f"'{item}' needs a number after '='") from None
        ops.append((name, arg))
    return Augment(ops)


def pca_basis(images: torch.Tensor, sample: int = 20000) -> torch.Tensor:
    """Eigen-decomposition of the RGB pixel covariance (on the 0..1 scale), as AlexNet used."""
    pixels = images[:sample].permute(0, 2, 3, 1).reshape(-1, images.shape[1]).double() / 255
    cov = torch.cov(pixels.T)
    eigval, eigvec = torch.linalg.eigh(cov)
    return (eigvec * eigval.clamp_min(0).sqrt()).float()


def _translate(aug, x, arg, gen):
    s = int(float(arg))
    if x.ndim == 3:
        return _shift(x, s, gen)
    n, _, h, w = x.shape
    padded = F.pad(x, (s, s, s, s))
    dy = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    rows = (torch.arange(h)[None] + dy[:, None])[:, :, None]  # (N, H, 1)
    cols = (torch.arange(w)[None] + dx[:, None])[:, None, :]  # (N, 1, W)
    batch = torch.arange(n)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def _shift(x, s, gen):
    """Sequences (N, C, L) shifted by up to s samples either way, zero fill."""
    n, c, length = x.shape
    dx = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    index = (torch.arange(length)[None] + dx[:, None])[:, None, :].expand(n, c, length)
    return F.pad(x, (s, s)).gather(2, index)


def _flip(aug, x, arg, gen):
    mask = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(mask.view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)


def _color(aug, x, arg, gen):
    a = float(arg)
    scale = 1 + (torch.rand(x.shape[0], x.shape[1], 1, 1, generator=gen) * 2 - 1) * a
    return (x * scale).clamp(0, 1)


def _pca(aug, x, arg, gen):
    if x.shape[1] != 3:
        return x
    if aug.pca_basis is None:
        raise CnnlabError("--augment pca needs the training set's colour statistics")
    alpha = torch.randn(x.shape[0], 3, generator=gen) * float(arg)
    shift = alpha @ aug.pca_basis.T  # (N, 3)
    return (x + shift[:, :, None, None]).clamp(0, 1)


def gaussian_blur(
    x: torch.Tensor, sigma: float, radius: int | None = None, padding: str = "reflect"
) -> torch.Tensor:
    """Each channel of (N, C, H, W) blurred by a Gaussian of std sigma, as two 1-D passes;
    the kernel reaches 3 sigma unless radius says."""
    radius = radius or max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode=padding),
        k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
        groups=c,
    )
    return F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode=padding),
        k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
        groups=c,
    )


def _elastic(aug, x, arg, gen):
    parts = [float(v) for v in arg.split(":")]
    alpha, sigma = parts[0], parts[1] if len(parts) > 1 else 4.0
    n, _, h, w = x.shape
    disp = torch.rand(n, 2, h, w, generator=gen) * 2 - 1
    disp = gaussian_blur(disp, sigma) * alpha  # pixels
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij"
    )
    gx = (xs + disp[:, 0]) * 2 / max(w - 1, 1) - 1
    gy = (ys + disp[:, 1]) * 2 / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _affine(aug, x, arg, gen):
    parts = [float(v) for v in arg.split(":")]
    degrees, spread = parts[0], parts[1] if len(parts) > 1 else 0.1
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * degrees * torch.pi / 180
    zoom = 1 + (torch.rand(n, generator=gen) * 2 - 1) * spread
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # output -> input coordinates
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


SEQUENCE_OPS = ("translate", "flip")
PIXEL_SCALE_OPS = ("color", "pca")
APPLY = {
    "translate": _translate,
    "flip": _flip,
    "color": _color,
    "pca": _pca,
    "elastic": _elastic,
    "affine": _affine,
}
