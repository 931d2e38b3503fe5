"""Flags and config files go through one validation step; errors name the key and its source."""

import subprocess
import sys

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.train.config import (
    AMP_MODES,
    DEVICES,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    load_config,
    resolve,
)


def cnnlab(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def _error_line(proc) -> str:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("epochs", -5, "a positive integer"),
        ("epochs", 2.5, "an integer"),
        ("batch_size", "many", "an integer"),
        ("optimizer", "lion", "one of sgd, momentum, nesterov, adam, adamw, adadelta"),
        ("lr", -0.1, "a positive number or 'auto'"),
        ("lr", float("nan"), "a positive number or 'auto'"),
        ("momentum", 1.0, "a number in [0, 1)"),
        ("warmup", 2, "a number in [0, 1)"),
        ("val_split", -0.1, "a number in [0, 1)"),
        ("schedule", "linear", "one of constant, step, cosine, onecycle"),
        ("size", "0x0", "HxW of positive integers"),
        ("input", "3,0,32", "C,H,W or C,L of positive integers"),
        ("channels", 2, "one of 1, 3"),
        ("augment", "rotate=5", "a comma list of augmentations (unknown augmentation 'rotate'"),
        ("skip_bad", "yes", "true or false"),
        ("threads", 0, "a positive integer"),
    ],
)
def test_config_file_errors_name_the_file_and_the_key(tmp_path, key, value, rule):
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({key: value}))
    with pytest.raises(CnnlabError) as e:
        resolve(path, {})
    assert str(e.value).startswith(f"{path}: {key} must be {rule}")
    with pytest.raises(CnnlabError) as e:  # the same rule for the Python API
        TrainConfig(**{key: value})
    assert str(e.value).startswith(f"{key} must be {rule}")


def test_a_flag_error_names_the_flag_and_flags_override_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nbatch-size: 64\n")
    with pytest.raises(CnnlabError, match=r"^--epochs must be a positive integer, got 0$"):
        resolve(path, {"epochs": 0})
    cfg = resolve(path, {"epochs": 7})
    assert (cfg.epochs, cfg.batch_size) == (7, 64)
    path.write_text("epochs: 2\nbatchsize: 64\n")
    with pytest.raises(CnnlabError, match="unknown key 'batchsize'"):
        load_config(path)


def test_the_command_line_refuses_bad_values_before_touching_data(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: -5\n")
    no_data = str(tmp_path / "missing")
    line = _error_line(cnnlab("train", "--config", str(tmp_path / "c.yaml"), "--data", no_data))
    assert line == f"Error: {tmp_path / 'c.yaml'}: epochs must be a positive integer, got -5"
    line = _error_line(cnnlab("train", "--size", "0x0", "--data", no_data))
    assert line == "Error: --size must be HxW of positive integers, such as 32x32, got '0x0'"
    line = _error_line(cnnlab("data", "info", no_data, "--size", "0x0"))
    assert "--size must be HxW of positive integers" in line


def test_help_choices_come_from_the_registries_the_code_dispatches_on():
    from cnnlab.train.losses import make_loss
    from cnnlab.train.optim import make_optimizer
    from cnnlab.train.schedule import lr_factor

    out = cnnlab("train", "--help").stdout
    for registry in (OPTIMIZERS, SCHEDULES, LOSSES, DEVICES, AMP_MODES):
        assert "[" + "|".join(registry) + "]" in out
    import torch

    params = [torch.nn.Parameter(torch.zeros(2))]
    for name, (lr, _) in OPTIMIZERS.items():
        assert make_optimizer(name, params, lr, 0.0).param_groups[0]["lr"] == lr
    assert all(callable(lr_factor(name, 10, 2)) for name in SCHEDULES)
    assert all(make_loss(name, 0.0) for name in LOSSES)
