"""Training configuration: one dataclass, filled from defaults, a YAML file, then flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from cnnlab import zoo
from cnnlab.errors import CnnlabError


@dataclass
class TrainConfig:
    model: str = zoo.DEFAULT
    data: str = "mnist"
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "nesterov"
    lr: float | str | None = None  # None: the optimizer's default; "auto": LeCun's Hessian rule
    momentum: float = 0.9
    schedule: str = "onecycle"
    gamma: float = 0.7
    warmup: float = 0.1
    weight_decay: float = 5e-4
    loss: str = "cross-entropy"
    label_smoothing: float = 0.1
    ema: float = 0.99  # decay of the weight average that is evaluated and saved; 0: off
    augment: str = "translate=2"
    val_split: float = 0.1
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    input: str | None = None
    classes: int | None = None
    set: list[str] = field(default_factory=list)
    channels: int | None = None
    size: str | None = None
    skip_bad: bool = False
    eval_batch_size: int = 1000
    channels_last: bool = True
    fast_malloc: bool = True
    amp: str = "auto"  # bfloat16 autocast: auto = on supporting GPUs only
    threads: int | None = None


def load_config(path: str | os.PathLike) -> dict:
    """A YAML file of TrainConfig fields (dashes or underscores); unknown keys are errors."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CnnlabError(f"{path}: cannot read config ({e.__class__.__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise CnnlabError(f"{path}: a config is a mapping of option: value")
    known = {f.name for f in fields(TrainConfig)}
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise CnnlabError(f"{path}: unknown key '{key}'; known: {', '.join(sorted(known))}")
        out[name] = value
    return out


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """'3,64,64' (or '3x64x64') -> (3, 64, 64); C,H,W or C,L of positive integers."""
    if text is None or text == "":
        return None
    try:
        shape = tuple(int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        raise CnnlabError(f"--input: expected C,H,W such as 3,64,64, got {text!r}") from None
    if not 1 <= len(shape) <= 3 or min(shape) < 1:
        raise CnnlabError(f"--input: expected C,H,W or C,L of positive integers, got {text!r}")
    return shape


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'28x28' -> (28, 28)."""
    if text is None or text == "":
        return None
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise CnnlabError(f"--size: expected HxW such as 28x28, got {text!r}") from None
    return h, w
