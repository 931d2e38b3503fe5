"""The HTTP API and web page for one trained model (Starlette, served by uvicorn).

GET  /                 the page (plain HTML/CSS/JS from the package; works offline)
GET  /healthz          liveness
GET  /api/model        summary, class names, input shape, first-layer kernels
POST /api/predict      image -> top-k probabilities and the prepared input the model saw
POST /api/activations  image -> every spatial layer's feature maps
POST /api/inspect      image + layer + channel -> that channel's kernel and a saliency map

An image arrives as multipart form data (field "image" or "file"), as raw bytes with an
image/* content type, or as JSON {"image": "data:image/png;base64,..."}. Every failure is
JSON {"error": message} with a 4xx status; the server keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

import numpy as np
import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cnnlab.checkpoint import Checkpoint
from cnnlab.data.images import PixelCapError, png_data_url
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import normaliser, prepare_image, top_k
from cnnlab.inspect.maps import conv_layers, feature_maps, kernels, producing_conv
from cnnlab.inspect.saliency import saliency
from cnnlab.summary import summarize

STATIC = Path(__file__).parent / "static"
MAX_BODY = 2 * 1024 * 1024
MAX_PIXELS = 16_000_000
MAX_MAPS = 64  # channels returned per layer


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def png_url(a: np.ndarray, signed: bool = False) -> str:
    """A 2-D array as a grayscale PNG data URL, scaled to its own range (0 at mid-gray if signed)."""
    a = np.asarray(a, dtype=np.float64)
    if signed:
        m = max(np.abs(a).max(), 1e-12)
        img = a / m * 127.5 + 127.5
    else:
        lo, hi = a.min(), a.max()
        img = (a - lo) / max(hi - lo, 1e-12) * 255
    return png_data_url(np.clip(img, 0, 255).astype(np.uint8))


async def read_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise HTTPError(413, f"body of {int(declared)} bytes is over the limit of {cap}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise HTTPError(413, f"body is over the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_data_url(text: object) -> bytes:
    if not isinstance(text, str) or not text:
        raise HTTPError(
            400, "JSON field 'image' must be a data URL string like data:image/png;base64,..."
        )
    _, _, payload = text.partition("base64,") if text.startswith("data:") else ("", "", text)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, "JSON field 'image' is not valid base64") from None


async def image_and_fields(request: Request, cap: int) -> tuple[bytes, dict]:
    """The image bytes and any other fields, from multipart, raw image bytes or JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise HTTPError(413, f"body of {int(declared)} bytes is over the limit of {cap}")
        try:
            form = await request.form(max_files=1, max_fields=20, max_part_size=cap)
        except Exception as e:  # the multipart parser's own error types
            raise HTTPError(400, f"malformed multipart body ({e})") from None
        upload = form.get("image") or form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPError(400, "multipart body needs a file field named 'image'")
        data = await upload.read(cap + 1)
        if len(data) > cap:
            raise HTTPError(413, f"image is over the limit of {cap} bytes")
        return data, {k: v for k, v in form.items() if isinstance(v, str)}
    body = await read_body(request, cap)
    if ctype == "application/json":
        try:
            obj = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPError(400, "malformed JSON body") from None
        if not isinstance(obj, dict):
            raise HTTPError(400, "JSON body must be an object with an 'image' field")
        return decode_data_url(obj.get("image")), obj
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return body, dict(request.query_params)
    raise HTTPError(
        415,
        f"unsupported content type '{ctype or 'none'}'; send multipart/form-data, image/*, or application/json",
    )


