"""Inspection shows what the network computes, and leaves the network as it found it."""

import pytest
import torch

from cnnlab import zoo
from cnnlab.infer import Normalize
from cnnlab.inspect.attribute import METHODS, attribute
from cnnlab.inspect.deconv import deconv
from cnnlab.inspect.maps import feature_maps, kernels
from cnnlab.inspect.neighbors import embed, neighbors
from cnnlab.inspect.optimize import invert, maximize
from cnnlab.inspect.patches import top_activations
from cnnlab.inspect.saliency import saliency
from cnnlab.inspect.sparsity import sparsity
from cnnlab.spec import build, retarget

# The smallest square input each large zoo model's exact size arithmetic admits; the
# 224x224 models with global pooling take 32x32.
SMALL_SIDE = {"alexnet": 63, "nin": 67, "zfnet": 53}


def small_model(name: str):
    spec = zoo.spec(name)
    channels, *sides = spec["input"]
    if max(sides) > 64:
        side = SMALL_SIDE.get(name, 32)
        spec = retarget(spec, (channels, side, side), 10)
    return build(spec).eval()


def prefix(model, upto: str) -> torch.nn.Sequential:
    names = [name for name, _ in model.named_children()]
    return torch.nn.Sequential(*list(model.children())[: names.index(upto) + 1])


@pytest.mark.parametrize("name", zoo.names())
@torch.no_grad()
def test_every_feature_is_the_output_of_the_nets_prefix(name):
    torch.manual_seed(0)
    model = small_model(name)
    x = torch.randn(1, *model.input_shape)
    feats = model.features(x)
    assert list(feats) == [n for n, _ in model.named_children()]
    for layer, got in feats.items():
        want = prefix(model, layer)(x.clone())
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"{name}: {layer}")
    upto = list(feats)[len(feats) // 2]
    assert list(model.features(x, upto=upto)) == list(feats)[: len(feats) // 2 + 1]


def test_a_conv_map_keeps_its_negative_values():
    model = small_model("lenet5")
    x = torch.randn(1, *model.input_shape, generator=torch.Generator().manual_seed(0))
    conv1 = feature_maps(model, x)["conv1"]
    assert conv1.min() < 0  # the rectified map would be >= 0
    torch.testing.assert_close(torch.from_numpy(conv1), model.conv1(x)[0].detach())


SPEC = {
    "name": "probe",
    "input": [1, 12, 12],
    "classes": 3,
    "layers": [
        {"type": "conv", "filters": 4, "kernel": 3, "padding": "same"},
        {"type": "batchnorm"},
        {"type": "relu"},
        {"type": "pool", "size": 2},
        {"type": "conv", "filters": 6, "kernel": 3, "padding": "same"},
        {"type": "relu"},
        {"type": "dropout", "rate": 0.3},
        {"type": "dense", "units": 8},
        {"type": "relu"},
        {"type": "dense"},
    ],
}
NORM = Normalize([0.5], [0.25])


def _bank():
    return torch.randint(0, 256, (20, 1, 12, 12), generator=torch.Generator().manual_seed(2)).to(
        torch.uint8
    )


INSPECTIONS = {
    "feature_maps": lambda m, x: feature_maps(m, x),
    "kernels": lambda m, x: kernels(m, "conv2"),
    "saliency": lambda m, x: saliency(m, x),
    "smoothgrad": lambda m, x: saliency(m, x, smooth=4),
    "deconv": lambda m, x: deconv(m, x, "pool1"),
    "maximize_layer": lambda m, x: maximize(m, "conv2", 1, steps=4),
    "maximize_class": lambda m, x: maximize(m, cls=2, steps=4),
    "invert": lambda m, x: invert(m, x, "relu1", steps=4),
    "embed": lambda m, x: embed(m, _bank(), NORM),
    "neighbours": lambda m, x: neighbors(m, _bank()[0], _bank(), NORM, k=3),
    "top_activations": lambda m, x: top_activations(m, _bank(), NORM, ["conv1", "relu2"], k=3),
    "sparsity": lambda m, x: sparsity(m, _bank(), NORM),
}
QUICK = {
    "smoothgrad": {"samples": 2},
    "integrated-gradients": {"steps": 4},
    "occlusion": {"window": 6, "stride": 3},
}
for _method in METHODS:  # every attribution method, Grad-CAM on the second convolution
    INSPECTIONS[f"attribute {_method}"] = lambda m, x, method=_method: attribute(
        m, x, method, layer="conv2", **QUICK.get(method, {})
    )


def _state(model):
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "training": {n: m.training for n, m in model.named_modules()},
        # which modules, in-place or not, with which hooks: a method that hooks or converts
        # modules must do so on a copy
        "structure": [
            (
                n,
                type(m),
                getattr(m, "inplace", None),
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._backward_hooks),
                len(m._backward_pre_hooks),
            )
            for n, m in model.named_modules()
        ],
    }


def _changed(a: dict, b: dict) -> list[str]:
    """What differs between two states: parameter/buffer/grad names and module modes."""
    out = [
        f"{key} {n}"
        for key in ("params", "buffers")
        for n in a[key]
        if not torch.equal(a[key][n], b[key][n])
    ]
    for n, g in a["grads"].items():
        h = b["grads"][n]
        if (g is None) != (h is None) or (g is not None and not torch.equal(g, h)):
            out.append(f"grad {n}")
    out += [
        f"mode of {n or 'model'}" for n in a["training"] if a["training"][n] != b["training"][n]
    ]
    if a["structure"] != b["structure"]:
        out.append("modules, their in-place flags or hooks")
    return out


def _probe(mode: str, grads: bool):
    torch.manual_seed(0)
    model = build(SPEC)
    x = NORM(_bank()[:4])
    model.train()
    if grads:  # as a training loop leaves it between steps
        torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    if mode == "eval":
        model.eval()
    elif mode == "mixed":
        model.dropout1.eval()
    return model, x[:1]


@pytest.mark.parametrize("grads", [False, True], ids=["no-grad", "grad"])
@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
@pytest.mark.parametrize("what", INSPECTIONS)
def test_inspection_leaves_the_model_as_it_found_it(what, mode, grads):
    model, x = _probe(mode, grads)
    before = _state(model)
    INSPECTIONS[what](model, x)
    after = _state(model)
    assert _changed(before, after) == []
