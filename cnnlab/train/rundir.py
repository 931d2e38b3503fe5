"""The run directory: claimed and locked by one trainer, holding everything a run leaves behind.

    RUN/config.yaml                      the resolved TrainConfig
    RUN/checkpoints/{last,best}.*        what every other command reads (safetensors + JSON)
    RUN/checkpoints/resume.safetensors   the whole training state, one file
    RUN/metrics.jsonl, metrics.csv       one row per finished epoch
    RUN/.lock                            held (flock) while a process trains here

Every file is written atomically. The lock is an OS advisory lock on an open file, so it goes
away with the process however it dies (kill -9 included): a stale lock cannot exist.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from torch import nn

from cnnlab.atomic import atomic_path
from cnnlab.checkpoint import save_checkpoint
from cnnlab.errors import CnnlabError
from cnnlab.train.config import TrainConfig, dump
from cnnlab.train.state import load_state, save_state

LOCK = ".lock"
RUN_MARKERS = ("config.yaml", "checkpoints", "metrics.jsonl")


class RunDir:
    def __init__(self, path: Path, writer: bool = True):
        self.path, self.writer = Path(path), writer
        self.checkpoints = self.path / "checkpoints"
        self._lock_file = None
        self._replace = False  # --overwrite: the old run goes when the new one starts writing
        self.created = False  # this process made the directory

    def __str__(self) -> str:
        return str(self.path)

    # -- claiming
    @classmethod
    def fresh(
        cls, out: str | None, model: str, overwrite: bool = False, writer: bool = True
    ) -> RunDir:
        """A directory for a new run: --out (refused if it holds a run, unless --overwrite),
        else a new runs/MODEL-TIME[-N] that no other run can have taken."""
        if not writer:
            return cls(
                Path(out) if out else Path("runs") / f"{Path(model).stem}-rank", writer=False
            )
        if out is None:
            return cls._new_default(model)
        run = cls(Path(out))
        if run.path.exists() and not run.path.is_dir():
            raise CnnlabError(f"--out {out}: exists and is not a directory")
        run.created = not run.path.exists()
        run.path.mkdir(parents=True, exist_ok=True)
        run.lock()
        if run.holds_run():
            if not overwrite:
                run.release()
                raise CnnlabError(
                    f"{out} already holds a run; continue it with --resume {out}, replace it "
                    "with --overwrite, or choose another --out"
                )
            run._replace = True
        elif run.other_files():
            run.release()
            raise CnnlabError(
                f"{out} is not empty and holds no cnnlab run (e.g. {run.other_files()[0]}); "
                "choose an empty or new directory"
            )
        return run

    @classmethod
    def existing(cls, path: str | os.PathLike, writer: bool = True) -> RunDir:
        """The directory of a run to resume, locked."""
        run = cls(Path(path), writer)
        if (
            not (run.checkpoints / "resume.safetensors").is_file()
            and not (run.checkpoints / "resume.json").is_file()
        ):
            raise CnnlabError(f"{path}: nothing to resume (no checkpoints/resume.safetensors)")
        if writer:
            run.lock()
        return run

    @classmethod
    def _new_default(cls, model: str) -> RunDir:
        base = Path("runs") / f"{Path(str(model)).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        base.parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            path = base if n == 1 else base.with_name(f"{base.name}-{n}")
            try:
                path.mkdir()  # atomic: of two runs started in the same second, one gets -2
            except FileExistsError:
                continue
            run = cls(path)
            run.created = True
            run.lock()
            return run
        raise CnnlabError(f"{base}: a thousand runs of this name in one second")

    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in RUN_MARKERS)

    def other_files(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir() if p.name != LOCK)

    def begin(self) -> None:
        """Called before the first file of the run is written. Under --overwrite the old run is
        moved aside in one rename, a clean directory takes its place, and the old one is deleted.

        So data or model errors before this point leave the old run untouched, and a crash at
        any moment leaves either the old run whole or the new run's files only (at worst with
        the old run still in a sibling RUN.replaced-PID): never a directory mixing two runs.
        """
        if not (self.writer and self._replace):
            return
        aside = self.path.with_name(f"{self.path.name}.replaced-{os.getpid()}")
        os.rename(self.path, aside)
        old_lock = self._lock_file
        try:
            self.path.mkdir()
        except FileExistsError:
            raise CnnlabError(
                f"{self.path} was created again while it was being replaced"
            ) from None
        self._lock_file = None
        self.lock()
        old_lock.close()
        shutil.rmtree(aside, ignore_errors=True)
        self._replace = False

    def discard_if_unused(self) -> None:
        """Remove a directory this process created for a run that never wrote a file."""
        self.release()
        if self.created and self.path.is_dir() and not self.other_files():
            with contextlib.suppress(OSError):
                (self.path / LOCK).unlink(missing_ok=True)
                self.path.rmdir()

    # -- the lock
    def lock(self) -> None:
        """Take the directory's advisory lock, or fail at once naming the process that has it."""
        self.path.mkdir(parents=True, exist_ok=True)
        f = open(self.path / LOCK, "a+", encoding="utf-8")  # noqa: SIM115  held until release()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            pid, _, started = holder.partition(" ")
            raise CnnlabError(
                f"{self.path} is being trained by process {pid} "
                f"(started {started or 'at an unknown time'})"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self._lock_file = f

    def release(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self._lock_file.truncate(0)
            self._lock_file.close()  # closing the file releases the flock
            self._lock_file = None

    # -- what a run writes
    def write_config(self, cfg: TrainConfig) -> None:
        self.begin()
        if self.writer:
            with atomic_path(self.path / "config.yaml") as tmp:
                tmp.write_text(dump(cfg), encoding="utf-8")

    def save_checkpoint(self, name: str, model: nn.Module, meta: dict) -> Path:
        return save_checkpoint(model, meta, self.checkpoints / name)

    def checkpoint_json(self, name: str) -> Path | None:
        path = self.checkpoints / f"{name}.json"
        return path if path.is_file() else None

    def save_state(self, tree: dict) -> None:
        save_state(tree, self.checkpoints / "resume.safetensors")
        (self.checkpoints / "resume.json").unlink(missing_ok=True)  # a 0.1 run's, now replaced

    def load_state(self) -> dict:
        return load_state(self.checkpoints / "resume.safetensors")

    def write_metrics(self, history: list[dict]) -> None:
        """metrics.jsonl and metrics.csv rewritten from the history, so a resumed run never
        repeats or loses a row whatever moment it was stopped at."""
        with atomic_path(self.path / "metrics.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(row) + "\n" for row in history), encoding="utf-8")
        fields = list(dict.fromkeys(key for row in history for key in row))
        with (
            atomic_path(self.path / "metrics.csv") as tmp,
            open(tmp, "w", newline="", encoding="utf-8") as f,
        ):
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(history)
