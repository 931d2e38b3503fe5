"""POST /api/attribute on a real server: every method in every body form, the maps of the
library, one-line JSON 400s for every bad choice, and the serial answers under concurrency."""

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.checkpoint import load_checkpoint
from cnnlab.evaluate import normalizer
from cnnlab.inspect.attribute import METHODS, SIGNED, attribute
from cnnlab.serve.app import png_url
from tests.serve_helpers import running_server
from tests.test_serve import call, multipart, png


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tests.conftest import train_tiny

    root = tmp_path_factory.mktemp("attribute")
    train_tiny(root, epochs=2)
    with running_server(root / "run", "--max-body", "200000") as (base, proc):
        yield base, proc, root / "run"


def _url(square=3) -> str:
    return "data:image/png;base64," + base64.b64encode(png(square=square)).decode()


def _pixels(data_url: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as img:
        return np.asarray(img)


def test_model_lists_the_methods(served):
    base, _, _ = served
    status, info = call(base, "/api/model")
    assert status == 200 and info["attribution_methods"] == list(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_answers_with_the_librarys_map(served, method):
    """The served map is the library's for the same prepared input (a 12x12 drawing needs no
    preparation beyond what the server does), drawn the same way."""
    base, _, run = served
    status, out = call(
        base, "/api/attribute", json.dumps({"image": _url(), "method": method}).encode()
    )
    assert status == 200, out
    assert set(out) >= {"method", "class", "map", "methods"} and out["method"] == method
    assert out["methods"] == list(METHODS) and out["class"] == "3"
    ckpt = load_checkpoint(run)
    ckpt.model.requires_grad_(False)
    prepared = np.asarray(Image.open(io.BytesIO(png(square=3))))[None]
    x = normalizer(ckpt)(torch.from_numpy(prepared)[None])
    options = (
        {"baseline": normalizer(ckpt)(torch.zeros(x.shape, dtype=torch.uint8))}
        if method in ("integrated-gradients", "occlusion")
        else {}
    )
    want, cls = attribute(ckpt.model, x, method, **options)
    assert cls == out["class_index"] == 3
    got, expected = (
        _pixels(out["map"]).astype(int),
        _pixels(png_url(want, method in SIGNED)).astype(int),
    )
    assert got.shape == (12, 12) and np.abs(got - expected).max() <= 2  # PNG levels, any CPU


def test_every_body_form_and_the_class_and_layer_fields(served):
    base, _, _ = served
    body, ctype = multipart(
        png(square=1), extra={"method": "gradcam", "class": "2", "layer": "relu1"}
    )
    status, out = call(base, "/api/attribute", body, ctype)
    assert status == 200 and out["class"] == "2" and out["method"] == "gradcam", out
    status, out = call(base, "/api/attribute?method=occlusion&class=0", png(square=1), "image/png")
    assert status == 200 and out["class"] == "0", out
    status, out = call(
        base,
        "/api/attribute",
        json.dumps({"image": _url(0), "method": "saliency", "class": 1, "layer": ""}).encode(),
    )
    assert status == 200 and out["class"] == "1", out


@pytest.mark.parametrize(
    "fields,message",
    [
        ({}, "field 'method' is required: one of saliency, smoothgrad, integrated-gradients"),
        ({"method": "lime"}, "field 'method' must be one of saliency, smoothgrad"),
        ({"method": ["saliency"]}, "field 'method' must be a string"),
        ({"method": "saliency", "class": 4}, "field 'class' must be in 0..3, got 4"),
        ({"method": "saliency", "class": -1}, "field 'class' must be in 0..3, got -1"),
        ({"method": "saliency", "class": "two"}, "field 'class' must be an integer"),
        ({"method": "saliency", "class": 1.5}, "field 'class' must be an integer"),
        (
            {"method": "gradcam", "layer": "conv7"},
            "Grad-CAM: no layer 'conv7'; layers with spatial maps: conv1, relu1, pool1",
        ),
        ({"method": "gradcam", "layer": "dense1"}, "Grad-CAM: no spatial maps in 'dense1'"),
        (
            {"method": "saliency", "layer": "conv7"},
            "Grad-CAM: no layer 'conv7'",
        ),  # refused for any method
        ({"method": "gradcam", "layer": 3}, "field 'layer' must be a string"),
        ({"method": "gradcam", "layer": "x\n" * 20_000}, "Grad-CAM: no layer 'x x x"),
    ],
)
def test_bad_choices_are_one_line_400s(served, fields, message):
    base, proc, _ = served
    status, out = call(base, "/api/attribute", json.dumps({"image": _url(), **fields}).encode())
    assert status == 400 and message in out["error"], out
    assert "\n" not in out["error"] and len(out["error"]) <= 200
    assert proc.poll() is None


def test_concurrent_attribution_gives_the_serial_answers(served):
    base, _, _ = served
    jobs = [
        {"image": _url(i % 4), "method": m}
        for i, m in enumerate(
            ["smoothgrad", "gradcam", "guided-backprop", "integrated-gradients"] * 2
        )
    ]
    ask = lambda job: call(base, "/api/attribute", json.dumps(job).encode())  # noqa: E731
    serial = [ask(job) for job in jobs]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(ask, jobs * 3))
    assert all(status == 200 for status, _ in serial + concurrent)
    for (_, want), (_, got) in zip(serial * 3, concurrent, strict=True):
        assert want == got
