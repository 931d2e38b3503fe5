"""State dicts in torchvision's key layout, read into cnnlab models by explicit rules.

torchvision names its tensors after its own module attributes (`layer1.0.conv1.weight`,
`features.0.weight`, `features.denseblock1.denselayer1.norm1.weight`,
`inception3a.branch2.1.conv.weight`, `fc.weight`). A cnnlab `Net` holding the same
architecture names them after its spec (`residual1.body.0.weight`, `conv1.weight`,
`dense1.weight`). This module walks the cnnlab model's own layers (`named_children` and
`kinds`) and says, family by family, which torchvision module each of its convolutions,
batch norms and linear layers corresponds to:

- resnet: `conv1`/`bn1`, blocks `layerS.B` (a stage starts at the first block and at every
  block with a projection shortcut, as torchvision's `_make_layer` builds them), the k-th
  convolution / batch norm of a block as `convk`/`bnk`, the projection as `downsample.0/1`, `fc`;
- vgg (and alexnet): one index of `features` per convolution, batch norm, ReLU and pooling
  layer up to the adaptive pooling, then one index of `classifier` per dropout, dense and ReLU;
- densenet: `features.conv0/norm0`, `features.denseblockN.denselayerM.norm1/conv1/norm2/conv2`,
  `features.transitionN.norm/conv`, the batch norm after the last block as `features.normN+1`,
  `classifier`; the `norm.1`-style keys of torchvision's published DenseNet files are read too;
- googlenet: the stem's k-th convolution and batch norm as `convk.conv`/`convk.bn`, the i-th
  inception module by torchvision's name (`inception3a` ... `inception5b`), its branches as
  `branchB[.I].conv/bn` (I counts torchvision's modules in the branch: pooling, or one
  conv-bn-relu), `fc`. The auxiliary classifiers (`aux1.*`, `aux2.*`) have no place here
  and are reported unused.

Because the rules follow the model's structure, a retargeted model (another input size or
class count) maps the same way; a head of another shape is reported, not refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.model.net import Net

GOOGLENET_INCEPTIONS = (
    "inception3a",
    "inception3b",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "inception5a",
    "inception5b",
)
FAMILY_BLOCKS = {"residual": "resnet", "dense_block": "densenet", "inception": "googlenet"}
FEATURE_KINDS = {"conv", "batchnorm", "relu", "pool"}  # one module each in vgg's `features`
CLASSIFIER_KINDS = {"dropout", "dense", "relu"}  # one module each in vgg's `classifier`
# torchvision's published DenseNet weights predate its `norm1` names: `denselayer1.norm.1.weight`
OLD_DENSENET_KEY = re.compile(
    r"(features\.denseblock\d+\.denselayer\d+\.(?:norm|conv))\.([12])\.(\w+)"
)
VGG_CLASSIFIER_KEY = re.compile(r"classifier\.\d+\.weight")


class Misfit(NamedTuple):
    """A tensor both sides have, in different shapes (typically the head after --classes)."""

    key: str  # the cnnlab model's key
    source_key: str  # the key in the torchvision-layout state dict
    expected: tuple[int, ...]  # the model's shape
    found: tuple[int, ...]  # the state dict's shape


@dataclass
class Translation:
    """The outcome of reading a torchvision-layout state dict into a cnnlab model.

    `state` holds the tensors that fit, under the model's keys, in the model's key order:
    load it with `model.load_state_dict(translation.state, strict=False)`. Every key of the
    model is in `state`, `missing` or `misfit`; every key of the source is used, in `unused`
    or in `misfit`. A `num_batches_tracked` absent from an old file is filled with 0, as
    PyTorch's batch norm does for such files, and not reported.
    """

    family: str  # resnet, vgg (also alexnet), densenet or googlenet
    state: dict[str, torch.Tensor]
    missing: list[str] = field(default_factory=list)  # model keys the source has no tensor for
    misfit: list[Misfit] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # source keys with no place in the model
    # cnnlab layers torchvision's model has no counterpart for (e.g. the zoo alexnet's lrn1/2):
    # all tensors may still fit, but the model computes something else than torchvision's
    extra_layers: list[str] = field(default_factory=list)

    @property
    def reinitialised(self) -> list[str]:
        """Model keys left as initialised: no tensor in the source, or one of another shape."""
        return self.missing + [m.key for m in self.misfit]

    @property
    def skipped(self) -> list[str]:
        """Source keys not loaded: no place in the model, or a place of another shape."""
        return self.unused + [m.source_key for m in self.misfit]


# ------------------------------------------------------------------ detection
def looks_like_torchvision(state: Mapping) -> str | None:
    """The torchvision family whose layout `state`'s keys follow, or None."""
    keys = {k for k in state if isinstance(k, str)}
    if {"conv1.weight", "layer1.0.conv1.weight"} <= keys:
        return "resnet"
    if any(k.startswith("features.denseblock1.denselayer1.") for k in keys):
        return "densenet"
    if "inception3a.branch1.conv.weight" in keys:
        return "googlenet"
    if "features.0.weight" in keys and any(VGG_CLASSIFIER_KEY.fullmatch(k) for k in keys):
        return "vgg"
    return None


