"""Checkpoints: safetensors weights plus a JSON file of everything needed to use them.

NAME.safetensors holds tensors only; NAME.json holds the spec, class names, input shape,
normalisation, preprocessing, resolved config, history, versions and the weights' SHA-256.
Both are written atomically, the JSON last, so a JSON that exists describes a complete
weights file. Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from cnnlab import __version__
from cnnlab.atomic import atomic_path
from cnnlab.errors import CnnlabError
from cnnlab.model.net import Net
from cnnlab.model.reading import load_spec
from cnnlab.model.spec import apply_overrides, build, retarget

FORMAT = "cnnlab-checkpoint/1"
MAX_JSON_BYTES = 64 << 20  # checkpoint metadata and resume state; a real one is kilobytes
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on its JSON header
PREPROCESS = ("mnist-digit", "resize")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Checkpoint:
    model: Net
    meta: dict[str, Any]
    path: Path

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> str:
    """Write tensors atomically; return the file's SHA-256."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
        digest = _sha256(tmp)
    return digest


def save_json(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=str), encoding="utf-8")


def save_checkpoint(model: Net, meta: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save PATH.safetensors and PATH.json (PATH without suffix)."""
    base = Path(path).with_suffix("")
    digest = save_tensors(model.state_dict(), base.with_suffix(".safetensors"))
    full = {
        "format": FORMAT,
        "cnnlab_version": __version__,
        "torch_version": torch.__version__,
        **meta,
        "spec": model.spec,
        "weights_sha256": digest,
    }
    save_json(full, base.with_suffix(".json"))
    return base.with_suffix(".json")


def read_json(path: Path) -> dict:
    """A JSON object from a file of bounded size; too large, too deep or corrupt is one line."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CnnlabError(
                f"{path}: {size} bytes is too large for checkpoint metadata "
                f"(at most {MAX_JSON_BYTES})"
            )
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise CnnlabError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise CnnlabError(
            f"{path}: corrupt checkpoint metadata (JSON error at line {e.lineno})"
        ) from None
    except RecursionError:
        raise CnnlabError(f"{path}: corrupt checkpoint metadata (nested too deeply)") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise CnnlabError(f"{path}: corrupt checkpoint metadata ({str(e)[:200]})") from None
    if not isinstance(meta, dict):
        raise CnnlabError(f"{path}: checkpoint metadata must be a JSON object")
    return meta


class ChecksumMismatch(CnnlabError):
    """Weights that are not the ones their JSON describes (corrupt, replaced, or newer)."""


def load_tensors(
    path: Path, expected_sha256: str | None = None, max_bytes: int | None = None
) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file. expected_sha256, when given (None: the caller has no
    digest), must be a SHA-256 in hex and match; max_bytes bounds the file before it is read.

    The file is read once and the same bytes are hashed and parsed, so what is loaded is
    exactly what was verified even if a trainer replaces the file meanwhile.
    """
    if not path.is_file():
        raise CnnlabError(f"{path}: weights file is missing")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise CnnlabError(
            f"{path}: {path.stat().st_size} bytes is more than the model's weights can take "
            f"({max_bytes})"
        )
    if expected_sha256 is not None and (
        not isinstance(expected_sha256, str) or not _SHA256.fullmatch(expected_sha256)
    ):
        raise CnnlabError(
            f"{path}: the checksum recorded for these weights is not a SHA-256 "
            f"(64 hex digits): {str(expected_sha256)[:80]!r}"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CnnlabError(f"{path}: cannot read ({e.strerror or e})") from None
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ChecksumMismatch(
            f"{path}: weights do not match the checksum in their JSON (corrupt or replaced)"
        )
    try:
        return load_bytes(data)
    except (SafetensorError, OSError, ValueError) as e:
        raise CnnlabError(f"{path}: corrupt weights file ({e})") from None


def resolve(ref: str | os.PathLike) -> Path:
    """A run directory (its best, else last, checkpoint) or a checkpoint path -> the JSON path."""
    path = Path(ref)
    if path.is_dir():
        for name in ("best", "last"):
            candidate = path / "checkpoints" / f"{name}.json"
            if candidate.is_file():
                return candidate
        raise CnnlabError(
            f"{path}: no checkpoints/best.json or checkpoints/last.json in this run directory"
        )
    if path.suffix in (".json", ".safetensors") and path.with_suffix(".json").is_file():
        return path.with_suffix(".json")
    raise CnnlabError(f"{path}: not a run directory or checkpoint (.json/.safetensors)")


def is_checkpoint(ref: str | os.PathLike) -> bool:
    path = Path(ref)
    return (path / "checkpoints").is_dir() or (
        path.suffix in (".json", ".safetensors") and path.with_suffix(".json").is_file()
    )


def load_checkpoint(ref: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from the spec in the JSON and load its verified weights.

    A trainer rewrites `last` every epoch (weights first, then the JSON, each atomically): a
    reader that got the old JSON and then the new weights sees a checksum mismatch, reads the
    JSON again and retries, so it always ends with one whole checkpoint.
    """
    path = resolve(ref)
    for attempt in range(6):
        try:
            return _load(path, device)
        except ChecksumMismatch:
            if attempt == 5:  # still after 1.5 s, longer than any trainer takes: really corrupt
                raise
            time.sleep(0.05 * 2**attempt)  # the JSON follows its weights within milliseconds
    raise AssertionError("unreachable")


