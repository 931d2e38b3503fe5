"""From a TrainConfig to a Trainer: data, model, device, process group and the parts of a step.

`train(cfg)` and `resume(run)` are the two ways in; both go through `make_trainer`, as the
benchmarks do, so a benchmark measures exactly what `cnnlab train` runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from cnnlab.checkpoint import model_from
from cnnlab.data import load_data
from cnnlab.data.augment import parse as parse_augment
from cnnlab.data.augment import pca_basis
from cnnlab.data.dataset import ImageSet
from cnnlab.errors import CnnlabError
from cnnlab.infer import Normalize, conform, plan_fit
from cnnlab.model.net import Net
from cnnlab.model.spec import build, retarget
from cnnlab.train.average import WeightAverage
from cnnlab.train.batches import Batches, World
from cnnlab.train.config import (
    FIELDS,
    TrainConfig,
    check_values,
    parse_shape,
    parse_size,
    read_config,
)
from cnnlab.train.curvature import CurvatureTracker, largest_hessian_eigenvalue, lecun_rate
from cnnlab.train.loop import Trainer
from cnnlab.train.losses import make_loss
from cnnlab.train.optim import make_optimizer
from cnnlab.train.rundir import RunDir
from cnnlab.train.runtime import autocast_dtype, keep_freed_memory
from cnnlab.train.schedule import LearningRate, lr_factor
from cnnlab.train.state import has_state
from cnnlab.train.step import Step
from cnnlab.weights import load_matching, read_weights

# Runs saved before these options existed trained with these values, not today's defaults.
BEFORE_FIELD_EXISTED = {"ema": 0.0, "warmup": 0.2}
# What `--resume` may change: how long and how fast, never what is computed.
SAFE_ON_RESUME = ("epochs", "threads", "eval_batch_size")


def init_world(device: torch.device) -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def _has_mps() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("mps") if _has_mps() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CnnlabError("--device cuda: no CUDA device is available")
    if name == "mps" and not _has_mps():
        raise CnnlabError("--device mps: no Apple GPU is available")
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def _data_options(
    cfg: TrainConfig, size: tuple[int, int] | None, channels: int | None, model: Net
) -> dict:
    return {
        "channels": channels,
        "size": size,
        "skip_bad": cfg.skip_bad,
        "sequences": not _spatial(model),
    }


def _spatial(model: Net) -> bool:
    return len(model.input_shape) == 3


def base_model(cfg: TrainConfig) -> tuple[Net, dict | None]:
    """The model --model names (with --input/--classes/--set), and its weights if it is a run."""
    return model_from(cfg.model, parse_shape(cfg.input), cfg.classes, cfg.set)


def fit_to_data(cfg: TrainConfig, model: Net, data: ImageSet, say) -> Net:
    """The model rebuilt where the data decides: its class count (unless --classes pinned one),
    its input channels where the data's differ (unless --input pinned them; data read with
    starting weights was already read at the model's channels) and a sequence model's length."""
    classes, spec, changes = len(data.classes), model.spec, []
    if len(data.shape) != len(model.input_shape):
        kind = "sequences (C, L)" if len(data.shape) == 2 else "images (C, H, W)"
        raise CnnlabError(
            f"{data.source}: holds {kind} of {'x'.join(map(str, data.shape))}, but {cfg.model} "
            f"takes {'x'.join(map(str, model.input_shape))}"
        )
    if spec["classes"] != classes:
        if cfg.classes is not None:
            raise CnnlabError(
                f"{cfg.model}: --classes {cfg.classes} but {data.source} has {classes} classes"
            )
        changes.append(
            f"its head for the {classes} classes of {data.source} (it had {spec['classes']})"
        )
        spec = retarget(spec, classes=classes)
    shape = list(spec["input"])
    if _spatial(model) and data.shape[0] != shape[0] and cfg.input is None:
        changes.append(f"its input for {data.shape[0]}-channel images")
        spec = retarget(spec, input_shape=(data.shape[0], *shape[1:]))
    elif not _spatial(model) and tuple(data.shape) != tuple(shape):  # sequences are not resized
        if cfg.input is not None:
            raise CnnlabError(
                f"{data.source}: sequences of {'x'.join(map(str, data.shape))}, but --input "
                f"{cfg.input}"
            )
        changes.append(f"its input for sequences of {'x'.join(map(str, data.shape))}")
        spec = retarget(spec, input_shape=tuple(data.shape))
    if not changes:
        return model
    say(f"{cfg.model}: rebuilt " + " and ".join(changes))
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed and the architecture alone
    return build(spec, str(cfg.model))


def start_weights(cfg: TrainConfig, model: Net, checkpoint: dict | None, say) -> None:
    """--init, or the checkpoint --model names: every tensor that fits by name and shape."""
    if cfg.init is None and checkpoint is None:
        return
    source = cfg.init or cfg.model
    report = load_matching(model, read_weights(cfg.init) if cfg.init else checkpoint, source)
    if cfg.init or report.reshaped or report.missing or report.unused:
        for line in report.lines():
            say(line)


def freeze_until(model: Net, layer: str | None) -> list[nn.Module]:
    """--freeze LAYER: LAYER and everything before it stop learning; returns those modules,
    which the loop keeps in eval mode (batch-norm statistics frozen too)."""
    if layer is None:
        return []
    names = [name for name, _ in model.named_children()]
    if layer not in names:
        raise CnnlabError(f"--freeze {layer}: no such layer; layers: {', '.join(names)}")
    frozen = [getattr(model, name) for name in names[: names.index(layer) + 1]]
    for module in frozen:
        module.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise CnnlabError(f"--freeze {layer}: nothing after it is left to train")
    return frozen


def head_of(model: Net) -> str:
    """The last layer that holds parameters: the classifier --lr-head speeds up."""
    return [name for name, m in model.named_children() if any(True for _ in m.parameters())][-1]


def param_groups(model: Net, lr_head: float) -> list:
    """The trainable tensors; with --lr-head, the head's in a group of their own."""
    trainable = {
        name: [q for q in m.parameters() if q.requires_grad] for name, m in model.named_children()
    }
    if lr_head == 1.0:
        return [q for qs in trainable.values() for q in qs]
    head = head_of(model)
    body = [q for name, qs in trainable.items() if name != head for q in qs]
    return ([{"params": body}] if body else []) + [{"params": trainable[head], "lr_scale": lr_head}]


