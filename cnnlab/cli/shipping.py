"""`cnnlab export` and `cnnlab serve`: a trained model out into the world."""

from __future__ import annotations

import click

from cnnlab.cli.root import SHOW, cli, load_run, run_output
from cnnlab.serve import limits as serve_limits


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
    from cnnlab.export import export_onnx, export_torchscript

    ckpt = load_run(run)
    target = run_output(run, ckpt.path, out, "model.onnx" if fmt == "onnx" else "model.pt")
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
