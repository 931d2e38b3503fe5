"""Architecture specs -> torch.nn.Module, with every shape inferred and every error named.

A spec is a mapping (from YAML or from Python):

    name: mnist-1conv
    input: [1, 28, 28]        # (C, H, W); (C, L) for sequences
    classes: 10
    layers:
      - {type: conv, filters: 8, kernel: 13}
      - {type: relu}
      - {type: pool, mode: max, size: 4}
      - {type: dense, units: 200}
      - {type: relu}
      - {type: dense}         # units default to `classes` for the final layer

Sizes follow (W - F + P) / S + 1 with P the total padding. A non-integer result is an
error unless the layer says `rounding: floor` (or `ceil` for pooling). The built model
returns logits; softmax belongs to the loss and to prediction.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.data.dataset import MAX_CLASSES
from cnnlab.errors import CnnlabError
from cnnlab.model.bounds import (
    MAX_ACTIVATION,
    MAX_GABOR_WORK,
    MAX_LAYERS,
    MAX_MACS,
    MAX_PARAMETERS,
    SpecError,
    brief,
)
from cnnlab.model.kinds import COMMON, KINDS, OUTPUT_KINDS, REQUIRED
from cnnlab.model.net import Net, Shape
from cnnlab.model.reading import load_spec, load_yaml
from cnnlab.model.shapes import per_dim, spatial_dims, symmetric

TOP_LEVEL = {"name", "description", "input", "classes", "layers"}


def _where(source: str, index: int, kind: str, name: Any = None) -> str:
    if name and not isinstance(name, str):
        name = brief(name)
    label = f"{kind} '{name[:100]}'" if name else kind
    return f"{source}: layer {index} ({label})"


def _normalise_layer(raw: Any, index: int, source: str) -> dict:
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source}: layer {index}: expected a mapping like {{type: conv, ...}}, "
            f"got {brief(raw)}"
        )
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in KINDS:
        known = ", ".join(sorted(KINDS))
        shown = kind if isinstance(kind, str) else brief(kind)
        raise SpecError(f"{_where(source, index, shown[:100])}: unknown layer type; known: {known}")
    fields, _ = KINDS[kind]
    allowed = fields | COMMON
    out = {"type": kind}
    for key in raw:
        if key != "type" and (not isinstance(key, str) or key not in allowed):
            raise SpecError(
                f"{_where(source, index, kind, raw.get('name'))}: unknown field {brief(key)}; "
                f"{kind} takes {', '.join(sorted(allowed))}"
            )
    for key, (check, default) in allowed.items():
        if key in raw:
            try:
                out[key] = check(raw[key])
            except ValueError as e:
                raise SpecError(
                    f"{_where(source, index, kind, raw.get('name'))}: field '{key}': {e}"
                ) from None
        elif default is REQUIRED:
            raise SpecError(
                f"{_where(source, index, kind, raw.get('name'))}: missing field '{key}'"
            )
        elif default is not None and key not in COMMON:
            out[key] = default
    if "name" in raw:
        out["name"] = raw["name"]
    if raw.get("repeat", 1) != 1:
        out["repeat"] = raw["repeat"]
    return out


def normalize(spec: dict, source: str = "spec") -> dict:
    """Check a spec's structure and fill every default, so that it round-trips exactly."""
    if not isinstance(spec, dict):
        raise SpecError(f"{source}: a spec is a mapping with input, classes and layers")
    unknown = set(spec) - TOP_LEVEL
    if unknown:
        raise SpecError(
            f"{source}: unknown top-level field(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(TOP_LEVEL))}"
        )
    for key in ("input", "classes", "layers"):
        if key not in spec:
            raise SpecError(f"{source}: missing top-level field '{key}'")
    shape = spec["input"]
    if not (
        isinstance(shape, (list, tuple))
        and len(shape) in (1, 2, 3)
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        raise SpecError(
            f"{source}: field 'input': expected [C, H, W] or [C, L] of positive integers, "
            f"got {brief(shape)}"
        )
    if math.prod(shape) > MAX_ACTIVATION:
        raise SpecError(
            f"{source}: field 'input': {'x'.join(map(str, shape))} = {math.prod(shape)} values "
            f"per example, over the cap of {MAX_ACTIVATION}"
        )
    classes = spec["classes"]
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise SpecError(
            f"{source}: field 'classes': expected a positive integer, got {brief(classes)}"
        )
    if classes > MAX_CLASSES:
        raise SpecError(
            f"{source}: field 'classes': {classes} is over the cap of {MAX_CLASSES} classes"
        )
    layers = spec["layers"]
    if not isinstance(layers, list) or not layers:
        raise SpecError(f"{source}: field 'layers': expected a non-empty list")
    if len(layers) > MAX_LAYERS:
        raise SpecError(
            f"{source}: field 'layers': {len(layers)} layers, over the cap of {MAX_LAYERS}"
        )
    out = {"name": _label(spec, "name", Path(source).stem, source), "input": list(shape),
           "classes": classes}  # fmt: skip
    if spec.get("description"):
        out["description"] = _label(spec, "description", "", source)
    out["layers"] = [_normalise_layer(raw, i, source) for i, raw in enumerate(layers, 1)]
    _count_layers(out["layers"], source)
    return out


def _label(spec: dict, key: str, default: str, source: str) -> str:
    """A top-level text field: plain text (a number is taken as text), of bounded length."""
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SpecError(f"{source}: field '{key}': expected text, got {brief(value)}")
    text = str(value)
    if len(text) > 10_000:
        raise SpecError(f"{source}: field '{key}': {len(text)} characters, at most 10000")
    return text


def _count_layers(layers: list[dict], source: str) -> None:
    """Refuse a spec whose layers, once repeated (and a dense_block's unrolled), pass MAX_LAYERS."""
    total = 0
    for index, layer in enumerate(layers, 1):
        total += layer.get("repeat", 1) * (layer["layers"] if layer["type"] == "dense_block" else 1)
        if total > MAX_LAYERS:
            raise SpecError(
                f"{_where(source, index, layer['type'], layer.get('name'))}: the spec reaches "
                f"{total} layers here once repeated, over the cap of {MAX_LAYERS}"
            )


def _expand(layers: list[dict]):
    """Yield (spec index, name, fields) with repeats unrolled and default names given."""
    counts: dict[str, int] = {}
    used: set[str] = set()
    for index, layer in enumerate(layers, 1):
        repeat = layer.get("repeat", 1)
        for j in range(repeat):
            fields = {k: v for k, v in layer.items() if k not in ("name", "repeat")}
            if j and "stride" in fields:
                fields["stride"] = 1  # a repeated block strides only in its first copy
            kind = layer["type"]
            if "name" in layer:
                name = layer["name"] if repeat == 1 else f"{layer['name']}_{j + 1}"
            else:
                counts[kind] = counts.get(kind, 0) + 1
                name = f"{kind}{counts[kind]}"
            if name in used:
                raise SpecError(f"layer {index}: name '{name}' is used twice")
            used.add(name)
            yield index, name, fields


def build(spec: dict | str | os.PathLike, source: str | None = None) -> Net:
    """Build a model from a spec (a mapping, a spec file, or a zoo name)."""
    if not isinstance(spec, dict):
        spec, source = load_spec(spec)
    if not source:
        name = spec.get("name")
        plain = isinstance(name, (str, int, float)) and not isinstance(name, bool)
        source = str(name)[:100] if plain and str(name) else "spec"
    spec = normalize(spec, source)
    shape: Shape = tuple(spec["input"])
    named = []
    expanded = list(_expand(spec["layers"]))
    _check_sizes(spec, expanded, source)
    for position, (index, name, fields) in enumerate(expanded):
        kind = fields["type"]
        if kind in OUTPUT_KINDS and position == len(expanded) - 1:
            raise SpecError(
                f"{_where(source, index, kind, name)}: remove the final {kind}: models return "
                "logits, and the loss and prediction apply softmax themselves"
            )
        try:
            module, shape = KINDS[kind][1](fields, shape, spec)
        except ValueError as e:
            raise SpecError(f"{_where(source, index, kind, name)}: {e}") from None
        named.append((name, kind, module, tuple(shape)))
    if shape != (spec["classes"],):
        raise SpecError(
            f"{source}: the last layer outputs shape {shape} but the spec declares "
            f"{spec['classes']} classes; end with a dense layer (or global pooling over "
            f"{spec['classes']} channels)"
        )
    return Net(named, spec)


# ------------------------------------------------------------------ size checks
def _check_sizes(spec: dict, expanded: list, source: str) -> None:
    """Run every builder on the meta device (shapes and sizes, no memory) and refuse the spec
    if a layer makes an empty map, or a tensor, the parameters or the multiply-adds pass
    their caps. Builder errors surface here, in the same words as in build."""
    shape: Shape = tuple(spec["input"])
    params = macs = 0
    for index, name, fields in expanded:
        kind = fields["type"]
        where = _where(source, index, kind, name)
        try:
            layer_params, out = _planned(kind, fields, shape, spec)
        except ValueError as e:
            raise SpecError(f"{where}: {e}") from None
        except (RuntimeError, OverflowError) as e:  # torch refusing a size the checks let by
            raise SpecError(f"{where}: {str(e).splitlines()[0]}") from None
        if min(out) < 1:
            raise SpecError(f"{where}: its output {tuple(out)} is empty")
        for what, n in _tensor_sizes(kind, fields, shape, out):
            if n > MAX_ACTIVATION:
                raise SpecError(
                    f"{where}: {what} would hold {n} values per example, over the cap of "
                    f"{MAX_ACTIVATION}"
                )
        params += layer_params
        if params > MAX_PARAMETERS:
            raise SpecError(
                f"{where}: the model reaches {params} parameters here, over the cap of "
                f"{MAX_PARAMETERS}"
            )
        spatial = math.prod(out[1:])
        if kind not in ("conv", "gabor"):  # blocks work at their input's size too
            spatial = max(spatial, math.prod(shape[1:])) if len(out) > 1 else 1
        macs += layer_params * spatial
        if macs > MAX_MACS:
            raise SpecError(
                f"{where}: the model reaches about {macs:.3g} multiply-adds per example here, "
                f"over the cap of {MAX_MACS:.0e}"
            )
        shape = tuple(out)


def _planned(kind: str, f: dict, shape: Shape, spec: dict) -> tuple[int, Shape]:
    """(parameter and buffer count, output shape) of one layer, without allocating it."""
    if kind == "gabor":  # its bank is drawn on the CPU in Python: bounded, then sized by hand
        work = f["filters"] * f["kernel"] ** 2
        if work > MAX_GABOR_WORK:
            raise ValueError(
                f"{f['filters']} filters of {f['kernel']}x{f['kernel']} ({work} values to draw) "
                f"is over the Gabor cap of {MAX_GABOR_WORK}"
            )
        if len(shape) != 3:
            raise ValueError(f"needs a (C, H, W) input, got {shape}")
        out = spatial_dims(shape, f, "kernel", "stride", f["rounding"])[-1]
        return f["filters"] * shape[0] * f["kernel"] ** 2, (f["filters"], *out)
    with torch.device("meta"):
        module, out = KINDS[kind][1](f, shape, spec)
    count = sum(t.numel() for t in module.parameters()) + sum(t.numel() for t in module.buffers())
    return count, tuple(out)


def _tensor_sizes(kind: str, f: dict, shape: Shape, out: Shape) -> list[tuple[str, int]]:
    """(what, values per example) of the tensors a layer makes: its output, and those inside."""
    spatial = math.prod(shape[1:])
    sizes = [("its output", math.prod(out))]
    if kind == "conv":  # symmetric padding stays implicit; uneven padding is a tensor
        pads = spatial_dims(shape, f, "kernel", "stride", f["rounding"])[4]
        if not symmetric(pads):
            padded = math.prod(s + a + b for s, (a, b) in zip(shape[1:], pads, strict=True))
            sizes.append(("its padded input", shape[0] * padded))
    elif kind == "pool" and f["mode"] == "stochastic":
        window = math.prod(per_dim(f["size"], len(shape) - 1))
        sizes.append(("its pooling windows", math.prod(out) * window))
    elif kind == "lrn":
        sizes.append(("its padded squares", (shape[0] + f["size"] - 1) * spatial))
    elif kind == "residual" and f["bottleneck"]:
        sizes.append(("its first 1x1 convolution", f["filters"] * spatial))
    elif kind == "inception":
        sizes.append(("a reducing 1x1 convolution", max(f["b3_reduce"], f["b5_reduce"]) * spatial))
    elif kind == "dense_block":
        sizes.append(("a bottleneck", f["bn_size"] * f["growth"] * spatial))
    elif kind == "transition":
        sizes.append(("its convolution", out[0] * spatial))
    return sizes


def to_spec(model: nn.Module) -> dict:
    """The normalised spec a cnnlab model was built from."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise CnnlabError(f"{type(model).__name__} was not built by cnnlab, so it carries no spec")
    return copy.deepcopy(spec)


def retarget(spec: dict, input_shape: Shape | None = None, classes: int | None = None) -> dict:
    """The same architecture for another input shape or class count (shapes re-inferred)."""
    spec = copy.deepcopy(spec)
    if input_shape is not None:
        spec["input"] = list(input_shape)
    if classes is not None:
        spec["classes"] = classes
    return spec


def apply_overrides(spec: dict, assignments: list[str], source: str = "spec") -> dict:
    """Edit a spec with KEY=VALUE strings: `classes=100`, `input=[3,64,64]`, `pool1.mode=mean`.

    A layer is named as in the built model; VALUE is read as YAML (numbers, lists, true).
    Setting a field of one copy of a repeated layer sets it for every copy.
    """
    spec = copy.deepcopy(spec)
    names = {name: index for index, name, _ in _expand(normalize(spec, source)["layers"])}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. pool1.mode=mean")
        value = load_yaml(text, f"--set {item!r}: the value")
        if "." not in key:
            if key not in TOP_LEVEL - {"layers"}:
                raise SpecError(
                    f"--set {item!r}: top-level keys are name, description, input, classes"
                )
            spec[key] = value
            continue
        layer, field = key.split(".", 1)
        if layer not in names:
            raise SpecError(f"--set {item!r}: no layer '{layer}'; layers: {', '.join(names)}")
        spec["layers"][names[layer] - 1][field] = value
    return spec


normalise = normalize  # the 0.1 spelling