@dataclass
class Prepared:
    """A run's data and model before training: splits, normalisation, device, input recipe."""

    cfg: TrainConfig
    model: Net
    train: ImageSet
    val: ImageSet | None
    test: ImageSet | None
    norm: Normalize
    device: torch.device
    preprocess: str
    recipe: dict | None = None  # how any image is brought to the model's input (see infer.plan_fit)
    frozen: list[nn.Module] | None = None


def prepare(cfg: TrainConfig, say=print) -> Prepared:
    model, checkpoint = base_model(cfg)
    weights_first = cfg.init is not None or checkpoint is not None
    size = parse_size(cfg.size) or (tuple(model.input_shape[1:]) if _spatial(model) else None)
    channels = cfg.channels or (model.input_shape[0] if weights_first and _spatial(model) else None)
    options = _data_options(cfg, size, channels, model)
    full = load_data(cfg.data, "train", **options)
    test = load_data(cfg.data, "test", required=False, **options)
    for found in (full, test):
        if found is not None and found.skipped:  # --skip-bad: never a silent loss
            say(f"skipped {len(found.skipped)} unreadable file(s) of {found.source}:")
            for line in found.skipped:
                say(f"  {line}")
    if cfg.size and _spatial(model) and tuple(model.input_shape[1:]) != size and cfg.input is None:
        say(f"{cfg.model}: rebuilt its input for {size[0]}x{size[1]} images (--size)")
        model = build(
            retarget(model.spec, input_shape=(model.input_shape[0], *size)), str(cfg.model)
        )
    model = fit_to_data(cfg, model, full, say)
    start_weights(cfg, model, checkpoint, say)
    frozen = freeze_until(model, cfg.freeze)
    shape = tuple(model.input_shape)
    recipe = plan_fit(tuple(full.shape[1:]), shape[1:], shape[0]) if _spatial(model) else None
    if recipe is not None:
        full.images = conform(full.images, recipe, full.source)
        if test is not None:
            test.images = conform(test.images, recipe, test.source)
    train, val = full.split(cfg.val_split, cfg.seed) if cfg.val_split > 0 else (full, None)
    if val is not None and len(val) == 0:
        train, val = full, None
    mean, std = train.stats()
    preprocess = "mnist-digit" if cfg.data == "mnist" else "resize"
    return Prepared(
        cfg,
        model,
        train,
        val,
        test,
        Normalize(mean, std),
        pick_device(cfg.device),
        preprocess,
        recipe,
        frozen,
    )


