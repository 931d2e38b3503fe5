"""explain_unit: every explained unit is recomputed here in NumPy from the returned numbers
alone, and must equal the model's own output (model.features) to 1e-5. The windows are
also checked against the real input at the returned coordinates, and the kernels and
parameters against the model's, so a wrong outline or a wrong weight cannot pass."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.inspect.units import (
    MAX_CHANNELS,
    SOFTMAX,
    explain_unit,
    receptive_field,
    trace_block,
)
from cnnlab.spec import build

EVERY_SIMPLE_KIND = {
    "name": "every-kind",
    "input": [3, 20, 20],
    "classes": 5,
    "layers": [
        {
            "type": "conv",
            "filters": 6,
            "kernel": 3,
            "padding": 2,
            "stride": 2,
            "dilation": 2,
            "groups": 3,
            "rounding": "floor",
        },  # 6 x 10 x 10
        {"type": "batchnorm"},
        {"type": "leaky_relu", "slope": 0.1},
        {"type": "conv", "filters": 6, "kernel": 4, "padding": "same"},  # Sequential(pad, conv)
        {"type": "lrn", "size": 4, "alpha": 0.5, "k": 1.0},  # even: the window is lopsided
        {
            "type": "pool",
            "mode": "max",
            "size": 3,
            "stride": 2,
            "padding": 1,
            "rounding": "ceil",
        },  # 6 x 6 x 6
        {"type": "softplus", "beta": 2.0},
        {"type": "pool", "mode": "mean", "size": 2, "stride": 1, "padding": 1},  # 6 x 7 x 7
        {"type": "tanh"},
        {"type": "pool", "mode": "sum", "size": 2, "padding": 1, "rounding": "floor"},  # 6 x 4 x 4
        {"type": "relu"},
        {"type": "pool", "mode": "stochastic", "size": 2, "stride": 1},  # 6 x 3 x 3
        {"type": "conv", "filters": 8, "kernel": 1, "bias": False},
        {"type": "channel_pool", "group": 2},  # 4 x 3 x 3
        {"type": "sigmoid"},
        {"type": "dropout", "rate": 0.3},
        {"type": "softmax"},  # over channels
        {"type": "adaptive_pool", "size": 2},  # 4 x 2 x 2
        {"type": "flatten"},
        {"type": "dense", "units": 7},
        {"type": "batchnorm"},
        {"type": "log_softmax"},
        {"type": "dense"},
    ],
}

GABOR_AND_GLOBAL = {
    "name": "gabor-global",
    "input": [1, 16, 16],
    "classes": 3,
    "layers": [
        {"type": "gabor", "filters": 4, "kernel": 5, "padding": 2},
        {"type": "conv", "filters": 4, "kernel": 3, "groups": 4, "stride": 2, "rounding": "floor"},
        {"type": "adaptive_pool", "mode": "max", "size": [3, 2]},
        {"type": "conv", "filters": 6, "kernel": 1},
        {"type": "global_pool", "mode": "max"},
        {"type": "dense"},
    ],
}

ONE_D = {
    "name": "one-d",
    "input": [2, 30],
    "classes": 3,
    "layers": [
        {
            "type": "conv",
            "filters": 4,
            "kernel": 4,
            "padding": "same",
            "dilation": 1,
        },  # pad + conv1d
        {"type": "relu"},
        {"type": "conv", "filters": 4, "kernel": 3, "dilation": 2, "padding": 2},
        {"type": "pool", "mode": "max", "size": 2},
        {"type": "pool", "mode": "mean", "size": 3, "stride": 1, "padding": 1},
        {"type": "global_pool"},
        {"type": "dense"},
    ],
}

BLOCKS = {
    "name": "blocks",
    "input": [3, 16, 16],
    "classes": 4,
    "layers": [
        {"type": "conv", "filters": 8, "kernel": 3, "padding": 1},
        {"type": "residual", "filters": 8},
        {"type": "residual", "filters": 16, "stride": 2},
        {"type": "residual", "filters": 24, "stride": 2, "shortcut": "pad"},
        {"type": "residual", "filters": 4, "bottleneck": True},
        {
            "type": "inception",
            "b1": 4,
            "b3_reduce": 4,
            "b3": 4,
            "b5_reduce": 2,
            "b5": 4,
            "pool_proj": 4,
        },
        {"type": "dense_block", "layers": 2, "growth": 4, "bn_size": 2},
        {"type": "transition"},
        {"type": "global_pool"},
        {"type": "dense"},
    ],
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is faster than two that wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomised(spec, seed=0, frozen=True):
    """A model with random weights and batch-norm statistics that are not the identity,
    frozen as the server freezes it."""
    torch.manual_seed(seed)
    model = build(spec)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.3)
            m.bias.data.normal_(0, 0.3)
    return model.eval().requires_grad_(not frozen)


def the_input(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((1, *model.input_shape), generator=gen)


def close(got: float, want: float) -> bool:
    return abs(got - want) <= 1e-5 * max(1.0, abs(want))


# ---------------------------------------------------------------- the independent arithmetic
def window_at(a: np.ndarray, w: dict) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) input, window geometry -> the values there (0 in padding) and the mask."""
    rows = w["top"] + w["dilation"][0] * np.arange(w["size"][0])
    cols = w["left"] + w["dilation"][1] * np.arange(w["size"][1])
    values = np.zeros((a.shape[0], len(rows), len(cols)))
    inside = np.zeros((len(rows), len(cols)), bool)
    for i, r in enumerate(rows):
        for j, q in enumerate(cols):
            if 0 <= r < a.shape[1] and 0 <= q < a.shape[2]:
                values[:, i, j], inside[i, j] = a[:, r, q], True
    return values, inside


