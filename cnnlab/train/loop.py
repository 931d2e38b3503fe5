"""The epoch loop: seeded epochs of steps, evaluation, checkpoints and resume state after each.

Each epoch e draws its shuffle, augmentation and dropout noise from seed and e, so a run that
is stopped and resumed at an epoch boundary ends with the same weights as one that never
stopped.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from cnnlab.data.dataset import ImageSet
from cnnlab.errors import CnnlabError
from cnnlab.infer import logits
from cnnlab.model.net import Net
from cnnlab.train.batches import Batches, World
from cnnlab.train.rundir import RunDir
from cnnlab.train.step import Diverged, Step

if TYPE_CHECKING:
    from cnnlab.train.setup import Prepared


class Trainer:
    """Runs the epochs of one run; the parts it is made of are built by `cnnlab.train.setup`."""

    def __init__(
        self,
        prepared: Prepared,
        world: World,
        run: RunDir,
        batches: Batches,
        step: Step,
        model: Net,
        net: torch.nn.Module,
    ):
        self.prepared, self.cfg, self.world, self.run = prepared, prepared.cfg, world, run
        self.batches, self.step, self.model, self.net = batches, step, model, net
        self.history: list[dict] = []
        self.epoch = 0
        self.best_val = -1.0
        self.step_hook: Callable | None = None  # hook(trainer, epoch, step) after every step

    @property
    def published(self) -> Net:
        """The weights that are evaluated and saved: the running average when --ema is on."""
        return self.step.average.model if self.step.average is not None else self.model

    @property
    def steps_per_epoch(self) -> int:
        return self.batches.steps_per_epoch

    def say(self, text: str) -> None:
        if self.world.main:
            print(text, flush=True)

    # -- one epoch
    def train_epoch(self, epoch: int) -> dict:
        cfg, world = self.cfg, self.world
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout and stochastic pooling noise
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(self.batches.data), generator=gen)
        self.net.train()
        for module in (
            self.prepared.frozen or []
        ):  # --freeze: those layers keep their batch-norm statistics
            module.eval()
        total_loss, correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="batch",
            disable=None if world.main else True,
            leave=False,
            file=sys.stderr,
        )
        for i, (raw, y) in enumerate(self.batches.epoch(order)):
            bar.update()
            try:
                loss, right = self.step(raw, y, gen)
            except Diverged as e:
                raise CnnlabError(
                    f"{e} at epoch {epoch} step {i}; {self._last_good()} (try a lower --lr)"
                ) from None
            if self.step_hook is not None:
                self.step_hook(self, epoch, i)
            total_loss, correct, seen = total_loss + loss * len(y), correct + right, seen + len(y)
            if i % 20 == 0 or i == self.steps_per_epoch - 1:
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
        elapsed = time.perf_counter() - start
        return {
            "train_loss": totals[0].item() / totals[2].item(),
            "train_acc": totals[1].item() / totals[2].item(),
            "time_s": elapsed,
            "images_per_s": totals[2].item() / elapsed,
        }

    def _last_good(self) -> str:
        last = self.run.checkpoint_json("last")
        return f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"

    def evaluate(self, data: ImageSet) -> dict:
        out = logits(self.published, data.images, self.prepared.norm, self.cfg.eval_batch_size)
        return {
            "loss": F.cross_entropy(out, data.labels).item(),
            "acc": (out.argmax(1) == data.labels).float().mean().item(),
        }

    # -- what is saved
    def meta(self, extra: dict | None = None) -> dict:
        data = self.prepared
        return {
            "classes": data.train.classes,
            "input_shape": list(self.model.input_shape),
            "channels": self.model.input_shape[0],
            "mean": data.norm.mean,
            "std": data.norm.std,
            "preprocess": data.preprocess,
            "input_recipe": data.recipe,
            "input_dtype": data.train.dtype,  # uint8 pixels (/255) or float32 values as they are
            "data": self.cfg.data,
            "config": asdict(self.cfg),
            "epoch": self.epoch,
            "history": self.history,
            **(extra or {}),
        }

    def state_dict(self) -> dict:
        """Everything a resumed run needs, one state dict per object that owns it."""
        tree = {
            "model": self.model.state_dict(),
            "optimizer": self.step.optimizer.state_dict(),
            "step": self.step.state_dict(),
            "progress": {"epoch": self.epoch, "best_val": self.best_val, "history": self.history},
        }
        if self.step.average is not None:
            tree["average"] = self.step.average.state_dict()
        if self.step.tracker is not None:
            tree["curvature"] = self.step.tracker.state_dict()
        return tree

    def load_state_dict(self, tree: dict) -> None:
        for key, owner in (("average", self.step.average), ("curvature", self.step.tracker)):
            if (owner is None) != (key not in tree):
                raise CnnlabError(
                    f"{self.run}: the resume state "
                    f"{'lacks' if owner else 'has an unexpected'} '{key}' part"
                )
        try:
            self.model.load_state_dict(tree["model"])
            self.step.optimizer.load_state_dict(tree["optimizer"])
            if self.step.average is not None:
                self.step.average.load_state_dict(tree["average"])
            if self.step.tracker is not None:
                self.step.tracker.load_state_dict(tree["curvature"])
            self.step.load_state_dict(tree["step"])
            progress = tree["progress"]
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CnnlabError(
                f"{self.run}: the resume state does not fit this run ({str(e).splitlines()[0]})"
            ) from None
        except CnnlabError as e:
            raise CnnlabError(f"{self.run}/checkpoints/resume.safetensors: {e}") from None
        self.epoch, self.best_val, self.history = (
            progress["epoch"],
            progress["best_val"],
            progress["history"],
        )

    def save_epoch(self, row: dict) -> None:
        """last (and best), then the resume state, then the metrics: a row on disk means its
        epoch can be resumed from."""
        if not self.world.main:
            return
        self.run.save_checkpoint("last", self.published, self.meta())
        if "val_acc" in row and row["val_acc"] > self.best_val:
            self.best_val = row["val_acc"]
            self.run.save_checkpoint("best", self.published, self.meta())
        self.run.save_state(self.state_dict())
        self.run.write_metrics(self.history)

    # -- the whole run
    def fit(self) -> dict:
        cfg, data = self.cfg, self.prepared
        self.run.write_config(cfg)
        self.say(self._plan())
        while self.epoch < cfg.epochs:
            try:
                row = self.train_epoch(self.epoch + 1)
            except KeyboardInterrupt:
                self._interrupted()
                raise
            self.epoch += 1
            row = {"epoch": self.epoch, **row, "lr": self.step.rate.current}
            if self.step.tracker is not None:
                row["lambda_max"] = self.step.tracker.lam
            if data.val is not None:
                v = self.evaluate(data.val)
                row |= {"val_loss": v["loss"], "val_acc": v["acc"]}
            self.history.append(row)
            self.save_epoch(row)
            self.say(_epoch_line(row, cfg.epochs))
        result = {"run": str(self.run), "epochs": self.epoch, "history": self.history}
        if data.test is not None:
            t = self.evaluate(data.test)
            result |= {"test_acc": t["acc"], "test_loss": t["loss"], "test_count": len(data.test)}
            if self.world.main:
                self.run.save_checkpoint("last", self.published, self.meta({"test_acc": t["acc"]}))
            self.say(
                f"test accuracy {100 * t['acc']:.2f}% on {len(data.test)} images "
                f"({data.test.source})"
            )
        return result

    def _plan(self) -> str:
        data, cfg, world = self.prepared, self.cfg, self.world
        n_val = len(data.val) if data.val is not None else 0
        streamed = (
            (
                f"streaming {len(data.train)} images from disk with {self.batches.workers} "
                "worker processes "
                "(the decoded set would exceed the memory budget)\n"
            )
            if data.train.streamed
            else ""
        )
        params = sum(q.numel() for q in self.model.parameters())
        return (
            f"{streamed}training {self.model.spec['name']} ({params:,} parameters) "
            f"on {len(data.train)} images of "
            f"{'x'.join(map(str, data.train.shape))}, validating on {n_val}; "
            f"{cfg.epochs} epochs of "
            f"{self.steps_per_epoch} batches of {cfg.batch_size} on {data.device}"
            f"{f' x {world.size} processes' if world.size > 1 else ''}"
            f"{', bf16 autocast' if self.step.amp_dtype else ''}; run: {self.run}"
        )

    def _interrupted(self) -> None:
        if not self.world.main:
            return
        path = self.run.save_checkpoint("interrupted", self.published, self.meta())
        print(
            f"\ninterrupted: weights saved to {path.with_suffix('.safetensors')}; "
            f"continue with: cnnlab train --resume {self.run} (from epoch {self.epoch + 1})",
            file=sys.stderr,
        )


def _epoch_line(row: dict, epochs: int) -> str:
    val = (
        f"  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%"
        if "val_acc" in row
        else ""
    )
    return (
        f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} "
        f"acc {100 * row['train_acc']:.2f}%"
        f"{val}  lr {row['lr']:.3g}  {row['time_s']:.1f}s ({row['images_per_s']:.0f} img/s)"
    )
