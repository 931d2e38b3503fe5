"""The command line through a real subprocess: help, exit codes, one-line errors."""

import re
import subprocess
import sys

import numpy as np

from cnnlab.data.idx import write_idx


def run(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_help_lists_every_command_and_the_real_defaults():
    from cnnlab.train.config import DEFAULTS

    out = run("--help").stdout
    for command in (
        "convolve",
        "data",
        "eval",
        "export",
        "gradcheck",
        "inspect",
        "predict",
        "report",
        "serve",
        "summary",
        "train",
        "zoo",
    ):
        assert f"\n  {command} " in out, command
    flat = " ".join(run("train", "--help").stdout.split())  # help text wraps at any width
    for key in ("epochs", "batch_size", "optimizer", "schedule", "warmup", "ema", "augment"):
        flag = re.escape(f"--{key.replace('_', '-')}")
        shown = re.escape(f"[default: {DEFAULTS[key]}]")
        assert re.search(rf"{flag} (\[[^]]*\]|\S+) [^[]*{shown}", flat), key  # its own default
    out = run("data", "fetch", "--help").stdout
    assert "--from" in out and "--cache-dir" in out


def test_bad_idx_is_one_line_error_without_traceback(tmp_path):
    (tmp_path / "images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x09" * 3)
    write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(9, np.uint8))
    proc = run("data", "info", str(tmp_path), check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "images-idx3-ubyte" in lines[0] and "needs 729 bytes" in lines[0]


def test_info_json_and_convert(tmp_path):
    images = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3)
    write_idx(tmp_path / "src" / "images-idx3-ubyte", images)
    write_idx(tmp_path / "src" / "labels-idx1-ubyte", np.array([0, 1, 1, 0], np.uint8))
    import json

    info = json.loads(run("data", "info", str(tmp_path / "src"), "--json").stdout)
    assert info["train"]["count"] == 4 and info["train"]["classes"] == {"0": 2, "1": 2}
    run("data", "convert", str(tmp_path / "src"), str(tmp_path / "folder"), "--to", "folder")
    assert len(list((tmp_path / "folder" / "1").glob("*.png"))) == 2
    proc = run(
        "data", "convert", str(tmp_path / "nope"), str(tmp_path / "x"), "--to", "idx", check=False
    )
    assert proc.returncode == 1 and "nope: no such file" in proc.stderr


def test_fetch_mnist_prints_cache(mnist_root):
    out = run("data", "fetch", "mnist").stdout.strip()
    assert out == str(mnist_root)
