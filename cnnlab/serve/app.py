"""The HTTP API and web page for one trained model (Starlette, served by uvicorn).

GET  /                 the page (plain HTML/CSS/JS from the package; works offline)
GET  /healthz          liveness
GET  /api/model        summary, class names, input shape, first-layer kernels
POST /api/predict      image -> top-k probabilities and the prepared input the model saw
POST /api/activations  image -> every spatial layer's feature maps ("layers"), and every layer
                       in order with its sparsity and strongest units ("network")
POST /api/inspect      image + layer + channel -> that channel's kernel and a saliency map
POST /api/unit         image + layer + unit (index, or channel/y/x) -> the numbers that make
                       that unit's value (cnnlab.inspect.units), with the maps it reads
POST /api/inside       image + block layer -> the outputs of the modules inside the block
POST /api/attribute    image + method (+ class, + layer for gradcam) -> that method's map

An image arrives as multipart form data (field "image" or "file"), as raw bytes with an
image/* content type, or as JSON {"image": "data:image/png;base64,..."}. Every failure is
JSON {"error": one line} with a 4xx status, and a bug a JSON 500; the server keeps serving.

Hostile uploads meet the caps of cnnlab.serve.limits: the body is counted as it arrives
(chunked or not) and multipart is parsed from that capped body in memory; an image's pixels
are checked from its header, only PNG, JPEG, GIF, BMP and WebP are decoded, in uint8, and
shrunk to a few hundred pixels a side before any float work; WORKERS requests decode at once.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import re
import struct
import warnings
from pathlib import Path

import anyio
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cnnlab.checkpoint import Checkpoint
from cnnlab.data.images import FORMATS, KEPT_MODES, SIXTEEN_BIT, eight_bit, png_data_url
from cnnlab.errors import CnnlabError
from cnnlab.infer.evaluate import fit_picture, normalizer, top_k
from cnnlab.inspect.attribute import METHODS, SIGNED, attribute, check_gradcam_layer
from cnnlab.inspect.maps import conv_layers, evaluating, kernels, producing_conv
from cnnlab.inspect.saliency import saliency
from cnnlab.inspect.units import SOFTMAX, explain_unit, trace_block
from cnnlab.serve.limits import (
    MAX_BODY,
    MAX_PIXELS,
    WEBP_COST,
    WORK_SCALE,
    WORK_SIDE,
    WORKERS,
)
from cnnlab.summary import summarize

STATIC = Path(__file__).parent / "static"
MAX_MAPS = 64  # channels returned per layer
MAX_UNITS = 32  # units of a layer without maps returned for the network view (the strongest)
MAX_INSIDE = 48  # inner modules of a block returned by /api/inside
INSIDE_MAPS = 8  # channels returned per inner module
BLOCKS = ("residual", "inception", "dense_block", "transition")
STRIP_PIXELS = 1 << 20  # uploads are converted and shrunk this many pixels at a time
log = logging.getLogger("uvicorn.error")


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def one_line(text: object, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_rows(a: np.ndarray) -> np.ndarray:
    """A map to draw: (H, W) as it is, a 1-D map (L,) as one row."""
    return a[None] if a.ndim == 1 else a


def strongest(a: np.ndarray, count: int) -> list[dict]:
    """The `count` units of largest magnitude, in index order: [{"index", "value"}]."""
    keep = np.sort(np.argsort(-np.abs(a), kind="stable")[:count])
    return [{"index": int(i), "value": float(a[i])} for i in keep]


def png_url(a: np.ndarray, signed: bool = False) -> str:
    """A 2-D array as a grayscale PNG data URL, scaled to its own range (0 at mid-gray if
    signed)."""
    a = np.asarray(a, dtype=np.float64)
    if signed:
        m = max(np.abs(a).max(), 1e-12)
        img = a / m * 127.5 + 127.5
    else:
        lo, hi = a.min(), a.max()
        img = (a - lo) / max(hi - lo, 1e-12) * 255
    return png_data_url(np.clip(img, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------- reading a request
async def read_body(request: Request, cap: int) -> bytes:
    """The body, counted as it arrives (chunked bodies declare no length): 413 past the cap."""
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


def _refuse_constant(name: str):
    raise HTTPError(400, f"JSON numbers must be finite, got {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise HTTPError(400, f"JSON numbers must be finite, got {one_line(text, 40)}")
    return value


def parse_json(body: bytes) -> dict:
    try:
        obj = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise HTTPError(400, "JSON body is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, undecodable text, over-long integers
        raise HTTPError(400, f"malformed JSON body ({one_line(e, 80)})") from None
    if not isinstance(obj, dict):
        raise HTTPError(400, "JSON body must be an object with an 'image' field")
    return obj


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


async def parse_multipart(request: Request, body: bytes, cap: int) -> tuple[bytes, dict]:
    """Parse a body already read under the cap; every part stays in memory (none is spooled)."""

    async def stream():
        yield body

    parser = MultiPartParser(
        request.headers, stream(), max_files=1, max_fields=20, max_part_size=cap
    )
    parser.spool_max_size = cap + 1  # the whole body is at most cap: never rolls over to disk
    try:
        form = await parser.parse()
    except (MultiPartException, KeyError, ValueError) as e:
        raise HTTPError(400, f"malformed multipart body ({one_line(e, 80)})") from None
    try:
        upload = form.get("image") or form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPError(400, "multipart body needs a file field named 'image'")
        data = await upload.read()
        return data, {k: v for k, v in form.multi_items() if isinstance(v, str)}
    finally:
        await form.close()


async def image_and_fields(request: Request, cap: int) -> tuple[bytes, dict]:
    """The image bytes and any other fields, from multipart, raw image bytes or JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (
        ctype in ("multipart/form-data", "application/json", "application/octet-stream")
        or ctype.startswith("image/")
    ):
        raise HTTPError(
            415,
            f"unsupported content type '{one_line(ctype, 60) or 'none'}'; "
            "send multipart/form-data, image/*, or application/json",
        )
    body = await read_body(request, cap)
    if not body:
        raise HTTPError(400, "empty body: send an image")
    if ctype == "multipart/form-data":
        return await parse_multipart(request, body, cap)
    if ctype == "application/json":
        obj = parse_json(body)
        return decode_data_url(obj.get("image")), obj
    return body, dict(request.query_params)


