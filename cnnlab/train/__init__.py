"""Training, in parts that each read alone:

    config.py    TrainConfig and the one validation step for flags and config files
    setup.py     TrainConfig -> data, model, device, process group -> Trainer; train(), resume()
    batches.py   where a step's images come from (memory, DataLoader workers, torchrun shards)
    step.py      one step: forward, loss, backward, optimizer, weight average, curvature probe
    loop.py      the epoch loop: evaluation, checkpoints, resume state, metrics
    rundir.py    the run directory: claimed, locked, written atomically
    state.py     every object's state_dict in one safetensors file
    optim.py, schedule.py, losses.py, average.py, curvature.py, runtime.py   the pieces

Importing this package is cheap; `from cnnlab.train import train` loads the rest.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "train": "setup", "resume": "setup", "make_trainer": "setup", "prepare": "setup",
    "build_model": "setup", "Trainer": "loop", "TrainConfig": "config", "load_config": "config",
    "squared_error": "losses",
}  # fmt: skip
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"cnnlab.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cnnlab.train' has no attribute {name!r}")
