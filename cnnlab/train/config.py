"""Training configuration: one dataclass that checks itself, filled from defaults, a YAML file,
then flags.

Torch-free, so that `cnnlab --help` stays instant. The name tables below are the registries the
training code dispatches on and the command line lists: a name is written here once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import CnnlabError
from cnnlab.model import zoo
from cnnlab.model.bounds import MAX_SPEC_BYTES
from cnnlab.model.reading import load_yaml

# optimizer -> (default learning rate, how it is built): "sgd" with momentum / Nesterov flags is
# cnnlab's own step (see optim.SGD); anything else is the torch.optim class of that name.
OPTIMIZERS: dict[str, tuple[float, dict]] = {
    "sgd": (0.05, {"momentum": False}),
    "momentum": (0.1, {"momentum": True}),
    "nesterov": (0.1, {"momentum": True, "nesterov": True}),
    "adam": (1e-3, {"torch": "Adam"}),
    "adamw": (1e-3, {"torch": "AdamW"}),
    "adadelta": (1.0, {"torch": "Adadelta"}),
}
SCHEDULES = ("constant", "step", "cosine", "onecycle")
LOSSES = ("cross-entropy", "squared")
AMP_MODES = ("auto", "bf16", "off")  # auto: bf16 where the device computes it natively
DEVICES = ("auto", "cpu", "cuda", "mps")
CHANNELS = (1, 3)


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
    warmup: float = 0.02  # of the run: 0.2 epoch of 10, so 99.0% comes at 0.75 epoch, not 1.0
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
    amp: str = "auto"
    threads: int | None = None
    init: str | None = None  # start from these weights (run, checkpoint, .safetensors, .pt)
    freeze: str | None = None  # train only the layers after this one
    lr_head: float = 1.0  # the last parametrised layer learns this many times faster

    def __post_init__(self) -> None:
        checked = check_values(asdict(self), {})
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def base_lr(self) -> float | str:
        """The number to start from: the given rate, 'auto', or the optimizer's default."""
        return OPTIMIZERS[self.optimizer][0] if self.lr is None else self.lr


# ---------------------------------------------------------------- one validation step
class Invalid(ValueError):
    """A value that breaks a rule; the message completes '<key> must be ...'."""


def _integer(v: Any) -> int:
    if isinstance(v, bool):
        raise Invalid("an integer")
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        v = int(v)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int):
        raise Invalid("an integer")
    return v


def _number(v: Any) -> float:
    if isinstance(v, bool):
        raise Invalid("a number")
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise Invalid("a number") from None
    if not math.isfinite(v):
        raise Invalid("a finite number")
    return v


def positive_int(v: Any) -> int:
    if _integer(v) < 1:
        raise Invalid("a positive integer")
    return int(v)


def _count(v: Any) -> int:
    if _integer(v) < 0:
        raise Invalid("an integer >= 0")
    return int(v)


def _in_range(lo: float, hi: float, hi_open: bool = True, lo_open: bool = False) -> Callable:
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"

    def check(v: Any) -> float:
        try:
            x = _number(v)
        except Invalid:
            raise Invalid(f"a number in {left}{lo:g}, {hi:g}{right}") from None
        if x < lo or x > hi or (hi_open and x == hi) or (lo_open and x == lo):
            raise Invalid(f"a number in {left}{lo:g}, {hi:g}{right}")
        return x

    return check


def _positive(v: Any) -> float:
    x = _number(v)
    if not x > 0:
        raise Invalid("a positive number")
    return x


def _non_negative(v: Any) -> float:
    x = _number(v)
    if x < 0:
        raise Invalid("a number >= 0")
    return x


def _one_of(options) -> Callable:
    def check(v: Any) -> Any:
        if v not in options:
            raise Invalid(f"one of {', '.join(map(str, options))}")
        return v

    return check


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Invalid("a non-empty string")
    return v


def _optional(check: Callable) -> Callable:
    return lambda v: None if v is None or v == "" else check(v)


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Invalid("true or false")
    return v


def _lr(v: Any) -> float | str | None:
    if v is None or v == "auto":
        return v
    try:
        x = _number(v)
    except Invalid:
        raise Invalid("a positive number or 'auto'") from None
    if not x > 0:
        raise Invalid("a positive number or 'auto'")
    return x


def _channels(v: Any) -> int | None:
    return None if v is None else _one_of(CHANNELS)(_integer(v))


def _overrides(v: Any) -> list[str]:
    if isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v):
        return list(v)
    raise Invalid("a list of KEY=VALUE strings")


def _shape_text(v: Any) -> str | None:
    if v is None or v == "":
        return None
    text = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    try:
        parse_shape(text)
    except CnnlabError:
        raise Invalid("C,H,W or C,L of positive integers, such as 3,64,64") from None
    return text