def int_field(fields: dict, name: str, default: int, lo: int, hi: int) -> int:
    """An integer from JSON (a number) or a form/query (decimal digits), within lo..hi."""
    value = fields.get(name, default)
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,12}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise HTTPError(400, f"field '{name}' must be an integer, got {one_line(repr(value), 40)}")
    if not lo <= value <= hi:
        raise HTTPError(400, f"field '{name}' must be in {lo}..{hi}, got {one_line(value, 40)}")
    return value


def str_field(fields: dict, name: str) -> str:
    value = fields.get(name, "")
    if not isinstance(value, str):
        raise HTTPError(400, f"field '{name}' must be a string, got {one_line(repr(value), 40)}")
    return value


# ---------------------------------------------------------------- decoding an upload
def _flatten(img: Image.Image, mode: str) -> Image.Image:
    """Any mode -> 'L' or 'RGB', transparency composited onto white (as to_array does)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert(mode)


def _shrink(img: Image.Image, mode: str, factor: int) -> Image.Image:
    """Flatten and box-average by an integer factor, in strips: never a full-size copy."""
    if factor <= 1:
        return _flatten(img, mode)
    w, h = img.size
    rows = factor * max(1, STRIP_PIXELS // (w * factor))
    out = Image.new(mode, (math.ceil(w / factor), math.ceil(h / factor)))
    for top in range(0, h, rows):
        strip = _flatten(img.crop((0, top, w, min(top + rows, h))), mode).reduce(factor)
        out.paste(strip, (0, top // factor))
    return out


def open_upload(data: bytes, max_pixels: int, side: int, mode: str) -> Image.Image:
    """Decode an upload in uint8 and shrink it until its longest side is at most `side`.

    The pixel cap is checked from the header before decoding; a JPEG is decoded at a
    reduced scale directly (`draft`); other formats are decoded once at full size in their
    own mode (at most 4 bytes a pixel) and shrunk strip by strip.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = img.size
            webp, deep = img.format == "WEBP", img.mode in SIXTEEN_BIT | {"I", "F"}
            cap = max_pixels // WEBP_COST if webp or deep else max_pixels
            if w * h > cap:
                kind = "WebP" if webp else f"{img.mode} pixels"
                why = f" for {kind} ({WEBP_COST}x the memory of others)" if webp or deep else ""
                raise HTTPError(
                    413, f"upload: {w}x{h} = {w * h} pixels is over the cap of {cap}{why}"
                )
            factor = max(w, h) / side
            if img.format == "JPEG" and factor > 1:
                img.draft(mode, (math.ceil(w / factor), math.ceil(h / factor)))
            img.load()
            if img.mode not in KEPT_MODES:  # 16-bit, float, CMYK, LAB...: as every other path
                img = eight_bit(img, "upload")
            return _shrink(img, mode, math.ceil(max(img.size) / side))
    except CnnlabError as e:  # pixels eight_bit cannot bring to 8 bits
        raise HTTPError(400, str(e)) from None
    except UnidentifiedImageError:
        raise HTTPError(
            400, f"upload: not an image in an accepted format ({', '.join(FORMATS)})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise HTTPError(413, f"upload: image is over the pixel cap of {max_pixels}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as e:
        # what Pillow's decoders raise on damaged data
        raise HTTPError(400, f"upload: corrupt or truncated image ({one_line(e, 80)})") from None


class Service:
    """Model work done off the event loop, WORKERS requests at a time.

    The model is only read (its parameters frozen, inspection takes gradients of the input
    alone), so requests share it safely.
    """

    def __init__(self, ckpt: Checkpoint, max_pixels: int):
        if len(ckpt.meta["input_shape"]) != 3:
            raise CnnlabError(
                f"{ckpt.path}: the server shows models of images (C, H, W); this one reads "
                "sequences (C, L): use `cnnlab predict RUN SAMPLE.npy`"
            )
        self.ckpt, self.max_pixels = ckpt, max_pixels
        self.model = ckpt.model.eval()
        self.norm = normalizer(ckpt)
        self.summary = summarize(self.model)  # before freezing, so it counts what trained
        self.model.requires_grad_(False)
        channels, *sides = ckpt.meta["input_shape"]
        self.mode = "L" if channels == 1 else "RGB"
        self.side = max(WORK_SIDE, WORK_SCALE * max(sides))
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, work, *args):
        if self._limiter is None:  # made on the event loop that uses it
            self._limiter = anyio.CapacityLimiter(WORKERS)
        return await anyio.to_thread.run_sync(work, *args, limiter=self._limiter)

    def prepare(self, data: bytes) -> tuple[np.ndarray, torch.Tensor]:
        img = open_upload(data, self.max_pixels, self.side, self.mode)
        prepared = fit_picture(self.ckpt, img)  # the recipe `predict` applies to a file
        return prepared, self.norm(torch.from_numpy(prepared)[None])

    def predict(self, data: bytes, k: int) -> dict:
        prepared, _ = self.prepare(data)
        return {
            "top": top_k(self.ckpt, prepared, k),
            "input": png_data_url(prepared),
            "input_shape": list(prepared.shape),
        }

    def activations(self, data: bytes) -> dict:
        """Every layer for the network view: maps of the 2-D layers in "layers" (as before),
        and in "network" each layer in order with its sparsity and range, the strongest
        units of a layer without maps, and 1-D layers' maps as rows."""
        prepared, x = self.prepare(data)
        with evaluating(self.model), torch.no_grad():
            feats = self.model.features(x)
        layers, network = [], []
        for name, t in feats.items():
            a = t[0].float().numpy()
            entry = {
                "name": name,
                "kind": self.model.kinds[name],
                "shape": list(a.shape),
                "sparsity": float((a == 0).mean()),
                "min": float(a.min()),
                "max": float(a.max()),
                "block": self.model.kinds[name] in BLOCKS,
            }
            if a.ndim == 3:
                layers.append(
                    entry
                    | {
                        "maps": [png_url(m) for m in a[:MAX_MAPS]],
                        "kernel_layer": producing_conv(self.model, name),
                    }
                )
            elif a.ndim == 2:
                entry["maps"] = [png_url(m[None]) for m in a[:MAX_MAPS]]
            else:
                entry["units"] = strongest(a, MAX_UNITS)
            network.append(entry)
        logits = feats[next(reversed(feats))][0].double()
        return {
            "input": png_data_url(prepared),
            "layers": layers,
            "network": network,
            "output": {
                "logits": logits.tolist(),
                "probabilities": torch.softmax(logits, 0).tolist(),
            },
        }

    def check_layer(self, layer: str, channel: int) -> None:
        if layer not in self.model.shapes:
            names = ", ".join(self.model.shapes)
            raise HTTPError(400, f"no layer {one_line(repr(layer), 60)}; layers: {names}")
        channels = self.model.shapes[layer][0]
        if channel >= channels:
            raise HTTPError(
                400, f"channel {channel} is out of range for '{layer}' (0..{channels - 1})"
            )

    def inspect(self, data: bytes, layer: str, channel: int, cls: int | None) -> dict:
        prepared, x = self.prepare(data)
        out: dict = {"layer": layer, "channel": channel}
        conv = producing_conv(self.model, layer)
        if conv is not None:
            w = kernels(self.model, conv)
            out |= {
                "kernel_layer": conv,
                "kernel": [png_url(k, signed=True) for k in w[channel][:16]],
                "kernel_values": np.round(w[channel], 4).tolist()
                if w[channel].size <= 1024
                else None,
            }
        sal, used = saliency(self.model, x, cls, smooth=8)
        return out | {
            "saliency": png_url(sal),
            "class": self.ckpt.classes[used],
            "input": png_data_url(prepared),
        }

    def unit_position(self, layer: str, fields: dict) -> int | tuple[int, ...]:
        """The unit a request names: "index" (flat), or "channel" with "y" and "x"."""
        if layer != SOFTMAX and layer not in self.model.shapes:
            names = ", ".join([*self.model.shapes, SOFTMAX])
            raise HTTPError(400, f"no layer {one_line(repr(layer), 60)}; layers: {names}")
        shape = (len(self.ckpt.classes),) if layer == SOFTMAX else self.model.shapes[layer]
        if "index" in fields:
            return int_field(fields, "index", 0, 0, math.prod(shape) - 1)
        names = ("channel", "y", "x")[: len(shape)] if len(shape) != 2 else ("channel", "x")
        return tuple(int_field(fields, k, 0, 0, n - 1) for k, n in zip(names, shape, strict=True))

    def unit(self, data: bytes, layer: str, index: int | tuple[int, ...]) -> dict:
        prepared, x = self.prepare(data)
        out = explain_unit(self.model, x, layer, index)
        out["input_image"] = png_data_url(prepared)
        if layer == SOFTMAX:
            out["classes"] = self.ckpt.classes
            return out
        with evaluating(self.model), torch.no_grad():
            feats = self.model.features(x, upto=layer)
        names = list(feats)
        here = feats[layer][0].float().numpy()
        if here.ndim >= 2:
            out["map"] = png_url(as_rows(here[out["position"][0]]))
        before = x[0] if len(names) == 1 else feats[names[-2]][0]
        channels = [c["channel"] for c in out.get("channels", [])]
        if out["rule"] == "pool" and "inner" not in out:
            channels = [out["channel"]]
        out["previous_maps"] = {
            str(c): png_url(as_rows(before[c].float().numpy())) for c in channels
        }
        return out

    def inside(self, data: bytes, layer: str) -> dict:
        _, x = self.prepare(data)
        names = list(self.model.shapes)
        at = names.index(layer)
        with evaluating(self.model), torch.no_grad():
            inp = x if at == 0 else self.model.features(x, upto=names[at - 1])[names[at - 1]]
            steps = trace_block(getattr(self.model, layer), inp)
        modules = []
        for name, module, t in steps[:MAX_INSIDE]:
            a = t[0].float().numpy()
            entry = {
                "name": name,
                "type": type(module).__name__,
                "shape": list(a.shape),
                "sparsity": float((a == 0).mean()),
            }
            if a.ndim >= 2:
                entry["maps"] = [png_url(as_rows(m)) for m in a[:INSIDE_MAPS]]
            else:
                entry["units"] = strongest(a, MAX_UNITS)
            modules.append(entry)
        return {"layer": layer, "modules": modules, "count": len(steps)}

    def check_block(self, layer: str) -> None:
        blocks = [n for n, m in self.model.named_children() if len(list(m.children()))]
        if layer not in blocks:
            raise HTTPError(
                400,
                f"no block {one_line(repr(layer), 60)}; layers with modules inside: "
                f"{', '.join(blocks) or 'none'}",
            )

    def check_attribution(self, method: str, layer: str) -> None:
        if method not in METHODS:
            raise HTTPError(
                400,
                f"field 'method' must be one of {', '.join(METHODS)}; "
                f"got {one_line(repr(method), 60)}",
            )
        if layer:  # only Grad-CAM reads it, but a misspelt layer is refused for every method
            try:
                check_gradcam_layer(self.model, layer)
            except CnnlabError as e:
                raise HTTPError(400, str(e)) from None

    def attribute(self, data: bytes, method: str, cls: int | None, layer: str) -> dict:
        prepared, x = self.prepare(data)
        options = {}
        if method in ("integrated-gradients", "occlusion"):  # from / to the black image
            options["baseline"] = self.norm(torch.zeros(x.shape, dtype=torch.uint8))
        try:
            amap, used = attribute(self.model, x, method, cls, layer or None, **options)
        except CnnlabError as e:
            raise HTTPError(400, str(e)) from None
        return {
            "method": method,
            "class": self.ckpt.classes[used],
            "class_index": used,
            "map": png_url(amap, signed=method in SIGNED),
            "methods": list(METHODS),
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
        return {
            "name": self.model.spec["name"],
            "classes": self.ckpt.classes,
            "input_shape": self.ckpt.meta["input_shape"],
            "preprocess": self.ckpt.meta.get("preprocess"),
            "summary": self.summary,
            "first_layer": first[0] if first else None,
            "kernels": kern,
            "softmax_layer": SOFTMAX,
            "attribution_methods": list(METHODS),
        }


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """The last resort: a bug, reported in one line to the client and in the log."""
    log.error(
        "internal error on %s %s: %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        one_line(exc),
    )
    return error(500, f"internal error ({type(exc).__name__}); the server keeps serving")


async def http_exception(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404 (unknown route or static file) and 405 (method), as JSON."""
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}", exc.headers)


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    return internal_error(request, exc)


def create_app(
    ckpt: Checkpoint, max_body: int = MAX_BODY, max_pixels: int = MAX_PIXELS
) -> Starlette:
    service = Service(ckpt, max_pixels)

    def handler(work):
        async def endpoint(request: Request):
            try:
                return JSONResponse(await work(request))
            except HTTPError as e:
                return error(e.status, e.message)
            except ClientDisconnect:  # nobody left to answer; not a fault of the server's
                return error(400, "the client went away before sending its whole body")
            except Exception as e:
                return internal_error(request, e)

        return endpoint

    async def predict(request: Request):
        data, fields = await image_and_fields(request, max_body)
        k = int_field(fields, "top_k", 3, 1, 1000)
        return await service.run(service.predict, data, k)

    async def activations(request: Request):
        data, _ = await image_and_fields(request, max_body)
        return await service.run(service.activations, data)

    async def inspect(request: Request):
        data, fields = await image_and_fields(request, max_body)
        layer = str_field(fields, "layer")
        channel = int_field(fields, "channel", 0, 0, 1 << 20)
        service.check_layer(layer, channel)
        cls = fields.get("class")
        cls = None if cls in (None, "") else int_field(fields, "class", 0, 0, len(ckpt.classes) - 1)
        return await service.run(service.inspect, data, layer, channel, cls)

    async def unit(request: Request):
        data, fields = await image_and_fields(request, max_body)
        layer = str_field(fields, "layer")
        index = service.unit_position(layer, fields)
        return await service.run(service.unit, data, layer, index)

    async def inside(request: Request):
        data, fields = await image_and_fields(request, max_body)
        layer = str_field(fields, "layer")
        service.check_block(layer)
        return await service.run(service.inside, data, layer)

    async def attribute(request: Request):
        data, fields = await image_and_fields(request, max_body)
        if "method" not in fields:
            raise HTTPError(400, f"field 'method' is required: one of {', '.join(METHODS)}")
        method, layer = str_field(fields, "method"), str_field(fields, "layer")
        service.check_attribution(method, layer)
        cls = fields.get("class")
        cls = None if cls in (None, "") else int_field(fields, "class", 0, 0, len(ckpt.classes) - 1)
        return await service.run(service.attribute, data, method, cls, layer)

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
        Route("/api/unit", handler(unit), methods=["POST"]),
        Route("/api/inside", handler(inside), methods=["POST"]),
        Route("/api/attribute", handler(attribute), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    handlers = {HTTPException: http_exception, Exception: unexpected}
    return Starlette(routes=routes, exception_handlers=handlers)
