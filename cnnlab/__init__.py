"""cnnlab: build, train, look inside and ship convolutional neural networks.

    import cnnlab
    model = cnnlab.build("lenet5")                 # any zoo name, spec file or spec dict
    from cnnlab.train import TrainConfig, train    # what `cnnlab train` runs
    ckpt = cnnlab.load_checkpoint("runs/lenet5-...")

The pipeline, one package a room: data -> model -> train -> infer -> inspect / serve / export,
with cli on top. Importing cnnlab is cheap: each name below loads its module when first used.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cnnlab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

_LAZY = {
    "build": "cnnlab.model.spec",
    "to_spec": "cnnlab.model.spec",
    "retarget": "cnnlab.model.spec",
    "load_checkpoint": "cnnlab.checkpoint",
    "TrainConfig": "cnnlab.train.config",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
