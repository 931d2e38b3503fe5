import json
import subprocess
import sys

import torch
from torch import nn

from cnnlab.gradcheck import gradcheck_model


class _WrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad * w, 2 * (grad * x).sum(0)  # the weight gradient is twice too large


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.rand(6) + 0.5)

    def forward(self, x):
        return _WrongBackward.apply(x, self.w)


def test_a_wrong_gradient_is_caught_and_a_right_one_passes():
    bad = nn.Sequential()
    bad.add_module("scale", Scale())
    bad.add_module("dense", nn.Linear(6, 3))
    rows = {r["layer"]: r for r in gradcheck_model(bad, (6,), 3)}
    assert rows["scale"]["worst_rel_error"] > 0.3
    assert rows["dense"]["worst_rel_error"] < 1e-6


def test_cli_gradcheck_and_summary_json():
    run = [sys.executable, "-m", "cnnlab"]
    out = subprocess.run(
        [*run, "gradcheck", "mnist-1conv", "--json"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (
        report["worst"] < report["tolerance"]
        and [r["layer"] for r in report["layers"]][0] == "conv1"
    )
    out = subprocess.run(
        [*run, "summary", "vgg16", "--input", "3,32,32", "--classes", "10", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = json.loads(out.stdout)
    assert summary["input"] == [3, 32, 32] and summary["layers"][-1]["output"] == [10]
    out = subprocess.run(
        [*run, "summary", "alexnet", "--input", "3,30,30"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1 and "alexnet: layer" in out.stderr and "Traceback" not in out.stderr
