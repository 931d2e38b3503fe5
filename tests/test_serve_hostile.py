"""Hostile requests against a real `cnnlab serve` process, sent as raw HTTP.

Every one must get a JSON 4xx with a one-line "error" (never the catch-all's 500), leave the
server serving, and leave nothing in its log but the start-up line.
"""

import base64
import contextlib
import io
import json
import random
import resource
import socket
import struct
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from cnnlab.serve.limits import MAX_BODY, MAX_PIXELS
from tests.serve_helpers import big_uploads, peak_rss_mb, running_server, server_log

CAP = 200_000  # --max-body of the server under test
PIXELS = 1_000_000  # --max-pixels


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.conftest import train_tiny

    root = tmp_path_factory.mktemp("hostile")
    train_tiny(root, epochs=1)
    return root / "run"


@pytest.fixture(scope="module")
def server(run):
    with running_server(run, "--max-body", str(CAP), "--max-pixels", str(PIXELS)) as found:
        yield found


def exchange(base: str, request: bytes, stop_after: int | None = None) -> tuple[int, dict]:
    """Send raw bytes (or only their first `stop_after`, keeping the connection open) and read
    the response. A server that answers before the body ends may reset the connection; the
    answer has arrived by then."""
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        with contextlib.suppress(OSError):
            s.sendall(request if stop_after is None else request[:stop_after])
        raw = b""
        try:
            while chunk := s.recv(1 << 16):
                raw += chunk
                if b"\r\n\r\n" in raw:
                    head, _, rest = raw.partition(b"\r\n\r\n")
                    length = [
                        int(line.split(b":")[1])
                        for line in head.lower().split(b"\r\n")
                        if line.startswith(b"content-length:")
                    ]
                    if length and len(rest) >= length[0]:
                        break
        except OSError:
            pass
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), raw[:200]
    return int(head.split()[1]), json.loads(body)


