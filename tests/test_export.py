import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cnnlab import zoo
from cnnlab.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cnnlab.export import export_onnx, export_torchscript
from cnnlab.spec import apply_overrides, build, load_spec, retarget

# Shrink only the huge dense layers: the test is about the operators, not the bytes.
SHRINK = {
    "alexnet": ["dense1.units=64", "dense2.units=64"],
    "zfnet": ["dense1.units=64", "dense2.units=64"],
    "vgg11": ["dense1.units=64", "dense2.units=64"],
    "vgg16": ["dense1.units=64", "dense2.units=64"],
    # and densenet121's longest blocks: the same dense-block operators, 2 layers each
    "densenet121": [f"dense_block{i}.layers=2" for i in (2, 3, 4)],
}
SIZE = {"nin": 96}
# exported through a model with the same modules, fewer of them (the export takes 40 s)
SAME_MODULES_AS = {"resnet152": "resnet50"}


def test_a_model_left_out_of_the_export_has_no_module_its_stand_in_lacks():
    for name, stand_in in SAME_MODULES_AS.items():
        modules = {type(m) for m in build(name).modules()}
        assert modules <= {type(m) for m in build(stand_in).modules()}, name


def _checkpoint(name, tmp_path) -> Checkpoint:
    spec, _ = load_spec(name)
    c, *sides = spec["input"]
    size = min(sides[0], SIZE.get(name, 64))
    shape = [c, size, size] if len(sides) == 2 else list(spec["input"])  # sequences as they are
    model = build(apply_overrides(retarget(spec, tuple(shape), 10), SHRINK.get(name, [])))
    meta = {
        "classes": [f"c{i}" for i in range(10)],
        "input_shape": shape,
        "mean": [0.5] * c,
        "std": [0.25] * c,
    }
    path = save_checkpoint(model, meta, tmp_path / "ckpt")
    return load_checkpoint(path)


@pytest.mark.parametrize("name", [n for n in zoo.names() if n not in SAME_MODULES_AS])
def test_every_zoo_model_exports_to_onnx_within_tolerance(name, tmp_path):
    ckpt = _checkpoint(name, tmp_path)
    path, diff = export_onnx(ckpt, tmp_path / "m.onnx")
    assert diff <= 1e-4
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert (
        json.loads(meta["cnnlab.classes"])[3] == "c3" and json.loads(meta["cnnlab.std"])[0] == 0.25
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # dynamic batch dimension
        x = (
            np.random.default_rng(0)
            .standard_normal((batch, *ckpt.meta["input_shape"]))
            .astype(np.float32)
        )
        assert session.run(None, {"input": x})[0].shape == (batch, 10)


def test_stochastic_pooling_exports_its_evaluation_rule(tmp_path):
    spec = apply_overrides(load_spec("mnist-1conv")[0], ["pool1.mode=stochastic"])
    model = build(spec)
    path = save_checkpoint(
        model, {"classes": list("0123456789"), "input_shape": [1, 28, 28]}, tmp_path / "s"
    )
    ckpt = load_checkpoint(path)
    out, diff = export_onnx(ckpt, tmp_path / "s.onnx")
    x = torch.rand(4, 1, 28, 28)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = ckpt.model.eval()(x).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-4)


def test_torchscript_and_cli(tmp_path):
    ckpt = _checkpoint("lenet5", tmp_path)
    path, diff = export_torchscript(ckpt, tmp_path / "m.pt")
    assert diff <= 1e-4 and torch.jit.load(str(path))(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnlab",
            "export",
            str(ckpt.path),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "cli.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.split()[0]).is_file() and "max |difference|" in out.stdout
