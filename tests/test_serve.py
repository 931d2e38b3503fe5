"""The JSON API against a real uvicorn process on loopback."""

import base64
import io
import json
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.serve_helpers import running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.conftest import train_tiny

    root = tmp_path_factory.mktemp("serve")
    train_tiny(root, epochs=2)
    with running_server(root / "run", "--max-body", "200000", "--max-pixels", "1000000") as (
        base,
        proc,
    ):
        yield base, proc


def png(size=(12, 12), square=3) -> bytes:
    a = np.zeros(size, np.uint8)
    r, c = divmod(square, 2)
    a[r * 6 + 1 : r * 6 + 5, c * 6 + 1 : c * 6 + 5] = 230
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def call(base, path, body=None, ctype="application/json"):
    req = urllib.request.Request(
        base + path, data=body, headers={"Content-Type": ctype} if body is not None else {}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def multipart(data: bytes, field="image", extra=None):
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="x.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
    ]
    for k, v in (extra or {}).items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        )
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_predict_three_ways(server):
    base, _ = server
    url = "data:image/png;base64," + base64.b64encode(png()).decode()
    for body, ctype in [
        (json.dumps({"image": url, "top_k": 2}).encode(), "application/json"),
        (png(), "image/png"),
        multipart(png(), extra={"top_k": "2"}),
    ]:
        if isinstance(ctype, str) and isinstance(body, tuple):
            body, ctype = body
        status, out = call(base, "/api/predict", body, ctype)
        assert status == 200, out
        assert out["top"][0]["class"] == "3" and out["input"].startswith("data:image/png;base64,")
        assert out["input_shape"] == [1, 12, 12]


def test_activations_model_and_inspect(server):
    base, _ = server
    url = "data:image/png;base64," + base64.b64encode(png(square=1)).decode()
    status, out = call(base, "/api/activations", json.dumps({"image": url}).encode())
    assert status == 200 and [l["name"] for l in out["layers"]] == ["conv1", "relu1", "pool1"]
    assert out["layers"][0]["shape"] == [4, 10, 10] and len(out["layers"][0]["maps"]) == 4
    status, info = call(base, "/api/model")
    assert status == 200 and info["classes"] == ["0", "1", "2", "3"] and len(info["kernels"]) == 4
    status, detail = call(
        base, "/api/inspect", json.dumps({"image": url, "layer": "pool1", "channel": 2}).encode()
    )
    assert (
        status == 200 and detail["kernel_layer"] == "conv1" and len(detail["kernel_values"][0]) == 3
    )
    status, err = call(
        base, "/api/inspect", json.dumps({"image": url, "layer": "conv1", "channel": 9}).encode()
    )
    assert status == 400 and "out of range" in err["error"]


@pytest.mark.parametrize(
    "body,ctype,status,message",
    [
        (b"hello", "text/plain", 415, "unsupported content type"),
        (b"{not json", "application/json", 400, "malformed JSON"),
        (
            json.dumps({"image": "data:image/png;base64,@@@"}).encode(),
            "application/json",
            400,
            "not valid base64",
        ),
        (json.dumps({"picture": 1}).encode(), "application/json", 400, "field 'image'"),
        (b"\x89PNG\r\n\x1a\nnot really", "image/png", 400, "corrupt or truncated image"),
        (b"plain words", "image/png", 400, "not an image"),
        (b"\x00" * 300_000, "image/png", 413, "over the limit of 200000"),
    ],
)
def test_bad_requests_are_json_errors(server, body, ctype, status, message):
    base, proc = server
    got, out = call(base, "/api/predict", body, ctype)
    assert got == status and message in out["error"], out
    assert proc.poll() is None


def test_pixel_cap_and_multipart_cap(server):
    base, proc = server
    big = io.BytesIO()
    Image.new("L", (2000, 2000)).save(big, format="PNG")  # small file, 4M pixels
    status, out = call(base, "/api/predict", big.getvalue(), "image/png")
    assert status == 413 and "over the cap of 1000000" in out["error"]
    body, ctype = multipart(b"\x00" * 300_000)
    status, out = call(base, "/api/predict", body, ctype)
    assert status == 413
    assert call(base, "/healthz")[0] == 200


def test_concurrent_requests(server):
    base, _ = server
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda i: call(base, "/api/predict", png(square=i % 4), "image/png"), range(32)
            )
        )
    assert all(status == 200 for status, _ in results)
    assert [out["top"][0]["class"] for _, out in results] == [str(i % 4) for i in range(32)]


def _same_answer(serial: dict, concurrent: dict) -> bool:
    """Equal JSON, probabilities within 1e-6."""
    if "top" in serial:
        pairs = zip(serial["top"], concurrent["top"], strict=True)
        if not all(
            a["class"] == b["class"] and abs(a["probability"] - b["probability"]) <= 1e-6
            for a, b in pairs
        ):
            return False
        serial, concurrent = (
            {k: v for k, v in d.items() if k != "top"} for d in (serial, concurrent)
        )
    return serial == concurrent


def test_concurrent_inspection_gives_the_serial_answers(server):
    base, _ = server
    jobs = []
    for i in range(4):
        url = "data:image/png;base64," + base64.b64encode(png(square=i)).decode()
        jobs += [
            ("/api/predict", {"image": url, "top_k": 4}),
            ("/api/activations", {"image": url}),
            ("/api/inspect", {"image": url, "layer": "pool1", "channel": i}),
        ]
    ask = lambda job: call(base, job[0], json.dumps(job[1]).encode())  # noqa: E731
    serial = [ask(job) for job in jobs]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(ask, jobs * 4))
    assert all(status == 200 for status, _ in serial + concurrent)
    for (_, want), (_, got), (path, _) in zip(serial * 4, concurrent, jobs * 4, strict=True):
        assert _same_answer(want, got), path
