"""`cnnlab inspect ...`, `convolve`, `report`: looking inside a trained network."""

from __future__ import annotations

import click

from cnnlab.cli.root import SHOW, cli, load_run, run_output, said


@cli.group("inspect")
def inspect_group() -> None:
    """Pictures of what a trained network learned (each writes PNGs and prints where)."""


def _out(out: str | None, run: str, name: str):
    return run_output(run, None, out, name, folder="inspect")


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

    said(kernels_figure(load_run(run), _out(out, run, f"kernels-{layer or 'first'}.png"), layer))


@inspect_group.command("activations")
@click.argument("run")
@click.argument("image", type=click.Path(dir_okay=False))
@OUT
def inspect_activations(run, image, out):
    """The input, then every convolution and pooling layer's feature maps."""
    from cnnlab.inspect.figures import activations_figure

    said(activations_figure(load_run(run), image, _out(out, run, "activations.png")))


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

    said(saliency_figure(load_run(run), image, _out(out, run, "saliency.png"), cls, smooth))


@inspect_group.command("deconv")
@click.argument("run")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--layer", required=True, help="Layer whose strongest activation is projected down.")
@click.option("--channel", type=int, help="Channel [default: the most active].")
@OUT
def inspect_deconv(run, image, layer, channel, out):
    """Zeiler-Fergus deconvnet reconstruction beside the input."""
    from cnnlab.inspect.figures import deconv_figure

    said(deconv_figure(load_run(run), image, _out(out, run, f"deconv-{layer}.png"), layer, channel))


METHOD_NAMES = (
    "saliency",
    "smoothgrad",
    "integrated-gradients",
    "guided-backprop",
    "deconvolution",
    "gradcam",
    "occlusion",
)  # fmt: skip  (cnnlab.inspect.attribute.METHODS, named here so that --help needs no torch)


@inspect_group.command("attribute")
@click.argument("run")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice(METHOD_NAMES),
    help="Attribution method (repeatable) [default: all].",
)
@click.option("--class", "cls", type=int, help="Class index [default: the predicted one].")
@click.option("--layer", help="Grad-CAM's layer [default: the last convolutional stage].")
@OUT
def inspect_attribute(run, image, methods, cls, layer, out):
    """Which pixels a class score depends on, by each method, beside the input and over it."""
    from cnnlab.inspect.figures import attribution_figure

    path = _out(out, run, "attribute.png")
    said(attribution_figure(load_run(run), image, path, list(methods) or None, cls, layer))


@inspect_group.command("top-patches")
@click.argument("run")
@click.option(
    "--layer",
    "layers",
    multiple=True,
    help="Layer to look into (repeatable) [default: every convolutional stage].",
)
@click.option("--data", help="Dataset searched [default: the one the model was trained on].")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", **SHOW)
@click.option("--k", default=9, type=click.IntRange(1, 64), help="Images per channel.", **SHOW)
@click.option("--limit", type=click.IntRange(1), help="Search a seeded sample of this many images.")
@OUT
def inspect_top_patches(run, layers, data, split, k, limit, out):
    """For each channel, the k images that excite it most, cropped to the unit's receptive field."""
    from cnnlab.inspect.figures import top_patches_figure

    path = _out(out, run, "top-patches.png")
    said(top_patches_figure(load_run(run), data, path, list(layers) or None, k, split, limit))


@inspect_group.command("embed")
@click.argument("run")
@click.option("--data", help="Dataset mapped [default: the one the model was trained on].")
@click.option("--split", type=click.Choice(["train", "test"]), default="test", **SHOW)
@click.option(
    "--n",
    "count",
    default=2000,
    type=click.IntRange(4, 20000),
    help="Images sampled (seeded).",
    **SHOW,
)
@click.option(
    "--method",
    type=click.Choice(["auto", "tsne", "pca"]),
    default="auto",
    help="auto: t-SNE when scikit-learn is installed (cnnlab[tsne]), else PCA.",
    **SHOW,
)
@click.option("--seed", default=0, type=int, **SHOW)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="HTML file; the PNG goes beside it [default: RUN/inspect/embed.html].",
)
def inspect_embed(run, data, split, count, method, seed, out):
    """A 2-D map of the penultimate features, coloured by class, mistakes marked (HTML + PNG)."""
    from cnnlab.inspect.figures import dataset_for, embedding_files

    ckpt = load_run(run)
    dataset = dataset_for(ckpt, data, split)
    path = run_output(run, None, out, "embed.html", folder="inspect")
    html_path, png_path, used = embedding_files(ckpt, dataset, path, count, method, seed)
    click.echo(f"embedding: {used}", err=True)
    said([html_path, png_path])


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
    said(maximize_figure(load_run(run), _out(out, run, name), layer, channel, cls, steps, seed))


@inspect_group.command("neighbors")
@click.argument("run")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Dataset whose training images are searched.")
@click.option("--k", default=8, type=click.IntRange(1, 64), **SHOW)
@OUT
def inspect_neighbors(run, image, data, k, out):
    """k nearest training images in feature space beside the k nearest in pixel space."""
    from cnnlab.inspect.figures import neighbors_figure

    said(neighbors_figure(load_run(run), image, data, _out(out, run, "neighbors.png"), k))


@inspect_group.command("invert")
@click.argument("run")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--layer", required=True, help="Layer whose features are inverted.")
@click.option("--steps", default=300, type=click.IntRange(1), **SHOW)
@click.option("--seed", default=0, type=int, **SHOW)
@OUT
def inspect_invert(run, image, layer, steps, seed, out):
    """Code inversion: an input optimized from noise to reproduce a layer's features."""
    from cnnlab.inspect.figures import invert_figure

    said(
        invert_figure(
            load_run(run), image, _out(out, run, f"invert-{layer}.png"), layer, steps, seed
        )
    )


@cli.command("convolve")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option(
    "--kernel",
    required=True,
    help=(
        "identity, box-blur, gaussian-blur, sharpen, edge, sobel-x, sobel-y, emboss, "
        "or a matrix file."
    ),
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

    from cnnlab.convolve import convolve, format_matrix, load_kernel, save_result
    from cnnlab.data.images import is_gray, open_image, to_array

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
    from cnnlab.inspect.report import build_report

    ckpt = load_run(run)
    click.echo(str(build_report(ckpt, run_output(run, ckpt.path, out, "report.html"), data)))
