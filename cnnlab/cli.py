"""The `cnnlab` command. Each subcommand parses flags and calls the library; no logic lives here."""

from __future__ import annotations

import json
import sys

import click

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError

SHOW = {"show_default": True}


class _Cli(click.Group):
    """Turns user errors into one line and a non-zero exit; --debug shows the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except CnnlabError as e:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as e:  # an internal fault: still one line, traceback on request
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(
                f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)"
            ) from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="cnnlab")
def cli(debug: bool) -> None:
    """cnnlab: build, train, look inside and ship convolutional neural networks."""


def _print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


def _parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HxW such as 28x28, got {value!r}") from None
    return h, w


# ---------------------------------------------------------------- data
@cli.group()
def data() -> None:
    """Obtain, inspect and convert datasets."""


@data.command("fetch")
@click.argument("name", type=click.Choice(["mnist"]))
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False),
    help="Directory holding the IDX files (plain or .gz).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Cache directory [default: $CNNLAB_CACHE_DIR or ~/.cache/cnnlab].",
)
def data_fetch(name: str, source: str | None, cache_dir: str | None) -> None:
    """Put a dataset in the cache and verify its checksums."""
    from cnnlab.data.mnist import fetch_mnist

    click.echo(str(fetch_mnist(cache_dir, source)))


_LOAD_OPTIONS = [
    click.option(
        "--channels",
        type=click.Choice(["1", "3"]),
        help="Force gray (1) or RGB (3) [default: inferred].",
    ),
    click.option("--size", help="Resize images to HxW, e.g. 32x32 [default: keep]."),
    click.option(
        "--skip-bad", is_flag=True, help="Skip unreadable images and list them at the end."
    ),
]


def _load_options(f):
    for option in reversed(_LOAD_OPTIONS):
        f = option(f)
    return f


def _load(src: str, split: str, channels, size, skip_bad, required=True):
    from cnnlab.data import load_data

    found = load_data(
        src, split, int(channels) if channels else None, _parse_size(size), skip_bad, required
    )
    if found is not None and found.skipped:
        click.echo(f"skipped {len(found.skipped)} unreadable file(s):", err=True)
        for line in found.skipped:
            click.echo(f"  {line}", err=True)
    return found


@data.command("info")
@click.argument("src")
@_load_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def data_info(src: str, channels, size, skip_bad, as_json: bool) -> None:
    """Count, shape, classes with counts and pixel statistics of SRC."""
    from cnnlab.data.info import describe, format_info

    splits = {}
    for split in ("train", "test"):
        found = _load(src, split, channels, size, skip_bad, required=split == "train")
        if found is not None:
            splits[split] = describe(found)
    if as_json:
        _print_json(splits)
    else:
        click.echo(format_info(splits))


@data.command("convert")
@click.argument("src")
@click.argument("out", type=click.Path())
@click.option(
    "--to", "fmt", type=click.Choice(["idx", "folder"]), required=True, help="Output format."
)
@_load_options
def data_convert(src: str, out: str, fmt: str, channels, size, skip_bad) -> None:
    """Write SRC as IDX files (images, labels, classes.txt) or as an image folder."""
    from cnnlab.data import save_idx_set
    from cnnlab.data.folders import save_folder

    dataset = _load(src, "train", channels, size, skip_bad)
    if fmt == "idx":
        for path in save_idx_set(dataset, out):
            click.echo(str(path))
    else:
        click.echo(str(save_folder(dataset, out)))


# ---------------------------------------------------------------- models
def _parse_shape(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected C,H,W such as 3,64,64, got {value!r}") from None
    if not 1 <= len(shape) <= 3 or min(shape) < 1:
        raise click.BadParameter(f"expected C,H,W or C,L of positive integers, got {value!r}")
    return shape


def _model_options(f):
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Edit the spec, e.g. pool1.mode=mean (repeatable).")(f)  # fmt: skip
    f = click.option("--classes", type=click.IntRange(1), help="Rebuild for this many classes.")(f)
    return click.option("--input", "input_shape", help="Rebuild for input C,H,W (or C,L).")(f)


def _build(ref: str, input_shape: str | None, classes: int | None, overrides=()):
    from cnnlab.checkpoint import is_checkpoint, load_checkpoint
    from cnnlab.spec import apply_overrides, build, load_spec, retarget

    if is_checkpoint(ref):
        ckpt = load_checkpoint(ref)
        spec, source = ckpt.model.spec, str(ckpt.path)
        if not (input_shape or classes or overrides):
            return ckpt.model
    else:
        spec, source = load_spec(ref)
    spec = retarget(spec, _parse_shape(input_shape), classes)
    return build(apply_overrides(spec, list(overrides), source), source)


@cli.command("zoo")
def zoo_cmd() -> None:
    """List the architectures shipped with cnnlab."""
    from cnnlab import zoo

    names = zoo.names()
    width = max(map(len, names))
    for name in names:
        spec = zoo.spec(name)
        shape = "x".join(map(str, spec["input"]))
        click.echo(
            f"{name:<{width}}  {shape:>9} -> {spec['classes']:<4}  {spec.get('description', '')}"
        )


@cli.command("summary")
@click.argument("model")
@_model_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def summary_cmd(model: str, input_shape, classes, overrides, as_json: bool) -> None:
    """Per-layer output shape, parameters, multiply-adds and receptive field of MODEL.

    MODEL is a zoo name, a spec file or a checkpoint.
    """
    from cnnlab.summary import format_summary, summarize

    result = summarize(_build(model, input_shape, classes, overrides))
    _print_json(result) if as_json else click.echo(format_summary(result))


@cli.command("gradcheck")
@click.argument("model")
@_model_options
@click.option(
    "--per-layer",
    default=4,
    type=click.IntRange(1),
    help="Parameter entries checked per tensor.",
    **SHOW,
)
@click.option(
    "--tolerance", default=1e-3, type=float, help="Largest relative error allowed.", **SHOW
)
@click.option(
    "--seed", default=0, type=int, help="Chooses the entries and the random batch.", **SHOW
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def gradcheck_cmd(
    model, input_shape, classes, overrides, per_layer, tolerance, seed, as_json
) -> None:
    """Finite differences against backprop on every layer of MODEL (float64, tiny batch)."""
    from cnnlab.gradcheck import gradcheck_model

    net = _build(model, input_shape, classes, overrides)
    rows = gradcheck_model(net, net.input_shape, net.spec["classes"], per_layer, seed=seed)
    worst = max((r["worst_rel_error"] for r in rows), default=0.0)
    if as_json:
        _print_json({"tolerance": tolerance, "worst": worst, "layers": rows})
    else:
        for r in rows:
            flag = "FAIL" if r["worst_rel_error"] > tolerance else "ok"
            kinks = f"  ({r['kinks']} on a kink, skipped)" if r["kinks"] else ""
            click.echo(
                f"{r['layer']:<16} {r['checked']:>4} checked  worst {r['worst_rel_error']:.2e}  {flag}{kinks}"
            )
        click.echo(f"worst relative error {worst:.2e} (tolerance {tolerance:g})")
    if worst > tolerance:
        raise CnnlabError(
            f"gradient check failed: worst relative error {worst:.2e} > {tolerance:g}"
        )


# ---------------------------------------------------------------- training
D = TrainConfig()  # the one place training defaults live


@cli.command("train")
@click.option(
    "--model", default=D.model, help="Zoo name, spec file, or checkpoint to start from.", **SHOW
)
@click.option(
    "--data",
    default=D.data,
    help="mnist, an image folder, an IDX pair or directory, or CIFAR-10 batches.",
    **SHOW,
)
@click.option("--epochs", default=D.epochs, type=click.IntRange(1), **SHOW)
@click.option("--batch-size", default=D.batch_size, type=click.IntRange(1), **SHOW)
@click.option(
    "--optimizer",
    default=D.optimizer,
    type=click.Choice(["sgd", "momentum", "nesterov", "adam", "adamw", "adadelta"]),
    **SHOW,
)
@click.option(
    "--lr",
    default=None,
    help="Learning rate, or 'auto' for LeCun's Hessian rule [default: per optimizer].",
)
@click.option("--momentum", default=D.momentum, type=float, **SHOW)
@click.option(
    "--schedule",
    default=D.schedule,
    type=click.Choice(["constant", "step", "cosine", "onecycle"]),
    **SHOW,
)
@click.option(
    "--gamma", default=D.gamma, type=float, help="Decay per epoch for --schedule step.", **SHOW
)
@click.option("--weight-decay", default=D.weight_decay, type=float, **SHOW)
@click.option("--loss", default=D.loss, type=click.Choice(["cross-entropy", "squared"]), **SHOW)
@click.option(
    "--label-smoothing",
    default=D.label_smoothing,
    type=click.FloatRange(0, 1, max_open=True),
    **SHOW,
)
@click.option(
    "--augment",
    default=D.augment,
    help="Comma list: translate=S, flip, color=A, pca=S, elastic=A:G, or none.",
    **SHOW,
)
@click.option(
    "--val-split",
    default=D.val_split,
    type=click.FloatRange(0, 1, max_open=True),
    help="Fraction held out for validation (stratified).",
    **SHOW,
)
@click.option("--seed", default=D.seed, type=int, **SHOW)
@click.option(
    "--device", default=D.device, type=click.Choice(["auto", "cpu", "cuda", "mps"]), **SHOW
)
@click.option("--threads", type=click.IntRange(1), help="CPU threads [default: all cores].")
@click.option(
    "--channels-last/--no-channels-last",
    default=D.channels_last,
    help="NHWC memory layout for 2-D models.",
    **SHOW,
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Run directory [default: runs/MODEL-TIME]."
)
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
@_model_options
@_load_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON at the end.")
@click.pass_context
def train_cmd(
    ctx: click.Context, resume, config_file, input_shape, overrides, as_json, **opts
) -> None:
    """Train a model; leaves a run directory that every other command accepts."""
    from click.core import ParameterSource

    from cnnlab.config import load_config
    from cnnlab.train import resume as resume_run
    from cnnlab.train import train

    if resume:
        explicit = ctx.get_parameter_source("epochs") == ParameterSource.COMMANDLINE
        result = resume_run(resume, opts["epochs"] if explicit else None)
    else:
        values = load_config(config_file) if config_file else {}
        for name, value in {**opts, "input": input_shape, "set": list(overrides)}.items():
            source = ctx.get_parameter_source(
                "input_shape" if name == "input" else "overrides" if name == "set" else name
            )
            if name not in values or source == ParameterSource.COMMANDLINE:
                values[name] = value
        if values.get("channels") is not None:
            values["channels"] = int(values["channels"])
        result = train(TrainConfig(**values))
    if as_json:
        _print_json(result)


@cli.command("eval")
@click.argument("run")
@click.option("--data", help="Dataset to evaluate on [default: the one the model was trained on].")
@click.option(
    "--plot", type=click.Path(dir_okay=False), help="Also save the confusion matrix as a PNG."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def eval_cmd(run: str, data: str | None, plot: str | None, as_json: bool) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of a trained model."""
    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.evaluate import eval_data, format_metrics, metrics, plot_confusion

    ckpt = load_checkpoint(run)
    dataset, split = eval_data(ckpt, data)
    result = metrics(ckpt, dataset) | {"split": split, "checkpoint": str(ckpt.path)}
    _print_json(result) if as_json else click.echo(format_metrics(result))
    if plot:
        click.echo(f"confusion matrix: {plot_confusion(result, plot)}", err=as_json)


