"""What each unit responds to: exact receptive fields, the top images of every channel found
across chunks as by brute force, their crops, the 2-D map of the features, and sparsity."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.infer import Normalize
from cnnlab.inspect import patches
from cnnlab.inspect.patches import channel_patches, crop, montage, top_activations
from cnnlab.inspect.sparsity import sparsity
from cnnlab.spec import build
from cnnlab.summary import Field, receptive_fields

FIELD_SPEC = {
    "name": "fields",
    "input": [1, 12, 12],
    "classes": 2,
    "layers": [
        {"type": "conv", "filters": 2, "kernel": 3, "padding": 1},
        {"type": "pool", "mode": "mean", "size": 2},
        {"type": "conv", "filters": 3, "kernel": 3, "padding": 1},
        {"type": "dense"},
    ],
}


def test_a_receptive_field_computed_by_hand():
    """conv2's unit i sees pool1 units i-1..i+1 (padding 1); pool unit j sees conv1 units
    2j..2j+1; conv1 unit m sees pixels m-1..m+1 (padding 1). So unit i of conv2 sees pixels
    2(i-1)-1 .. 2(i+1)+1+1 = 2i-3 .. 2i+4: 8 pixels, 2 apart, the first 3 of unit 0 in the
    padding above and left of the image."""
    fields = receptive_fields(build(FIELD_SPEC))
    assert fields["conv1"] == Field((3, 3), (1, 1), (-1, -1))
    assert fields["pool1"] == Field((4, 4), (2, 2), (-1, -1))
    assert fields["conv2"] == Field((8, 8), (2, 2), (-3, -3))
    assert fields["dense1"] is None
    image = np.arange(144, dtype=np.float64).reshape(1, 12, 12)
    corner = crop(image, fields["conv2"], (0, 0))  # rows and columns -3..4
    assert corner.shape == (1, 8, 8)
    assert np.isnan(corner[0, :3]).all() and np.isnan(corner[0, :, :3]).all()
    np.testing.assert_array_equal(corner[0, 3:, 3:], image[0, 0:5, 0:5])
    edge = crop(image, fields["conv2"], (4, 5))  # rows 5..12, columns 7..14; the image ends at 11
    np.testing.assert_array_equal(edge[0, :7, :5], image[0, 5:12, 7:12])
    assert np.isnan(edge[0, 7]).all() and np.isnan(edge[0, :, 5:]).all()


SPECS = {
    "padded, strided, dilated": [
        {"type": "conv", "filters": 2, "kernel": 5, "padding": 2, "stride": 2},
        {"type": "pool", "mode": "mean", "size": 3, "stride": 1, "padding": 1},
        {"type": "conv", "filters": 2, "kernel": 3, "dilation": 2},
        {"type": "conv", "filters": 2, "kernel": [3, 1], "padding": "same"},
    ],
    "asymmetric same padding": [
        {"type": "conv", "filters": 2, "kernel": 4, "padding": "same"},
        {"type": "conv", "filters": 2, "kernel": 2, "stride": 2, "padding": "same"},
        {"type": "conv", "filters": 2, "kernel": 3},
    ],
    "blocks": [
        {"type": "conv", "filters": 4, "kernel": 3, "padding": 1},
        {"type": "residual", "filters": 4},
        {"type": "residual", "filters": 8, "stride": 2, "shortcut": "pad"},
        {
            "type": "inception",
            "b1": 2,
            "b3_reduce": 2,
            "b3": 2,
            "b5_reduce": 2,
            "b5": 2,
            "pool_proj": 2,
        },
        {"type": "dense_block", "layers": 2, "growth": 2},
        {"type": "transition"},
    ],
}


def _linear(model: nn.Module) -> nn.Module:
    """The same layers with every rectifier removed: the gradient of a unit then reaches
    every pixel of its field (a ReLU could silence a path; the fields do not change)."""
    twin = copy.deepcopy(model).eval()
    for module in list(twin.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Identity())
    return twin


@pytest.mark.parametrize("name", SPECS)
def test_fields_are_exactly_where_a_unit_gets_its_gradient(name):
    """The pixels a position's units depend on (their gradient's support, in a net without
    ReLUs, all weights positive) span exactly its field, clipped to the image. Over all
    channels: an inception layer's field is the union of its branches'."""
    torch.manual_seed(0)
    spec = {
        "name": "f",
        "input": [1, 23, 21],
        "classes": 2,
        "layers": [*SPECS[name], {"type": "dense"}],
    }
    model = _linear(build(spec))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 0.1)  # positive: no two paths cancel
    fields = receptive_fields(model)
    x = torch.rand(1, 1, 23, 21, dtype=torch.float64)
    model.double()
    for layer, field in fields.items():
        if field is None:
            continue
        _, h, w = model.shapes[layer]
        for unit in {(0, 0), (h - 1, w - 1), (h // 2, w // 3)}:
            inp = x.clone().requires_grad_(True)
            out = model.features(inp, upto=layer)[layer]
            (g,) = torch.autograd.grad(out[0, :, unit[0], unit[1]].sum(), inp)
            rows, cols = np.nonzero(g[0, 0].abs().numpy() > 0)
            (top, bottom), (left, right) = field.span(unit)
            want = (max(top, 0), min(bottom, 23) - 1, max(left, 0), min(right, 21) - 1)
            assert (rows.min(), rows.max(), cols.min(), cols.max()) == want, (layer, unit)


def _bright_spot_data(n=40, side=12, seed=0):
    """Black images, each with one bright pixel of a different value at a random place."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, side, side), np.uint8)
    spots = rng.integers(0, side, size=(n, 2))
    values = rng.permutation(np.arange(100, 100 + 3 * n, 3))[:n]
    for i, ((r, c), v) in enumerate(zip(spots, values, strict=True)):
        images[i, 0, r, c] = v
    return torch.from_numpy(images), spots, values


