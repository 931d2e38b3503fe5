"""1-D signals end to end: generated waveforms that a 1-D CNN separates and a linear model on
the raw samples does not; the CNN trained, evaluated, asked about one sequence and exported,
as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cnnlab.data import load_data
from cnnlab.data.signals import CLASSES, make_signals, save_signals
from cnnlab.train import TrainConfig, train

LINEAR = "name: linear\ninput: [1, 256]\nclasses: 5\nlayers:\n  - {type: dense}\n"


def cnnlab(*args):
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def signals(tmp_path_factory):
    return save_signals(tmp_path_factory.mktemp("signals") / "signals.npz", 2000, 500)


def test_the_generator_is_seeded_balanced_and_has_no_class_in_its_mean():
    x, y = make_signals(2000, seed=3)
    again, _ = make_signals(2000, seed=3)
    assert x.shape == (2000, 1, 256) and x.dtype == np.float32 and np.array_equal(x, again)
    assert np.bincount(y).tolist() == [400] * len(CLASSES)
    means = np.stack([x[y == c, 0].mean(0) for c in range(len(CLASSES))])
    assert np.abs(means).max() < 0.25  # random place and sign: no class has a mean shape


def _accuracy(model, data, out):
    """Test accuracy after the same recipe: 8 epochs of Adam, shifts of up to 16 samples."""
    result = train(
        TrainConfig(
            model=model,
            data=str(data),
            epochs=8,
            batch_size=64,
            optimizer="adam",
            lr=5e-3,
            val_split=0.0,
            augment="translate=16",
            seed=0,
            out=str(out),
        )
    )
    return result["test_acc"]


def test_a_1d_cnn_separates_what_a_linear_model_cannot(signals, tmp_path):
    (tmp_path / "linear.yaml").write_text(LINEAR)
    cnn = _accuracy("signal-cnn", signals, tmp_path / "cnn")
    linear = _accuracy(str(tmp_path / "linear.yaml"), signals, tmp_path / "linear")
    assert cnn >= 0.8 and linear <= 0.4 and cnn - linear >= 0.4, (cnn, linear)


def test_sequences_train_evaluate_predict_and_export_from_the_command_line(signals, tmp_path):
    run = tmp_path / "run"
    proc = cnnlab(
        "train",
        "--model",
        "signal-cnn",
        "--data",
        str(signals),
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--augment",
        "translate=8,flip",
        "--out",
        str(run),
    )
    assert proc.returncode == 0, proc.stderr
    assert "on 1800 images of 1x256" in proc.stdout
    meta = json.loads((run / "checkpoints" / "last.json").read_text())
    assert meta["input_dtype"] == "float32" and meta["input_shape"] == [1, 256]
    assert meta["classes"] == CLASSES and meta["input_recipe"] is None
    result = cnnlab("eval", str(run), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["count"] == 500  # the file's test split
    test = load_data(str(signals), "test")
    np.save(tmp_path / "one.npy", test.images[0].numpy())  # (1, 256)
    np.save(tmp_path / "flat.npy", test.images[1, 0].numpy())  # (256,): one channel implied
    predicted = cnnlab(
        "predict", str(run), str(tmp_path / "one.npy"), str(tmp_path / "flat.npy"), "--json"
    )
    assert predicted.returncode == 0, predicted.stderr
    assert [r["top"][0]["class"] in CLASSES for r in json.loads(predicted.stdout)] == [True, True]
    exported = cnnlab("export", str(run), "--format", "onnx")
    assert exported.returncode == 0 and "max |difference|" in exported.stdout, exported.stderr
    reported = cnnlab("report", str(run), "--out", str(tmp_path / "report.html"))
    assert reported.returncode == 0, reported.stderr
    page = (tmp_path / "report.html").read_text()
    assert page.count("<polyline") >= 1 and 'alt="test image' not in page  # lines, not strips
    served = cnnlab("serve", str(run), "--port", "0")  # the page draws images: refused at once
    assert served.returncode == 1 and len(served.stderr.strip().splitlines()) == 1
    assert "this one reads sequences (C, L)" in served.stderr


def test_image_only_augmentation_on_sequences_is_one_line_before_training(signals, tmp_path):
    proc = cnnlab(
        "train",
        "--model",
        "signal-cnn",
        "--data",
        str(signals),
        "--epochs",
        "1",
        "--augment",
        "elastic",
        "--out",
        str(tmp_path / "run"),
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "Error: --augment elastic: elastic works on images (N, C, H, W); sequences (N, C, L) "
        "take translate and flip"
    ]


def test_an_image_model_on_sequences_says_so(signals, tmp_path):
    proc = cnnlab(
        "train",
        "--model",
        "lenet5",
        "--data",
        str(signals),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
    )
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "holds sequences (C, L) of 1x256, but lenet5 takes 1x32x32" in proc.stderr
