"""The training loop: data in memory as uint8, batches sliced by index, everything seeded per epoch.

Each epoch e draws its shuffle, augmentation and dropout noise from seed + e, so a run that
is stopped and resumed at an epoch boundary ends with the same weights as one that never
stopped. Under torchrun every rank computes the same shuffle and takes its share of each
global batch; DistributedDataParallel averages the gradients.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from cnnlab.atomic import atomic_path
from cnnlab.checkpoint import (
    load_tensors,
    model_from,
    read_json,
    save_checkpoint,
    save_json,
    save_tensors,
)
from cnnlab.config import TrainConfig, load_config, parse_shape, parse_size
from cnnlab.data import load_data
from cnnlab.data.augment import parse as parse_augment
from cnnlab.data.augment import pca_basis
from cnnlab.data.dataset import ImageSet
from cnnlab.data.lazy import Rows
from cnnlab.errors import CnnlabError
from cnnlab.infer import Normalise, fit_images, logits
from cnnlab.optim import (
    DEFAULT_LR,
    CurvatureTracker,
    WeightAverage,
    largest_hessian_eigenvalue,
    lecun_rate,
    lr_factor,
    make_optimizer,
)
from cnnlab.runtime import autocast_dtype, keep_freed_memory
from cnnlab.spec import Net


# ---------------------------------------------------------------- distributed
@dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_world(device: torch.device) -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CnnlabError("--device cuda: no CUDA device is available")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise CnnlabError("--device mps: no Apple GPU is available")
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


# ---------------------------------------------------------------- losses
def squared_error(out: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """1/2 sum_k (t_k - softmax_k)^2 per example, averaged over the batch."""
    k = out.shape[1]
    t = F.one_hot(target, k).to(out.dtype) * (1 - smoothing) + smoothing / k
    return 0.5 * ((t - out.softmax(1)) ** 2).sum(1).mean()


def make_loss(name: str, smoothing: float):
    if name == "cross-entropy":
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=smoothing)
    if name == "squared":
        return lambda out, y: squared_error(out, y, smoothing)
    raise CnnlabError(f"unknown loss '{name}'; choose cross-entropy or squared")


# ---------------------------------------------------------------- set-up
def build_model(cfg: TrainConfig, data: ImageSet) -> Net:
    """The model named by cfg.model, checked against the data's class count; a checkpoint's weights loaded."""
    model, state = model_from(cfg.model, parse_shape(cfg.input), cfg.classes, cfg.set)
    if model.spec["classes"] != len(data.classes):
        raise CnnlabError(
            f"{cfg.model}: the model has {model.spec['classes']} classes but {data.source} has "
            f"{len(data.classes)} (rebuild it with --classes {len(data.classes)})"
        )
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise CnnlabError(
                f"{cfg.model}: its weights do not fit the rebuilt model ({first})"
            ) from None
    return model


def _run_dir(cfg: TrainConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(str(cfg.model)).stem}-{stamp}"


@dataclass
class Prepared:
    cfg: TrainConfig
    model: Net
    train: ImageSet
    val: ImageSet | None
    test: ImageSet | None
    norm: Normalise
    device: torch.device
    preprocess: str


def prepare(cfg: TrainConfig) -> Prepared:
    load_opts = {"channels": cfg.channels, "size": parse_size(cfg.size), "skip_bad": cfg.skip_bad}
    full = load_data(cfg.data, "train", **load_opts)
    test = load_data(cfg.data, "test", required=False, **load_opts)
    model = build_model(cfg, full)
    shape = tuple(model.input_shape)
    full.images = fit_images(full.images, shape, full.source)
    if test is not None:
        test.images = fit_images(test.images, shape, test.source)
    train, val = full.split(cfg.val_split, cfg.seed) if cfg.val_split > 0 else (full, None)
    if val is not None and len(val) == 0:
        train, val = full, None
    mean, std = train.stats()
    device = pick_device(cfg.device)
    preprocess = "mnist-digit" if cfg.data == "mnist" else "resize"
    return Prepared(cfg, model, train, val, test, Normalise(mean, std), device, preprocess)


# ---------------------------------------------------------------- the loop
class Trainer:
    def __init__(self, p: Prepared, world: World):
        self.p, self.cfg, self.world = p, p.cfg, world
        cfg = self.cfg
        self.model = p.model.to(p.device)
        self.channels_last = cfg.channels_last and len(self.model.input_shape) == 3
        if self.channels_last:  # NHWC suits oneDNN's convolution and pooling kernels on CPU
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net: nn.Module = self.model
        if world.size > 1:
            self.net = nn.parallel.DistributedDataParallel(self.model)
        self.loss_fn = make_loss(cfg.loss, cfg.label_smoothing)
        self.augment = parse_augment(cfg.augment)
        if any(name == "pca" for name, _ in self.augment.ops):
            self.augment.pca_basis = pca_basis(p.train.images)
        self.images = p.train.images.to(p.device)
        self.labels = p.train.labels.to(p.device)
        self.workers = min(4, os.cpu_count() or 1) if p.train.streamed else 0
        if cfg.batch_size % world.size:
            raise CnnlabError(
                f"--batch-size {cfg.batch_size} must be a multiple of the {world.size} processes"
            )
        self.steps_per_epoch = max(1, len(self.images) // cfg.batch_size)  # drop the ragged tail
        self.run = _run_dir(cfg)
        self.history: list[dict] = []
        self.epoch = 0
        self.best_val = -1.0
        self.step_hook = None  # called as hook(trainer, epoch, step) after every optimiser step
        self.tracker: CurvatureTracker | None = None
        lr = self._base_lr()
        params = [q for q in self.model.parameters() if q.requires_grad]
        self.opt = make_optimizer(cfg.optimizer, params, lr, cfg.weight_decay, cfg.momentum)
        self.base_lr = lr
        self.lr_factor = lr_factor(
            cfg.schedule,
            self.steps_per_epoch * cfg.epochs,
            self.steps_per_epoch,
            cfg.gamma,
            cfg.warmup,
        )
        self.global_step = 0  # optimiser steps taken over the whole run
        self._apply_lr(0)
        self.average = WeightAverage(self.model, cfg.ema) if cfg.ema else None
        self.amp_dtype = autocast_dtype(cfg.amp, p.device)

    @property
    def published(self) -> Net:
        """The weights that are evaluated and saved: the running average when --ema is on."""
        return self.average.model if self.average is not None else self.model

    # -- learning rate
    def _base_lr(self) -> float:
        cfg = self.cfg
        if cfg.lr is None:
            return DEFAULT_LR.get(cfg.optimizer, 0.01)
        if cfg.lr == "auto":
            return self._auto_lr()
        try:
            lr = float(cfg.lr)
        except (TypeError, ValueError):
            raise CnnlabError(f"--lr: expected a number or 'auto', got {cfg.lr!r}") from None
        if not lr > 0:
            raise CnnlabError(f"--lr must be positive, got {lr}")
        return lr

    def _auto_lr(self) -> float:
        gen = torch.Generator().manual_seed(self.cfg.seed)
        batches = []
        for _ in range(4):
            idx = torch.randint(0, len(self.images), (self.cfg.batch_size,), generator=gen)
            batches.append((self.p.norm(self.images[idx]), self.labels[idx]))
        lam = largest_hessian_eigenvalue(self.model, self.loss_fn, batches, seed=self.cfg.seed)
        lr = lecun_rate(lam)
        self.say(f"--lr auto: largest Hessian eigenvalue {lam:.4g} over 4 batches -> learning rate 0.9/lambda = {lr:.4g}"
                 " (re-estimated on-line as training proceeds)")  # fmt: skip
        self.tracker = CurvatureTracker(self.model, self.loss_fn, seed=self.cfg.seed)
        return lr

    def _follow_curvature(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """--lr auto: refine lambda_max and set the base rate from it."""
        if self.tracker is None or not self.tracker.due(self.global_step):
            return
        lam = self.tracker.update(x, y)
        if lam > 0:
            self.base_lr = lecun_rate(lam)
            self._apply_lr(self.global_step)

    def _apply_lr(self, step: int) -> None:
        """Set the rate to the base rate times the schedule's factor at `step`."""
        for group in self.opt.param_groups:
            group["lr"] = self.base_lr * self.lr_factor(step)

    def say(self, text: str) -> None:
        if self.world.main:
            print(text, flush=True)

    # -- one epoch
    def _prepare_batch(self, raw: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = raw.float() / 255
        if self.augment:
            x = self.augment(x, gen)
        x = self.p.norm(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _index_batches(self, order: torch.Tensor) -> list[torch.Tensor]:
        b, world = self.cfg.batch_size, self.world
        return [
            order[s * b : (s + 1) * b][world.rank :: world.size]
            for s in range(self.steps_per_epoch)
        ]

    def _raw_batches(self, batches: list[torch.Tensor]):
        """(uint8 images, labels) per batch: sliced from memory, or decoded by DataLoader workers."""
        if not self.p.train.streamed:
            for idx in batches:
                yield self.images[idx], self.labels[idx]
            return
        loader = DataLoader(Rows(self.images, self.p.train.labels), batch_sampler=[b.tolist() for b in batches],
                            num_workers=self.workers, persistent_workers=False,
                            pin_memory=self.p.device.type == "cuda")  # fmt: skip
        for x, y in loader:
            yield x.to(self.p.device, non_blocking=True), y.to(self.p.device, non_blocking=True)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.p.device.type, self.amp_dtype)

    def train_epoch(self, epoch: int) -> dict:
        cfg, world = self.cfg, self.world
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout and stochastic pooling noise
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(self.images), generator=gen)
        self.net.train()
        total_loss, correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                   disable=None if world.main else True, leave=False, file=sys.stderr)  # fmt: skip
        for step, (raw, y) in enumerate(self._raw_batches(self._index_batches(order))):
            bar.update()
            x = self._prepare_batch(raw, gen)
            self._follow_curvature(x, y)
            with self._autocast():
                out = self.net(x)
            loss = self.loss_fn(out.float(), y)
            value = loss.item()
            if not math.isfinite(value):
                self._diverged(epoch, step, value)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.global_step += 1
            self._apply_lr(self.global_step)
            if self.average is not None:
                self.average.update(self.global_step)
            if self.step_hook is not None:
                self.step_hook(self, epoch, step)
            total_loss += value * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            if step % 20 == 0 or step == self.steps_per_epoch - 1:
                rate = seen * world.size / (time.perf_counter() - start)
                bar.set_postfix(
                    loss=f"{total_loss / seen:.4f}",
                    acc=f"{100 * correct / seen:.2f}%",
                    img_s=f"{rate:.0f}",
                )
        bar.close()
        totals = torch.tensor([total_loss, correct, seen], dtype=torch.float64)
        if world.size > 1:
            dist.all_reduce(totals)
        return {"train_loss": totals[0].item() / totals[2].item(), "train_acc": totals[1].item() / totals[2].item(),
                "time_s": time.perf_counter() - start, "images_per_s": totals[2].item() / (time.perf_counter() - start)}  # fmt: skip

    def _diverged(self, epoch: int, step: int, value: float) -> None:
        last = self.run / "checkpoints" / "last.json"
        where = f"last good checkpoint: {last}" if last.is_file() else "no checkpoint was saved yet"
        raise CnnlabError(
            f"loss became {value} at epoch {epoch} step {step}; {where} (try a lower --lr)"
        )

    def evaluate(self, data: ImageSet) -> dict:
        out = logits(self.published, data.images, self.p.norm, self.cfg.eval_batch_size)
        y = data.labels
        return {
            "loss": F.cross_entropy(out, y).item(),
            "acc": (out.argmax(1) == y).float().mean().item(),
        }

    # -- checkpoints
    def meta(self, extra: dict | None = None) -> dict:
        p = self.p
        return {
            "classes": p.train.classes,
            "input_shape": list(self.model.input_shape),
            "channels": self.model.input_shape[0],
            "mean": p.norm.mean,
            "std": p.norm.std,
            "preprocess": p.preprocess,
            "data": self.cfg.data,
            "config": asdict(self.cfg),
            "epoch": self.epoch,
            "history": self.history,
            **(extra or {}),
        }

    def save(self, name: str, extra: dict | None = None) -> Path:
        return save_checkpoint(self.published, self.meta(extra), self.run / "checkpoints" / name)

    def save_resume_state(self) -> None:
        tensors, layout = _flatten_optimizer(self.opt.state_dict())
        if self.average is not None:
            # last.safetensors holds the average, so the live weights are kept here
            tensors |= {f"live.{k}": v for k, v in self.model.state_dict().items()}
        if self.tracker is not None:  # --lr auto: the power iteration goes on where it was
            tensors |= {f"curvature.{i}": v for i, v in enumerate(self.tracker.v)}
        save_tensors(
            tensors or {"_empty": torch.zeros(0)}, self.run / "checkpoints" / "resume.safetensors"
        )
        state = {"epoch": self.epoch, "step": self.global_step, "best_val": self.best_val,
                 "optimizer": layout, "history": self.history}  # fmt: skip
        if self.tracker is not None:
            state["lambda_max"] = self.tracker.lam
        save_json(state, self.run / "checkpoints" / "resume.json")

    def load_resume_state(self, run: Path) -> None:
        state = read_json(run / "checkpoints" / "resume.json")
        weights = load_tensors(
            run / "checkpoints" / "last.safetensors",
            read_json(run / "checkpoints" / "last.json")["weights_sha256"],
        )
        self.published.load_state_dict(weights)
        tensors = load_tensors(run / "checkpoints" / "resume.safetensors")
        if self.average is not None:
            live = {k[5:]: v for k, v in tensors.items() if k.startswith("live.")}
            if not live:
                raise CnnlabError(
                    f"{run}/checkpoints/resume.safetensors: no live weights beside the weight average (--ema {self.cfg.ema})"
                )
            self.model.load_state_dict(live)
        if self.tracker is not None and state.get("lambda_max"):
            shapes = [p.shape for p in self.tracker.params]
            saved = [tensors.get(f"curvature.{i}") for i in range(len(shapes))]
            if any(v is None or v.shape != shape for v, shape in zip(saved, shapes, strict=True)):
                raise CnnlabError(
                    f"{run}/checkpoints/resume.safetensors: the --lr auto eigenvector is missing or does not fit the model"
                )
            self.tracker.v = [v.to(p) for v, p in zip(saved, self.tracker.params, strict=True)]
            self.tracker.lam = state["lambda_max"]
            self.base_lr = lecun_rate(self.tracker.lam)
        tensors = {k: v for k, v in tensors.items() if not k.startswith(("live.", "curvature."))}
        self.opt.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
        self.global_step = state["step"]
        self._apply_lr(self.global_step)
        self.epoch, self.best_val, self.history = (
            state["epoch"],
            state["best_val"],
            state["history"],
        )

    def write_metrics(self) -> None:
        """metrics.jsonl and metrics.csv rewritten from the history, so a resumed run never
        repeats or loses a row whatever moment it was stopped at."""
        with atomic_path(self.run / "metrics.jsonl") as tmp:
            tmp.write_text(
                "".join(json.dumps(row) + "\n" for row in self.history), encoding="utf-8"
            )
        fields = list(dict.fromkeys(key for row in self.history for key in row))
        with (
            atomic_path(self.run / "metrics.csv") as tmp,
            open(tmp, "w", newline="", encoding="utf-8") as f,
        ):
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.history)

    # -- the whole run
    def fit(self) -> dict:
        cfg, p = self.cfg, self.p
        if self.world.main:
            (self.run / "checkpoints").mkdir(parents=True, exist_ok=True)
            (self.run / "config.yaml").write_text(
                yaml.safe_dump(asdict(cfg), sort_keys=False), encoding="utf-8"
            )
        n_val = len(p.val) if p.val is not None else 0
        if p.train.streamed:
            self.say(f"streaming {len(p.train)} images from disk with {self.workers} worker processes "
                     "(the decoded set would exceed the memory budget)")  # fmt: skip
        self.say(f"training {self.model.spec['name']} ({sum(q.numel() for q in self.model.parameters()):,} parameters) "
                 f"on {len(p.train)} images of {'x'.join(map(str, p.train.shape))}, validating on {n_val}; "
                 f"{cfg.epochs} epochs of {self.steps_per_epoch} batches of {cfg.batch_size} on {p.device}"
                 f"{f' x {self.world.size} processes' if self.world.size > 1 else ''}"
                 f"{', bf16 autocast' if self.amp_dtype else ''}; run: {self.run}")  # fmt: skip
        while self.epoch < cfg.epochs:
            try:
                row = self.train_epoch(self.epoch + 1)
            except KeyboardInterrupt:
                self._interrupted()
                raise
            self.epoch += 1
            row = {"epoch": self.epoch, **row, "lr": self.opt.param_groups[0]["lr"]}
            if self.tracker is not None:
                row["lambda_max"] = self.tracker.lam
            if p.val is not None:
                v = self.evaluate(p.val)
                row |= {"val_loss": v["loss"], "val_acc": v["acc"]}
            self.history.append(row)
            if self.world.main:
                self.save("last")
                if p.val is not None and row["val_acc"] > self.best_val:
                    self.best_val = row["val_acc"]
                    self.save("best")
                self.save_resume_state()
                self.write_metrics()  # last: a row on disk means its epoch can be resumed from
            val = (
                f"  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%"
                if "val_acc" in row
                else ""
            )
            self.say(f"epoch {self.epoch:>3}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc "
                     f"{100 * row['train_acc']:.2f}%{val}  lr {row['lr']:.3g}  {row['time_s']:.1f}s "
                     f"({row['images_per_s']:.0f} img/s)")  # fmt: skip
        result = {"run": str(self.run), "epochs": self.epoch, "history": self.history}
        if p.test is not None:
            t = self.evaluate(p.test)
            result |= {"test_acc": t["acc"], "test_loss": t["loss"], "test_count": len(p.test)}
            if self.world.main:
                self.save("last", {"test_acc": t["acc"]})
            self.say(
                f"test accuracy {100 * t['acc']:.2f}% on {len(p.test)} images ({p.test.source})"
            )
        return result

    def _interrupted(self) -> None:
        if not self.world.main:
            return
        path = self.save("interrupted")
        print(f"\ninterrupted: weights saved to {path.with_suffix('.safetensors')}; "
              f"continue with: cnnlab train --resume {self.run} (from epoch {self.epoch + 1})", file=sys.stderr)  # fmt: skip


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> (tensors for safetensors, JSON layout of everything else)."""
    tensors, layout = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        layout["state"][str(pid)] = {}
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
                layout["state"][str(pid)][key] = {"tensor": f"{pid}.{key}"}
            else:
                layout["state"][str(pid)][key] = {"value": value}
    return tensors, layout


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], layout: dict) -> dict:
    state = {
        int(pid): {
            k: tensors[v["tensor"]] if "tensor" in v else v["value"] for k, v in entries.items()
        }
        for pid, entries in layout["state"].items()
    }
    return {"state": state, "param_groups": layout["param_groups"]}


def train(cfg: TrainConfig) -> dict:
    """Train a model as configured; returns the run's results (history, test accuracy)."""
    return _run(cfg, None)


