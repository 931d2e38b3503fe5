"""Starting weights from elsewhere: a cnnlab run or checkpoint, a .safetensors file, or a PyTorch
state-dict file, matched to a model by name and shape.

One rule wherever weights meet a model whose architecture may have changed (`--init`, or a
checkpoint given as --model with --classes/--input/--set): every tensor whose name and shape
fit is copied, every other one keeps the model's fresh initialisation, and the report lists
each of them. PyTorch files are read with `torch.load(weights_only=True)`, which builds
tensors and plain containers only: nothing is unpickled beyond that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cnnlab.checkpoint import is_checkpoint, load_checkpoint, load_tensors
from cnnlab.errors import CnnlabError
from cnnlab.torchvision_keys import from_torchvision

MAX_LISTED = 12  # per kind of mismatch in the printed report; the rest is counted


@dataclass
class WeightReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    reshaped: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, model, source)
    missing: list[str] = field(default_factory=list)  # in the model, not in the source
    unused: list[str] = field(default_factory=list)  # in the source, not in the model
    layout: str = "by name"

    def lines(self) -> list[str]:
        out = [f"--init {self.source}: {len(self.loaded)} tensors loaded ({self.layout})"]

        def listed(items: list[str], what: str) -> None:
            if items:
                shown = ", ".join(items[:MAX_LISTED])
                more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
                out.append(f"  {what} ({len(items)}): {shown}{more}")

        listed(
            [f"{k} {list(m)} vs {list(s)}" for k, m, s in self.reshaped],
            "re-initialised, shapes differ",
        )
        listed(self.missing, "re-initialised, not in the source")
        listed(self.unused, "unused from the source")
        return out


def read_weights(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of SOURCE: a run directory or checkpoint, a .safetensors file, or a .pt/.pth
    state dict (optionally under a 'state_dict' or 'model' key)."""
    path = Path(source)
    if is_checkpoint(path):
        return load_checkpoint(path).model.state_dict()
    if not path.is_file():
        raise CnnlabError(f"--init {source}: no such run, checkpoint or weights file")
    if path.suffix == ".safetensors":
        return load_tensors(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        return _torch_state(path)
    raise CnnlabError(f"--init {source}: expected a run, a checkpoint, .safetensors, .pt or .pth")


def _torch_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, or not a torch file at all
        raise CnnlabError(
            f"--init {path}: not a PyTorch state dict that loads with weights_only=True "
            f"({str(e).splitlines()[0][:200]})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())
    ):
        raise CnnlabError(f"--init {path}: expected a mapping of parameter names to tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}  # DataParallel's prefix


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> WeightReport:
    """Copy every tensor of `state` whose name and shape fit `model`; report the rest. A state
    dict in torchvision's key layout is translated to the model's names first."""
    translated = from_torchvision(model, state, str(source))  # None unless it is that layout
    if translated is not None:
        return _load_translated(model, translated, str(source))
    report = WeightReport(str(source))
    own = model.state_dict()
    fitting = {}
    for key, value in state.items():
        if key not in own:
            report.unused.append(key)
        elif value.shape != own[key].shape:
            report.reshaped.append((key, tuple(own[key].shape), tuple(value.shape)))
        else:
            fitting[key] = value
    report.missing = [k for k in own if k not in state]
    if not fitting:
        first = ", ".join(list(state)[:3])
        raise CnnlabError(
            f"--init {source}: no tensor fits the model by name and shape (its first keys: {first})"
        )
    model.load_state_dict(fitting, strict=False)
    report.loaded = list(fitting)
    return report


def _load_translated(model: nn.Module, t, source: str) -> WeightReport:
    model.load_state_dict(t.state, strict=False)
    report = WeightReport(
        source,
        loaded=list(t.state),
        missing=list(t.missing),
        unused=list(t.unused),
        layout=f"torchvision's {t.family} layout",
    )
    report.reshaped = [(m.key, m.expected, m.found) for m in t.misfit]
    if t.extra_layers:  # the tensors fit, but the model computes something torchvision's does not
        report.missing += [f"{name} (a layer torchvision's model lacks)" for name in t.extra_layers]
    return report
