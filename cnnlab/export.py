"""Export a checkpoint to ONNX (verified with onnxruntime) or TorchScript.

The exported graph takes normalised float input (N, C, H, W) with a dynamic batch size and
returns logits; class names, normalisation and preprocessing travel in the file's metadata.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from cnnlab.atomic import atomic_path
from cnnlab.checkpoint import Checkpoint
from cnnlab.errors import CnnlabError

TOLERANCE = 1e-4
logging.getLogger("torch.onnx").setLevel(
    logging.ERROR
)  # it warns about torchvision ops we never use


def _metadata(ckpt: Checkpoint) -> dict[str, str]:
    meta = ckpt.meta
    return {
        "cnnlab.classes": json.dumps(ckpt.classes),
        "cnnlab.mean": json.dumps(meta.get("mean", [0.0])),
        "cnnlab.std": json.dumps(meta.get("std", [1.0])),
        "cnnlab.input_shape": json.dumps(meta["input_shape"]),
        "cnnlab.preprocess": meta.get("preprocess", "resize"),
        "cnnlab.model": meta["spec"].get("name", ""),
    }


def _sample(ckpt: Checkpoint, batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *ckpt.meta["input_shape"], generator=gen)


def export_onnx(ckpt: Checkpoint, out: str | os.PathLike, opset: int = 17) -> tuple[Path, float]:
    """Write ONNX, then run onnxruntime and PyTorch on the same batch; return (path, max |diff|)."""
    import onnx

    model = ckpt.model.eval()
    out = Path(out)
    example = _sample(ckpt, 2)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            batch = torch.export.Dim("batch", min=1, max=1 << 16)
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
        except Exception as e:  # the exporter's own errors are long; keep the first line
            raise CnnlabError(
                f"ONNX export of {ckpt.path} failed at opset {opset}: {str(e).splitlines()[0]}"
            ) from e  # --debug shows the exporter's own traceback
        proto = onnx.load(str(tmp))
        for key, value in _metadata(ckpt).items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(tmp))
        diff = verify_onnx(tmp, model, _sample(ckpt, 5, seed=1))
    return out, diff


def verify_onnx(path: Path, model: torch.nn.Module, batch: torch.Tensor) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": batch.numpy()})[0]
    with torch.no_grad():
        want = model(batch).numpy()
    diff = float(np.abs(got - want).max())
    if not diff <= TOLERANCE:
        raise CnnlabError(
            f"{path}: onnxruntime differs from PyTorch by {diff:.3g} (> {TOLERANCE:g}); not written"
        )
    return diff


def export_torchscript(ckpt: Checkpoint, out: str | os.PathLike) -> tuple[Path, float]:
    model = ckpt.model.eval()
    out = Path(out)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _sample(ckpt, 2), check_trace=False)
        torch.jit.save(
            traced, str(tmp), _extra_files={k: v.encode() for k, v in _metadata(ckpt).items()}
        )
        loaded = torch.jit.load(str(tmp))
        batch = _sample(ckpt, 5, seed=1)
        with torch.no_grad():
            diff = float((loaded(batch) - model(batch)).abs().max())
        if not diff <= TOLERANCE:
            raise CnnlabError(f"{out}: the traced model differs from the original by {diff:.3g}")
    return out, diff
