"""Net: the module every spec builds, a plain nn.Sequential of named layers that keeps its spec."""

from __future__ import annotations

import torch
from torch import nn

Shape = tuple[int, ...]


class Net(nn.Sequential):
    """A plain nn.Sequential of named layers that also keeps its spec.

    `features(x)` returns every layer's output by name: the one way in that the inspection
    tools use, whatever the architecture.
    """

    def __init__(self, named: list[tuple[str, str, nn.Module, Shape]], spec: dict):
        super().__init__()
        for name, _, module, _ in named:
            self.add_module(name, module)
        self.spec = spec
        self.kinds = {name: kind for name, kind, _, _ in named}  # spec layer type of each layer
        self.shapes = {name: shape for name, _, _, shape in named}  # output shape, no batch

    @property
    def input_shape(self) -> Shape:
        return tuple(self.spec["input"])

    def features(self, x: torch.Tensor, upto: str | None = None) -> dict[str, torch.Tensor]:
        """Every layer's output by name (up to and including `upto`), each equal to what the
        prefix of the net ending at that layer returns.

        The layers run as in forward, except that a layer which writes into its input (the
        in-place relu that keeps training fast) is given a copy: otherwise it would overwrite
        the output kept for the layer before it, and any earlier output that one aliases
        (dropout in eval mode returns its input, flatten a view of it).
        """
        outputs = {}
        for name, module in self.named_children():
            x = module(x.clone() if writes_its_input(module) else x)
            outputs[name] = x
            if name == upto:
                break
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """As nn.Sequential's, except that the caller's tensor is never written to: a first
        layer that works in place is given a copy."""
        for i, module in enumerate(self):
            x = module(x.clone() if i == 0 and writes_its_input(module) else x)
        return x


def writes_its_input(module: nn.Module) -> bool:
    """True for a layer that overwrites its input (an in-place relu, or a block starting with
    one)."""
    while isinstance(module, nn.Sequential) and len(module):
        module = module[0]
    return bool(getattr(module, "inplace", False))
