import json
import math
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cnnlab.errors import CnnlabError
from cnnlab.train import TrainConfig, load_config, resume, squared_error, train
from cnnlab.train.state import load_state, save_state
from tests.conftest import TINY_SPEC, make_tiny_idx


def _cfg(tiny, tmp_path, **kw):
    data, spec = tiny
    base = {
        "model": str(spec),
        "data": str(data),
        "epochs": 2,
        "batch_size": 32,
        "optimizer": "adam",
        "lr": 0.01,
        "augment": "none",
        "out": str(tmp_path / "run"),
        "val_split": 0.2,
    }
    return TrainConfig(**{**base, **kw})


def test_trains_and_leaves_a_complete_run_directory(tiny, tmp_path):
    result = train(_cfg(tiny, tmp_path, epochs=3))
    run = tmp_path / "run"
    assert result["test_acc"] > 0.9, result
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {
        "last.json",
        "last.safetensors",
        "best.json",
        "best.safetensors",
    }
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,train_loss")
    meta = json.loads((run / "checkpoints" / "last.json").read_text())
    assert meta["classes"] == ["0", "1", "2", "3"] and meta["input_shape"] == [1, 12, 12]
    assert (
        meta["config"]["epochs"] == 3
        and len(meta["history"]) == 3
        and meta["spec"]["name"] == "tiny"
    )
    assert 0 < meta["mean"][0] < 1


def test_default_recipe_never_imports_dynamo(tiny, tmp_path):
    """Any torch.optim optimizer imports torch._dynamo on first use, ~2.5 s of the 15 s in
    which the default recipe reaches 99% on MNIST; a default run must not pay that."""
    data, spec = tiny
    code = (
        "import sys; from cnnlab.train import TrainConfig, train\n"
        f"train(TrainConfig(model={str(spec)!r}, data={str(data)!r}, epochs=1, batch_size=32, "
        f"out={str(tmp_path / 'run')!r}))\n"
        "print('dynamo imported:', 'torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "dynamo imported: False" in out.stdout


def test_runs_saved_before_weight_averaging_resume_as_they_were_trained(tiny, tmp_path):
    train(_cfg(tiny, tmp_path, epochs=1, ema=0.0, warmup=0.2))
    config = tmp_path / "run" / "config.yaml"
    lines = config.read_text().splitlines()
    config.write_text("\n".join(x for x in lines if not x.startswith(("ema:", "warmup:"))) + "\n")
    result = resume(tmp_path / "run", epochs=2)
    assert result["epochs"] == 2 and result["test_acc"] > 0.5
    saved = load_config(config)
    assert saved["ema"] == 0.0 and saved["warmup"] == 0.2


def test_bf16_autocast_trains_and_saves_float32(tiny, tmp_path, capsys):
    result = train(_cfg(tiny, tmp_path, epochs=3, amp="bf16"))
    assert "bf16 autocast" in capsys.readouterr().out
    assert result["test_acc"] > 0.9, result
    weights = load_file(tmp_path / "run/checkpoints/last.safetensors")
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}


