"""/api/unit, /api/inside and the network view's part of /api/activations, against a real
`cnnlab serve` process: the numbers are the model's own, and every bad request is a one-line
JSON 4xx that leaves the server serving."""

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.checkpoint import load_checkpoint
from cnnlab.inspect.units import SOFTMAX
from cnnlab.serve.app import MAX_UNITS
from cnnlab.train import TrainConfig, train
from tests.serve_helpers import model_input, post_json, running_server, server_log
from tests.test_serve_hostile import exchange, http

CAP = 200_000

BLOCKS_SPEC = """\
name: tiny-blocks
input: [1, 12, 12]
classes: 4
layers:
  - {type: conv, filters: 4, kernel: 3, padding: 1}
  - {type: residual, filters: 4}
  - {type: inception, b1: 2, b3_reduce: 2, b3: 2, b5_reduce: 2, b5: 2, pool_proj: 2}
  - {type: dense_block, layers: 2, growth: 2, bn_size: 2}
  - {type: transition}
  - {type: global_pool}
  - {type: dense}
"""


def trained(root, spec_text):
    from tests.conftest import make_tiny_idx

    (root / "spec.yaml").write_text(spec_text)
    threads = torch.get_num_threads()  # training sets it for the whole process
    train(
        TrainConfig(
            model=str(root / "spec.yaml"),
            data=str(make_tiny_idx(root / "data")),
            epochs=1,
            batch_size=32,
            optimizer="adam",
            lr=0.01,
            augment="none",
            threads=1,
            out=str(root / "run"),
        )
    )
    torch.set_num_threads(threads)
    return root / "run"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.conftest import TINY_SPEC

    run = trained(tmp_path_factory.mktemp("unit-api"), TINY_SPEC)
    with running_server(run, "--max-body", str(CAP)) as (base, proc):
        yield base, proc, load_checkpoint(run)


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    run = trained(tmp_path_factory.mktemp("unit-blocks"), BLOCKS_SPEC)
    with running_server(run) as (base, proc):
        yield base, proc, load_checkpoint(run)


def png(square=1) -> bytes:
    a = np.full((12, 12), 10, np.uint8)
    r, c = divmod(square, 2)
    a[r * 6 + 1 : r * 6 + 5, c * 6 + 1 : c * 6 + 5] = 230
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def url(square=1) -> str:
    return "data:image/png;base64," + base64.b64encode(png(square)).decode()


def features(ckpt, data_url):
    with torch.no_grad():
        return ckpt.model.eval().features(model_input(ckpt, data_url))


@pytest.mark.parametrize(
    "layer,unit",
    [
        ("conv1", {"channel": 2, "y": 0, "x": 9}),
        ("relu1", {"channel": 3, "y": 4, "x": 4}),
        ("pool1", {"channel": 1, "y": 2, "x": 3}),
        ("dense1", {"index": 7}),
        ("relu2", {"index": 15}),
        ("dense2", {"index": 1}),
        (SOFTMAX, {"index": 2}),
    ],
)
def test_a_unit_is_the_models_own_value(tiny, layer, unit):
    base, _, ckpt = tiny
    status, d = post_json(base, "/api/unit", {"image": url(), "layer": layer, **unit})
    assert status == 200, d
    feats = features(ckpt, d["input_image"])
    if layer == SOFTMAX:
        want = torch.softmax(feats["dense2"][0], 0)[unit["index"]]
        assert d["classes"] == ckpt.classes
    else:
        pos = [unit["channel"], unit["y"], unit["x"]] if "channel" in unit else [unit["index"]]
        assert d["position"] == pos
        want = feats[layer][(0, *pos)]
    assert abs(d["value"] - float(want)) <= 1e-5 * max(1, abs(float(want)))
    if layer == "conv1":  # the maps it reads, for the page's outlines
        assert set(d["previous_maps"]) == {"0"} and d["map"].startswith("data:image/png")
        assert abs(sum(d["partials"]) + d["bias"] - d["value"]) < 1e-5
    if layer == "pool1":
        assert set(d["previous_maps"]) == {"1"}