def model_family(model: Net) -> str | None:
    """The torchvision family a cnnlab model's layers belong to, or None."""
    kinds = set(_kinds(model).values())
    for block, family in FAMILY_BLOCKS.items():
        if block in kinds:
            return family
    return "vgg" if {"conv", "dense"} <= kinds else None


def _kinds(model: nn.Module) -> dict[str, str]:
    kinds = getattr(model, "kinds", None)
    if not isinstance(kinds, dict):
        raise CnnlabError(
            f"{type(model).__name__} was not built by cnnlab, so its layers have no kinds"
        )
    return kinds


# ------------------------------------------------------------------ per-family plans
# A plan maps a cnnlab module's qualified name to the torchvision module's qualified name;
# both modules hold tensors of the same names (weight, bias, running_mean, ...).
Plan = dict[str, str]


def _children(model: Net) -> Iterator[tuple[str, str, nn.Module]]:
    kinds = _kinds(model)
    for name, child in model.named_children():
        yield name, kinds[name], child


def _last_of(model: Net, kind: str) -> str | None:
    names = [name for name, k, _ in _children(model) if k == kind]
    return names[-1] if names else None


def _numbered(prefix: str, body: nn.Module, target: str, names: tuple[str, str]) -> Plan:
    """The k-th conv of `body` as `target.{names[0]}k`, the k-th batch norm as `names[1]`k."""
    plan, convs, norms = {}, 0, 0
    for index, module in body.named_children():
        if isinstance(module, nn.Conv2d):
            convs += 1
            plan[f"{prefix}.{index}"] = f"{target}.{names[0]}{convs}"
        elif isinstance(module, nn.BatchNorm2d):
            norms += 1
            plan[f"{prefix}.{index}"] = f"{target}.{names[1]}{norms}"
    return plan


def _plan_resnet(model: Net) -> tuple[Plan, list[str]]:
    plan, extra = {}, []
    stem = {"conv": "conv1", "batchnorm": "bn1"}
    head = _last_of(model, "dense")
    stage, block = 0, 0
    for name, kind, child in _children(model):
        if kind in stem and stage == 0 and stem[kind] not in plan.values():
            plan[name] = stem[kind]
        elif kind == "residual":
            projection = isinstance(child.shortcut, nn.Sequential)
            if stage == 0 or projection:
                stage, block = stage + 1, 0
            target = f"layer{stage}.{block}"
            plan.update(_numbered(f"{name}.body", child.body, target, ("conv", "bn")))
            if projection:
                for index, _ in child.shortcut.named_children():
                    plan[f"{name}.shortcut.{index}"] = f"{target}.downsample.{index}"
            elif not isinstance(child.shortcut, nn.Identity):
                extra.append(name)  # a parameter-free 'pad' shortcut: torchvision has none
            block += 1
        elif name == head:
            plan[name] = "fc"
        elif kind not in ("relu", "pool", "global_pool"):
            extra.append(name)
    return plan, extra


def _plan_vgg(model: Net) -> tuple[Plan, list[str]]:
    plan, extra = {}, []
    section, index = "features", 0
    for name, kind, _ in _children(model):
        if section == "features" and kind in ("adaptive_pool", "dense"):
            section, index = "classifier", 0  # torchvision's avgpool and flatten sit between
            if kind == "adaptive_pool":
                continue
        if kind == "flatten":
            continue
        if kind not in (FEATURE_KINDS if section == "features" else CLASSIFIER_KINDS):
            extra.append(name)
            continue
        if kind in ("conv", "batchnorm", "dense"):
            plan[name] = f"{section}.{index}"
        index += 1
    return plan, extra


def _plan_densenet(model: Net) -> tuple[Plan, list[str]]:
    plan, extra = {}, []
    blocks_total = sum(1 for _, kind, _ in _children(model) if kind == "dense_block")
    head = _last_of(model, "dense")
    final_norm = f"features.norm{blocks_total + 1}"  # torchvision's norm5 after 4 blocks
    blocks = transitions = 0
    stem = {"conv": "features.conv0", "batchnorm": "features.norm0"}
    for name, kind, child in _children(model):
        if kind in stem and blocks == 0 and stem[kind] not in plan.values():
            plan[name] = stem[kind]
        elif kind == "dense_block":
            blocks += 1
            for index, layer in child.named_children():
                target = f"features.denseblock{blocks}.denselayer{int(index) + 1}"
                plan.update(_numbered(f"{name}.{index}.body", layer.body, target, ("conv", "norm")))
        elif kind == "transition":
            transitions += 1
            for index, module in child.named_children():
                part = {nn.BatchNorm2d: "norm", nn.Conv2d: "conv"}.get(type(module))
                if part:
                    plan[f"{name}.{index}"] = f"features.transition{transitions}.{part}"
        elif kind == "batchnorm" and blocks == blocks_total > 0 and final_norm not in plan.values():
            plan[name] = final_norm
        elif name == head:
            plan[name] = "classifier"
        elif kind not in ("relu", "pool", "global_pool"):
            extra.append(name)
    return plan, extra


