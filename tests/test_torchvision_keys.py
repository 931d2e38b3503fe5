"""State dicts in torchvision's layout load into the zoo models and compute the same function.

torchvision is not importable beside this project's torch, so the reference models below are
written here from the papers and torchvision's published module names: plain nn.Modules whose
attribute names give torchvision's keys (`layer1.0.downsample.0.weight`, `features.3.weight`,
`features.denseblock1.denselayer1.norm1.weight`, `inception3a.branch2.1.conv.weight`, ...).
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.spec import build, load_spec, retarget
from cnnlab.torchvision_keys import from_torchvision, looks_like_torchvision

INPUT = (3, 64, 64)


# ------------------------------------------------------------------ ResNet (He et al. 2015, v1.5)
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(y + skip)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # stride in the 3x3
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(y + skip)


class ResNet(nn.Module):
    def __init__(self, block, depths: list[int], classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = 64
        for stage, (width, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True), 1):
            blocks = []
            for b in range(depth):
                stride = 2 if stage > 1 and b == 0 else 1
                out = width * block.expansion
                downsample = None
                if stride != 1 or channels != out:
                    downsample = nn.Sequential(
                        nn.Conv2d(channels, out, 1, stride, bias=False), nn.BatchNorm2d(out)
                    )
                blocks.append(block(channels, width, stride, downsample))
                channels = out
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


# ------------------------------------------------------------------ AlexNet and VGG
class FeaturesClassifier(nn.Module):
    def __init__(self, features: list[nn.Module], pooled: int, classifier: list[nn.Module]):
        super().__init__()
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(pooled)
        self.classifier = nn.Sequential(*classifier)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def alexnet(classes: int = 1000) -> nn.Module:
    features = [
        nn.Conv2d(3, 64, 11, 4, 2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
    ]
    classifier = [
        nn.Dropout(),
        nn.Linear(256 * 6 * 6, 4096),
        nn.ReLU(),
        nn.Dropout(),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Linear(4096, classes),
    ]
    return FeaturesClassifier(features, 6, classifier)


VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        "M",
    ],
}


def vgg(config: list, classes: int = 1000) -> nn.Module:
    features, channels = [], 3
    for item in config:
        if item == "M":
            features.append(nn.MaxPool2d(2, 2))
        else:
            features += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
            channels = item
    classifier = [
        nn.Linear(512 * 7 * 7, 4096),
        nn.ReLU(),
        nn.Dropout(),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Dropout(),
        nn.Linear(4096, classes),
    ]
    return FeaturesClassifier(features, 7, classifier)


# ------------------------------------------------------------------ DenseNet (Huang et al. 2016)
class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int = 4):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, earlier: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(earlier, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, cin: int, growth: int):
        super().__init__(
            {f"denselayer{i + 1}": DenseLayer(cin + i * growth, growth) for i in range(layers)}
        )

    def forward(self, x):
        maps = [x]
        for layer in self.values():
            maps.append(layer(maps))
        return torch.cat(maps, 1)


def transition(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            norm=nn.BatchNorm2d(cin),
            relu=nn.ReLU(),
            conv=nn.Conv2d(cin, cout, 1, bias=False),
            pool=nn.AvgPool2d(2, 2),
        )
    )


class DenseNet(nn.Module):
    def __init__(self, classes: int = 1000, blocks=(6, 12, 24, 16), growth: int = 32):
        super().__init__()
        parts = OrderedDict(
            conv0=nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            norm0=nn.BatchNorm2d(64),
            relu0=nn.ReLU(),
            pool0=nn.MaxPool2d(3, 2, 1),
        )
        channels = 64
        for i, layers in enumerate(blocks, 1):
            parts[f"denseblock{i}"] = DenseBlock(layers, channels, growth)
            channels += layers * growth
            if i < len(blocks):
                parts[f"transition{i}"] = transition(channels, channels // 2)
                channels //= 2
        parts[f"norm{len(blocks) + 1}"] = nn.BatchNorm2d(channels)
        self.features = nn.Sequential(parts)
        self.classifier = nn.Linear(channels, classes)

    def forward(self, x):
        x = torch.relu(self.features(x))
        return self.classifier(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


# ------------------------------------------------------------------ GoogLeNet (Szegedy et al. 2014)
class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    def __init__(self, cin, b1, b3_reduce, b3, b5_reduce, b5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(cin, b1, 1)
        self.branch2 = nn.Sequential(
            BasicConv2d(cin, b3_reduce, 1), BasicConv2d(b3_reduce, b3, 3, padding=1)
        )
        # torchvision's weights were trained with a 3x3 in the "5x5" branch
        self.branch3 = nn.Sequential(
            BasicConv2d(cin, b5_reduce, 1), BasicConv2d(b5_reduce, b5, 3, padding=1)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pool_proj, 1)
        )

    def forward(self, x):
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([b(x) for b in branches], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin: int, classes: int):
        super().__init__()
        self.conv = BasicConv2d(cin, 128, 1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, classes)


class GoogLeNet(nn.Module):
    MODULES = {  # paper's table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
        "inception3a": (192, 64, 96, 128, 16, 32, 32),
        "inception3b": (256, 128, 128, 192, 32, 96, 64),
        "inception4a": (480, 192, 96, 208, 16, 48, 64),
        "inception4b": (512, 160, 112, 224, 24, 64, 64),
        "inception4c": (512, 128, 128, 256, 24, 64, 64),
        "inception4d": (512, 112, 144, 288, 32, 64, 64),
        "inception4e": (528, 256, 160, 320, 32, 128, 128),
        "inception5a": (832, 256, 160, 320, 32, 128, 128),
        "inception5b": (832, 384, 192, 384, 48, 128, 128),
    }

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, 7, 2, 3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for name, sizes in self.MODULES.items():
            setattr(self, name, Inception(*sizes))
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.aux1 = InceptionAux(512, classes)  # training-time heads, unused in eval
        self.aux2 = InceptionAux(528, classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            x = getattr(self, name)(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.fc(self.dropout(self.avgpool(x).flatten(1)))


REFERENCES = {
    "alexnet": alexnet,
    "vgg11": lambda classes=1000: vgg(VGG_CONFIGS["vgg11"], classes),
    "vgg16": lambda classes=1000: vgg(VGG_CONFIGS["vgg16"], classes),
    "resnet18": lambda classes=1000: ResNet(BasicBlock, [2, 2, 2, 2], classes),
    "resnet50": lambda classes=1000: ResNet(Bottleneck, [3, 4, 6, 3], classes),
    "resnet152": lambda classes=1000: ResNet(Bottleneck, [3, 8, 36, 3], classes),
    "densenet121": DenseNet,
    "googlenet": GoogLeNet,
}
TORCHVISION_PARAMS = {  # torchvision's published counts (GoogLeNet without its aux heads)
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "googlenet": 6_624_904,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet152": 60_192_808,
    "densenet121": 7_978_856,
}
HEADS = {  # the torchvision keys of each architecture's last layer
    "alexnet": "classifier.6",
    "vgg11": "classifier.6",
    "vgg16": "classifier.6",
    "resnet18": "fc",
    "resnet50": "fc",
    "resnet152": "fc",
    "densenet121": "classifier",
    "googlenet": "fc",
}


# ------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # hundreds of small convolutions: on a shared 2-core machine two threads wait on each
    # other (measured: resnet152 here 27 s with two threads under load, 4 s with one)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@torch.no_grad()
def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Distinct weights and batch-norm statistics everywhere, so a swapped tensor shows."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            # PyTorch's default init (seeded by the caller) has variance 1/(3 fan_in); He's
            # 2/fan_in keeps the signal's scale through deep ReLU stacks such as VGG-16
            module.weight.mul_(6**0.5)
            if module.bias is not None:
                uniform(module.bias, -0.1, 0.1)
        elif isinstance(module, nn.BatchNorm2d):
            uniform(module.weight, 0.5, 1.5)
            uniform(module.bias, -0.2, 0.2)
            uniform(module.running_mean, -0.2, 0.2)
            uniform(module.running_var, 0.5, 2.0)
            module.num_batches_tracked.fill_(int(torch.randint(1, 1000, (), generator=gen)))
    for block in model.modules():
        if isinstance(block, (BasicBlock, Bottleneck)):
            # small last scales, as trained ResNets have: without them the residual sum of
            # resnet152 grows to about 1e8
            last = block.bn3 if isinstance(block, Bottleneck) else block.bn2
            last.weight.mul_(0.2)
    return model.eval()


def cnnlab_spec(name: str, classes: int | None = None) -> dict:
    spec = retarget(load_spec(name)[0], INPUT, classes)
    if name == "alexnet":  # torchvision's AlexNet has no local response normalisation
        spec["layers"] = [layer for layer in spec["layers"] if layer["type"] != "lrn"]
    return spec


def torchvision_state(name: str, classes: int = 1000) -> tuple[nn.Module, dict]:
    torch.manual_seed(1)
    reference = randomise(REFERENCES[name](classes))
    return reference, reference.state_dict()


def assert_same_outputs(model: nn.Module, reference: nn.Module) -> None:
    x = torch.randn(2, *INPUT, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, theirs = model.eval()(x), reference.eval()(x)
    assert theirs.abs().max() > 1e-3  # a dead network would compare equal whatever the mapping
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


def assert_accounted(model, state, result):
    """Every model key filled or reported, every source key used or reported, once each."""
    model_side = [*result.state, *result.missing, *(m.key for m in result.misfit)]
    assert sorted(model_side) == sorted(model.state_dict())
    loaded = {id(t) for t in result.state.values()}
    used = [k for k, v in state.items() if id(v) in loaded]
    assert sorted(used + result.skipped) == sorted(state)


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_torchvision_weights_give_torchvision_outputs(name):
    reference, state = torchvision_state(name)
    model = build(cnnlab_spec(name))
    result = from_torchvision(model, state)
    assert result is not None
    assert result.missing == [] and result.misfit == [] and result.extra_layers == []
    aux = [k for k in state if k.startswith(("aux1.", "aux2."))]
    assert result.unused == aux and (name == "googlenet") == bool(aux)
    assert_accounted(model, state, result)
    model.load_state_dict(result.state, strict=True)
    assert_same_outputs(model, reference)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_the_reference_models_have_torchvision_sizes(name):
    # a check on the references themselves, written here from the papers
    with torch.device("meta"):
        reference = REFERENCES[name]()
    params = reference.named_parameters()
    total = sum(p.numel() for k, p in params if not k.startswith(("aux1.", "aux2.")))
    assert total == TORCHVISION_PARAMS[name]


def test_a_swapped_tensor_changes_the_outputs():
    # the proof above would miss mistakes if it could not tell two same-shaped tensors apart
    reference, state = torchvision_state("resnet18")
    model = build(cnnlab_spec("resnet18"))
    loaded = dict(from_torchvision(model, state).state)
    a, b = "residual1.body.1.running_var", "residual2.body.1.running_var"
    loaded[a], loaded[b] = loaded[b], loaded[a]
    model.load_state_dict(loaded)
    with pytest.raises(AssertionError):
        assert_same_outputs(model, reference)


def test_key_order_of_the_file_does_not_matter():
    _, state = torchvision_state("resnet50")
    model = build(cnnlab_spec("resnet50"))
    forward = from_torchvision(model, state).state
    backward = from_torchvision(model, dict(reversed(state.items()))).state
    assert list(forward) == list(backward) == list(model.state_dict())
    assert all(forward[k] is backward[k] for k in forward)


def test_zoo_alexnet_maps_but_reports_its_lrn_layers():
    reference, state = torchvision_state("alexnet")
    model = build(retarget(load_spec("alexnet")[0], INPUT))
    result = from_torchvision(model, state)
    assert result.missing == [] and result.misfit == [] and result.unused == []
    assert result.extra_layers == ["lrn1", "lrn2"]
    model.load_state_dict(result.state, strict=True)
    with pytest.raises(AssertionError):  # the reason the layers are reported
        assert_same_outputs(model, reference)


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "densenet121", "googlenet"])
def test_a_retargeted_head_is_reported_as_not_fitting(name):
    _, state = torchvision_state(name)
    model = build(cnnlab_spec(name, classes=10))
    result = from_torchvision(model, state)
    head = HEADS[name]
    assert [m.source_key for m in result.misfit] == [f"{head}.weight", f"{head}.bias"]
    weight, bias = result.misfit
    assert weight.expected[0] == bias.expected[0] == 10
    assert weight.found[0] == bias.found[0] == 1000 and weight.found[1:] == weight.expected[1:]
    assert result.missing == []
    assert result.reinitialised == [weight.key, bias.key]
    assert set(result.skipped) == set(result.unused) | {f"{head}.weight", f"{head}.bias"}
    assert_accounted(model, state, result)
    missing, unexpected = model.load_state_dict(result.state, strict=False)
    assert missing == result.reinitialised and unexpected == []


def test_old_densenet_key_names_are_read():
    # torchvision's published densenet121 file says `denselayer1.norm.1.weight`
    _, state = torchvision_state("densenet121")
    old = {}
    for key, value in state.items():
        for part in ("norm.1", "norm.2", "conv.1", "conv.2"):
            new = part.replace(".", "")
            key = key.replace(f".{new}.", f".{part}.") if ".denselayer" in key else key
        old[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    model = build(cnnlab_spec("densenet121"))
    current, renamed = from_torchvision(model, state), from_torchvision(model, old)
    assert renamed.missing == [] and renamed.unused == [] and renamed.misfit == []
    assert all(renamed.state[k] is current.state[k] for k in current.state)


def test_absent_num_batches_tracked_is_filled_with_zero():
    reference, state = torchvision_state("resnet18")
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    model = build(cnnlab_spec("resnet18"))
    result = from_torchvision(model, old)
    assert result.missing == [] and result.unused == []
    model.load_state_dict(result.state, strict=True)
    assert int(model.batchnorm1.num_batches_tracked) == 0
    assert_same_outputs(model, reference)


def test_another_architecture_of_the_family_is_reported_tensor_by_tensor():
    _, state = torchvision_state("resnet50")
    model = build(cnnlab_spec("resnet18"))
    result = from_torchvision(model, state)
    misfit = {m.source_key: m for m in result.misfit}
    assert misfit["layer1.0.conv1.weight"].found == (64, 64, 1, 1)
    assert misfit["layer1.0.conv1.weight"].expected == (64, 64, 3, 3)
    assert "layer1.0.conv3.weight" in result.unused and "layer4.2.bn1.weight" in result.unused
    assert result.state["conv1.weight"] is state["conv1.weight"]
    assert_accounted(model, state, result)


def test_states_not_in_torchvision_layout_give_none():
    _, resnet_state = torchvision_state("resnet18")
    resnet = build(cnnlab_spec("resnet18"))
    assert from_torchvision(resnet, build(cnnlab_spec("resnet18")).state_dict()) is None
    assert from_torchvision(resnet, {}) is None
    assert from_torchvision(resnet, {"weight": torch.zeros(3)}) is None
    assert from_torchvision(build(cnnlab_spec("densenet121")), resnet_state) is None
    assert from_torchvision(build("mnistnet"), resnet_state) is None
    assert looks_like_torchvision(resnet_state) == "resnet"


@pytest.mark.parametrize(
    ("name", "family"),
    [("alexnet", "vgg"), ("vgg11", "vgg"), ("densenet121", "densenet"), ("googlenet", "googlenet")],
)
def test_each_family_is_recognised(name, family):
    with torch.device("meta"):  # the keys are what counts
        state = REFERENCES[name](10).state_dict()
    assert looks_like_torchvision(state) == family


def test_a_value_that_is_not_a_tensor_is_a_one_line_error():
    _, state = torchvision_state("resnet18")
    state = dict(state, **{"layer2.0.downsample.0.weight": [[1.0]]})
    with pytest.raises(CnnlabError) as e:
        from_torchvision(build(cnnlab_spec("resnet18")), state, source="resnet18.pth")
    message = str(e.value)
    assert "\n" not in message
    assert "resnet18.pth" in message and "layer2.0.downsample.0.weight" in message
    assert "residual3.shortcut.0.weight" in message and "list" in message


def test_a_state_that_is_not_a_mapping_is_a_one_line_error():
    with pytest.raises(CnnlabError, match="^resnet18.pth: expected a mapping .* got list$"):
        from_torchvision(build(cnnlab_spec("resnet18")), [1, 2], source="resnet18.pth")


def test_a_model_not_built_by_cnnlab_is_a_one_line_error():
    with pytest.raises(CnnlabError, match="not built by cnnlab"):
        from_torchvision(nn.Linear(2, 2), {"conv1.weight": torch.zeros(1)})