def test_a_unit_is_asked_for_three_ways(tiny):
    base, _, _ = tiny
    from tests.test_serve import multipart

    want = post_json(base, "/api/unit", {"image": url(), "layer": "pool1", "index": 25})[1]
    assert want["position"] == [1, 0, 0]  # index 25 of 4 x 5 x 5 is channel 1, (0, 0)
    body, ctype = multipart(png(), extra={"layer": "pool1", "channel": "1", "y": "0", "x": "0"})
    for request in (
        http("POST", "/api/unit", body, ctype),
        http("POST", "/api/unit?layer=pool1&index=25", png(), "image/png"),
    ):
        status, got = exchange(base, request)
        assert status == 200 and got["value"] == want["value"] and got["position"] == [1, 0, 0]


def test_activations_carry_every_layer_for_the_network_view(tiny):
    base, _, ckpt = tiny
    status, acts = post_json(base, "/api/activations", {"image": url(3)})
    assert status == 200
    feats = features(ckpt, acts["input"])
    assert [l["name"] for l in acts["network"]] == list(feats)
    assert [l["name"] for l in acts["layers"]] == ["conv1", "relu1", "pool1"]  # as before
    for entry in acts["network"]:
        a = feats[entry["name"]][0].numpy()
        assert entry["sparsity"] == pytest.approx(float((a == 0).mean()))
        assert entry["shape"] == list(a.shape)
        if a.ndim == 1:
            assert len(entry["units"]) == min(a.size, MAX_UNITS)
            shown = {u["index"] for u in entry["units"]}
            assert min(abs(a[i]) for i in shown) >= max(
                [abs(a[i]) for i in range(a.size) if i not in shown], default=0
            )
            assert all(u["value"] == pytest.approx(float(a[u["index"]])) for u in entry["units"])
    relu = next(l for l in acts["network"] if l["name"] == "relu1")
    assert 0 < relu["sparsity"] < 1
    probs = acts["output"]["probabilities"]
    assert sum(probs) == pytest.approx(1) and int(np.argmax(probs)) == 3


def test_a_blocks_inside_and_its_units(blocks):
    base, _, ckpt = blocks
    status, inside = post_json(base, "/api/inside", {"image": url(), "layer": "residual1"})
    assert status == 200, inside
    names = [m["name"] for m in inside["modules"]]
    assert (
        names[:2] == ["body.0", "body.1"] and names[-1] == "relu" and inside["count"] == len(names)
    )
    feats = features(ckpt, post_json(base, "/api/activations", {"image": url()})[1]["input"])
    assert inside["modules"][-1]["sparsity"] == pytest.approx(
        float((feats["residual1"] == 0).float().mean())
    )
    for layer, rule in (
        ("residual1", "residual"),
        ("inception1", "concat"),
        ("dense_block1", "dense_block"),
        ("transition1", "pool"),
    ):
        status, d = post_json(
            base, "/api/unit", {"image": url(), "layer": layer, "channel": 1, "y": 1, "x": 1}
        )
        assert status == 200 and d["rule"] == rule, d
        assert abs(d["value"] - float(feats[layer][0, 1, 1, 1])) < 1e-5
    status, err = post_json(base, "/api/inside", {"image": url(), "layer": "dense1"})
    assert (
        status == 400 and "no block 'dense1'; layers with modules inside: residual1" in err["error"]
    )


def test_concurrent_units_give_the_serial_answers(blocks):
    """Requests share one model; explaining a unit or a block's inside must not mix them up."""
    base, _, _ = blocks
    jobs = []
    for i in range(4):
        jobs += [
            ("/api/unit", {"image": url(i), "layer": "inception1", "channel": 5, "y": i, "x": 2}),
            ("/api/inside", {"image": url(i), "layer": "dense_block1"}),
            ("/api/unit", {"image": url(i), "layer": SOFTMAX, "index": i}),
        ]
    serial = [post_json(base, path, body) for path, body in jobs]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda job: post_json(base, *job), jobs * 3))
    assert all(status == 200 for status, _ in serial + concurrent)
    for (_, want), (_, got) in zip(serial * 3, concurrent, strict=True):
        assert json.dumps(want, sort_keys=True) == json.dumps(got, sort_keys=True)


def as_json(**fields) -> bytes:
    return json.dumps({"image": url(), **fields}).encode()