def _first_rate(
    cfg: TrainConfig,
    model: nn.Module,
    loss_fn,
    batches: Batches,
    norm: Normalize,
    resuming: bool,
    say,
) -> float:
    """The base learning rate; under --lr auto a 4-batch estimate of 0.9/lambda_max (not when
    resuming: the saved state carries the rate the run had reached)."""
    if cfg.lr != "auto" or resuming:
        return 0.0 if cfg.lr == "auto" else float(cfg.base_lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    sample = []
    for _ in range(4):
        idx = torch.randint(0, len(batches.images), (cfg.batch_size,), generator=gen)
        sample.append((norm(batches.images[idx]), batches.labels[idx]))
    lam = largest_hessian_eigenvalue(model, loss_fn, sample, seed=cfg.seed)
    lr = lecun_rate(lam)
    say(
        f"--lr auto: largest Hessian eigenvalue {lam:.4g} over 4 batches -> "
        f"learning rate 0.9/lambda = {lr:.4g}"
        " (re-estimated on-line as training proceeds)"
    )
    return lr


def make_trainer(
    cfg: TrainConfig, run: RunDir | None = None, overwrite: bool = False, resuming: bool = False
) -> Trainer:
    """Process settings, data, model, process group and step, set up the way `cnnlab train` does."""
    if run is None:  # claimed first, so a second trainer on the same directory fails at once
        run = RunDir.fresh(cfg.out, str(cfg.model), overwrite, writer=_rank() == 0)
    try:
        return _assemble(cfg, run, resuming)
    except BaseException:
        run.discard_if_unused()
        raise


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _assemble(cfg: TrainConfig, run: RunDir, resuming: bool) -> Trainer:
    if cfg.fast_malloc:
        keep_freed_memory()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
    say = print if _rank() == 0 else (lambda text: None)
    p = prepare(cfg, say)
    world = init_world(p.device)
    model = p.model.to(p.device)
    channels_last = cfg.channels_last and len(model.input_shape) == 3
    if channels_last:  # NHWC suits oneDNN's convolution and pooling kernels on CPU
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if world.size > 1 else model
    loss_fn = make_loss(cfg.loss, cfg.label_smoothing)
    augment = parse_augment(cfg.augment)
    augment.check(p.train.images, cfg.augment)
    if any(name == "pca" for name, _ in augment.ops):
        augment.pca_basis = pca_basis(p.train.images)
    batches = Batches(p.train, cfg.batch_size, world, p.device)
    lr = _first_rate(cfg, model, loss_fn, batches, p.norm, resuming, say)
    optimizer = make_optimizer(
        cfg.optimizer, param_groups(model, cfg.lr_head), lr, cfg.weight_decay, cfg.momentum
    )
    factor = lr_factor(
        cfg.schedule,
        batches.steps_per_epoch * cfg.epochs,
        batches.steps_per_epoch,
        cfg.gamma,
        cfg.warmup,
    )
    tracker = CurvatureTracker(model, loss_fn, seed=cfg.seed) if cfg.lr == "auto" else None
    step = Step(
        net,
        loss_fn,
        optimizer,
        LearningRate(optimizer, lr, factor),
        augment,
        p.norm,
        channels_last,
        WeightAverage(model, cfg.ema) if cfg.ema else None,
        tracker,
        autocast_dtype(cfg.amp, p.device),
    )
    return Trainer(p, world, run, batches, step, model, net)


def train(cfg: TrainConfig, overwrite: bool = False) -> dict:
    """Train a model as configured; returns the run's results (history, test accuracy)."""
    return _run(make_trainer(cfg, overwrite=overwrite))


def resume(run: str | os.PathLike, epochs: int | None = None, **changes) -> dict:
    """Continue the run in RUN from its last epoch with its saved config.

    Only what changes how long or how fast it runs may differ (SAFE_ON_RESUME: epochs,
    threads, eval_batch_size); anything else would silently mix two recipes in one run.
    """
    changes = {k: v for k, v in {**changes, "epochs": epochs}.items() if v is not None}
    refused = sorted(set(changes) - set(SAFE_ON_RESUME))
    if refused:
        allowed = ", ".join(f"--{k.replace('_', '-')}" for k in SAFE_ON_RESUME)
        raise CnnlabError(
            f"--resume {run} continues with the run's saved config; "
            f"{', '.join('--' + k.replace('_', '-') for k in refused)} cannot change "
            f"(allowed: {allowed})"
        )
    path = Path(run)
    directory = RunDir.existing(path, writer=_rank() == 0)
    saved_file = path / "config.yaml"
    saved = {**BEFORE_FIELD_EXISTED, **read_config(saved_file)}
    sources = dict.fromkeys(saved, str(saved_file)) | dict.fromkeys(changes, "flag")
    values = check_values({**saved, "out": str(path), **changes}, sources)
    cfg = TrainConfig(**{k: v for k, v in values.items() if k in FIELDS})
    try:
        trainer = make_trainer(cfg, run=directory, resuming=True)
        trainer.load_state_dict(_resume_tree(directory, trainer))
    except BaseException:
        directory.release()
        raise
    trainer.say(f"resuming {path} after epoch {trainer.epoch}")
    return _run(trainer)


def _resume_tree(run: RunDir, trainer: Trainer) -> dict:
    if (
        has_state(run.checkpoints / "resume.safetensors")
        or not (run.checkpoints / "resume.json").is_file()
    ):
        return run.load_state()
    return legacy_resume_tree(run, trainer)


def legacy_resume_tree(run: RunDir, trainer: Trainer) -> dict:
    """cnnlab 0.1's resume files (resume.json, tensors beside last.safetensors) as a state tree."""
    from cnnlab.checkpoint import load_tensors, read_json

    state = read_json(run.checkpoints / "resume.json")
    last = read_json(run.checkpoints / "last.json")
    published = load_tensors(run.checkpoints / "last.safetensors", last.get("weights_sha256"))
    flat = load_tensors(run.checkpoints / "resume.safetensors")
    live = {k[5:]: v for k, v in flat.items() if k.startswith("live.")}
    layout = state["optimizer"]
    optimizer = {
        "param_groups": layout["param_groups"],
        "state": {
            int(pid): {
                k: flat[v["tensor"]] if "tensor" in v else v["value"] for k, v in entries.items()
            }
            for pid, entries in layout["state"].items()
        },
    }
    cfg = trainer.cfg
    tree = {
        "model": live or published,
        "optimizer": optimizer,
        "step": {
            "count": state["step"],
            "base_lr": lecun_rate(state["lambda_max"]) if state.get("lambda_max") else cfg.base_lr,
        },
        "progress": {
            "epoch": state["epoch"],
            "best_val": state["best_val"],
            "history": state["history"],
        },
    }
    if cfg.ema:
        if not live:
            raise CnnlabError(
                f"{run}/checkpoints/resume.safetensors: no live weights beside the weight "
                f"average (--ema {cfg.ema})"
            )
        tree["average"] = {"decay": cfg.ema, "weights": published}
    if cfg.lr == "auto":
        vector = [flat.get(f"curvature.{i}") for i in range(len(trainer.step.tracker.params))]
        if not state.get("lambda_max") or any(v is None for v in vector):
            raise CnnlabError(
                f"{run}/checkpoints/resume.safetensors: the --lr auto eigenvector is missing "
                "or does not fit the model"
            )
        tree["curvature"] = {"v": vector, "lambda_max": state["lambda_max"]}
    return tree


def _run(trainer: Trainer) -> dict:
    try:
        with _sigterm_as_interrupt():
            return trainer.fit()
    finally:
        trainer.run.release()
        if trainer.world.size > 1 and dist.is_initialized():
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
