"""`cnnlab data`: obtain, inspect and convert datasets."""

from __future__ import annotations

import click

from cnnlab.cli.root import cli, load_options, print_json


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
@load_options
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
        print_json(splits)
    else:
        click.echo(format_info(splits))


@data.command("convert")
@click.argument("src")
@click.argument("out", type=click.Path())
@click.option(
    "--to", "fmt", type=click.Choice(["idx", "folder"]), required=True, help="Output format."
)
@load_options
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