# Runs saved before these options existed trained with these values, not today's defaults.
BEFORE_FIELD_EXISTED = {"ema": 0.0, "warmup": 0.2}


def resume(run: str | os.PathLike, epochs: int | None = None) -> dict:
    """Continue the run in RUN from its last epoch, with its saved config (optionally more epochs)."""
    run = Path(run)
    if not (run / "checkpoints" / "resume.json").is_file():
        raise CnnlabError(f"{run}: nothing to resume (no checkpoints/resume.json)")
    saved = {**BEFORE_FIELD_EXISTED, **load_config(run / "config.yaml")}
    cfg = TrainConfig(**{**saved, "out": str(run), **({"epochs": epochs} if epochs else {})})
    return _run(cfg, run)


def make_trainer(cfg: TrainConfig) -> Trainer:
    """Process settings, data, model and process group, set up the way `cnnlab train` does."""
    if cfg.fast_malloc:
        keep_freed_memory()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
    prepared = prepare(cfg)
    return Trainer(prepared, init_world(prepared.device))


def _run(cfg: TrainConfig, resume_from: Path | None) -> dict:
    trainer = make_trainer(cfg)
    world = trainer.world
    if resume_from is not None:
        trainer.load_resume_state(resume_from)
        trainer.say(f"resuming {resume_from} after epoch {trainer.epoch}")
    with _sigterm_as_interrupt():
        try:
            return trainer.fit()
        finally:
            if world.size > 1 and dist.is_initialized():
                dist.destroy_process_group()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Let SIGTERM save a checkpoint the way Ctrl-C does (main thread only)."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