def _load(path: Path, device: str | torch.device) -> Checkpoint:
    meta = read_json(path)
    if meta.get("format") != FORMAT:
        shown = str(meta.get("format"))[:80]
        raise CnnlabError(f"{path}: not a cnnlab checkpoint (format {shown!r}, expected {FORMAT})")
    for key in ("spec", "classes", "input_shape", "weights_sha256"):
        if key not in meta:
            raise CnnlabError(f"{path}: checkpoint metadata lacks '{key}'")
    if not isinstance(meta["spec"], dict):
        raise CnnlabError(f"{path}: field 'spec': expected a mapping (the model's spec)")
    model = build(meta["spec"], str(path))
    check_meta(meta, model.spec, path)
    state = model.state_dict()
    most = 8 + MAX_HEADER_BYTES + sum(8 * t.numel() for t in state.values())
    tensors = load_tensors(path.with_suffix(".safetensors"), meta["weights_sha256"], most)
    _check_shapes(tensors, state, path.with_suffix(".safetensors"))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        first = lines[min(1, len(lines) - 1)]  # line 0 only says "Error(s) in loading ..."
        first = first if len(first) <= 300 else first[:300] + "..."
        raise CnnlabError(f"{path}: weights do not fit the spec ({first})") from None
    return Checkpoint(model.to(device).eval(), meta, path)


def _fail(path: Path, key: str, expected: str, value: Any) -> None:
    shown = json.dumps(value, default=str)
    shown = shown if len(shown) <= 80 else shown[:80] + "..."
    raise CnnlabError(f"{path}: field '{key}': expected {expected}, got {shown}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_meta(meta: dict[str, Any], spec: dict, path: Path) -> None:
    """Every metadata field a command reads, checked against the spec it came with."""
    classes, shape = meta["classes"], meta["input_shape"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        _fail(path, "classes", "a list of class names", classes)
    if len(classes) != spec["classes"]:
        _fail(path, "classes", f"{spec['classes']} names, as the spec's classes", len(classes))
    if shape != spec["input"]:
        _fail(path, "input_shape", f"the spec's input {spec['input']}", shape)
    channels = spec["input"][0]
    for key, low in (("mean", -math.inf), ("std", 0.0)):
        values = meta.get(key, [0.0 if key == "mean" else 1.0])
        if not (
            isinstance(values, list)
            and len(values) in (1, channels)
            and all(_is_number(v) and math.isfinite(v) and v > low for v in values)
        ):
            what = "positive" if key == "std" else "finite"
            also = " (or 1 for all)" if channels > 1 else ""
            _fail(path, key, f"a list of {channels} {what} number(s){also}", values)
    if meta.get("preprocess", "resize") not in PREPROCESS:
        _fail(path, "preprocess", " or ".join(PREPROCESS), meta["preprocess"])
    if meta.get("channels", channels) != channels:
        _fail(path, "channels", f"the spec's {channels}", meta["channels"])
    for key, kind, what in (
        ("data", str, "text"),
        ("config", dict, "a mapping"),
        ("cnnlab_version", str, "text"),
        ("torch_version", str, "text"),
        ("epoch", int, "an integer"),
    ):
        if key in meta and not isinstance(meta[key], kind):
            _fail(path, key, what, meta[key])
    if meta.get("input_dtype", "uint8") not in ("uint8", "float32"):
        _fail(path, "input_dtype", "uint8 or float32", meta["input_dtype"])
    _check_recipe(meta.get("input_recipe"), spec["input"], path)
    _check_history(meta.get("history", []), path)


def _check_recipe(recipe: Any, shape: list, path: Path) -> None:
    """input_recipe: how pictures are read for this model, or null. Its size plus padding on
    both sides must give the model's input size, with its channel count."""
    if recipe is None:
        return
    want = "null or {channels, size: [H, W], pad: [PH, PW]} that make the input " + "x".join(
        map(str, shape)
    )
    try:
        size, pad = list(recipe["size"]), list(recipe["pad"])
        fits = (
            len(shape) == 3
            and recipe["channels"] == shape[0]
            and all(isinstance(v, int) and v >= 0 for v in size + pad)
            and [s + 2 * p for s, p in zip(size, pad, strict=True)] == list(shape[1:])
            and min(size) > 0
        )
    except (TypeError, KeyError, ValueError):
        fits = False
    if not fits:
        _fail(path, "input_recipe", want, recipe)


def _check_history(history: Any, path: Path) -> None:
    """history: a list of per-epoch rows, each with the numbers the training curves plot."""
    if not isinstance(history, list):
        _fail(path, "history", "a list of per-epoch rows", history)
    needed: tuple[str, ...] = ("epoch", "train_loss", "train_acc")
    if history and isinstance(history[0], dict) and "val_loss" in history[0]:
        needed += ("val_loss", "val_acc")
    for i, row in enumerate(history):
        if not isinstance(row, dict) or not all(_is_number(row.get(k)) for k in needed):
            _fail(path, f"history[{i}]", f"a row with the numbers {', '.join(needed)}", row)


def _check_shapes(tensors: dict, state: dict, path: Path) -> None:
    """Name the first tensor whose shape differs from the model's (load_state_dict would too,
    in a message of many lines)."""
    for key, want in state.items():
        got = tensors.get(key)
        if got is not None and tuple(got.shape) != tuple(want.shape):
            raise CnnlabError(
                f"{path}: tensor '{key}' has shape {tuple(got.shape)}, the spec needs "
                f"{tuple(want.shape)}"
            )


def model_from(
    ref: str | os.PathLike,
    input_shape: tuple[int, ...] | None = None,
    classes: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> tuple[Net, dict[str, torch.Tensor] | None]:
    """A zoo name, spec file or checkpoint -> (model rebuilt with any changes, checkpoint weights
    or None)."""
    if is_checkpoint(ref):
        ckpt = load_checkpoint(ref)
        spec, source, state = ckpt.model.spec, str(ckpt.path), ckpt.model.state_dict()
    else:
        (spec, source), state = load_spec(ref), None
    spec = apply_overrides(retarget(spec, input_shape, classes), list(overrides), source)
    return build(spec, source), state