def http(
    method: str,
    path: str,
    body: bytes = b"",
    ctype: str | None = None,
    chunked: bool = False,
    headers: dict | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if ctype is not None:
        lines.append(f"Content-Type: {ctype}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        piece = 1 << 15
        body = (
            b"".join(
                f"{len(body[i : i + piece]):x}\r\n".encode() + body[i : i + piece] + b"\r\n"
                for i in range(0, len(body), piece)
            )
            + b"0\r\n\r\n"
        )
    elif method == "POST" and "Content-Length" not in (headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def png(size=(12, 12), mode="L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 255).save(buf, format="PNG")
    return buf.getvalue()


def image_bytes(fmt: str, size=(12, 12), mode="L") -> bytes:
    buf = io.BytesIO()
    options = {"compression": "tiff_adobe_deflate"} if fmt == "TIFF" else {}
    Image.new(mode, size, 128).save(buf, format=fmt, **options)
    return buf.getvalue()


def nan_tiff() -> bytes:
    a = np.full((12, 12), 0.5, np.float32)
    a[3, 3] = np.nan
    buf = io.BytesIO()
    Image.fromarray(a, "F").save(buf, format="TIFF")
    return buf.getvalue()


NAN_TIFF = nan_tiff()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def as_json(**fields) -> bytes:
    return json.dumps({"image": data_url(png()), **fields}).encode()


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str | None = None):
    boundary = boundary or uuid.uuid4().hex
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
            + (f'; filename="{filename}"\r\nContent-Type: image/png' if filename else "").encode()
            + b"\r\n\r\n"
            + data
            + b"\r\n"
            for name, filename, data in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def text_bomb_png(size: int) -> bytes:
    """A 28x28 PNG of about `size` bytes, all zTXt chunks that inflate to 1 MB each."""
    base = png((28, 28))
    packed = zlib.compress(b"a" * (1 << 20), 9)

    def chunk(i: int) -> bytes:
        payload = b"zTXt" + b"k%d\x00\x00" % i + packed
        return (
            struct.pack(">I", len(payload) - 4) + payload + struct.pack(">I", zlib.crc32(payload))
        )

    return base[:33] + b"".join(chunk(i) for i in range(size // (len(packed) + 20))) + base[33:]


JPEG = image_bytes("JPEG")
NOISE_PNG = io.BytesIO()
Image.frombytes("L", (64, 64), random.Random(0).randbytes(4096)).save(NOISE_PNG, format="PNG")
BIG_PNG = png((2000, 2000))  # small file, 4M pixels
FILE_PART = multipart([("image", "x.png", b"\x00" * (CAP + 1000))])
TWO_FILES = multipart([("image", "a.png", png()), ("file", "b.png", png())])
NOT_A_FILE = multipart([("image", None, png())])

# (name, request, status, words the error must contain)
HOSTILE = [
    (
        "chunked raw body over the cap",
        http("POST", "/api/predict", b"\x00" * 3 * CAP, "image/png", chunked=True),
        413,
        "over the limit",
    ),
    (
        "chunked multipart over the cap",
        http("POST", "/api/predict", FILE_PART[0], FILE_PART[1], chunked=True),
        413,
        "over the limit",
    ),
    ("multipart over the cap", http("POST", "/api/predict", *FILE_PART), 413, "over the limit"),
    (
        "declared length over the cap",
        http("POST", "/api/predict", b"", "image/png", headers={"Content-Length": "99999999999"}),
        413,
        "over the limit",
    ),
    (
        "JSON NaN for top_k",
        http("POST", "/api/predict", as_json(top_k=float("nan")), "application/json"),
        400,
        "finite",
    ),
    (
        "JSON Infinity for channel",
        http(
            "POST", "/api/inspect", as_json(layer="conv1", channel=float("inf")), "application/json"
        ),
        400,
        "finite",
    ),
    (
        "JSON -Infinity for class",
        http(
            "POST",
            "/api/inspect",
            as_json(layer="conv1").replace(b"{", b'{"class": -Infinity, ', 1),
            "application/json",
        ),
        400,
        "finite",
    ),
    (
        "JSON 1e999 for top_k",
        http(
            "POST",
            "/api/predict",
            as_json().replace(b"{", b'{"top_k": 1e999, ', 1),
            "application/json",
        ),
        400,
        "finite",
    ),
    (
        "JSON 100k nested lists",
        http("POST", "/api/predict", b"[" * 100_000 + b"]" * 100_000, "application/json"),
        400,
        "nested too deeply",
    ),
    (
        "JSON 30k nested objects",
        http("POST", "/api/predict", b'{"a":' * 30_000 + b"1" + b"}" * 30_000, "application/json"),
        400,
        "nested too deeply",
    ),
    (
        "JSON list",
        http("POST", "/api/predict", b"[1, 2]", "application/json"),
        400,
        "must be an object",
    ),
    (
        "JSON string",
        http("POST", "/api/predict", b'"data:image/png;base64,"', "application/json"),
        400,
        "must be an object",
    ),
    (
        "JSON null",
        http("POST", "/api/predict", b"null", "application/json"),
        400,
        "must be an object",
    ),
    (
        "JSON not UTF-8",
        http("POST", "/api/predict", b'{"image": "\xff\xfe\xfa"}', "application/json"),
        400,
        "malformed JSON",
    ),
    (
        "JSON truncated",
        http("POST", "/api/predict", as_json()[:-5], "application/json"),
        400,
        "malformed JSON",
    ),
    (
        "JSON 5000-digit integer",
        http(
            "POST",
            "/api/predict",
            as_json().replace(b"{", b'{"top_k": ' + b"9" * 5000 + b", ", 1),
            "application/json",
        ),
        400,
        "malformed JSON",
    ),
    (
        "image is a number",
        http("POST", "/api/predict", b'{"image": 5}', "application/json"),
        400,
        "field 'image'",
    ),
    (
        "image is a list",
        http("POST", "/api/predict", b'{"image": ["data:"]}', "application/json"),
        400,
        "field 'image'",
    ),
    (
        "image is not base64",
        http("POST", "/api/predict", b'{"image": "data:image/png;base64,@@@"}', "application/json"),
        400,
        "not valid base64",
    ),
    (
        "top_k a fraction",
        http("POST", "/api/predict", as_json(top_k=2.5), "application/json"),
        400,
        "must be an integer",
    ),
    (
        "top_k true",
        http("POST", "/api/predict", as_json(top_k=True), "application/json"),
        400,
        "must be an integer",
    ),
    (
        "top_k an object",
        http("POST", "/api/predict", as_json(top_k={"a": 1}), "application/json"),
        400,
        "must be an integer",
    ),
    (
        "top_k huge",
        http("POST", "/api/predict", as_json(top_k=10**30), "application/json"),
        400,
        "must be in 1..1000",
    ),
    (
        "top_k huge in the query",
        http("POST", "/api/predict?top_k=" + "9" * 5000, png(), "image/png"),
        400,
        "must be an integer",
    ),
    (
        "top_k zero",
        http("POST", "/api/predict", as_json(top_k=0), "application/json"),
        400,
        "must be in 1..1000",
    ),
    (
        "layer a list",
        http("POST", "/api/inspect", as_json(layer=["conv1"]), "application/json"),
        400,
        "must be a string",
    ),
    (
        "layer that does not exist",
        http("POST", "/api/inspect", as_json(layer="conv9"), "application/json"),
        400,
        "no layer 'conv9'; layers: conv1",
    ),
    (
        "layer 100 kB long",
        http("POST", "/api/inspect", as_json(layer="x" * 100_000), "application/json"),
        400,
        "no layer",
    ),
    (
        "channel negative",
        http("POST", "/api/inspect", as_json(layer="conv1", channel=-1), "application/json"),
        400,
        "must be in 0..",
    ),
    (
        "channel past the layer",
        http("POST", "/api/inspect", as_json(layer="pool1", channel=4), "application/json"),
        400,
        "out of range for 'pool1'",
    ),
    (
        "class a word",
        http(
            "POST", "/api/inspect", as_json(layer="conv1", **{"class": "seven"}), "application/json"
        ),
        400,
        "must be an integer",
    ),
    (
        "class out of range",
        http("POST", "/api/inspect", as_json(layer="conv1", **{"class": 99}), "application/json"),
        400,
        "must be in 0..3",
    ),
    ("empty raw body", http("POST", "/api/predict", b"", "image/png"), 400, "empty body"),
    (
        "empty JSON body",
        http("POST", "/api/activations", b"", "application/json"),
        400,
        "empty body",
    ),
    (
        "empty multipart body",
        http("POST", "/api/predict", b"", "multipart/form-data; boundary=x"),
        400,
        "empty body",
    ),
    ("no content type", http("POST", "/api/predict", png()), 415, "unsupported content type"),
    (
        "text body",
        http("POST", "/api/predict", b"hello", "text/plain"),
        415,
        "unsupported content type",
    ),
    (
        "multipart without boundary",
        http("POST", "/api/predict", FILE_PART[0][:500], "multipart/form-data"),
        400,
        "malformed multipart",
    ),
    (
        "multipart with two files",
        http("POST", "/api/predict", *TWO_FILES),
        400,
        "malformed multipart",
    ),
    (
        "multipart image as a text field",
        http("POST", "/api/predict", *NOT_A_FILE),
        400,
        "file field named 'image'",
    ),
    (
        "multipart cut short",
        http("POST", "/api/predict", TWO_FILES[0][:60], TWO_FILES[1]),
        400,
        "'image'",
    ),
    (
        "words as an image",
        http("POST", "/api/predict", b"plain words", "image/png"),
        400,
        "not an image",
    ),
    (
        "PNG signature then junk",
        http("POST", "/api/predict", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "image/png"),
        400,
        "not an image",
    ),
    (
        "truncated PNG",
        http("POST", "/api/predict", NOISE_PNG.getvalue()[:2000], "image/png"),
        400,
        "corrupt or truncated",
    ),
    (
        "truncated JPEG",
        http("POST", "/api/predict", JPEG[: len(JPEG) // 2], "image/jpeg"),
        400,
        "corrupt or truncated",
    ),
    (
        "GIF header only",
        http("POST", "/api/predict", image_bytes("GIF")[:13], "image/gif"),
        400,
        "image",
    ),
    (
        "float TIFF with a NaN pixel",
        http("POST", "/api/predict", NAN_TIFF, "image/tiff"),
        400,
        "NaN or infinity",
    ),
    (
        "16-bit TIFF over its share of the cap",
        http("POST", "/api/predict", image_bytes("TIFF", (600, 600), "I;16"), "image/tiff"),
        413,
        "for I;16 pixels",
    ),
    (
        "ICO (not accepted)",
        http("POST", "/api/predict", image_bytes("ICO", (16, 16)), "image/x-icon"),
        400,
        "accepted format",
    ),
    (
        "pixel bomb PNG",
        http("POST", "/api/predict", BIG_PNG, "image/png"),
        413,
        "over the cap of 1000000",
    ),
    (
        "WebP over its share of the cap",
        http("POST", "/api/predict", image_bytes("WEBP", (600, 600)), "image/webp"),
        413,
        "over the cap of 250000 for WebP",
    ),
    (
        "zTXt text bomb PNG",
        http("POST", "/api/predict", text_bomb_png(CAP - 1000), "application/octet-stream"),
        400,
        "corrupt or truncated",
    ),
    ("unknown route", http("GET", "/nope"), 404, "Not Found"),
    ("unknown static file", http("GET", "/static/nope.js"), 404, "Not Found"),
    ("GET on a POST route", http("GET", "/api/predict"), 405, "Method Not Allowed"),
    ("DELETE on the model", http("DELETE", "/api/model"), 405, "Method Not Allowed"),
]


@pytest.mark.parametrize("name,request_bytes,status,words", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_request_is_a_json_4xx_and_the_server_goes_on(
    server, name, request_bytes, status, words
):
    base, proc = server
    got, body = exchange(base, request_bytes)
    assert (got, list(body)) == (status, ["error"]), body
    assert words in body["error"] and "\n" not in body["error"], body
    assert proc.poll() is None
    assert exchange(base, http("GET", "/healthz"))[0] == 200
    log = server_log(proc)
    assert "internal error" not in log and "Traceback" not in log, log


def test_multipart_is_refused_at_the_cap_while_it_still_arrives(server):
    """The server answers once the cap is passed, without waiting for the rest of the body."""
    base, _ = server
    body, ctype = multipart([("image", "x.png", b"\x00" * (50 * CAP))])
    request = http("POST", "/api/predict", body, ctype, chunked=True)
    got, out = exchange(base, request, stop_after=3 * CAP)  # the rest never comes
    assert got == 413 and "over the limit" in out["error"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM"])
def test_every_accepted_format_is_predicted(server, fmt):
    base, _ = server
    status, out = exchange(
        base, http("POST", "/api/predict", image_bytes(fmt, (40, 30), "RGB"), "image/x")
    )
    assert status == 200 and out["input_shape"] == [1, 12, 12], out


def test_a_16_bit_upload_is_scaled_not_clipped(server):
    """The same picture at 8 and at 16 bits is seen alike: 16-bit values are scaled to 8."""
    base, _ = server
    gray = np.zeros((12, 12), np.uint8)
    gray[7:11, 7:11] = 200
    eight, sixteen = io.BytesIO(), io.BytesIO()
    Image.fromarray(gray).save(eight, format="PNG")
    Image.fromarray(gray.astype(np.uint16) * 257).save(sixteen, format="TIFF")
    answers = [
        exchange(base, http("POST", "/api/predict", b.getvalue(), "image/x"))[1]
        for b in (eight, sixteen)
    ]
    assert answers[0]["input"] == answers[1]["input"] and answers[0]["top"] == answers[1]["top"]


def _seen(out: dict):
    import numpy as np

    raw = base64.b64decode(out["input"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)), dtype=np.int16)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_a_large_upload_shrunk_early_is_seen_as_at_full_size(server, run, fmt):
    """A 960x960 picture is shrunk by 2 in uint8 (JPEG while decoding) before it is fitted to
    the model: the input the model sees is what fitting the full-size picture gives."""
    import numpy as np

    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.data.prepare import for_model

    small = np.full((12, 12), 20, np.uint8)
    small[7:11, 7:11] = 230  # class 3: a bright square in the lower right quadrant
    buf = io.BytesIO()
    Image.fromarray(small).resize((960, 960), Image.Resampling.NEAREST).save(buf, format=fmt)
    meta = load_checkpoint(run).meta
    full = for_model(
        Image.open(io.BytesIO(buf.getvalue())),
        meta.get("preprocess", "resize"),
        tuple(meta["input_shape"]),
    )[0].astype(np.int16)
    status, out = exchange(server[0], http("POST", "/api/predict", buf.getvalue(), "image/x"))
    assert status == 200 and out["top"][0]["class"] == "3"
    assert np.abs(_seen(out) - full).max() <= 2, (_seen(out), full)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_large_photo_of_a_digit_is_prepared_as_at_full_size(fmt):
    """MNIST's recipe (crop the ink, fit it in 20x20, centre its mass) on the early-shrunk
    upload gives the 28x28 that it gives on the full-size picture, up to the strokes' edges."""
    import numpy as np
    from PIL import ImageDraw

    from cnnlab.data.prepare import for_model
    from cnnlab.serve.app import open_upload

    img = Image.new("L", (1500, 1500), 240)
    ImageDraw.Draw(img).line([(520, 300), (1050, 300), (700, 1270)], fill=20, width=60)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    full = for_model(Image.open(io.BytesIO(buf.getvalue())), "mnist-digit", (1, 28, 28))
    shrunk = for_model(
        open_upload(buf.getvalue(), MAX_PIXELS, 512, "L"), "mnist-digit", (1, 28, 28)
    )
    diff = np.abs(full.astype(int) - shrunk.astype(int))
    assert diff.mean() < 1 and diff.max() <= 32, diff


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
def test_a_client_that_leaves_mid_body_is_no_internal_error(server, chunked):
    base, proc = server
    request = http("POST", "/api/predict", b"\x00" * 100_000, "image/png", chunked=chunked)
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as s:
        s.sendall(request[:5000])
    assert exchange(base, http("GET", "/healthz"))[0] == 200
    assert exchange(base, http("GET", "/healthz"))[0] == 200  # the abandoned request is done by now
    log = server_log(proc)
    assert "internal error" not in log and "Traceback" not in log, log


def test_the_catch_all_turns_a_bug_into_one_json_line(run, monkeypatch, caplog):
    import asyncio

    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.serve import app as serve_app

    def broken(self, data, k):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(serve_app.Service, "predict", broken)
    app = serve_app.create_app(load_checkpoint(run))
    sent = []

    async def receive():
        return {"type": "http.request", "body": png(), "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/predict",
        "raw_path": b"/api/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"image/png")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 500
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body == {"error": "internal error (RuntimeError); the server keeps serving"}
    assert [r.getMessage() for r in caplog.records] == [
        "internal error on POST /api/predict: RuntimeError: a bug over two lines"
    ]


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def test_peak_memory_of_eight_concurrent_worst_case_uploads_is_bounded(run):
    uploads = big_uploads(MAX_PIXELS)
    assert all(len(body) <= MAX_BODY for body, _ in uploads.values())
    with running_server(run, preexec_fn=_limit_memory) as (base, proc):
        for name, (body, ctype) in uploads.items():
            requests = [http("POST", "/api/predict", body, ctype)] * 8
            with ThreadPoolExecutor(8) as pool:
                statuses = [s for s, _ in pool.map(lambda r: exchange(base, r), requests)]
            assert statuses == [200] * 8, name
        peak = peak_rss_mb(proc.pid)
        assert exchange(base, http("GET", "/healthz"))[0] == 200
    print(f"peak RSS of the server under 8 concurrent worst-case uploads: {peak:.0f} MB")
    assert peak < 1000
