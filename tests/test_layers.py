import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab import layers as L
from cnnlab.spec import build
from tests import reference as ref


def _conv_net(cin, filters, kernel, stride, padding):
    spec = {
        "input": [cin, 7, 7],
        "classes": 2,
        "layers": [
            {
                "type": "conv",
                "filters": filters,
                "kernel": kernel,
                "stride": stride,
                "padding": padding,
                "rounding": "floor",
            },
            {"type": "dense"},
        ],
    }
    return build(spec).conv1


@pytest.mark.parametrize(
    "cin,filters,kernel,stride,padding", [(1, 1, 3, 1, 0), (3, 2, 3, 2, 1), (2, 4, 2, 1, 2)]
)
def test_conv_forward_and_both_gradients_match_the_seed_equations(
    cin, filters, kernel, stride, padding
):
    torch.manual_seed(0)
    conv = _conv_net(cin, filters, kernel, stride, padding).double()
    h = 7 + 2 * padding
    if (h - kernel) % stride:
        pytest.skip("the reference takes exact sizes")
    x = torch.randn(1, cin, 7, 7, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    image, kernels, bias = (
        x[0].detach().numpy(),
        conv.weight.detach().numpy(),
        conv.bias.detach().numpy(),
    )
    np.testing.assert_allclose(
        out[0].detach().numpy(), ref.conv_forward(image, kernels, bias, stride, padding), atol=1e-10
    )

    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    g = grad_out[0].numpy()
    np.testing.assert_allclose(
        conv.weight.grad.numpy(),
        ref.conv_grad_kernels(image, g, kernels.shape, stride, padding),
        atol=1e-10,
    )
    np.testing.assert_allclose(
        x.grad[0].numpy(), ref.conv_grad_input(g, kernels, image.shape, stride, padding), atol=1e-10
    )
    np.testing.assert_allclose(conv.bias.grad.numpy(), g.sum(axis=(1, 2)), atol=1e-10)


def test_valid_and_same_sizes_follow_the_formula():
    spec = {
        "input": [3, 11, 9],
        "classes": 2,
        "layers": [
            {"type": "conv", "filters": 4, "kernel": 3, "padding": "same"},
            {"type": "conv", "filters": 5, "kernel": [3, 5]},
            {"type": "conv", "filters": 1, "kernel": 1},
            {"type": "dense"},
        ],
    }
    net = build(spec)
    assert net.shapes["conv1"] == (4, 11, 9)  # same: (F-1)/2 padding at stride 1
    assert net.shapes["conv2"] == (5, 9, 5)  # valid: (M-m+1) x (N-n+1)
    assert net.shapes["conv3"] == (1, 9, 5)  # 1x1 mixes channels only
    assert net(torch.zeros(2, 3, 11, 9)).shape == (2, 2)


def test_same_padding_with_stride_and_even_kernel_is_asymmetric_and_correct():
    spec = {
        "input": [1, 8, 8],
        "classes": 2,
        "layers": [
            {"type": "conv", "filters": 1, "kernel": 3, "stride": 2, "padding": "same"},
            {"type": "dense"},
        ],
    }
    net = build(spec)
    assert net.shapes["conv1"] == (1, 4, 4)
    x = torch.randn(1, 1, 8, 8)
    conv = net.conv1[1]
    # out = ceil(8/2) = 4 needs (4-1)*2 + 3 - 8 = 1 pixel of padding: it goes after
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    assert torch.allclose(net.conv1(x), expected)


@pytest.mark.parametrize("mode", ["max", "mean", "sum"])
@pytest.mark.parametrize("k,stride", [(2, 2), (3, 1), (3, 2)])
def test_pooling_forward_and_gradient_routing(mode, k, stride):
    torch.manual_seed(1)
    size = 8 if k == 2 else 7
    x = torch.randn(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    module = {
        "max": torch.nn.MaxPool2d(k, stride),
        "mean": torch.nn.AvgPool2d(k, stride),
        "sum": L.SumPool2d(k, stride),
    }[mode]
    out = module(x)
    np.testing.assert_allclose(
        out[0, 0].detach().numpy(),
        ref.pool_forward(x[0, 0].detach().numpy(), k, stride, mode),
        atol=1e-12,
    )
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    expected = ref.pool_backward(x[0, 0].detach().numpy(), grad_out[0, 0].numpy(), k, stride, mode)
    np.testing.assert_allclose(x.grad[0, 0].numpy(), expected, atol=1e-12)


def test_stochastic_pool_eval_is_the_expectation_and_zero_windows_give_zero():
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    x[0, 0, :2, :2] = 0  # an all-zero window
    x[1, 2, 2:4, 2:4] = -1.0  # negative activations count as zero
    out = L.stochastic_pool2d(x, 2, 2, training=False)
    for n in range(2):
        for c in range(3):
            for i, j, win in ref.pool_windows(x[n, c].numpy(), 2, 2):
                assert out[n, c, i, j].item() == pytest.approx(
                    ref.stochastic_expectation(win), abs=1e-12
                )
    assert out[0, 0, 0, 0] == 0 and out[1, 2, 1, 1] == 0


def test_stochastic_pool_samples_follow_p_and_route_gradient_to_the_sample():
    window = torch.tensor(
        [1.6, 0.0, 0.4, 1.2, 0.0, 2.4, 0.2, 1.2, 1.0], dtype=torch.float64
    )  # 3x3, sum 8
    draws = 40_000
    x = window.view(1, 1, 3, 3).expand(draws, 1, 3, 3).clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    out = L.stochastic_pool2d(x, 3, 3, training=True, generator=gen)
    out.sum().backward()
    # each draw's gradient is one-hot at the location it sampled, whose value is the output
    grads = x.grad.view(draws, 9)
    assert torch.all(grads.sum(1) == 1) and torch.all((grads == 0) | (grads == 1))
    picked = grads.argmax(1)
    assert torch.equal(window[picked], out.view(draws).detach())
    freq = torch.bincount(picked, minlength=9).double() / draws
    p = window / window.sum()
    # 5 standard errors of a binomial proportion: a false alarm is ~1e-6 per location
    tolerance = 5 * torch.sqrt(p * (1 - p) / draws) + 1e-12
    assert torch.all((freq - p).abs() <= tolerance), (freq, p)
    assert freq[1] == 0 and freq[4] == 0


def test_stochastic_pool_is_reproducible_under_a_seed():
    x = torch.rand(4, 2, 8, 8)
    a = L.stochastic_pool2d(x, 2, generator=torch.Generator().manual_seed(5))
    b = L.stochastic_pool2d(x, 2, generator=torch.Generator().manual_seed(5))
    c = L.stochastic_pool2d(x, 2, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_stochastic_pool_any_kernel_stride_padding_shape():
    x = torch.rand(2, 3, 9, 9)
    assert L.stochastic_pool2d(x, 3, 2, 1).shape == (2, 3, 5, 5)
    assert L.stochastic_pool2d(x, (2, 3), (1, 3), 0, training=False).shape == (2, 3, 8, 3)


def test_channel_max_pool_against_loops():
    x = torch.randn(2, 6, 3, 3)
    out = L.channel_max_pool(x, 3)
    for n in range(2):
        for g in range(2):
            assert torch.equal(out[n, g], x[n, 3 * g : 3 * g + 3].max(0).values)


def test_gabor_bank_is_seeded_normalised_and_frozen():
    bank = L.gabor_bank(16, 13, seed=3)
    assert bank.shape == (16, 13, 13)
    assert torch.equal(bank, L.gabor_bank(16, 13, seed=3))
    assert not torch.equal(bank, L.gabor_bank(16, 13, seed=4))
    assert torch.allclose(bank.flatten(1).mean(1), torch.zeros(16), atol=1e-6)
    assert torch.allclose(bank.flatten(1).norm(dim=1), torch.ones(16), atol=1e-5)
    layer = L.GaborConv2d(3, 16, 13)
    assert list(layer.parameters()) == [] and "weight" in layer.state_dict()
    # a Gabor kernel is an oriented wave: at theta=0 it varies along x and is constant along y
    # under a flat envelope
    k = L.gabor_kernel(9, theta=0.0, wavelength=4.0, phase=0.0, aspect=0.0, sigma=1e6)
    assert torch.allclose(k[0], k[4]) and not torch.allclose(k[:, 0], k[:, 2])


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.SumPool2d(2, 2),
        lambda: L.SumPool2d(3, 2, 1),
        lambda: L.StochasticPool2d(2, 2).eval(),
        lambda: L.ChannelMaxPool(2),
        lambda: L.GaborConv2d(2, 3, 3).double(),
        lambda: L.Dense(2 * 6 * 6, 3).double(),
        lambda: L.PadShortcut(2, 2),
    ],
)
def test_gradcheck_float64(make):
    torch.manual_seed(0)
    module = make()
    x = (torch.rand(1, 2, 6, 6, dtype=torch.float64) + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-6)


def test_gradcheck_stochastic_pool_training_with_fixed_sample():
    x = (torch.rand(1, 2, 4, 4, dtype=torch.float64) + 0.1).requires_grad_(True)

    def f(inp):
        return L.stochastic_pool2d(
            inp, 2, training=True, generator=torch.Generator().manual_seed(0)
        )

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6)
