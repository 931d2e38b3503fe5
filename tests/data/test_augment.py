import numpy as np
import pytest
import torch

from cnnlab.data.augment import parse, pca_basis
from cnnlab.errors import CnnlabError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_translate_moves_content_without_changing_it():
    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0  # one bright pixel in the centre
    out = parse("translate=2")(x, _gen())
    assert out.shape == x.shape and torch.all(out.sum((1, 2, 3)) == 1)
    pos = out.view(64, -1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10  # shifts vary per image


def test_flip_mirrors_about_half():
    x = torch.arange(10.0).view(1, 1, 1, 10).repeat(400, 1, 1, 1)
    out = parse("flip")(x, _gen())
    flipped = (out[:, 0, 0, 0] == 9).float().mean().item()
    assert 0.4 < flipped < 0.6
    assert torch.all((out[:, 0, 0, 0] == 9) | (out[:, 0, 0, 0] == 0))


def test_seeded_and_reproducible():
    x = torch.rand(8, 3, 16, 16)
    aug = parse("translate=2,flip,color=0.3,elastic=8:3")
    assert torch.equal(aug(x, _gen(1)), aug(x, _gen(1)))
    assert not torch.equal(aug(x, _gen(1)), aug(x, _gen(2)))


def test_color_scales_each_channel_within_its_range():
    x = torch.full((100, 3, 2, 2), 0.5)
    out = parse("color=0.2")(x, _gen())
    ratio = out[:, :, 0, 0] / 0.5
    assert ratio.min() >= 0.8 - 1e-6 and ratio.max() <= 1.2 + 1e-6
    assert torch.all(out == out[:, :, :1, :1])  # one factor per image and channel


def test_pca_lighting_moves_along_the_principal_colour_axis():
    gen = _gen()
    base = torch.rand(500, 1, 4, 4, generator=gen)
    images = (torch.cat([base, base * 0.5, base * 0.25], 1) * 255).to(
        torch.uint8
    )  # colours on one line
    aug = parse("pca=0.5")
    aug.pca_basis = pca_basis(images)
    x = torch.full((50, 3, 4, 4), 0.5)
    shift = (aug(x, gen) - x)[:, :, 0, 0]
    direction = torch.tensor([1.0, 0.5, 0.25]) / torch.tensor([1.0, 0.5, 0.25]).norm()
    cos = (shift @ direction).abs() / shift.norm(dim=1).clamp_min(1e-9)
    assert cos.median() > 0.999  # (uint8 rounding adds a little noise off the axis)
    main = aug.pca_basis[:, aug.pca_basis.norm(dim=0).argmax()]
    assert (main @ direction).abs() / main.norm() > 0.9999


def test_elastic_keeps_shape_and_roughly_the_ink():
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1
    out = parse("elastic")(x, _gen())
    assert out.shape == x.shape and not torch.equal(out, x)
    assert out.min() >= 0 and out.max() <= 1 and torch.all(out.sum((1, 2, 3)) > 0.4 * 48)
    ys = torch.arange(28.0).view(1, 1, 28, 1)
    centre_shift = (out * ys).sum((1, 2, 3)) / out.sum((1, 2, 3)) - 13.5
    assert centre_shift.abs().max() < 3  # a local warp, not a translation
    assert torch.allclose(parse("elastic=0:4")(x, _gen()), x, atol=1e-5)  # zero strength: identity


def test_bad_augment_names():
    with pytest.raises(CnnlabError, match="unknown augmentation 'rotate'"):
        parse("translate,rotate")
    assert not parse("none")


def _bilinear_zero_pad(img, ys, xs):
    """Sample img (H, W) at fractional pixel centres (ys, xs), zero outside."""
    h, w = img.shape
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    out = np.zeros_like(ys)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            weight = (1 - np.abs(ys - yy)) * (1 - np.abs(xs - xx))
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            out += np.where(inside, img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], 0) * weight
    return out


def test_affine_rotates_and_scales_about_the_centre_like_a_numpy_reference():
    x = torch.rand(3, 1, 12, 10)
    gen = torch.Generator().manual_seed(5)
    got = parse("affine=20:0.2")(x, gen)
    gen = torch.Generator().manual_seed(5)  # the same draws, for the reference
    angle = (torch.rand(3, generator=gen) * 2 - 1).numpy() * 20 * np.pi / 180
    zoom = 1 + (torch.rand(3, generator=gen) * 2 - 1).numpy() * 0.2
    h, w = 12, 10
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    u, v = (2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1  # pixel centres in [-1, 1]
    for i in range(3):
        c, s = np.cos(angle[i]) / zoom[i], np.sin(angle[i]) / zoom[i]
        su, sv = c * u - s * v, s * u + c * v  # where each output pixel reads from
        want = _bilinear_zero_pad(
            x[i, 0].double().numpy(), ((sv + 1) * h - 1) / 2, ((su + 1) * w - 1) / 2
        )
        np.testing.assert_allclose(got[i, 0].numpy(), want, atol=1e-5)
    assert not torch.allclose(got, x)
    assert torch.allclose(parse("affine=0:0")(x, gen), x, atol=1e-6)
