"""`cnnlab zoo`, `summary`, `gradcheck`: architectures before any training."""

from __future__ import annotations

import click

from cnnlab.cli.root import SHOW, build_model, cli, model_options, print_json
from cnnlab.errors import CnnlabError


@cli.command("zoo")
def zoo_cmd() -> None:
    """List the architectures shipped with cnnlab."""
    from cnnlab.model import zoo

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
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--data", help="Add each layer's sparsity (fraction of exact zeros) on this dataset.")
@click.option(
    "--sample",
    "count",
    default=1000,
    type=click.IntRange(1),
    help="Images of --data measured (a seeded sample of its test split).",
    **SHOW,
)
def summary_cmd(model: str, input_shape, classes, overrides, as_json: bool, data, count) -> None:
    """Per-layer output shape, parameters, multiply-adds and receptive field of MODEL.

    MODEL is a zoo name, a spec file or a checkpoint.
    """
    from cnnlab.summary import format_summary, summarize, with_sparsity

    net = build_model(model, input_shape, classes, overrides)
    result = summarize(net)
    if data:
        from cnnlab.inspect.sparsity import sparsity

        images, norm, source = _measured_images(model, net, data, count)
        result = with_sparsity(result, sparsity(net, images, norm), len(images), source)
    print_json(result) if as_json else click.echo(format_summary(result))


def _measured_images(ref: str, net, data: str, count: int):
    """A seeded sample of DATA's test split (else train) fitted to the model's input, and the
    normalisation the model expects: a checkpoint's own, else the sample's statistics."""
    from cnnlab.checkpoint import is_checkpoint, load_checkpoint
    from cnnlab.data import load_data
    from cnnlab.data.dataset import ImageSet
    from cnnlab.infer import Normalize, fit_images
    from cnnlab.infer.evaluate import load_for, normalizer
    from cnnlab.inspect.patches import sample

    if len(net.input_shape) != 3:
        shape = "x".join(map(str, net.input_shape))
        raise CnnlabError(f"--data: {ref} takes inputs of shape {shape}, not images (C, H, W)")
    ckpt = load_checkpoint(ref) if is_checkpoint(ref) else None
    as_trained = ckpt is not None and tuple(ckpt.meta["input_shape"]) == tuple(net.input_shape)

    def load(split: str, required: bool = True):
        if as_trained:
            return load_for(ckpt, data, split, required=required)
        return load_data(data, split, required=required)

    found = load("test", required=False)
    if found is None:
        found = load("train")
    found = found.subset(sample(len(found), count))
    images = (
        found.images
        if as_trained
        else fit_images(found.images, tuple(net.input_shape), found.source)
    )
    if as_trained:  # (a changed --input may change the channels the statistics are for)
        return images, normalizer(ckpt), found.source
    return images, Normalize(*ImageSet(images, found.labels, found.classes).stats()), found.source


@cli.command("gradcheck")
@click.argument("model")
@model_options
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

    net = build_model(model, input_shape, classes, overrides)
    rows = gradcheck_model(net, net.input_shape, net.spec["classes"], per_layer, seed=seed)
    worst = max((r["worst_rel_error"] for r in rows), default=0.0)
    if as_json:
        print_json({"tolerance": tolerance, "worst": worst, "layers": rows})
    else:
        for r in rows:
            flag = "FAIL" if r["worst_rel_error"] > tolerance else "ok"
            kinks = f"  ({r['kinks']} on a kink, skipped)" if r["kinks"] else ""
            click.echo(
                f"{r['layer']:<16} {r['checked']:>4} checked  "
                f"worst {r['worst_rel_error']:.2e}  {flag}{kinks}"
            )
        click.echo(f"worst relative error {worst:.2e} (tolerance {tolerance:g})")
    if worst > tolerance:
        raise CnnlabError(
            f"gradient check failed: worst relative error {worst:.2e} > {tolerance:g}"
        )