def test_top_activations_match_brute_force_across_chunks(monkeypatch):
    torch.manual_seed(1)
    model = build(FIELD_SPEC).eval()
    images, _, _ = _bright_spot_data()
    images = images + torch.randint(
        0, 20, images.shape, generator=torch.Generator().manual_seed(3)
    ).to(torch.uint8)
    norm = Normalize([0.1], [0.3])
    monkeypatch.setattr(patches, "CHUNK_BYTES", 7 * 4 * 500)  # a handful of images per chunk
    assert patches.chunk_size(model, "conv2") < 10
    tops = top_activations(model, images, norm, ["conv1", "conv2"], k=5)
    with torch.no_grad():
        feats = model.features(norm(images))
    for layer, top in tops.items():
        act = feats[layer]
        best = act.flatten(2).amax(2)  # (n, channels)
        values, index = best.topk(5, dim=0)
        torch.testing.assert_close(top.values, values.T)
        assert torch.equal(top.images, index.T)
        for c in range(act.shape[1]):
            for j in range(5):
                r, q = top.positions[c, j].tolist()
                torch.testing.assert_close(act[top.images[c, j], c, r, q], top.values[c, j])


def test_a_spot_detector_finds_the_brightest_spots_and_crops_them():
    """One channel that sums its 3x3 field: its top images are those with the brightest
    spots, strongest first, and each crop holds the spot inside its field."""
    model = build(FIELD_SPEC).eval()
    with torch.no_grad():
        model.conv1.weight.fill_(1.0)
        model.conv1.bias.zero_()
    images, spots, values = _bright_spot_data()
    top = top_activations(model, images, Normalize([0.0], [1.0]), ["conv1"], k=4)["conv1"]
    assert top.images[0].tolist() == np.argsort(-values)[:4].tolist()
    for crop_, i in zip(channel_patches(top, images, 0), top.images[0].tolist(), strict=True):
        assert crop_.shape == (1, 3, 3) and np.nanmax(crop_) == values[i]
    tiled = montage(channel_patches(top, images, 0))
    assert tiled.shape == (1, 7, 7) and np.isnan(tiled[0, 3]).all()  # 2x2 crops, NaN between


