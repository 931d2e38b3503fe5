"""One harness over every layer kind of the spec registry, as Keras tests its layers and timm its
models: built from a minimal spec, checked against a NumPy reference of the equation where one
exists, gradient-checked in float64, rebuilt from `to_spec`, exported to ONNX.

A kind added to `spec.KINDS` without a case here fails `test_every_kind_has_a_case`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnnlab.layers import conv_of
from cnnlab.spec import KINDS, build, to_spec

# ------------------------------------------------------------------ NumPy references


def np_conv(x, w, b, stride, pads, dilation=(1, 1), groups=1):
    """out[k,i,j] = b[k] + sum_c sum_uv x[c, i*s + u*d, j*s + v*d] w[k, c, u, v], per group."""
    top, bottom, left, right = pads
    x = np.pad(x, ((0, 0), (top, bottom), (left, right)))
    c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    out_h, out_w = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((k, out_h, out_w))
    per_group = k // groups
    for f in range(k):
        first = (f // per_group) * cg
        for i in range(out_h):
            for j in range(out_w):
                window = x[
                    first : first + cg,
                    i * sh : i * sh + dh * (kh - 1) + 1 : dh,
                    j * sw : j * sw + dw * (kw - 1) + 1 : dw,
                ]
                out[f, i, j] = (window * w[f]).sum() + (b[f] if b is not None else 0.0)
    return out


def np_pool(x, mode, size, stride, pad=(0, 0)):
    """Each window's max, mean (of the real pixels), sum (padding counts as 0) or stochastic
    expectation sum(p_i a_i) with p_i = a_i / sum(a) over the rectified window."""
    (kh, kw), (sh, sw), (ph, pw) = size, stride, pad
    fill = -np.inf if mode == "max" else 0.0
    padded = np.pad(x, ((0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    real = np.pad(np.ones_like(x), ((0, 0), (ph, ph), (pw, pw)))
    c, h, w = padded.shape
    out = np.zeros((c, (h - kh) // sh + 1, (w - kw) // sw + 1))
    for ch in range(c):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                win = padded[ch, i * sh : i * sh + kh, j * sw : j * sw + kw]
                n = real[ch, i * sh : i * sh + kh, j * sw : j * sw + kw].sum()
                if mode == "max":
                    out[ch, i, j] = win.max()
                elif mode == "mean":
                    out[ch, i, j] = win.sum() / n
                elif mode == "sum":
                    out[ch, i, j] = win.sum()
                else:
                    a = np.maximum(win, 0).ravel()
                    out[ch, i, j] = 0.0 if a.sum() == 0 else (a * a).sum() / a.sum()
    return out


def np_lrn(x, size, alpha, beta, k):
    """b_c = a_c / (k + alpha/n * sum of a^2 over the n channels around c)^beta."""
    c = x.shape[0]
    out = np.zeros_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - size // 2), min(c, ch + (size - 1) // 2 + 1)
        out[ch] = x[ch] / (k + alpha / size * (x[lo:hi] ** 2).sum(0)) ** beta
    return out


def np_softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _params(module, *names):
    return [
        getattr(module, n).detach().double().numpy() if getattr(module, n) is not None else None
        for n in names
    ]


def ref_conv(x, m, f):
    conv = conv_of(m)
    w, b = _params(conv, "weight", "bias")
    pads = (1, 2, 0, 1)  # the case's explicit [top, bottom, left, right]
    return np_conv(x, w, b, conv.stride, pads, conv.dilation, conv.groups)


def ref_conv1d(x, m, f):
    w, b = _params(m, "weight", "bias")
    out = np_conv(x[:, None, :], w[:, :, None, :], b, (1, m.stride[0]), (0, 0, 1, 1))
    return out[:, 0, :]


def ref_gabor(x, m, f):
    (w,) = _params(m, "weight")
    return np_conv(
        x, w, None, m.stride if isinstance(m.stride, tuple) else (m.stride,) * 2, (1, 1, 1, 1)
    )


def ref_pool(mode, pad=(0, 0)):
    return lambda x, m, f: np_pool(x, mode, (2, 2), (2, 2), pad)


def ref_pool1d(x, m, f):
    return np_pool(x[:, None], "max", (1, 2), (1, 2))[:, 0]


def ref_pool1d_mode(mode, pad):
    """The 2-D reference on (C, 1, L): windows of 1 x 3, stride 2, padding `pad` along L."""
    return lambda x, m, f: np_pool(x[:, None], mode, (1, 3), (1, 2), (0, pad))[:, 0]


def ref_batchnorm(x, m, f):
    g, b, mu, var = _params(m, "weight", "bias", "running_mean", "running_var")
    return (x - mu[:, None, None]) / np.sqrt(var[:, None, None] + m.eps) * g[:, None, None] + b[
        :, None, None
    ]


def ref_dense(x, m, f):
    w, b = _params(m, "weight", "bias")
    return w @ x.ravel() + b


def _conv_bn(x, conv, bn, relu=True):
    w, b = _params(conv, "weight", "bias")
    pad = conv.padding[0]
    y = ref_batchnorm(np_conv(x, w, b, conv.stride, (pad,) * 4), bn, None)
    return np.maximum(y, 0) if relu else y


def ref_residual(x, m, f):
    """relu(body(x) + x): conv-bn-relu-conv-bn on the way, the identity beside it."""
    body = m.body
    return np.maximum(_conv_bn(_conv_bn(x, body[0], body[1]), body[3], body[4], relu=False) + x, 0)


def ref_inception(x, m, f):
    """Four branches side by side: 1x1; 1x1 then 3x3; 1x1 then k x k; 3x3 max pool then 1x1."""
    outs = []
    for branch in m.branches:
        layers, y = list(branch), x
        if isinstance(layers[0], torch.nn.MaxPool2d):
            y, layers = np_pool(y, "max", (3, 3), (1, 1), (1, 1)), layers[1:]
        for i in range(0, len(layers), 3):
            y = _conv_bn(y, layers[i], layers[i + 1])
        outs.append(y)
    return np.concatenate(outs)


def ref_dense_block(x, m, f):
    """Each layer appends bn-relu-1x1 conv-bn-relu-3x3 conv of everything before it."""
    for layer in m:
        bn1, _, conv1, bn2, _, conv2 = layer.body
        y = np.maximum(ref_batchnorm(x, bn1, None), 0)
        y = np.maximum(
            ref_batchnorm(
                np_conv(y, *_params(conv1, "weight", "bias"), (1, 1), (0,) * 4), bn2, None
            ),
            0,
        )
        x = np.concatenate([x, np_conv(y, *_params(conv2, "weight", "bias"), (1, 1), (1,) * 4)])
    return x


def ref_transition(x, m, f):
    """bn, relu, a 1x1 convolution to fewer channels, then 2x2 mean pooling."""
    bn, _, conv, _ = m
    y = np_conv(
        np.maximum(ref_batchnorm(x, bn, None), 0),
        *_params(conv, "weight", "bias"),
        (1, 1),
        (0,) * 4,
    )
    return np_pool(y, "mean", (2, 2), (2, 2))


CONV = {"filters": 4, "kernel": [3, 2], "stride": [2, 1], "padding": [1, 2, 0, 1]}
CONV |= {"dilation": [1, 2], "groups": 2, "rounding": "floor"}
LRN = {"size": 3, "alpha": 0.1, "beta": 0.75, "k": 2.0}
INCEPTION = {
    "b1": 2,
    "b3_reduce": 2,
    "b3": 2,
    "b5_reduce": 2,
    "b5": 2,
    "pool_proj": 2,
    "b5_kernel": 3,
}
# kind -> (input shape, fields, NumPy reference of the layer's output)
CASES = {
    "conv": ([4, 7, 8], CONV, ref_conv),
    "gabor": ([2, 6, 6], {"filters": 3, "kernel": 3, "padding": 1}, ref_gabor),
    "pool": ([2, 6, 6], {"mode": "max", "size": 2}, ref_pool("max")),
    "global_pool": ([3, 4, 5], {"mode": "avg"}, lambda x, m, f: x.mean((1, 2))),
    "adaptive_pool": ([2, 6, 6], {"mode": "max", "size": 3}, ref_pool("max")),  # 6 -> 3: 2x2
    "channel_pool": ([6, 3, 3], {"group": 3}, lambda x, m, f: x.reshape(2, 3, 3, 3).max(1)),
    "dense": ([2, 3, 3], {"units": 5}, ref_dense),
    "flatten": ([2, 3, 3], {}, lambda x, m, f: x.ravel()),
    "relu": ([2, 4, 4], {}, lambda x, m, f: np.maximum(x, 0)),
    "leaky_relu": ([2, 4, 4], {"slope": 0.2}, lambda x, m, f: np.where(x > 0, x, 0.2 * x)),
    "softplus": ([2, 4, 4], {"beta": 2.0}, lambda x, m, f: np.log1p(np.exp(2.0 * x)) / 2.0),
    "tanh": ([2, 4, 4], {}, lambda x, m, f: np.tanh(x)),
    "sigmoid": ([2, 4, 4], {}, lambda x, m, f: 1 / (1 + np.exp(-x))),
    "softmax": ([5], {}, lambda x, m, f: np_softmax(x)),
    "log_softmax": ([5], {}, lambda x, m, f: np.log(np_softmax(x))),
    "dropout": ([2, 4, 4], {"rate": 0.5}, lambda x, m, f: x),  # evaluation: the identity
    "batchnorm": ([3, 4, 4], {"eps": 1e-3}, ref_batchnorm),
    "lrn": ([5, 3, 3], LRN, lambda x, m, f: np_lrn(x, **f)),
    "residual": ([4, 6, 6], {"filters": 4}, ref_residual),
    "inception": ([4, 6, 6], INCEPTION, ref_inception),
    "dense_block": ([4, 4, 4], {"layers": 2, "growth": 2, "bn_size": 2}, ref_dense_block),
    "transition": ([4, 4, 4], {"compression": 0.5}, ref_transition),
}
POOL_MODES = {
    "mean": ref_pool("mean", (1, 1)),  # mean over the real pixels of each padded window
    "sum": ref_pool("sum", (1, 1)),
    "stochastic": ref_pool("stochastic"),
    "max": ref_pool("max", (1, 1)),
}
ONE_D = {  # the same layers on (C, L) sequences
    "conv": ([2, 9], {"filters": 3, "kernel": 3, "stride": 2, "padding": 1}, ref_conv1d),
    "pool": ([2, 8], {"mode": "max", "size": 2}, ref_pool1d),
    "global_pool": ([3, 7], {"mode": "max"}, lambda x, m, f: x.max(1)),
    "batchnorm": ([3, 6], {}, lambda x, m, f: ref_batchnorm(x[:, None], m, f)[:, 0]),
}


def _net(kind: str, shape: list[int], fields: dict):
    layers = [{"type": kind, "name": "probe", **fields}]
    if kind not in ("dense", "softmax", "log_softmax"):
        layers.append({"type": "flatten"})
    layers.append({"type": "dense"})
    torch.manual_seed(0)
    model = build(
        {"name": f"probe-{kind}", "input": shape, "classes": 3, "layers": layers}
    ).double()
    with torch.no_grad():  # batch norm with statistics of its own, not the identity of a fresh one
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.uniform_(-0.5, 0.5)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    return model.eval()


def _input(shape, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, *shape, generator=gen, dtype=torch.float64)


def _all_cases():
    for kind, case in CASES.items():
        yield kind, kind, case
    for mode, reference in POOL_MODES.items():
        yield (
            f"pool-{mode}",
            "pool",
            (
                [2, 6, 6],
                {
                    "mode": mode,
                    "size": 2,
                    "padding": 1 if mode != "stochastic" else 0,
                    "rounding": "floor",
                },
                reference,
            ),
        )
    for kind, case in ONE_D.items():
        yield f"{kind}-1d", kind, case
    for mode in POOL_MODES:
        pad = 0 if mode == "stochastic" else 1
        fields = {"mode": mode, "size": 3, "stride": 2, "padding": pad}
        yield f"pool-{mode}-1d", "pool", ([2, 9], fields, ref_pool1d_mode(mode, pad))


CASE_IDS = [(case_id, kind, case) for case_id, kind, case in _all_cases()]


def test_every_kind_has_a_case():
    assert set(CASES) == set(KINDS), "add the new layer kind to this harness"


@pytest.mark.parametrize(
    ("kind", "case"), [(k, c) for _, k, c in CASE_IDS], ids=[i for i, _, _ in CASE_IDS]
)
def test_matches_its_numpy_reference(kind, case):
    shape, fields, reference = case
    model = _net(kind, shape, fields)
    x = _input(shape)
    got = model.features(x)["probe"][0].detach().numpy()
    want = reference(x[0].numpy(), model.probe, fields)
    assert got.shape == want.shape == tuple(model.shapes["probe"])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("kind", "case"), [(k, c) for _, k, c in CASE_IDS], ids=[i for i, _, _ in CASE_IDS]
)
def test_gradients_match_finite_differences_in_float64(kind, case):
    shape, fields, _ = case
    model = _net(kind, shape, fields)
    x = _input(shape)
    if kind in ("pool", "adaptive_pool", "channel_pool"):  # distinct values away from 0: no ties
        order = torch.randperm(math.prod(shape), generator=torch.Generator().manual_seed(2))
        x = ((order.double() + 0.5) / 10 - 1).view(1, *shape)  # for max, no kink of the clamp
    x.requires_grad_(True)
    check = {"eps": 1e-6, "atol": 1e-6, "fast_mode": True}
    assert torch.autograd.gradcheck(lambda inp: model.features(inp)["probe"], (x,), **check)
    weights = dict(model.probe.named_parameters())
    if weights:  # and with respect to the layer's own weights

        def of_weights(*values):
            return torch.func.functional_call(
                model.probe, dict(zip(weights, values, strict=True)), (x.detach(),)
            )

        start = tuple(w.detach().clone().requires_grad_(True) for w in weights.values())
        assert torch.autograd.gradcheck(of_weights, start, **check)


@pytest.mark.parametrize(
    ("kind", "case"), [(k, c) for _, k, c in CASE_IDS], ids=[i for i, _, _ in CASE_IDS]
)
def test_to_spec_rebuilds_the_same_model(kind, case):
    shape, fields, _ = case
    model = _net(kind, shape, fields)
    again = build(to_spec(model)).double().eval()
    again.load_state_dict(model.state_dict())
    assert to_spec(again) == to_spec(model)
    x = _input(shape)
    assert torch.equal(again(x), model(x))


def test_every_kind_exports_to_onnx(tmp_path):
    """Two models between them hold every layer kind (and every pooling mode), each exported
    and checked in onnxruntime by cnnlab's own exporter."""
    from cnnlab.checkpoint import Checkpoint
    from cnnlab.export import export_onnx

    images = [
        {"type": "conv", "filters": 8, "kernel": 3, "padding": "same"},
        {"type": "batchnorm"},
        {"type": "relu"},
        {"type": "residual", "filters": 8},
        {
            "type": "inception",
            "b1": 2,
            "b3_reduce": 2,
            "b3": 2,
            "b5_reduce": 2,
            "b5": 2,
            "pool_proj": 2,
        },
        {"type": "dense_block", "layers": 1, "growth": 4},
        {"type": "transition"},
        {"type": "gabor", "filters": 4, "kernel": 3, "padding": 1},
        {"type": "lrn", "size": 3},
        {"type": "channel_pool", "group": 2},
        {"type": "pool", "mode": "sum", "size": 2},
        {"type": "pool", "mode": "stochastic", "size": 2},
        {"type": "leaky_relu"},
        {"type": "softplus"},
        {"type": "pool", "mode": "max", "size": 2, "stride": 1},
        {"type": "tanh"},
        {"type": "sigmoid"},
        {"type": "adaptive_pool", "size": 2},
        {"type": "pool", "mode": "mean", "size": 2},
        {"type": "dropout"},
        {"type": "flatten"},
        {"type": "dense", "units": 6},
        {"type": "softmax"},
        {"type": "log_softmax"},
        {"type": "dense"},
    ]
    sequences = [
        {"type": "conv", "filters": 4, "kernel": 3},
        {"type": "pool", "mode": "mean", "size": 2},
        {"type": "pool", "mode": "sum", "size": 2, "stride": 1},
        {"type": "pool", "mode": "stochastic", "size": 2, "stride": 1},
        {"type": "global_pool"},
        {"type": "dense"},
    ]
    covered = {layer["type"] for layer in images + sequences}
    assert covered == set(KINDS)
    for shape, layers in (([3, 32, 32], images), ([2, 16], sequences)):
        torch.manual_seed(0)
        model = build({"name": "every-kind", "input": shape, "classes": 3, "layers": layers}).eval()
        meta = {
            "classes": ["a", "b", "c"],
            "input_shape": shape,
            "mean": [0.0],
            "std": [1.0],
            "spec": model.spec,
        }
        _, diff = export_onnx(
            Checkpoint(model, meta, tmp_path / "x.json"), tmp_path / f"m{len(shape)}.onnx"
        )
        assert diff <= 1e-4


def test_stochastic_pooling_of_sequences_samples_a_value_of_each_window_in_training():
    """Training draws one location per window (a_i / sum a), the one that gets the gradient."""
    model = _net("pool", [2, 9], {"mode": "stochastic", "size": 3}).train()
    x = torch.rand(4, 2, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x.requires_grad_(True)
    model.probe.generator = torch.Generator().manual_seed(0)
    out = model.features(x)["probe"]
    windows = x.detach().unfold(2, 3, 3)  # (N, C, 3, 3)
    assert out.shape == (4, 2, 3)
    assert ((windows == out.detach()[..., None]).any(-1)).all()
    out.sum().backward()
    assert ((x.grad.view(4, 2, 3, 3) != 0).sum(-1) == 1).all()  # one location in each window