def _size_text(v: Any) -> str | None:
    if v is None or v == "":
        return None
    try:
        parse_size(str(v))
    except CnnlabError:
        raise Invalid("HxW of positive integers, such as 32x32") from None
    return str(v)


def _augment_text(v: Any) -> str:
    from cnnlab.data.augment import parse  # imports torch: only when a config is really checked

    text = "none" if v is None else _text(str(v))
    try:
        parse(text)
    except CnnlabError as e:
        raise Invalid(f"a comma list of augmentations ({e})") from None
    return text


RULES: dict[str, Callable[[Any], Any]] = {
    "model": _text, "data": _text, "epochs": positive_int, "batch_size": positive_int,
    "optimizer": _one_of(OPTIMIZERS), "lr": _lr, "momentum": _in_range(0, 1),
    "schedule": _one_of(SCHEDULES), "gamma": _in_range(0, 1, hi_open=False, lo_open=True),
    "warmup": _in_range(0, 1), "weight_decay": _non_negative, "loss": _one_of(LOSSES),
    "label_smoothing": _in_range(0, 1), "ema": _in_range(0, 1), "augment": _augment_text,
    "val_split": _in_range(0, 1), "seed": _count, "device": _one_of(DEVICES),
    "out": _optional(_text), "input": _shape_text, "classes": _optional(positive_int),
    "set": _overrides, "channels": _channels, "size": _size_text, "skip_bad": _flag,
    "eval_batch_size": positive_int, "channels_last": _flag, "fast_malloc": _flag,
    "amp": _one_of(AMP_MODES), "threads": _optional(positive_int), "init": _optional(_text),
    "freeze": _optional(_text), "lr_head": _positive,
}  # fmt: skip
FIELDS = tuple(f.name for f in fields(TrainConfig))
DEFAULTS = {
    f.name: f.default_factory() if f.default is MISSING else f.default for f in fields(TrainConfig)
}
assert set(RULES) == set(FIELDS), "every TrainConfig field needs a rule"


def where(name: str, source: str | None) -> str:
    """How an error names a key: '--batch-size' for a flag, 'cfg.yaml: batch_size' for a file."""
    if source == "flag":
        return f"--{name.replace('_', '-')}"
    return f"{source}: {name}" if source else name


def check_values(values: dict[str, Any], sources: dict[str, str]) -> dict[str, Any]:
    """Every value through its rule; the first broken one is an error naming key and source."""
    checked = {}
    for name, value in values.items():
        if name not in RULES:
            raise CnnlabError(
                f"{where(name, sources.get(name))}: unknown option; "
                f"known: {', '.join(sorted(RULES))}"
            )
        try:
            checked[name] = RULES[name](value)
        except Invalid as e:
            raise CnnlabError(
                f"{where(name, sources.get(name))} must be {e}, got {value!r}"
            ) from None
    return checked


def read_config(path: str | os.PathLike) -> dict:
    """A YAML file of TrainConfig keys (dashes or underscores), values not yet checked."""
    try:
        if Path(path).stat().st_size > MAX_SPEC_BYTES:
            raise CnnlabError(f"{path}: too large for a config (at most {MAX_SPEC_BYTES} bytes)")
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CnnlabError(f"{path}: cannot read config ({e.__class__.__name__}: {e})") from None
    raw = load_yaml(text, str(path)) or {}  # bounded like a spec: no alias bombs, no deep nests
    if not isinstance(raw, dict):
        raise CnnlabError(f"{path}: a config is a mapping of option: value")
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in RULES:
            raise CnnlabError(f"{path}: unknown key '{key}'; known: {', '.join(sorted(RULES))}")
        out[name] = value
    return out


def load_config(path: str | os.PathLike) -> dict:
    """A YAML config file, every value checked (errors name the file and the key)."""
    return check_values(read_config(path), dict.fromkeys(read_config(path), str(path)))


def resolve(file: str | os.PathLike | None, flags: dict[str, Any]) -> TrainConfig:
    """Defaults, then the YAML file, then the flags given on the command line: one TrainConfig."""
    values = read_config(file) if file else {}
    sources = dict.fromkeys(values, str(file))
    values |= flags
    sources |= dict.fromkeys(flags, "flag")
    return TrainConfig(**check_values(values, sources))


def dump(cfg: TrainConfig) -> str:
    return yaml.safe_dump(asdict(cfg), sort_keys=False)


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
    """'28x28' -> (28, 28); both sides positive."""
    if text is None or text == "":
        return None
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise CnnlabError(f"--size: expected HxW such as 28x28, got {text!r}") from None
    if h < 1 or w < 1:
        raise CnnlabError(f"--size: expected positive sides such as 28x28, got {text!r}")
    return h, w
