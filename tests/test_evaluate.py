"""eval and predict on a model trained in the test, through the real command line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.checkpoint import load_checkpoint
from cnnlab.infer import logits
from cnnlab.infer.evaluate import confusion, eval_data, normalizer, prepare_image
from cnnlab.train import TrainConfig, train


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def run(tiny, tmp_path):
    data, spec = tiny
    recipe = {"epochs": 3, "batch_size": 32, "optimizer": "adam", "lr": 0.01, "augment": "none"}
    train(TrainConfig(model=str(spec), data=str(data), out=str(tmp_path / "run"), **recipe))
    return tmp_path / "run"


def test_confusion_counts():
    cm = confusion(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_eval_reports_accuracy_per_class_and_plot(run, tmp_path):
    out = cli("eval", str(run), "--json", "--plot", str(tmp_path / "cm.png"))
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)
    assert m["count"] == 200 and m["split"] == "test" and m["accuracy"] > 0.9
    assert np.array(m["confusion"]).sum() == 200 and len(m["per_class"]) == 4
    ckpt = load_checkpoint(run)  # the counts again, from the model's own outputs
    data, _ = eval_data(ckpt, None)
    pred = logits(ckpt.model, data.images, normalizer(ckpt)).argmax(1)
    assert m["errors"] == int((pred != data.labels).sum()) == 200 - np.trace(m["confusion"])
    for c, row in enumerate(m["per_class"]):
        truly = data.labels == c
        assert row["recall"] == pytest.approx(float((pred[truly] == c).float().mean()))
        assert row["support"] == int(truly.sum())
    assert Image.open(tmp_path / "cm.png").size[0] > 300
    text = cli("eval", str(run)).stdout
    assert "precision" in text and "confusion (rows: true, columns: predicted)" in text


def test_predict_files_and_folders(run, tmp_path):
    ckpt = load_checkpoint(run)
    (tmp_path / "folder" / "inner").mkdir(parents=True)
    files = {
        3: tmp_path / "three.png",
        0: tmp_path / "folder/zero.png",
        1: tmp_path / "folder/inner/one.jpg",
    }
    for quadrant, path in files.items():
        img = np.zeros((12, 12), np.uint8)
        top, left = (quadrant // 2) * 6 + 1, (quadrant % 2) * 6 + 1
        img[top : top + 4, left : left + 4] = 220  # a bright square in that quadrant
        Image.fromarray(img).save(path)
    out = cli(
        "predict", str(run), str(files[3]), str(tmp_path / "folder"), "--top-k", "2", "--json"
    )
    assert out.returncode == 0, out.stderr
    results = {Path(r["file"]).name: r["top"] for r in json.loads(out.stdout)}
    guessed = {name: top[0]["class"] for name, top in results.items()}
    assert guessed == {"three.png": "3", "zero.png": "0", "one.jpg": "1"}
    prepared = torch.from_numpy(prepare_image(ckpt, files[3]))[None]
    probs = logits(ckpt.model, prepared, normalizer(ckpt)).softmax(1)[0]
    best = probs.topk(2)
    assert [t["probability"] for t in results["three.png"]] == pytest.approx(
        best.values.tolist(), abs=1e-6
    )
    assert ckpt.meta["preprocess"] == "resize"


def test_bad_inputs_are_one_line_errors(run, tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    out = cli("predict", str(run), str(tmp_path / "junk.png"))
    assert (
        out.returncode == 1
        and "junk.png: not an image" in out.stderr
        and "Traceback" not in out.stderr
    )
    weights = run / "checkpoints" / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    out = cli("eval", str(run))
    assert out.returncode == 1 and "do not match the checksum" in out.stderr
    (run / "checkpoints" / "best.json").write_text("{broken")
    out = cli("eval", str(run))
    assert out.returncode == 1 and "corrupt checkpoint metadata" in out.stderr
    out = cli("train", "--data", str(tmp_path / "missing"))
    assert out.returncode == 1 and "missing: no such file or directory" in out.stderr
    out = cli(
        "train",
        "--model",
        "resnet20",
        "--data",
        str(run.parent / "data"),
        "--classes",
        "10",
        "--epochs",
        "1",
    )
    assert (
        out.returncode == 1 and "--classes 10 but" in out.stderr and "has 4 classes" in out.stderr
    )
    assert len(out.stderr.strip().splitlines()) == 1