def _googlenet_branch(prefix: str, branch: nn.Module, target: str) -> Plan:
    """torchvision counts a pooling layer, or a conv with its batch norm and ReLU, as one module."""
    units: list[list[tuple[str, nn.Module]]] = []
    for index, module in branch.named_children():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)) or not units:
            units.append([])
        units[-1].append((index, module))
    plan = {}
    for position, unit in enumerate(units):
        unit_target = target if len(units) == 1 else f"{target}.{position}"
        for index, module in unit:
            part = {nn.BatchNorm2d: "bn", nn.Conv2d: "conv"}.get(type(module))
            if part:
                plan[f"{prefix}.{index}"] = f"{unit_target}.{part}"
    return plan


def _plan_googlenet(model: Net) -> tuple[Plan, list[str]]:
    plan, extra = {}, []
    head = _last_of(model, "dense")
    convs = norms = inceptions = 0
    for name, kind, child in _children(model):
        if kind == "conv" and inceptions == 0:
            convs += 1
            plan[name] = f"conv{convs}.conv"
        elif kind == "batchnorm" and inceptions == 0:
            norms += 1
            plan[name] = f"conv{norms}.bn"
        elif kind == "inception" and inceptions < len(GOOGLENET_INCEPTIONS):
            target = GOOGLENET_INCEPTIONS[inceptions]
            inceptions += 1
            for b, branch in enumerate(child.branches):
                plan.update(
                    _googlenet_branch(f"{name}.branches.{b}", branch, f"{target}.branch{b + 1}")
                )
        elif name == head:
            plan[name] = "fc"
        elif kind not in ("relu", "pool", "global_pool", "dropout"):
            extra.append(name)
    return plan, extra


PLANNERS = {
    "resnet": _plan_resnet,
    "vgg": _plan_vgg,
    "densenet": _plan_densenet,
    "googlenet": _plan_googlenet,
}


# ------------------------------------------------------------------ translation
def _current_names(state: Mapping, family: str) -> dict[str, str]:
    """Each source key under torchvision's current name -> the key as written in the source."""
    names = {k: k for k in state if isinstance(k, str)}
    if family == "densenet":
        for key in list(names):
            match = OLD_DENSENET_KEY.fullmatch(key)
            new = match and f"{match[1]}{match[2]}.{match[3]}"
            if new and new not in names:
                names[new] = names.pop(key)
    return names


def from_torchvision(
    model: Net, state: Mapping[str, torch.Tensor], source: str = "state dict"
) -> Translation | None:
    """`state` in torchvision's layout -> its tensors under `model`'s keys, with what did not fit.

    Returns None when `state` does not follow the layout of torchvision's model of the same
    family as `model` (a cnnlab state dict, another family, no torchvision keys at all), so
    the caller can try plain name matching. Raises CnnlabError, naming `source` and the key,
    when a tensor the model needs is not a tensor. See `Translation` for the lists.
    """
    if not isinstance(state, Mapping):
        raise CnnlabError(
            f"{source}: expected a mapping of names to tensors, got {type(state).__name__}"
        )
    family = model_family(model)
    if family is None or looks_like_torchvision(state) != family:
        return None
    plan, extra = PLANNERS[family](model)
    names = _current_names(state, family)
    result = Translation(family, {}, extra_layers=extra)
    used: set[str] = set()
    for key, tensor in model.state_dict().items():
        module, _, tensor_name = key.rpartition(".")
        target = plan.get(module)
        if target is None:
            result.missing.append(key)
            continue
        wanted = f"{target}.{tensor_name}"
        if wanted not in names:
            if tensor_name == "num_batches_tracked":
                result.state[key] = torch.zeros_like(tensor)
            else:
                result.missing.append(key)
            continue
        original = names[wanted]
        value = state[original]
        used.add(original)
        if not isinstance(value, torch.Tensor):
            raise CnnlabError(
                f"{source}: '{original}' (for {key}) is a {type(value).__name__}, not a tensor"
            )
        if value.shape != tensor.shape:
            result.misfit.append(Misfit(key, original, tuple(tensor.shape), tuple(value.shape)))
        else:
            result.state[key] = value
    result.unused = [str(k) for k in state if k not in used]
    return result