def as_chw(t: torch.Tensor) -> np.ndarray:
    a = t[0].detach().double().numpy()
    return a[:, None, :] if a.ndim == 2 else a


def pool_result(e: dict) -> float:
    values, inside = np.array(e["values"]), np.array(e["inside"])
    if e["mode"] == "max":
        return values[inside].max()
    if e["mode"] == "mean":
        return values[inside].mean()
    if e["mode"] == "sum":
        return values.sum()
    a = np.maximum(values, 0)  # stochastic pooling at test time
    return (a * a).sum() / a.sum() if a.sum() > 0 else 0.0


def recompute(e: dict, model, inp: torch.Tensor) -> float:
    """The unit's value from the explanation's numbers, in NumPy; checks what it can against
    the real input and parameters on the way."""
    rule, pos = e["rule"], tuple(e["position"])
    if rule == "conv":
        module = getattr(model, e["layer"])
        conv = module[1] if isinstance(module, nn.Sequential) else module
        weight = conv.weight.detach().double().numpy()
        weight = weight[:, :, None, :] if weight.ndim == 3 else weight
        first, last = e["input_channels"]
        assert last - first == weight.shape[1] and len(e["partials"]) == last - first
        real, inside = window_at(as_chw(inp)[first:last], e["window"])
        assert (np.array(e["inside"]) == inside).all()
        assert len(e["channels"]) == min(last - first, MAX_CHANNELS)
        for ch in e["channels"]:
            window, kernel = np.array(ch["window"]), np.array(ch["kernel"])
            assert np.allclose(window, real[ch["channel"] - first], atol=1e-6)
            assert np.allclose(kernel, weight[pos[0], ch["channel"] - first], atol=1e-7)
            assert close((window * kernel).sum(), ch["partial"])
            assert close(e["partials"][ch["channel"] - first], ch["partial"])
        if getattr(conv, "bias", None) is not None:
            assert close(e["bias"], float(conv.bias[pos[0]]))
        return math.fsum(e["partials"]) + e["bias"]
    if rule == "pool" and e["window"]["stride"] is not None:
        if "inner" in e:  # a transition block: its average pool reads its own convolution
            inp = getattr(model, e["layer"])[:-1](inp)
        real, inside = window_at(as_chw(inp)[e["channel"] : e["channel"] + 1], e["window"])
        assert np.allclose(np.array(e["values"]), real[0], atol=1e-6)
        assert (np.array(e["inside"]) == inside).all()
        return pool_result(e)
    if rule == "pool":  # adaptive or global: the window is a plain slice of the map
        w = e["window"]
        real = as_chw(inp)[
            e["channel"], w["top"] : w["top"] + w["size"][0], w["left"] : w["left"] + w["size"][1]
        ]
        assert np.allclose(np.array(e["values"]), real, atol=1e-6)
        return pool_result(e)
    x = e.get("input")
    if rule == "relu":
        return max(x, 0.0)
    if rule == "leaky_relu":
        return x if x > 0 else e["slope"] * x
    if rule == "softplus":
        bx = e["beta"] * x
        return x if bx > e["threshold"] else math.log1p(math.exp(bx)) / e["beta"]
    if rule == "tanh":
        return math.tanh(x)
    if rule == "sigmoid":
        return 1 / (1 + math.exp(-x))
    if rule == "identity":
        return x
    if rule == "batchnorm":
        bn = getattr(model, e["layer"])
        c = e["channel"]
        assert close(e["mean"], float(bn.running_mean[c])) and close(
            e["var"], float(bn.running_var[c])
        )
        assert close(e["gamma"], float(bn.weight[c])) and close(e["beta"], float(bn.bias[c]))
        return e["gamma"] * (x - e["mean"]) / math.sqrt(e["var"] + e["eps"]) + e["beta"]
    if rule == "lrn":
        lo, hi = e["channels"]
        assert lo <= pos[0] < hi and e["neighbours"][pos[0] - lo] == x
        squares = sum(v * v for v in e["neighbours"])
        return x / (e["k"] + e["alpha"] / e["size"] * squares) ** e["beta"]
    if rule == "channel_pool":
        return max(e["values"])
    if rule == "flatten":
        assert close(e["input"], float(inp[(0, *e["source"])]))
        return e["input"]
    if rule == "dense":
        a, w = np.array(e["inputs"]), np.array(e["weights"])
        assert np.allclose(a, inp.flatten().double().numpy())
        assert np.allclose(w, getattr(model, e["layer"]).weight[pos[0]].double().numpy())
        total = math.fsum(a * w) + e["bias"]
        listed = math.fsum(t["product"] for t in e["top"]) + e["others"]["sum"] + e["bias"]
        assert close(listed, total) and len(e["top"]) + e["others"]["count"] == a.size
        products = np.abs(a * w)
        assert min(abs(t["product"]) for t in e["top"]) >= np.sort(products)[-len(e["top"])] - 1e-12
        return total
    if rule in ("softmax", "log_softmax"):
        logits = np.array(e["logits"])
        p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert np.allclose(p, e["probabilities"])
        return math.log(p[pos[0]]) if rule == "log_softmax" else p[pos[0]]
    if rule == "residual":
        return max(e["body"] + e["shortcut"], 0.0)
    if rule == "concat":
        block = getattr(model, e["layer"])
        branch = block.branches[e["branch"]](inp)
        assert sum(e["branches"]) == model.shapes[e["layer"]][0]
        return float(branch[(0, e["branch_channel"], *pos[1:])])
    if rule == "dense_block":
        source = e["source"]
        if source["from"] == "input":
            return float(inp[(0, source["channel"], *pos[1:])])
        block, x = getattr(model, e["layer"]), inp
        for i in range(int(source["from"].split()[1])):
            before = x.shape[1]
            x = block[i](x)
        assert x.shape[1] - before > source["channel"]
        return float(x[(0, before + source["channel"], *pos[1:])])
    raise AssertionError(f"no recomputation for rule {rule}")