def test_wrong_layers_are_named():
    model = build(FIELD_SPEC)
    with pytest.raises(CnnlabError, match="no layer 'conv7'; layers: conv1, pool1, conv2, dense1"):
        top_activations(
            model, torch.zeros(2, 1, 12, 12, dtype=torch.uint8), Normalize([0], [1]), ["conv7"]
        )
    with pytest.raises(
        CnnlabError,
        match=r"layer 'dense1' has no spatial maps of its own \(shape \(2,\)\); layers with them: conv1, pool1, conv2",
    ):
        top_activations(
            model, torch.zeros(2, 1, 12, 12, dtype=torch.uint8), Normalize([0], [1]), ["dense1"]
        )


SPARSE_SPEC = {
    "name": "sparse",
    "input": [1, 4, 4],
    "classes": 2,
    "layers": [{"type": "relu"}, {"type": "dense"}, {"type": "relu"}, {"type": "dense"}],
}


def test_sparsity_counts_exact_zeros():
    """Pixels of 0 or 255 normalised to -1 or +1: the relu's zeros are the black pixels."""
    torch.manual_seed(2)
    model = build(SPARSE_SPEC).eval()
    images = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    images.view(10, -1)[:, :6] = 255  # 6 of 16 pixels white: 10/16 zeros after the relu
    zeros = sparsity(model, images, Normalize([0.5], [0.5]))
    assert zeros["relu1"] == pytest.approx(10 / 16)
    hidden = model.features(Normalize([0.5], [0.5])(images))["dense1"]
    assert zeros["relu2"] == pytest.approx(float((hidden <= 0).float().mean()))
    assert zeros["dense1"] == 0.0 and set(zeros) == set(model.shapes)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.conftest import train_tiny

    root = tmp_path_factory.mktemp("units")
    train_tiny(root, epochs=2)
    return root


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line_error(out, message):
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert message in out.stderr, out.stderr


def test_cli_top_patches_writes_a_page_per_layer(tiny_run, tmp_path):
    from PIL import Image

    out = _cli(
        "inspect",
        "top-patches",
        tiny_run / "run",
        "--data",
        tiny_run / "data",
        "--k",
        "4",
        "--layer",
        "conv1",
        "--layer",
        "pool1",
        "--out",
        tmp_path / "tp.png",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(tmp_path / "tp-conv1.png"), str(tmp_path / "tp-pool1.png")]
    for path in out.stdout.split():
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 300
    _one_line_error(
        _cli(
            "inspect",
            "top-patches",
            tiny_run / "run",
            "--data",
            tiny_run / "data",
            "--layer",
            "dense2",
        ),
        "Error: layer 'dense2' has no spatial maps of its own",
    )
    _one_line_error(
        _cli("inspect", "top-patches", tiny_run / "run", "--data", tmp_path / "nowhere"),
        "nowhere",
    )


def test_cli_summary_adds_a_column_of_zeros(tiny_run):
    out = _cli("summary", tiny_run / "run", "--data", tiny_run / "data", "--sample", "50", "--json")
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    zeros = {r["layer"]: r["sparsity"] for r in s["layers"]}
    assert zeros["conv1"] < 0.05 < zeros["relu1"] and s["sparsity_sample"]["images"] == 50
    table = _cli("summary", "lenet5", "--data", tiny_run / "data", "--sample", "20")
    assert table.returncode == 0, table.stderr
    head = table.stdout.splitlines()[1]
    assert head.rstrip().endswith("zeros") and "over 20 images of" in table.stdout
    assert "zeros" not in _cli("summary", "lenet5").stdout
    sequence = tiny_run / "seq.yaml"
    sequence.write_text(
        "name: seq\ninput: [1, 64]\nclasses: 3\nlayers:\n  - {type: conv, filters: 4, kernel: 5}\n  - {type: dense}\n"
    )
    _one_line_error(
        _cli("summary", sequence, "--data", tiny_run / "data"),
        "Error: --data: " + str(sequence) + " takes inputs of shape 1x64, not images (C, H, W)",
    )
