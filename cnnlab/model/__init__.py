"""Models as data: a spec (YAML or Python) becomes a plain torch.nn.Module with every shape
inferred.

    reading.py   spec files and zoo names -> plain data (bounded YAML)
    bounds.py    the caps on a spec's size, SpecError
    kinds.py     every layer kind: its fields and its builder
    shapes.py    output-size arithmetic
    blocks.py    residual, inception, dense block, transition
    layers.py    the layers PyTorch lacks (stochastic, sum and cross-channel pooling, Gabor bank)
    net.py       Net, the built model
    spec.py      checking and defaults, build, to_spec, retarget, --set overrides
    zoo/         the classic architectures as spec files

Importing this package is cheap; `from cnnlab.model import build` loads the rest.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "build": "spec", "to_spec": "spec", "retarget": "spec", "normalize": "spec",
    "normalise": "spec", "apply_overrides": "spec", "load_spec": "reading", "Net": "net",
    "KINDS": "kinds", "SpecError": "bounds",
}  # fmt: skip
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"cnnlab.model.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cnnlab.model' has no attribute {name!r}")
