"""Training state as one file: nested state dicts of tensors and plain values <-> safetensors.

Every object that a resumed run needs (model, optimizer, weight average, curvature tracker,
progress) hands over its `state_dict()`; `save_state` writes all of them into ONE safetensors
file, the tensors as entries and the rest as JSON in its header, so a crash can never leave
half of a resume state beside the other half. Nothing is unpickled on the way back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from cnnlab.atomic import atomic_path
from cnnlab.errors import CnnlabError

STATE_KEY = "cnnlab.state"


def like(reference: torch.Tensor, saved: torch.Tensor, what: str) -> torch.Tensor:
    """`saved` in the dtype, device and memory layout of `reference` (the tensor it belongs to).

    Safetensors stores tensors contiguous; a state tensor that lived in channels-last strides
    must come back in them, or oneDNN may pick another kernel and sum in another order.
    """
    if saved.shape != reference.shape:
        raise CnnlabError(
            f"{what}: saved shape {tuple(saved.shape)} does not fit {tuple(reference.shape)}"
        )
    return torch.empty_like(reference).copy_(saved)


def flatten(tree: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """Tensors out into `tensors` under dotted names; the JSON skeleton of the rest returned."""
    if torch.is_tensor(tree):
        tensors[path] = tree.detach()
        return {"tensor": path}
    if isinstance(tree, dict):
        return {
            "dict": [
                [k, flatten(v, tensors, f"{path}.{k}" if path else str(k))] for k, v in tree.items()
            ]
        }
    if isinstance(tree, (list, tuple)):  # tuples stay tuples (torch.optim's betas, say)
        items = [flatten(v, tensors, f"{path}.{i}") for i, v in enumerate(tree)]
        return {"tuple" if isinstance(tree, tuple) else "list": items}
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return {"value": tree}
    raise TypeError(f"cannot save {type(tree).__name__} at {path}")


def unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError("malformed state skeleton")
    ((kind, body),) = node.items()
    if kind == "tensor":
        return tensors[body]
    if kind == "dict":
        return {k: unflatten(v, tensors) for k, v in body}
    if kind == "list":
        return [unflatten(v, tensors) for v in body]
    if kind == "tuple":
        return tuple(unflatten(v, tensors) for v in body)
    if kind == "value":
        return body
    raise ValueError(f"unknown node {kind!r}")


def save_state(tree: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a tree of state dicts as one safetensors file, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(tree, tensors)
    tensors = {k: v.contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={STATE_KEY: json.dumps(skeleton)})


def has_state(path: str | os.PathLike) -> bool:
    """True for a file `save_state` wrote (cnnlab 0.1 kept resume state in another layout)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return STATE_KEY in (f.metadata() or {})
    except (SafetensorError, OSError):
        return False


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """The tree `save_state` wrote; a missing, corrupt or foreign file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path}: resume state is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(STATE_KEY)
        tensors = load_file(str(path))
        if header is None:
            raise ValueError("no training state in its header")
        return unflatten(json.loads(header), tensors)
    except (SafetensorError, OSError, ValueError, KeyError, RecursionError) as e:
        raise CnnlabError(f"{path}: corrupt resume state ({e})") from None
