"""Checkpoints: safetensors weights plus a JSON file of everything needed to use them.

NAME.safetensors holds tensors only; NAME.json holds the spec, class names, input shape,
normalisation, preprocessing, resolved config, history, versions and the weights' SHA-256.
Both are written atomically, the JSON last, so a JSON that exists describes a complete
weights file. Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cnnlab import __version__
from cnnlab.atomic import atomic_path
from cnnlab.errors import CnnlabError
from cnnlab.spec import Net, apply_overrides, build, load_spec, retarget

FORMAT = "cnnlab-checkpoint/1"


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
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise CnnlabError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise CnnlabError(
            f"{path}: corrupt checkpoint metadata (JSON error at line {e.lineno})"
        ) from None
    if not isinstance(meta, dict):
        raise CnnlabError(f"{path}: checkpoint metadata must be a JSON object")
    return meta


def load_tensors(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CnnlabError(f"{path}: weights file is missing")
    if expected_sha256 and _sha256(path) != expected_sha256:
        raise CnnlabError(
            f"{path}: weights do not match the checksum in their JSON (corrupt or replaced)"
        )
    try:
        return load_file(str(path))
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
    """Rebuild the model from the spec in the JSON and load its verified weights."""
    path = resolve(ref)
    meta = read_json(path)
    if meta.get("format") != FORMAT:
        raise CnnlabError(
            f"{path}: not a cnnlab checkpoint (format {meta.get('format')!r}, expected {FORMAT})"
        )
    for key in ("spec", "classes", "weights_sha256"):
        if key not in meta:
            raise CnnlabError(f"{path}: checkpoint metadata lacks '{key}'")
    model = build(meta["spec"], str(path))
    tensors = load_tensors(path.with_suffix(".safetensors"), meta["weights_sha256"])
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CnnlabError(f"{path}: weights do not fit the spec ({first})") from None
    return Checkpoint(model.to(device).eval(), meta, path)


def model_from(
    ref: str | os.PathLike,
    input_shape: tuple[int, ...] | None = None,
    classes: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> tuple[Net, dict[str, torch.Tensor] | None]:
    """A zoo name, spec file or checkpoint -> (model rebuilt with any changes, checkpoint weights or None)."""
    if is_checkpoint(ref):
        ckpt = load_checkpoint(ref)
        spec, source, state = ckpt.model.spec, str(ckpt.path), ckpt.model.state_dict()
    else:
        (spec, source), state = load_spec(ref), None
    spec = apply_overrides(retarget(spec, input_shape, classes), list(overrides), source)
    return build(spec, source), state