class Service:
    """Model work done off the event loop; the model is only read, so requests run concurrently."""

    def __init__(self, ckpt: Checkpoint, max_pixels: int):
        self.ckpt, self.max_pixels = ckpt, max_pixels
        self.model = ckpt.model.eval()
        self.norm = normaliser(ckpt)
        self.summary = summarize(self.model)

    def prepare(self, data: bytes) -> tuple[np.ndarray, torch.Tensor]:
        try:
            prepared = prepare_image(self.ckpt, data, "upload", self.max_pixels)
        except PixelCapError as e:
            raise HTTPError(413, str(e)) from None
        except CnnlabError as e:
            raise HTTPError(400, str(e)) from None
        return prepared, self.norm(torch.from_numpy(prepared)[None])

    def predict(self, data: bytes, k: int) -> dict:
        prepared, _ = self.prepare(data)
        return {
            "top": top_k(self.ckpt, prepared, k),
            "input": png_data_url(prepared),
            "input_shape": list(prepared.shape),
        }

    def activations(self, data: bytes) -> dict:
        prepared, x = self.prepare(data)
        layers = []
        for name, maps in feature_maps(self.model, x).items():
            layers.append({
                "name": name, "kind": self.model.kinds[name], "shape": list(maps.shape),
                "maps": [png_url(m) for m in maps[:MAX_MAPS]],
                "kernel_layer": producing_conv(self.model, name),
            })  # fmt: skip
        return {"input": png_data_url(prepared), "layers": layers}

    def inspect(self, data: bytes, layer: str, channel: int, cls: int | None) -> dict:
        prepared, x = self.prepare(data)
        out: dict = {"layer": layer, "channel": channel}
        if layer not in self.model.shapes:
            raise HTTPError(400, f"no layer '{layer}'")
        conv = producing_conv(self.model, layer)
        if conv is not None:
            w = kernels(self.model, conv)
            if not 0 <= channel < len(w):
                raise HTTPError(
                    400, f"channel {channel} is out of range for '{conv}' (0..{len(w) - 1})"
                )
            out |= {"kernel_layer": conv, "kernel": [png_url(k, signed=True) for k in w[channel][:16]],
                    "kernel_values": np.round(w[channel], 4).tolist() if w[channel].size <= 1024 else None}  # fmt: skip
        sal, used = saliency(self.model, x, cls, smooth=8)
        return out | {
            "saliency": png_url(sal),
            "class": self.ckpt.classes[used],
            "input": png_data_url(prepared),
        }

    def model_info(self) -> dict:
        first = conv_layers(self.model)[:1]
        kern = (
            [
                png_url(k[0] if k.shape[0] == 1 else k.mean(0), signed=True)
                for k in kernels(self.model, first[0])
            ]
            if first
            else []
        )
        return {"name": self.model.spec["name"], "classes": self.ckpt.classes, "input_shape": self.ckpt.meta["input_shape"],
                "preprocess": self.ckpt.meta.get("preprocess"), "summary": self.summary,
                "first_layer": first[0] if first else None, "kernels": kern}  # fmt: skip


def create_app(
    ckpt: Checkpoint, max_body: int = MAX_BODY, max_pixels: int = MAX_PIXELS
) -> Starlette:
    service = Service(ckpt, max_pixels)

    def handler(work):
        async def endpoint(request: Request):
            try:
                return JSONResponse(await work(request))
            except HTTPError as e:
                return JSONResponse({"error": e.message}, status_code=e.status)

        return endpoint

    async def predict(request: Request):
        data, fields = await image_and_fields(request, max_body)
        k = _int_field(fields, "top_k", 3, 1, 1000)
        return await run_in_threadpool(service.predict, data, k)

    async def activations(request: Request):
        data, _ = await image_and_fields(request, max_body)
        return await run_in_threadpool(service.activations, data)

    async def inspect(request: Request):
        data, fields = await image_and_fields(request, max_body)
        layer = str(fields.get("layer", ""))
        cls = fields.get("class")
        cls = (
            None if cls in (None, "") else _int_field(fields, "class", 0, 0, len(ckpt.classes) - 1)
        )
        return await run_in_threadpool(
            service.inspect, data, layer, _int_field(fields, "channel", 0, 0, 1 << 20), cls
        )

    async def model(request: Request):
        return service.model_info()

    async def health(request: Request):
        return JSONResponse({"status": "ok", "model": ckpt.model.spec["name"]})

    async def page(request: Request):
        return FileResponse(STATIC / "index.html")

    routes = [
        Route("/", page),
        Route("/healthz", health),
        Route("/api/model", handler(model)),
        Route("/api/predict", handler(predict), methods=["POST"]),
        Route("/api/activations", handler(activations), methods=["POST"]),
        Route("/api/inspect", handler(inspect), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    return Starlette(routes=routes)


def _int_field(fields: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = fields.get(name, default)
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise HTTPError(400, f"field '{name}' must be an integer, got {value!r}") from None
    if not lo <= value <= hi:
        raise HTTPError(400, f"field '{name}' must be in {lo}..{hi}, got {value}")
    return value
