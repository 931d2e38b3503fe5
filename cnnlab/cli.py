"""The `cnnlab` command. Each subcommand parses flags and calls the library; no logic lives here."""

from __future__ import annotations

import json
import sys

import click

from cnnlab.errors import CnnlabError
from cnnlab.serve import limits as serve_limits
from cnnlab.train.config import AMP_MODES, DEFAULTS, DEVICES, LOSSES, OPTIMIZERS, SCHEDULES

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
        type=int,
        metavar="[1|3]",
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
    from cnnlab.train.config import check_values, parse_size

    flags = {"channels": channels, "size": size}
    checked = check_values(flags, dict.fromkeys(flags, "flag"))  # the checks `train` makes too
    found = load_data(
        src, split, checked["channels"], parse_size(checked["size"]), skip_bad, required
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
def _model_options(f):
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Edit the spec, e.g. pool1.mode=mean (repeatable).")(f)  # fmt: skip
    f = click.option("--classes", type=int, help="Rebuild for this many classes.")(f)
    return click.option("--input", "input_shape", help="Rebuild for input C,H,W (or C,L).")(f)


def _build(ref: str, input_shape: str | None, classes: int | None, overrides=()):
    """The model MODEL names; a checkpoint keeps its weights unless the architecture changes."""
    from cnnlab.checkpoint import model_from
    from cnnlab.train.config import parse_shape

    model, state = model_from(ref, parse_shape(input_shape), classes, overrides)
    if state is not None and not (input_shape or classes or overrides):
        model.load_state_dict(state)
    return model.eval() if state is not None else model


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
    return click.option(f"--{name.replace('_', '-')}", name, default=default, help=help,
                        show_default=default is not None, **kw)  # fmt: skip


@cli.command("train")
@_train_option("model", "Zoo name, spec file, or checkpoint to start from.")
@_train_option("data", "mnist, an image folder, an IDX pair or directory, or CIFAR-10 batches.")
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
@_model_options
@_load_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON at the end.")
@click.pass_context
def train_cmd(ctx: click.Context, resume, config_file, overwrite, as_json, **opts) -> None:  # fmt: skip
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
                f"--resume {resume} continues the run's saved config; drop {'--config' if config_file else '--overwrite'}"
            )
        result = resume_run(resume, **given)
    else:
        result = train(resolve(config_file, given), overwrite=overwrite)
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
    default=serve_limits.MAX_BODY,
    type=click.IntRange(1024),
    help="Largest request body in bytes.",
    **SHOW,
)
@click.option(
    "--max-pixels",
    default=serve_limits.MAX_PIXELS,
    type=click.IntRange(1),
    help="Largest image, in pixels (each of the server's concurrent decodes may take up to "
    "about 8.5 bytes a pixel).",
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


# ---------------------------------------------------------------- looking inside
@cli.group("inspect")
def inspect_group() -> None:
    """Pictures of what a trained network learned (each writes PNGs and prints where)."""


def _ckpt(run: str):
    from cnnlab.checkpoint import load_checkpoint

    return load_checkpoint(run)


def _out(out: str | None, run: str, name: str):
    from pathlib import Path

    if out:
        return Path(out)
    base = Path(run) if Path(run).is_dir() else Path(run).parent
    (base / "inspect").mkdir(parents=True, exist_ok=True)
    return base / "inspect" / name


def _said(paths) -> None:
    for p in paths if isinstance(paths, list) else [paths]:
        click.echo(str(p))


OUT = click.option(
    "--out", type=click.Path(dir_okay=False), help="PNG to write [default: RUN/inspect/<what>.png]."
)


@inspect_group.command("kernels")
@click.argument("run")
@click.option("--layer", help="Convolution layer [default: the first].")
@OUT
def inspect_kernels(run, layer, out):
    """The learned filters of a convolution layer as a grid."""
    from cnnlab.inspect.figures import kernels_figure

    _said(kernels_figure(_ckpt(run), _out(out, run, f"kernels-{layer or 'first'}.png"), layer))


@inspect_group.command("activations")
@click.argument("run")
@click.argument("image", type=click.Path(dir_okay=False))
@OUT
def inspect_activations(run, image, out):
    """The input, then every convolution and pooling layer's feature maps."""
    from cnnlab.inspect.figures import activations_figure

    _said(activations_figure(_ckpt(run), image, _out(out, run, "activations.png")))


@inspect_group.command("saliency")
@click.argument("run")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--class", "cls", type=int, help="Class index [default: the predicted one].")
@click.option(
    "--smooth",
    default=0,
    type=click.IntRange(0),
    help="SmoothGrad: average over N noisy copies.",
    **SHOW,
)
@OUT
def inspect_saliency(run, image, cls, smooth, out):
    """Gradient of a class score with respect to the input, over the image."""
    from cnnlab.inspect.figures import saliency_figure

    _said(saliency_figure(_ckpt(run), image, _out(out, run, "saliency.png"), cls, smooth))


@inspect_group.command("deconv")
@click.argument("run")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--layer", required=True, help="Layer whose strongest activation is projected down.")
@click.option("--channel", type=int, help="Channel [default: the most active].")
@OUT
def inspect_deconv(run, image, layer, channel, out):
    """Zeiler-Fergus deconvnet reconstruction beside the input."""
    from cnnlab.inspect.figures import deconv_figure

    _said(deconv_figure(_ckpt(run), image, _out(out, run, f"deconv-{layer}.png"), layer, channel))


@inspect_group.command("maximize")
@click.argument("run")
@click.option("--layer", help="Layer of the channel to excite.")
@click.option("--channel", type=int, help="Channel to excite.")
@click.option("--class", "cls", type=int, help="Or: the class score to excite.")
@click.option("--steps", default=200, type=click.IntRange(1), **SHOW)
@click.option("--seed", default=0, type=int, **SHOW)
@OUT
def inspect_maximize(run, layer, channel, cls, steps, seed, out):
    """Activation maximisation from noise (L2, jitter and blur regularisers)."""
    from cnnlab.inspect.figures import maximize_figure

    name = f"maximize-class{cls}.png" if cls is not None else f"maximize-{layer}-{channel}.png"
    _said(maximize_figure(_ckpt(run), _out(out, run, name), layer, channel, cls, steps, seed))


@inspect_group.command("neighbors")
@click.argument("run")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Dataset whose training images are searched.")
@click.option("--k", default=8, type=click.IntRange(1, 64), **SHOW)
@OUT
def inspect_neighbors(run, image, data, k, out):
    """k nearest training images in feature space beside the k nearest in pixel space."""
    from cnnlab.inspect.figures import neighbors_figure

    _said(neighbors_figure(_ckpt(run), image, data, _out(out, run, "neighbors.png"), k))


@inspect_group.command("invert")
@click.argument("run")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--layer", required=True, help="Layer whose features are inverted.")
@click.option("--steps", default=300, type=click.IntRange(1), **SHOW)
@click.option("--seed", default=0, type=int, **SHOW)
@OUT
def inspect_invert(run, image, layer, steps, seed, out):
    """Code inversion: an input optimised from noise to reproduce a layer's features."""
    from cnnlab.inspect.figures import invert_figure

    _said(
        invert_figure(_ckpt(run), image, _out(out, run, f"invert-{layer}.png"), layer, steps, seed)
    )


@cli.command("convolve")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option(
    "--kernel",
    required=True,
    help="identity, box-blur, gaussian-blur, sharpen, edge, sobel-x, sobel-y, emboss, or a matrix file.",
)
@click.option("--stride", default=1, type=click.IntRange(1), **SHOW)
@click.option("--padding", default="0", help="Zero padding in pixels, or 'same'.", **SHOW)
@click.option("--gray", is_flag=True, help="Convert to grayscale first.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Where to save the result [default: IMAGE-KERNEL.png].",
)
@click.option(
    "--print", "show", is_flag=True, help="Print input, kernel and feature map as numbers."
)
def convolve_cmd(image, kernel, stride, padding, gray, out, show):
    """Apply one classic kernel to an image: convolution as image processing."""
    from pathlib import Path

    import numpy as np

    from cnnlab.data.images import is_gray, open_image, to_array
    from cnnlab.inspect.convolve import convolve, format_matrix, load_kernel, save_result

    if padding != "same" and not padding.isdigit():
        raise click.BadParameter(
            f"expected a number of pixels or 'same', got {padding!r}", param_hint="--padding"
        )
    img = open_image(image)
    channels = 1 if gray or is_gray(img) else 3
    pixels = to_array(img, channels).astype(np.float64)
    k = load_kernel(kernel)
    result = convolve(pixels, k, stride, padding if padding == "same" else int(padding))
    if show:
        binary = set(np.unique(pixels)) <= {0.0, 255.0}
        shown = pixels / 255 if binary else pixels  # the 0/1 worked examples print as 0/1
        click.echo(format_matrix(shown[0], f"input ({shown.shape[1]}x{shown.shape[2]}):"))
        click.echo(format_matrix(k, f"kernel ({k.shape[0]}x{k.shape[1]}):"))
        fmap = convolve(shown, k, stride, padding if padding == "same" else int(padding))
        click.echo(format_matrix(fmap[0], f"feature map ({fmap.shape[1]}x{fmap.shape[2]}):"))
    target = (
        Path(out) if out else Path(image).with_name(f"{Path(image).stem}-{Path(kernel).stem}.png")
    )
    click.echo(str(save_result(result, target)))


@cli.command("report")
@click.argument("run")
@click.option("--data", help="Dataset to report on [default: the one the model was trained on].")
@click.option(
    "--out", type=click.Path(dir_okay=False), help="HTML file [default: RUN/report.html]."
)
def report_cmd(run, data, out):
    """One self-contained HTML report: config, curves, confusion, mistakes, kernels, maps."""
    from pathlib import Path

    from cnnlab.inspect.report import build_report

    ckpt = _ckpt(run)
    target = (
        Path(out)
        if out
        else (Path(run) if Path(run).is_dir() else ckpt.path.parent) / "report.html"
    )
    click.echo(str(build_report(ckpt, target, data)))


def main() -> None:
    cli(prog_name="cnnlab")


if __name__ == "__main__":
    sys.exit(main())