def units_to_explain(shape, count=6, seed=0):
    """The first and last unit, and a few others, of a layer's output."""
    rng = np.random.default_rng(seed)
    total = math.prod(shape)
    return sorted({0, total - 1, *rng.integers(0, total, count).tolist()})


def check_every_layer(model, x):
    feats = {k: v.detach() for k, v in model.features(x).items()}
    names = list(feats)
    explained = set()
    for at, layer in enumerate(names):
        inp = x if at == 0 else feats[names[at - 1]]
        for index in units_to_explain(model.shapes[layer], seed=at):
            e = explain_unit(model, x, layer, index)
            want = float(feats[layer].flatten()[index])
            assert close(e["value"], want), (layer, index)
            got = recompute(e, model, inp)
            assert close(got, want), (layer, e["rule"], index, got, want)
            for derived in ("pre_activation", "result", "total"):  # what the page shows as the sum
                assert derived not in e or close(e[derived], want), (
                    layer,
                    derived,
                    e[derived],
                    want,
                )
            explained.add(e["rule"])
    logits = model(x)[0]
    for k in range(logits.numel()):
        e = explain_unit(model, x, SOFTMAX, k)
        want = float(torch.softmax(logits, 0)[k])
        assert close(recompute(e, model, logits[None]), want) and close(e["result"], want)
    return explained


