"""Your own data: any folder in one command, starting weights from elsewhere, fine-tuning."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from safetensors.torch import load_file, save_file

from cnnlab.errors import CnnlabError
from cnnlab.train import TrainConfig, train

QUADRANTS = ["top left", "top right", "bottom left", "bottom right"]


def photo_folder(root, per_class=40, seed=0):
    """Colour photos of mixed sizes, PNG and JPEG: a bright blob in one quadrant on noise."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(QUADRANTS):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(24, 72, 2))
            img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
            top, left = (label // 2) * h // 2, (label % 2) * w // 2
            img[top + h // 8 : top + h // 2 - h // 8, left + w // 8 : left + w // 2 - w // 8] = (
                rng.integers(150, 256, 3)
            )
            suffix = ".jpg" if i % 2 else ".png"
            Image.fromarray(img).save(root / name / f"{i:03d}{suffix}")
    return root


def digit_folder(root, per_class=20, seed=0):
    """Digits printed in a light font on noisy dark colours, at random sizes, weights, angles and
    places, with a stray mark beside them: not like MNIST's centred handwriting."""
    rng = np.random.default_rng(seed)
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True)
        for i in range(per_class):
            size = int(rng.integers(28, 64))
            paper = tuple(int(v) for v in rng.integers(0, 100, 3))
            img = Image.new("RGB", (size, size), paper)
            draw = ImageDraw.Draw(img)
            font = ImageFont.load_default(int(size * rng.uniform(0.45, 0.75)))
            xy = (int(rng.integers(0, size // 3)), int(rng.integers(-size // 10, size // 5)))
            ink = tuple(int(v) for v in rng.integers(160, 256, 3))
            weight = int(rng.integers(0, 3))
            draw.text(xy, str(digit), fill=ink, font=font, stroke_width=weight, stroke_fill=ink)
            x0, y0, dx, dy = (int(v) for v in rng.integers(-8, size, 4))
            draw.line((x0, y0, x0 + dx % 9 - 4, y0 + dy % 9 - 4), fill=ink, width=2)
            img = img.rotate(float(rng.uniform(-25, 25)), fillcolor=paper)
            noisy = np.asarray(img, np.int16) + rng.integers(-40, 40, (size, size, 3))
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
                root / str(digit) / f"{i}.png"
            )
    return root


def cnnlab(*args):
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, timeout=600
    )


def test_a_folder_of_mixed_size_photos_trains_and_evaluates_with_no_flags(tmp_path):
    train_dir, test_dir = (
        photo_folder(tmp_path / "photos"),
        photo_folder(tmp_path / "more", 15, seed=1),
    )
    run = tmp_path / "run"
    proc = cnnlab(
        "train",
        "--model",
        "mnist-1conv",
        "--data",
        str(train_dir),
        "--epochs",
        "6",
        "--batch-size",
        "32",
        "--augment",
        "none",
        "--out",
        str(run),
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "rebuilt its head for the 4 classes" in proc.stdout
        and "input for 3-channel images" in proc.stdout
    )
    meta = json.loads((run / "checkpoints/last.json").read_text())
    assert meta["classes"] == sorted(QUADRANTS)  # folder names, in order
    assert meta["input_recipe"] == {"channels": 3, "size": [28, 28], "pad": [0, 0]}
    result = cnnlab("eval", str(run), "--data", str(test_dir), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accuracy"] >= 0.9
    big = rng_photo = np.zeros((300, 500, 3), np.uint8)
    rng_photo[150:280, 260:480] = 220  # bottom right
    Image.fromarray(big).save(tmp_path / "big.jpg")
    predicted = json.loads(cnnlab("predict", str(run), str(tmp_path / "big.jpg"), "--json").stdout)
    assert predicted[0]["top"][0]["class"] == "bottom right"


def _tiny_cfg(tiny, out, **kw):
    data, spec = tiny
    return TrainConfig(
        **{
            "model": str(spec),
            "data": str(data),
            "epochs": 2,
            "batch_size": 32,
            "optimizer": "nesterov",
            "lr": 0.05,
            "augment": "none",
            "out": str(out),
            **kw,
        }
    )


def test_freeze_keeps_the_early_layers_and_lr_head_speeds_up_the_head(tiny, tmp_path, capsys):
    train(_tiny_cfg(tiny, tmp_path / "a", ema=0.0))
    start = load_file(
        tmp_path / "a/checkpoints/best.safetensors"
    )  # what a run directory resolves to
    history = train(
        _tiny_cfg(
            tiny, tmp_path / "b", init=str(tmp_path / "a"), freeze="pool1", lr_head=10, ema=0.0
        )
    )["history"]
    assert "--init" in capsys.readouterr().out
    after = load_file(tmp_path / "b/checkpoints/last.safetensors")
    assert torch.equal(after["conv1.weight"], start["conv1.weight"])  # frozen
    assert not torch.equal(after["dense1.weight"], start["dense1.weight"])  # trained
    assert history[0]["lr"] > 0
    with pytest.raises(CnnlabError, match="--freeze conv9: no such layer; layers: conv1, relu1"):
        train(_tiny_cfg(tiny, tmp_path / "c", freeze="conv9"))


def test_frozen_batch_norm_keeps_its_statistics(tmp_path):
    from tests.conftest import make_tiny_idx

    spec = tmp_path / "bn.yaml"
    spec.write_text(
        "input: [1, 12, 12]\nclasses: 4\nlayers:\n  - {type: conv, filters: 4, kernel: 3}\n"
        "  - {type: batchnorm}\n  - {type: relu}\n  - {type: dense}\n"
    )
    data = make_tiny_idx(tmp_path / "data")
    base = {
        "model": str(spec),
        "data": str(data),
        "epochs": 1,
        "batch_size": 32,
        "augment": "none",
        "ema": 0.0,
    }
    train(TrainConfig(**base, out=str(tmp_path / "a")))
    train(
        TrainConfig(**base, out=str(tmp_path / "b"), init=str(tmp_path / "a"), freeze="batchnorm1")
    )
    a, b = (load_file(tmp_path / f"{r}/checkpoints/last.safetensors") for r in "ab")
    for key in (
        "batchnorm1.running_mean",
        "batchnorm1.running_var",
        "batchnorm1.weight",
        "conv1.weight",
    ):
        assert torch.equal(a[key], b[key]), key


def test_init_reads_safetensors_and_torch_files_and_lists_what_did_not_fit(tiny, tmp_path, capsys):
    train(_tiny_cfg(tiny, tmp_path / "a", epochs=1))
    weights = load_file(tmp_path / "a/checkpoints/last.safetensors")
    save_file(weights, tmp_path / "w.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}}, tmp_path / "w.pt")
    for source in ("w.safetensors", "w.pt"):
        train(
            _tiny_cfg(
                tiny,
                tmp_path / source.replace(".", "-"),
                epochs=1,
                init=str(tmp_path / source),
                input="1,14,14",
            )
        )
        out = capsys.readouterr().out
        assert f"--init {tmp_path / source}: 5 tensors loaded (by name)" in out
        assert "re-initialised, shapes differ (1): dense1.weight [16, 144] vs [16, 100]" in out


class Trap:
    """Unpickling this writes a file: the proof that loading ran code from the data."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code from a weights file ran"))


def test_init_never_unpickles_objects(tiny, tmp_path):
    marker = tmp_path / "ran"
    torch.save({"conv1.weight": Trap(marker)}, tmp_path / "evil.pt")
    with pytest.raises(
        CnnlabError, match=r"evil.pt: not a PyTorch state dict that loads with weights_only=True"
    ):
        train(_tiny_cfg(tiny, tmp_path / "r", init=str(tmp_path / "evil.pt")))
    assert not marker.exists()
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CnnlabError, match="junk.pth: not a PyTorch state dict"):
        train(_tiny_cfg(tiny, tmp_path / "s", init=str(tmp_path / "junk.pth")))
    with pytest.raises(CnnlabError, match="--init nowhere: no such run"):
        train(_tiny_cfg(tiny, tmp_path / "t", init="nowhere"))


@pytest.mark.slow
def test_fine_tuning_a_mnist_model_beats_training_from_scratch(mnist_root, tmp_path):
    pretrained = tmp_path / "mnist"
    train(TrainConfig(epochs=1, val_split=0.0, out=str(pretrained)))
    small, held_out = (
        digit_folder(tmp_path / "digits"),
        digit_folder(tmp_path / "digits-test", 20, seed=1),
    )
    recipe = {
        "data": str(small),
        "epochs": 15,
        "batch_size": 32,
        "val_split": 0.0,
        "augment": "translate=2",
    }
    tuned = train(TrainConfig(**recipe, init=str(pretrained), out=str(tmp_path / "tuned")))
    scratch = train(TrainConfig(**recipe, out=str(tmp_path / "scratch")))
    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.evaluate import eval_data, metrics

    accuracy = {}
    for name in ("tuned", "scratch"):
        ckpt = load_checkpoint(tmp_path / name)
        accuracy[name] = metrics(ckpt, eval_data(ckpt, str(held_out))[0])["accuracy"]
    assert accuracy["tuned"] > accuracy["scratch"] + 0.1, accuracy
    assert tuned["epochs"] == scratch["epochs"] == 15


def test_init_takes_a_torchvision_layout_file_and_rebuilds_the_head(tmp_path, capsys):
    from tests.test_torchvision_keys import REFERENCES  # an independent torchvision-style ResNet-18

    reference = REFERENCES["resnet18"]()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    photos = photo_folder(tmp_path / "photos", 8)
    train(
        TrainConfig(
            model="resnet18",
            data=str(photos),
            input="3,64,64",
            init=str(tmp_path / "resnet18.pth"),
            epochs=1,
            batch_size=16,
            val_split=0.0,
            augment="none",
            out=str(tmp_path / "run"),
        )
    )
    out = capsys.readouterr().out
    assert (
        f"--init {tmp_path / 'resnet18.pth'}: 120 tensors loaded (torchvision's resnet layout)"
        in out
    )
    assert (
        "re-initialised, shapes differ (2): "
        "dense1.weight [4, 512] vs [1000, 512], dense1.bias [4] vs [1000]" in out
    )


def test_the_server_reads_an_upload_by_the_checkpoints_recipe_as_predict_does(tmp_path):
    """12x12 training images into a 16x16 model are zero-padded, not stretched: in the server too."""
    import base64
    import io
    import urllib.request

    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.infer.evaluate import prepare_image
    from tests.conftest import make_tiny_idx
    from tests.serve_helpers import running_server

    spec = tmp_path / "s.yaml"
    spec.write_text(
        "input: [1, 16, 16]\nclasses: 4\nlayers:\n  - {type: conv, filters: 4, kernel: 3}\n"
        "  - {type: relu}\n  - {type: dense}\n"
    )
    train(
        TrainConfig(
            model=str(spec),
            data=str(make_tiny_idx(tmp_path / "data")),
            epochs=1,
            augment="none",
            out=str(tmp_path / "run"),
        )
    )
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.meta["input_recipe"]["pad"] == [2, 2]
    upload = tmp_path / "white.png"
    Image.new("L", (12, 12), 255).save(upload)
    want = prepare_image(ckpt, upload)
    assert want[0, 2:14, 2:14].min() == 255 and want[0, :2].max() == 0  # padded, not resized
    with running_server(tmp_path / "run") as (base, _):
        req = urllib.request.Request(
            base + "/api/predict", data=upload.read_bytes(), headers={"Content-Type": "image/png"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.load(r)
    png = base64.b64decode(answer["input"].split(",", 1)[1])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)))[None], want)