@cli.command("predict")
@click.argument("run")
@click.argument("files", nargs=-1, required=True)
@click.option("--top-k", default=3, type=click.IntRange(1), **SHOW)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def predict_cmd(run: str, files: tuple[str, ...], top_k: int, as_json: bool) -> None:
    """Top-k classes with probabilities for image files (or folders of them)."""
    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.evaluate import image_files, prepare_image
    from cnnlab.evaluate import top_k as rank

    ckpt = load_checkpoint(run)
    results, failed = [], 0
    for path in image_files(list(files)):
        try:
            results.append({"file": str(path), "top": rank(ckpt, prepare_image(ckpt, path), top_k)})
        except CnnlabError as e:
            failed += 1
            results.append({"file": str(path), "error": str(e)})
            click.echo(f"Error: {e}", err=True)
    if as_json:
        _print_json(results)
    else:
        for r in results:
            if "top" in r:
                guesses = "  ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"])
                click.echo(f"{r['file']}: {guesses}")
    if failed:
        raise CnnlabError(f"{failed} of {len(results)} file(s) could not be read")


# ---------------------------------------------------------------- shipping
@cli.command("export")
@click.argument("run")
@click.option("--format", "fmt", default="onnx", type=click.Choice(["onnx", "torchscript"]), **SHOW)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Output file [default: RUN/model.onnx or model.pt].",
)
@click.option("--opset", default=17, type=click.IntRange(9), help="ONNX opset version.", **SHOW)
def export_cmd(run: str, fmt: str, out: str | None, opset: int) -> None:
    """Export a trained model, then check the export against PyTorch on random inputs."""
    from pathlib import Path

    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.export import export_onnx, export_torchscript

    ckpt = load_checkpoint(run)
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    base = Path(run) if Path(run).is_dir() else ckpt.path.parent
    target = Path(out) if out else base / f"model{suffix}"
    path, diff = (
        export_onnx(ckpt, target, opset) if fmt == "onnx" else export_torchscript(ckpt, target)
    )
    click.echo(f"{path}  (max |difference| from PyTorch on 5 random inputs: {diff:.2e})")


@cli.command("serve")
@click.argument("run")
@click.option(
    "--host",
    default="127.0.0.1",
    help="Address to bind; 0.0.0.0 exposes the model to your network.",
    **SHOW,
)
@click.option("--port", default=8000, type=click.IntRange(0, 65535), **SHOW)
@click.option(
    "--max-body",
    default=2 * 1024 * 1024,
    type=click.IntRange(1024),
    help="Largest request body in bytes.",
    **SHOW,
)
@click.option(
    "--max-pixels",
    default=16_000_000,
    type=click.IntRange(1),
    help="Largest image, in pixels.",
    **SHOW,
)
def serve_cmd(run: str, host: str, port: int, max_body: int, max_pixels: int) -> None:
    """A web page and JSON API for a trained model (uvicorn)."""
    import uvicorn

    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.serve.app import create_app

    app = create_app(load_checkpoint(run), max_body, max_pixels)
    click.echo(f"serving {run} on http://{host}:{port}", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main() -> None:
    cli(prog_name="cnnlab")


if __name__ == "__main__":
    sys.exit(main())