HOSTILE = [
    (
        "no layer",
        http("POST", "/api/unit", as_json(index=0), "application/json"),
        400,
        "no layer ''; layers: conv1",
    ),
    (
        "layer a list",
        http("POST", "/api/unit", as_json(layer=["conv1"]), "application/json"),
        400,
        "must be a string",
    ),
    (
        "layer 100 kB long",
        http("POST", "/api/unit", as_json(layer="x" * 100_000), "application/json"),
        400,
        "no layer 'xxx",
    ),
    (
        "index negative",
        http("POST", "/api/unit", as_json(layer="conv1", index=-1), "application/json"),
        400,
        "'index' must be in 0..399",
    ),
    (
        "index past the layer",
        http("POST", "/api/unit", as_json(layer="conv1", index=400), "application/json"),
        400,
        "'index' must be in 0..399",
    ),
    (
        "index huge",
        http("POST", "/api/unit", as_json(layer="conv1", index=10**30), "application/json"),
        400,
        "must be in 0..399",
    ),
    (
        "index a fraction",
        http("POST", "/api/unit", as_json(layer="dense1", index=1.5), "application/json"),
        400,
        "must be an integer",
    ),
    (
        "index NaN",
        http("POST", "/api/unit", as_json(layer="dense1", index=float("nan")), "application/json"),
        400,
        "finite",
    ),
    (
        "index true",
        http("POST", "/api/unit", as_json(layer="dense1", index=True), "application/json"),
        400,
        "must be an integer",
    ),
    (
        "channel past the layer",
        http("POST", "/api/unit", as_json(layer="pool1", channel=4), "application/json"),
        400,
        "'channel' must be in 0..3",
    ),
    (
        "y past the map",
        http("POST", "/api/unit", as_json(layer="conv1", channel=0, y=10), "application/json"),
        400,
        "'y' must be in 0..9",
    ),
    (
        "x a word",
        http("POST", "/api/unit?layer=conv1&x=left", png(), "image/png"),
        400,
        "'x' must be an integer",
    ),
    (
        "x 5000 digits",
        http("POST", "/api/unit?layer=conv1&x=" + "9" * 5000, png(), "image/png"),
        400,
        "'x' must be an integer",
    ),
    (
        "softmax class past the classes",
        http("POST", "/api/unit", as_json(layer=SOFTMAX, index=4), "application/json"),
        400,
        "'index' must be in 0..3",
    ),
    (
        "no image",
        http("POST", "/api/unit", b'{"layer": "conv1"}', "application/json"),
        400,
        "field 'image'",
    ),
    (
        "not an image",
        http("POST", "/api/unit?layer=conv1", b"plain words", "image/png"),
        400,
        "not an image",
    ),
    (
        "body over the cap",
        http("POST", "/api/unit", b"\x00" * (CAP + 10), "image/png"),
        413,
        "over the limit",
    ),
    (
        "chunked body over the cap",
        http("POST", "/api/inside", b"\x00" * 3 * CAP, "image/png", chunked=True),
        413,
        "over the limit",
    ),
    ("empty body", http("POST", "/api/unit", b"", "application/json"), 400, "empty body"),
    (
        "text body",
        http("POST", "/api/unit", b"conv1", "text/plain"),
        415,
        "unsupported content type",
    ),
    (
        "inside of a plain layer",
        http("POST", "/api/inside", as_json(layer="conv1"), "application/json"),
        400,
        "no block 'conv1'",
    ),
    (
        "inside of nothing",
        http("POST", "/api/inside", as_json(), "application/json"),
        400,
        "no block ''",
    ),
    ("GET the unit", http("GET", "/api/unit"), 405, "Method Not Allowed"),
]


@pytest.mark.parametrize("name,request_bytes,status,words", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_bad_unit_request_is_a_json_4xx_and_the_server_goes_on(
    tiny, name, request_bytes, status, words
):
    base, proc, _ = tiny
    got, body = exchange(base, request_bytes)
    assert (got, list(body)) == (status, ["error"]), body
    assert words in body["error"] and "\n" not in body["error"] and len(body["error"]) <= 200, body
    assert proc.poll() is None
    assert exchange(base, http("GET", "/healthz"))[0] == 200
    log = server_log(proc)
    assert "internal error" not in log and "Traceback" not in log, log
