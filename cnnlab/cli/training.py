"""`cnnlab train`, `eval`, `predict`."""

from __future__ import annotations

import click

from cnnlab.cli.root import SHOW, cli, load_options, load_run, model_options, print_json
from cnnlab.errors import CnnlabError
from cnnlab.train.config import AMP_MODES, DEFAULTS, DEVICES, LOSSES, OPTIMIZERS, SCHEDULES


def _train_option(name: str, help: str | None = None, choices=None, **kw):
    """A flag for TrainConfig field NAME: its default from the dataclass, its choices from the
    registry the code uses, its value checked by TrainConfig itself (the same check a config
    file gets), so nothing about it is written twice."""
    default = DEFAULTS[name]
    if choices is not None:
        kw["metavar"] = "[" + "|".join(map(str, choices)) + "]"
    if isinstance(default, bool):
        flag = name.replace("_", "-")
        return click.option(f"--{flag}/--no-{flag}", default=default, help=help, **SHOW, **kw)
    if "type" not in kw and default is not None:
        kw["type"] = type(default)
    return click.option(
        f"--{name.replace('_', '-')}",
        name,
        default=default,
        help=help,
        show_default=default is not None,
        **kw,
    )


@cli.command("train")
@_train_option("model", "Zoo name, spec file, or checkpoint to start from.")
@_train_option(
    "data",
    "mnist, an image folder, an IDX pair or directory, CIFAR-10 batches, FILE.npz or X.npy,Y.npy.",
)
@_train_option("epochs")
@_train_option("batch_size")
@_train_option("optimizer", choices=OPTIMIZERS)
@_train_option(
    "lr", "Learning rate, or 'auto' for LeCun's Hessian rule [default: per optimizer].", type=str
)
@_train_option("momentum")
@_train_option("schedule", choices=SCHEDULES)
@_train_option("gamma", "Decay per epoch for --schedule step.")
@_train_option("warmup", "Fraction of the run spent warming up for --schedule onecycle.")
@_train_option("weight_decay")
@_train_option("loss", choices=LOSSES)
@_train_option("label_smoothing")
@_train_option(
    "ema", "Evaluate and save an average of the weights with this per-step decay; 0 turns it off."
)
@_train_option(
    "augment",
    "Comma list such as translate=2,flip,color=0.2,pca=0.1,elastic=34:4,affine=10:0.1, or none.",
)
@_train_option("val_split", "Fraction held out for validation (stratified).")
@_train_option("seed")
@_train_option("device", choices=DEVICES)
@_train_option("threads", "CPU threads [default: all cores].", type=int)
@_train_option("channels_last", "NHWC memory layout for 2-D models.")
@_train_option(
    "amp",
    "bfloat16 autocast for training; auto: where the device computes bf16 natively.",
    choices=AMP_MODES,
)
@_train_option(
    "fast_malloc",
    "Keep freed memory in glibc's heap instead of page-faulting it in again every batch.",
)
@_train_option("eval_batch_size", "Batch size for validation and test.")
@_train_option(
    "init", "Start from these weights: a run, checkpoint, .safetensors, or .pt/.pth state dict."
)
@_train_option(
    "freeze", "Train only the layers after this one (the rest stay fixed, in eval mode)."
)
@_train_option("lr_head", "The last layer's learning rate is this many times the others'.")
@_train_option("out", "Run directory [default: runs/MODEL-TIME].", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace the run that --out already holds.")
@click.option(
    "--resume",
    type=click.Path(file_okay=False),
    help="Continue this run directory from its last epoch.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="YAML file of these options; flags override it.",
)
@model_options
@load_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON at the end.")
@click.pass_context
def train_cmd(ctx: click.Context, resume, config_file, overwrite, as_json, **opts) -> None:
    """Train a model; leaves a run directory that every other command accepts."""
    from click.core import ParameterSource

    from cnnlab.train.config import resolve
    from cnnlab.train.setup import resume as resume_run
    from cnnlab.train.setup import train

    renamed = {"input_shape": "input", "overrides": "set"}
    given = {
        renamed.get(k, k): v
        for k, v in opts.items()
        if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE
    }
    if "set" in given:
        given["set"] = list(given["set"])
    if resume:
        if config_file or overwrite:
            raise CnnlabError(
                f"--resume {resume} continues the run's saved config; "
                f"drop {'--config' if config_file else '--overwrite'}"
            )
        result = resume_run(resume, **given)
    else:
        result = train(resolve(config_file, given), overwrite=overwrite)
    if as_json:
        print_json(result)


@cli.command("eval")
@click.argument("run")
@click.option("--data", help="Dataset to evaluate on [default: the one the model was trained on].")
@click.option(
    "--plot", type=click.Path(dir_okay=False), help="Also save the confusion matrix as a PNG."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def eval_cmd(run: str, data: str | None, plot: str | None, as_json: bool) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of a trained model."""
    from cnnlab.infer.evaluate import eval_data, format_metrics, metrics, plot_confusion

    ckpt = load_run(run)
    dataset, split = eval_data(ckpt, data)
    result = metrics(ckpt, dataset) | {"split": split, "checkpoint": str(ckpt.path)}
    print_json(result) if as_json else click.echo(format_metrics(result))
    if plot:
        click.echo(f"confusion matrix: {plot_confusion(result, plot)}", err=as_json)


@cli.command("predict")
@click.argument("run")
@click.argument("files", nargs=-1, required=True)
@click.option("--top-k", default=3, type=click.IntRange(1), **SHOW)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def predict_cmd(run: str, files: tuple[str, ...], top_k: int, as_json: bool) -> None:
    """Top-k classes with probabilities for image files (or folders of them)."""
    from cnnlab.infer.evaluate import image_files, prepare_image
    from cnnlab.infer.evaluate import top_k as rank

    ckpt = load_run(run)
    results, failed = [], 0
    for path in image_files(list(files)):
        try:
            results.append({"file": str(path), "top": rank(ckpt, prepare_image(ckpt, path), top_k)})
        except CnnlabError as e:
            failed += 1
            results.append({"file": str(path), "error": str(e)})
            click.echo(f"Error: {e}", err=True)
    if as_json:
        print_json(results)
    else:
        for r in results:
            if "top" in r:
                guesses = "  ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"])
                click.echo(f"{r['file']}: {guesses}")
    if failed:
        raise CnnlabError(f"{failed} of {len(results)} file(s) could not be read")