def test_same_seed_same_metrics_and_weights(tiny, tmp_path):
    a = train(_cfg(tiny, tmp_path, out=str(tmp_path / "a"), augment="translate=1", seed=3))
    b = train(_cfg(tiny, tmp_path, out=str(tmp_path / "b"), augment="translate=1", seed=3))

    def strip(h):
        return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in h]

    assert strip(a["history"]) == strip(b["history"])
    wa, wb = (
        load_file(tmp_path / "a/checkpoints/last.safetensors"),
        load_file(tmp_path / "b/checkpoints/last.safetensors"),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(_cfg(tiny, tmp_path, out=str(tmp_path / "c"), augment="translate=1", seed=4))
    assert strip(c["history"]) != strip(a["history"])


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """SIGKILL a real training process mid-run, resume it, and compare with an unbroken run."""
    data = make_tiny_idx(tmp_path / "data", n_train=8000, n_test=200)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    args = [
        "--model",
        str(spec),
        "--data",
        str(data),
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--optimizer",
        "nesterov",
        "--lr",
        "0.02",
        "--augment",
        "translate=1",
        "--threads",
        "1",
    ]
    cli = [sys.executable, "-m", "cnnlab", "train"]
    subprocess.run(
        [*cli, *args, "--out", str(tmp_path / "full")], check=True, capture_output=True, timeout=600
    )

    part = tmp_path / "part"
    proc = subprocess.Popen(
        [*cli, *args, "--out", str(part)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics = part / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epochs_done = len(metrics.read_text().splitlines())
    assert 1 <= epochs_done < 6, "the kill came too late to interrupt the run"

    out = subprocess.run([*cli, "--resume", str(part)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"resuming {part} after epoch" in out.stdout
    full_w = load_file(tmp_path / "full/checkpoints/last.safetensors")
    part_w = load_file(part / "checkpoints/last.safetensors")
    assert all(torch.equal(full_w[k], part_w[k]) for k in full_w)


def test_nan_loss_stops_with_epoch_step_and_checkpoint(tiny, tmp_path):
    with pytest.raises(
        CnnlabError, match=r"loss became (nan|inf) at epoch \d+ step \d+; .*try a lower --lr"
    ):
        train(_cfg(tiny, tmp_path, optimizer="sgd", lr=1e9, schedule="constant", epochs=3))


def test_lr_auto_follows_the_largest_hessian_eigenvalue(tiny, tmp_path, capsys):
    result = train(_cfg(tiny, tmp_path, optimizer="sgd", lr="auto", schedule="constant", epochs=2))
    out = capsys.readouterr().out
    found = re.search(
        r"largest Hessian eigenvalue (\S+) over 4 batches -> learning rate 0.9/lambda = (\S+)", out
    )
    lam, lr = float(found[1]), float(found[2])
    assert lam > 0 and lr == pytest.approx(0.9 / lam, rel=1e-3)
    last = result["history"][-1]
    # the rate follows the on-line estimate, and the run learns instead of diverging
    assert last["lr"] == pytest.approx(0.9 / last["lambda_max"], rel=1e-6)
    assert math.isfinite(last["train_loss"]) and result["test_acc"] > 0.5


def test_lr_auto_resumes_its_curvature_estimate(tiny, tmp_path):
    auto = {"optimizer": "sgd", "lr": "auto", "schedule": "constant", "epochs": 3}
    whole = train(_cfg(tiny, tmp_path / "whole", **auto))
    train(_cfg(tiny, tmp_path / "part", **{**auto, "epochs": 1}))
    resumed = resume(tmp_path / "part" / "run", epochs=3)
    assert [h["lr"] for h in resumed["history"]] == [h["lr"] for h in whole["history"]]
    assert resumed["test_acc"] == whole["test_acc"]
    state = tmp_path / "part" / "run" / "checkpoints" / "resume.safetensors"
    tree = load_state(state)
    tree["curvature"]["v"] = tree["curvature"]["v"][:-1]
    save_state(tree, state)
    with pytest.raises(
        CnnlabError, match=r"resume.safetensors: the --lr auto eigenvector has \d+ parts"
    ):
        resume(tmp_path / "part" / "run", epochs=4)
    del tree["curvature"]
    save_state(tree, state)
    with pytest.raises(CnnlabError, match=r"the resume state lacks 'curvature'"):
        resume(tmp_path / "part" / "run", epochs=4)


def test_squared_error_matches_its_formula():
    out = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 1, 0])
    p = np.exp(out.numpy()) / np.exp(out.numpy()).sum(1, keepdims=True)
    t = np.eye(3)[y.numpy()]
    assert squared_error(out, y).item() == pytest.approx(0.5 * ((t - p) ** 2).sum(1).mean())


def test_the_data_decides_classes_and_channels_unless_pinned(tiny, tmp_path, capsys):
    result = train(_cfg(tiny, tmp_path, model="mnist-1conv", epochs=1))
    out = capsys.readouterr().out
    assert "mnist-1conv: rebuilt its head for the 4 classes of" in out and "(it had 10)" in out
    meta = json.loads((tmp_path / "run/checkpoints/last.json").read_text())
    assert meta["spec"]["classes"] == 4 and meta["input_shape"] == [1, 28, 28]
    # 12x12 images are resized to the model's 28x28, and the recipe is kept for every later use
    assert meta["input_recipe"] == {"channels": 1, "size": [28, 28], "pad": [0, 0]}
    assert result["test_acc"] > 0.5
    with pytest.raises(CnnlabError, match=r"mnist-1conv: --classes 10 but .* has 4 classes"):
        train(_cfg(tiny, tmp_path, model="mnist-1conv", classes=10, out=str(tmp_path / "b")))
    train(_cfg(tiny, tmp_path, model="resnet20", epochs=1, batch_size=64, out=str(tmp_path / "c")))
    assert "resnet20: rebuilt its head for the 4 classes of" in capsys.readouterr().out
    meta = json.loads((tmp_path / "c/checkpoints/last.json").read_text())
    assert meta["input_shape"] == [1, 32, 32]  # a fresh model takes the data's single channel


def test_config_file_keys_are_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2\nbatch-size: 64\n")
    assert load_config(path) == {"epochs": 2, "batch_size": 64}
    path.write_text("epochs: 2\nbatchsize: 64\n")
    with pytest.raises(CnnlabError, match="unknown key 'batchsize'"):
        load_config(path)


@pytest.mark.slow
def test_real_mnist_reaches_98_percent(mnist_root, tmp_path):
    result = train(
        TrainConfig(
            model="lenet5",
            epochs=1,
            batch_size=64,
            optimizer="adam",
            lr=2e-3,
            schedule="onecycle",
            augment="none",
            val_split=0.0,
            out=str(tmp_path / "run"),
        )
    )
    assert result["test_acc"] >= 0.98 and result["test_count"] == 10000
    assert math.isfinite(result["test_loss"])


def _tiny_folder(root, n_per_class=40):
    """The tiny quadrant task written as PNG files in class folders."""
    from PIL import Image

    from cnnlab.data.idx import read_idx

    data = make_tiny_idx(root / "idx", n_train=4 * n_per_class, n_test=8)
    x, y = read_idx(data / "train-images-idx3-ubyte"), read_idx(data / "train-labels-idx1-ubyte")
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        (root / "folder" / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "folder" / f"c{label}" / f"{i:04d}.png")
    return root / "folder"


def test_streaming_from_disk_gives_the_same_run_as_memory(tmp_path, monkeypatch, capsys):
    folder = _tiny_folder(tmp_path)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    cfg = {
        "model": str(spec),
        "data": str(folder),
        "epochs": 2,
        "batch_size": 16,
        "optimizer": "nesterov",
        "lr": 0.05,
        "augment": "translate=1",
        "val_split": 0.25,
    }
    memory = train(TrainConfig(**cfg, out=str(tmp_path / "memory")))
    assert "images from disk" not in capsys.readouterr().out
    monkeypatch.setenv("CNNLAB_MEMORY_BUDGET", "1000")  # far below the 160 x 144 bytes of the set
    streamed = train(TrainConfig(**cfg, out=str(tmp_path / "streamed")))
    assert "streaming 120 images from disk with" in capsys.readouterr().out
    a = load_file(tmp_path / "memory/checkpoints/last.safetensors")
    b = load_file(tmp_path / "streamed/checkpoints/last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["val_acc"] for r in memory["history"]] == [r["val_acc"] for r in streamed["history"]]


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    data = make_tiny_idx(tmp_path / "data", n_train=20000, n_test=100)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    with open(tmp_path / "stderr.txt", "w") as log:  # a file: progress bars never fill a pipe
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cnnlab",
                "train",
                "--model",
                str(spec),
                "--data",
                str(data),
                "--epochs",
                "50",
                "--batch-size",
                "8",
                "--out",
                str(tmp_path / "run"),
                "--threads",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
            # as a foreground command in a terminal: a shell's background job (a CI script's
            # `cmd &`) starts with SIGINT ignored, and the child would inherit that
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        metrics = tmp_path / "run" / "metrics.jsonl"
        deadline = time.time() + 120
        while not metrics.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError((tmp_path / "stderr.txt").read_text()[-3000:]) from None
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 130, err
    assert (
        "interrupted: weights saved to" in err
        and f"cnnlab train --resume {tmp_path / 'run'}" in err
    )
    assert "Traceback" not in err
    assert (tmp_path / "run/checkpoints/interrupted.safetensors").is_file()


def _as_saved_by_cnnlab_0_1(run):
    """Rewrite a run's resume state in the layout cnnlab 0.1 wrote (resume.json + flat tensors)."""
    state = load_state(run / "checkpoints" / "resume.safetensors")
    tensors, layout = {}, {"param_groups": state["optimizer"]["param_groups"], "state": {}}
    for pid, entries in state["optimizer"]["state"].items():
        layout["state"][str(pid)] = {}
        for key, value in entries.items():
            tensors[f"{pid}.{key}"] = value
            layout["state"][str(pid)][key] = {"tensor": f"{pid}.{key}"}
    tensors |= {f"live.{k}": v for k, v in state["model"].items()}
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, run / "checkpoints" / "resume.safetensors"
    )
    progress = state["progress"]
    old = {
        "epoch": progress["epoch"],
        "step": state["step"]["count"],
        "best_val": progress["best_val"],
        "optimizer": layout,
        "history": progress["history"],
    }
    (run / "checkpoints" / "resume.json").write_text(json.dumps(old))


def test_runs_saved_by_cnnlab_0_1_resume_exactly(tiny, tmp_path):
    recipe = {
        "optimizer": "nesterov",
        "lr": 0.05,
        "augment": "translate=1",
        "ema": 0.9,
        "schedule": "constant",
    }
    train(_cfg(tiny, tmp_path / "whole", epochs=3, **recipe))
    train(_cfg(tiny, tmp_path / "part", epochs=1, **recipe))
    _as_saved_by_cnnlab_0_1(tmp_path / "part" / "run")
    resume(tmp_path / "part" / "run", epochs=3)
    whole = load_file(tmp_path / "whole/run/checkpoints/last.safetensors")
    part = load_file(tmp_path / "part/run/checkpoints/last.safetensors")
    assert all(torch.equal(whole[k], part[k]) for k in whole)
    assert not (tmp_path / "part/run/checkpoints/resume.json").exists()  # now in today's layout