@pytest.mark.parametrize("name", ["lenet5", "mnistnet"])
def test_every_layer_of_a_zoo_model_is_recomputed_from_its_numbers(name):
    model = randomised(name)
    rules = check_every_layer(model, the_input(model))
    assert {"conv", "pool", "dense", "relu"} <= rules
    if name == "mnistnet":
        assert {"batchnorm", "identity"} <= rules


def test_every_simple_layer_kind_is_recomputed_from_its_numbers():
    model = randomised(EVERY_SIMPLE_KIND)
    assert isinstance(model.conv2, nn.Sequential)  # the asymmetric 'same' is pad + conv
    rules = check_every_layer(model, the_input(model))
    assert rules == {
        "conv",
        "batchnorm",
        "leaky_relu",
        "lrn",
        "pool",
        "softplus",
        "tanh",
        "relu",
        "channel_pool",
        "sigmoid",
        "identity",
        "softmax",
        "flatten",
        "dense",
        "log_softmax",
    }
    modes = {explain_unit(model, the_input(model), f"pool{i}", 0)["mode"] for i in range(1, 5)}
    assert modes == {"max", "mean", "sum", "stochastic"}


def test_gabor_grouped_adaptive_and_global_max_pools():
    model = randomised(GABOR_AND_GLOBAL)
    assert check_every_layer(model, the_input(model)) >= {"conv", "pool", "dense"}


def test_one_dimensional_layers():
    model = randomised(ONE_D)
    check_every_layer(model, the_input(model))
    e = explain_unit(model, the_input(model), "conv2", (1, 0))
    assert (
        e["window"]["top"] == 0 and e["window"]["left"] == -2 and e["window"]["dilation"] == [1, 2]
    )


def test_blocks_explain_their_arithmetic():
    model = randomised(BLOCKS)
    rules = check_every_layer(model, the_input(model))
    assert {"residual", "concat", "dense_block", "pool"} <= rules
    x = the_input(model)
    e = explain_unit(model, x, "dense_block1", (model.shapes["inception1"][0] + 5, 1, 1))
    assert e["source"] == {"from": "layer 2", "channel": 1}


@pytest.mark.parametrize(
    "layer", ["residual1", "residual3", "inception1", "dense_block1", "transition1"]
)
def test_tracing_a_block_gives_its_output(layer):
    model = randomised(BLOCKS)
    feats = model.features(the_input(model))
    names = list(feats)
    inp = feats[names[names.index(layer) - 1]]
    steps = trace_block(getattr(model, layer), inp)
    assert len(steps) >= 4 and len({name for name, _, _ in steps}) == len(steps)
    assert torch.allclose(steps[-1][2], feats[layer], atol=1e-6)


def test_a_conv_with_many_channels_shows_the_largest_partial_sums():
    spec = {
        "input": [40, 6, 6],
        "classes": 2,
        "layers": [{"type": "conv", "filters": 3, "kernel": 3}, {"type": "dense"}],
    }
    model = randomised(spec)
    e = explain_unit(model, the_input(model), "conv1", (2, 1, 3))
    assert len(e["partials"]) == 40 and len(e["channels"]) == MAX_CHANNELS
    shown = sorted(abs(c["partial"]) for c in e["channels"])
    hidden = [
        abs(p)
        for i, p in enumerate(e["partials"])
        if i not in {c["channel"] for c in e["channels"]}
    ]
    assert shown[0] >= max(hidden)
    assert close(e["pre_activation"], e["value"])


def test_a_unit_of_a_wide_layer_is_a_bounded_answer():
    """512 input channels of 3 x 3, and a dense unit of 25,088 inputs: what comes back is the
    16 largest channels and the 12 largest contributions, not everything."""
    import json

    spec = {
        "input": [512, 9, 9],
        "classes": 3,
        "layers": [{"type": "conv", "filters": 512, "kernel": 3}, {"type": "dense"}],
    }
    model = randomised(spec)
    x = the_input(model)
    conv = explain_unit(model, x, "conv1", (511, 6, 6))
    dense = explain_unit(model, x, "dense1", 2)
    assert len(conv["channels"]) == MAX_CHANNELS and len(conv["partials"]) == 512
    assert dense["inputs"] is None and dense["weights"] is None and len(dense["top"]) == 12
    assert dense["others"]["count"] == 512 * 7 * 7 - 12
    assert len(json.dumps(conv)) < 30_000 and len(json.dumps(dense)) < 5_000
    assert close(conv["pre_activation"], conv["value"]) and close(dense["total"], dense["value"])


