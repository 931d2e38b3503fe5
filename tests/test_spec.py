import pytest
import torch
import yaml

from cnnlab.errors import CnnlabError
from cnnlab.spec import apply_overrides, build, load_spec, normalise, retarget, to_spec


def _spec(*layers, input=(1, 10, 10), classes=3):
    return {"name": "t", "input": list(input), "classes": classes, "layers": list(layers)}


DENSE = {"type": "dense"}


@pytest.mark.parametrize(
    "spec,message",
    [
        (_spec({"type": "convv"}), r"t: layer 1 \(convv\): unknown layer type; known: .*conv"),
        (_spec({"type": "conv", "kernel": 3}, DENSE), r"layer 1 \(conv\): missing field 'filters'"),
        (
            _spec({"type": "conv", "filters": "8", "kernel": 3}, DENSE),
            r"layer 1 \(conv\): field 'filters': expected an integer",
        ),
        (
            _spec({"type": "conv", "filters": 2, "kernel": 3, "colour": 1}, DENSE),
            r"unknown field 'colour'",
        ),
        (
            _spec({"type": "conv", "filters": 2, "kernel": 3, "stride": 2}, DENSE),
            r"layer 1 \(conv 'conv1'\): height: input 10, kernel 3, padding 0, stride 2 gives \(10-3\+0\)/2\+1 = 4.5, not an integer",
        ),
        (
            _spec({"type": "conv", "filters": 2, "kernel": 11}, DENSE),
            r"kernel 11 is larger than the input 10",
        ),
        (
            _spec(
                {"type": "conv", "filters": 3, "kernel": 3, "groups": 2}, DENSE, input=(4, 10, 10)
            ),
            r"groups 2 must divide both input channels 4 and filters 3",
        ),
        (
            _spec({"type": "channel_pool", "group": 3}, DENSE, input=(4, 10, 10)),
            r"group 3 does not divide the 4 input channels",
        ),
        (
            _spec({"type": "conv", "filters": 2, "kernel": 3}),
            r"last layer outputs shape \(2, 8, 8\) but the spec declares 3 classes",
        ),
        (_spec({"type": "dense"}, {"type": "softmax"}), r"remove the final softmax"),
        (
            _spec({"type": "pool", "size": 3}, DENSE),
            r"pool 'pool1'\): height: input 10, kernel 3, .* = 3.33333",
        ),
        (
            _spec({"type": "dropout", "rate": 1.5}, DENSE),
            r"field 'rate': expected a number in \[0, 1\), got 1.5",
        ),
        ({"input": [1, 2, 2], "layers": [DENSE]}, r"missing top-level field 'classes'"),
        ({**_spec(DENSE), "optimizer": "sgd"}, r"unknown top-level field\(s\) optimizer"),
    ],
)
def test_bad_specs_name_the_layer_and_field(spec, message):
    with pytest.raises(CnnlabError, match=message):
        build(spec)


def test_floor_only_when_asked():
    net = build(
        _spec({"type": "conv", "filters": 2, "kernel": 3, "stride": 2, "rounding": "floor"}, DENSE)
    )
    assert net.shapes["conv1"] == (2, 4, 4)
    ceil = build(_spec({"type": "pool", "size": 3, "rounding": "ceil"}, DENSE))
    assert ceil.shapes["pool1"] == (1, 4, 4)


def test_flatten_sizes_are_inferred():
    net = build(
        _spec(
            {"type": "conv", "filters": 5, "kernel": 3},
            {"type": "pool", "size": 2},
            {"type": "dense", "units": 7},
            DENSE,
        )
    )
    assert net.dense1.in_features == 5 * 4 * 4
    assert net(torch.zeros(2, 1, 10, 10)).shape == (2, 3)


def test_one_dimensional_convolution_for_sequences():
    net = build(
        _spec(
            {"type": "conv", "filters": 4, "kernel": 5, "padding": "same"},
            {"type": "relu"},
            {"type": "pool", "size": 2},
            {"type": "global_pool"},
            DENSE,
            input=(2, 40),
        )
    )
    assert isinstance(net.conv1, torch.nn.Conv1d) and net.shapes["pool1"] == (4, 20)
    assert net(torch.zeros(3, 2, 40)).shape == (3, 3)


def test_round_trip_spec_model_spec():
    raw = _spec(
        {"type": "conv", "filters": 4, "kernel": 3, "padding": "same"},
        {"type": "residual", "filters": 8, "stride": 2, "repeat": 2},
        {"type": "global_pool"},
        DENSE,
    )
    model = build(raw)
    spec = to_spec(model)
    assert spec == normalise(raw)
    again = build(yaml.safe_load(yaml.safe_dump(spec)))
    assert to_spec(again) == spec
    assert [n for n, _ in again.named_children()] == [
        "conv1",
        "residual1",
        "residual2",
        "global_pool1",
        "dense1",
    ]
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())


def test_retarget_reinfers_shapes():
    net = build(retarget(load_spec("resnet18")[0], (3, 64, 64), 7))
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    assert net.shapes["pool1"] == (64, 16, 16)


def test_overrides_by_layer_name():
    spec = apply_overrides(load_spec("mnist-1conv")[0], ["pool1.mode=stochastic", "classes=5"])
    net = build(spec)
    assert type(net.pool1).__name__ == "StochasticPool2d" and net.shapes["dense3"] == (5,)
    with pytest.raises(CnnlabError, match="no layer 'pool9'; layers: conv1, relu1, pool1"):
        apply_overrides(spec, ["pool9.mode=mean"])


def test_features_expose_every_named_output():
    net = build("lenet5")
    feats = net.features(torch.zeros(2, 1, 32, 32))
    assert list(feats) == [n for n, _ in net.named_children()]
    assert {n: tuple(t.shape[1:]) for n, t in feats.items()} == net.shapes
    assert list(net.features(torch.zeros(1, 1, 32, 32), upto="pool1")) == [
        "conv1",
        "relu1",
        "pool1",
    ]


def test_spec_files(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("input: [1, 8, 8]\nclasses: 2\nlayers:\n  - {type: dense}\n")
    assert build(str(path)).spec["name"] == "net"
    path.write_text("input: [1, 8, 8\nclasses: 2\n")
    with pytest.raises(CnnlabError, match=r"net.yaml: not valid YAML at line"):
        build(str(path))
    with pytest.raises(CnnlabError, match="neither a spec file nor a zoo model"):
        build("no-such-model")
