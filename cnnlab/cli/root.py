"""The `cnnlab` group and what its subcommands share: one-line errors, common options, where
outputs go by default. Torch is imported by commands when they run, never here."""

from __future__ import annotations

import json
from pathlib import Path

import click

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


def print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


def said(paths) -> None:
    """Print the files a command wrote, one per line."""
    for path in paths if isinstance(paths, list) else [paths]:
        click.echo(str(path))


# ---------------------------------------------------------------- shared options
def load_options(f):
    """--channels, --size, --skip-bad: how a dataset is read."""
    f = click.option(
        "--skip-bad", is_flag=True, help="Skip unreadable images and list them at the end."
    )(f)
    f = click.option("--size", help="Resize images to HxW, e.g. 32x32 [default: keep].")(f)
    help_ = "Force gray (1) or RGB (3) [default: inferred]."
    return click.option("--channels", type=int, metavar="[1|3]", help=help_)(f)


def model_options(f):
    """--input, --classes, --set: rebuilding a model."""
    help_ = "Edit the spec, e.g. pool1.mode=mean (repeatable)."
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=help_)(f)
    f = click.option("--classes", type=int, help="Rebuild for this many classes.")(f)
    return click.option("--input", "input_shape", help="Rebuild for input C,H,W (or C,L).")(f)


def build_model(ref: str, input_shape: str | None, classes: int | None, overrides=()):
    """The model MODEL names. A checkpoint's weights load by name and shape, the rule `train`
    follows too: whatever the rebuilt architecture cannot take is listed, never dropped silently."""
    from cnnlab.checkpoint import model_from
    from cnnlab.train.config import parse_shape
    from cnnlab.weights import load_matching

    model, state = model_from(ref, parse_shape(input_shape), classes, overrides)
    if state is None:
        return model
    report = load_matching(model, state, ref)
    if report.reshaped or report.missing or report.unused:
        for line in report.lines():
            click.echo(line, err=True)
    return model.eval()


def load_run(run: str):
    """A checkpoint for reading only: eval mode, parameters that never collect gradients."""
    from cnnlab.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run)
    ckpt.model.requires_grad_(False)
    return ckpt


def run_output(
    run: str, ckpt_path: Path | None, out: str | None, name: str, folder: str = ""
) -> Path:
    """Where a command writes when --out is not given: inside the run directory (beside the
    checkpoint when RUN names one), in FOLDER if given."""
    if out:
        return Path(out)
    base = Path(run) if Path(run).is_dir() else (ckpt_path or Path(run)).parent
    if folder:
        base = base / folder
        base.mkdir(parents=True, exist_ok=True)
    return base / name