# ---------------------------------------------------------------- receptive fields
LINEAR_CHAIN = {
    "name": "linear",
    "input": [2, 23, 21],
    "classes": 2,
    "layers": [
        {
            "type": "conv",
            "filters": 3,
            "kernel": 3,
            "padding": 1,
            "stride": 2,
            "dilation": 2,
            "rounding": "floor",
        },
        {"type": "conv", "filters": 3, "kernel": [2, 4], "padding": "same"},
        {"type": "pool", "mode": "mean", "size": 3, "stride": 2, "padding": 1, "rounding": "floor"},
        {"type": "pool", "mode": "sum", "size": 2, "stride": 1},
        {"type": "adaptive_pool", "size": [2, 3]},
        {"type": "dense"},
    ],
}


def gradient_box(model, x, layer, pos):
    """The bounding box of the input pixels whose gradient for one unit is not zero."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.features(x)[layer][(0, *pos)], x)
    rows, cols = np.nonzero(grad[0].abs().sum(0).numpy())
    return {"top": rows.min(), "bottom": rows.max(), "left": cols.min(), "right": cols.max()}


def test_receptive_fields_are_where_the_gradient_is():
    """Through convolutions (padding, stride, dilation, asymmetric 'same') and average pools,
    with weights that are never zero, the box is exactly the support of the unit's gradient."""
    model = randomised(LINEAR_CHAIN)
    x = the_input(model)
    for layer, shape in model.shapes.items():
        if len(shape) < 3:
            continue
        c, h, w = shape
        for pos in {(0, 0, 0), (c - 1, h - 1, w - 1), (c // 2, h // 2, w // 2), (0, 0, w - 1)}:
            want = {k: int(v) for k, v in gradient_box(model, x, layer, pos).items()}
            assert receptive_field(model, layer, pos) == want, (layer, pos)


def test_receptive_field_of_a_residual_block_and_of_dense_units():
    model = randomised(BLOCKS)
    assert receptive_field(model, "conv1", (0, 5, 5)) == {
        "top": 4,
        "bottom": 6,
        "left": 4,
        "right": 6,
    }
    assert receptive_field(model, "residual1", (0, 5, 5)) == {
        "top": 2,
        "bottom": 8,
        "left": 2,
        "right": 8,
    }
    whole = {"top": 0, "bottom": 15, "left": 0, "right": 15}
    assert explain_unit(model, the_input(model), "dense1", 0)["receptive_field"] == whole


# ---------------------------------------------------------------- the model is only read
def test_explaining_leaves_the_model_as_it_was():
    model = randomised("mnistnet", frozen=False).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for layer in ("conv1", "batchnorm1", "dropout1", "dense2", SOFTMAX):
        explain_unit(model, the_input(model), layer, 0)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_next_activation_is_given():
    model = randomised("lenet5")
    x = the_input(model)
    relu = model.features(x)["relu2"][0]
    values = []
    for xx in range(10):
        e = explain_unit(model, x, "conv2", (3, 2, xx))
        assert e["next"]["layer"] == "relu2" and e["next"]["value"] == float(relu[3, 2, xx])
        values.append(e["value"])
    assert min(values) < 0 < max(values)  # both sides of the relu were seen
    assert explain_unit(model, x, "pool1", 0)["next"] is None


@pytest.mark.parametrize(
    "layer,index,words",
    [
        ("conv9", 0, "no layer 'conv9'; layers: conv1"),
        ("conv1", 6 * 28 * 28, "unit index 4704 is out of range 0..4703"),
        ("conv1", -1, "out of range"),
        ("conv1", (6, 0, 0), "unit channel 6 is out of range 0..5"),
        ("conv1", (0, 0, 28), "unit x 28 is out of range 0..27"),
        ("conv1", (0, 0), "needs 3 numbers"),
        (SOFTMAX, 10, "out of range 0..9"),
        ("conv1", True, "a unit is a flat index or a position, got True"),
    ],
)
def test_a_bad_unit_is_a_one_line_error(layer, index, words):
    model = randomised("lenet5")
    with pytest.raises(CnnlabError, match=None) as err:
        explain_unit(model, the_input(model), layer, index)
    assert words in str(err.value) and "\n" not in str(err.value)
