"""A trained run is never lost or mixed: real training processes against a second command."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.train.rundir import RunDir
from tests.conftest import TINY_SPEC, make_tiny_idx

CLI = [sys.executable, "-m", "cnnlab"]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("rundir")
    (root / "tiny.yaml").write_text(TINY_SPEC)
    make_tiny_idx(root / "small", n_train=200, n_test=40)
    make_tiny_idx(root / "big", n_train=3000, n_test=40)  # a second or so per epoch
    return root


def _args(task, data="small", epochs=1, model=None):
    return [
        "train",
        "--model",
        str(model or task / "tiny.yaml"),
        "--data",
        str(task / data),
        "--epochs",
        str(epochs),
        "--batch-size",
        "16",
        "--augment",
        "none",
        "--threads",
        "1",
    ]


def cnnlab(*args, timeout=300):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def _one_line_error(proc) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _start_long_run(task, out: Path):
    proc = subprocess.Popen(
        [*CLI, *_args(task, "big", epochs=1000), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists():  # one epoch done: resumable from here
        assert proc.poll() is None and time.time() < deadline, (
            "the training process did not get going"
        )
        time.sleep(0.05)
    return proc


def test_a_second_run_into_the_same_out_is_refused_and_the_first_survives(task, tmp_path):
    out = tmp_path / "a"
    assert cnnlab(*_args(task, epochs=2), "--out", str(out)).returncode == 0
    weights = _digest(out / "checkpoints" / "last.safetensors")
    config = (out / "config.yaml").read_text()
    line = _one_line_error(
        cnnlab(
            *_args(task, model="mnist-1conv"),
            "--classes",
            "4",
            "--input",
            "1,12,12",
            "--out",
            str(out),
        )
    )
    assert f"{out} already holds a run" in line
    assert f"--resume {out}" in line and "--overwrite" in line and "another --out" in line
    assert _digest(out / "checkpoints" / "last.safetensors") == weights
    assert (out / "config.yaml").read_text() == config


def test_overwrite_replaces_the_whole_run(task, tmp_path):
    out = tmp_path / "a"
    assert cnnlab(*_args(task, epochs=3), "--out", str(out)).returncode == 0
    (out / "report.html").write_text("<p>a report of the old run</p>")
    proc = cnnlab(*_args(task, epochs=1), "--seed", "5", "--out", str(out), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert "seed: 5" in (out / "config.yaml").read_text()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (out / "report.html").exists()  # nothing of the old run is left beside the new one
    assert not list(tmp_path.glob("a.replaced-*"))


def test_overwrite_that_fails_before_training_keeps_the_old_run(task, tmp_path):
    out = tmp_path / "a"
    assert cnnlab(*_args(task), "--out", str(out)).returncode == 0
    weights = _digest(out / "checkpoints" / "last.safetensors")
    args = _args(task)
    args[args.index("--data") + 1] = str(tmp_path / "no-such-data")
    line = _one_line_error(cnnlab(*args, "--out", str(out), "--overwrite"))
    assert "no-such-data" in line
    assert _digest(out / "checkpoints" / "last.safetensors") == weights


def test_empty_directories_are_fine_and_foreign_ones_refused(task, tmp_path):
    (tmp_path / "empty").mkdir()
    assert cnnlab(*_args(task), "--out", str(tmp_path / "empty")).returncode == 0
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    for extra in ([], ["--overwrite"]):
        line = _one_line_error(cnnlab(*_args(task), "--out", str(tmp_path / "docs"), *extra))
        assert "is not empty and holds no cnnlab run (e.g. thesis.tex)" in line
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"


def test_one_trainer_per_directory_and_kill_9_leaves_no_stale_lock(task, tmp_path):
    out = tmp_path / "run"
    proc = _start_long_run(task, out)
    try:
        seconds = (
            [*_args(task), "--out", str(out)],
            ["train", "--resume", str(out)],
            [*_args(task), "--out", str(out), "--overwrite"],
        )
        for second in seconds:
            started = time.time()
            line = _one_line_error(cnnlab(*second))
            assert f"{out} is being trained by process {proc.pid} (started " in line
            assert time.time() - started < 60  # at once: before any data is read or model built
        assert proc.poll() is None  # the first trainer was not disturbed
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = len((out / "metrics.jsonl").read_text().splitlines())
    resumed = cnnlab("train", "--resume", str(out), "--epochs", str(done + 1))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} after epoch {done}" in resumed.stdout
    assert len((out / "metrics.jsonl").read_text().splitlines()) == done + 1


def test_readers_see_a_whole_checkpoint_while_a_run_trains(task, tmp_path):
    from cnnlab.checkpoint import load_checkpoint

    out = tmp_path / "run"
    proc = _start_long_run(task, out)
    try:
        seen, deadline = set(), time.time() + 60
        while len(seen) < 3 and time.time() < deadline:  # across at least two checkpoint rewrites
            ckpt = load_checkpoint(out / "checkpoints" / "last.json")
            assert len(ckpt.meta["history"]) == ckpt.meta["epoch"]
            seen.add(ckpt.meta["epoch"])
        assert len(seen) >= 2, seen
        evaluated = cnnlab("eval", str(out), "--json")
        assert evaluated.returncode == 0, evaluated.stderr
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_default_names_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    first = RunDir.fresh(None, "lenet5")
    second = RunDir.fresh(None, "lenet5")
    try:
        assert first.path == Path("runs/lenet5-20260101-000000")
        assert second.path == Path("runs/lenet5-20260101-000000-2")
    finally:
        first.release()
        second.release()


def test_the_lock_names_its_holder_in_process(tmp_path):
    held = RunDir.fresh(str(tmp_path / "r"), "m")
    with pytest.raises(
        CnnlabError, match=rf"is being trained by process {os.getpid()} \(started 20"
    ):
        RunDir.fresh(str(tmp_path / "r"), "m")
    held.release()
    RunDir.fresh(str(tmp_path / "r"), "m").release()  # released: free again


def test_resume_applies_the_flags_that_are_safe_and_refuses_the_rest(task, tmp_path):
    out = tmp_path / "a"
    assert cnnlab(*_args(task), "--out", str(out)).returncode == 0
    line = _one_line_error(cnnlab("train", "--resume", str(out), "--lr", "0.5", "--epochs", "2"))
    assert f"--resume {out} continues with the run's saved config; --lr cannot change" in line
    assert "(allowed: --epochs, --threads, --eval-batch-size)" in line
    ok = cnnlab("train", "--resume", str(out), "--epochs", "2", "--threads", "1")
    assert ok.returncode == 0, ok.stderr
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
