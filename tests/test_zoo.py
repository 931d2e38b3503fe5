"""Every zoo model builds, runs forward and backward on a small input, and has the right size."""

import pytest
import torch

from cnnlab import zoo
from cnnlab.spec import build, load_spec, retarget
from cnnlab.summary import summarize

# torchvision's published parameter counts for the same architectures
PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "googlenet": 6_624_904,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet152": 60_192_808,
    "densenet121": 7_978_856,
    "resnet20": 269_722,
    "lenet5": 61_706,
    "mnist-1conv": 69_370,
}
SMALL_INPUT = {"nin": 96}


def test_zoo_lists_the_classics():
    assert set(PARAMS) | {"zfnet", "nin", "vgg-cifar", "mnist-fakecnn", zoo.DEFAULT} <= set(
        zoo.names()
    )


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count(name):
    assert sum(p.numel() for p in build(name).parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", zoo.names())
def test_forward_backward_on_a_small_input(name):
    torch.manual_seed(0)
    spec = load_spec(name)[0]
    c, *sides = spec["input"]
    size = min(sides[0], SMALL_INPUT.get(name, 64))
    shape = (c, *[size] * len(sides))  # images (C, H, W), or sequences (C, L) as they are
    shape = tuple(spec["input"]) if len(sides) == 1 else shape
    net = build(retarget(spec, shape, 10))
    x = torch.randn(2, *shape)
    out = net(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_summary_counts_multiply_adds_and_fc_equivalent():
    s = summarize(build("mnist-1conv"))
    conv = s["layers"][0]
    assert conv["output"] == [8, 16, 16]
    assert conv["macs"] == 8 * 16 * 16 * 13 * 13
    assert conv["fc_equivalent"] == 28 * 28 * 8 * 16 * 16
    assert conv["receptive_field"] == 13 and s["layers"][2]["receptive_field"] == 16
    assert s["totals"]["params"] == 69_370
