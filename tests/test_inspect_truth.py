"""Inspection shows what the network computes, and leaves the network as it found it."""

import pytest
import torch

from cnnlab import zoo
from cnnlab.inspect.maps import feature_maps
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
