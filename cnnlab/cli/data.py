"""`cnnlab data`: obtain, inspect and convert datasets."""

from __future__ import annotations

import click

from cnnlab.cli.root import SHOW, cli, load_options, print_json


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


def _sequences_option(f):
    return click.option(
        "--sequences",
        is_flag=True,
        help="Read a rank-3 array as (N, C, L) sequences, not (N, H, W) images.",
    )(f)


def _load(src: str, split: str, channels, size, skip_bad, required=True, sequences=None):
    from cnnlab.data import load_data
    from cnnlab.train.config import check_values, parse_size

    flags = {"channels": channels, "size": size}
    checked = check_values(flags, dict.fromkeys(flags, "flag"))  # the checks `train` makes too
    found = load_data(
        src,
        split,
        checked["channels"],
        parse_size(checked["size"]),
        skip_bad,
        required,
        sequences or None,
    )
    if found is not None and found.skipped:
        click.echo(f"skipped {len(found.skipped)} unreadable file(s):", err=True)
        for line in found.skipped:
            click.echo(f"  {line}", err=True)
    return found


@data.command("info")
@click.argument("src")
@load_options
@_sequences_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def data_info(src: str, channels, size, skip_bad, sequences: bool, as_json: bool) -> None:
    """Count, shape, classes with counts and pixel statistics of SRC."""
    from cnnlab.data.info import describe, format_info

    splits = {}
    for split in ("train", "test"):
        found = _load(src, split, channels, size, skip_bad, split == "train", sequences)
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
    "--to",
    "fmt",
    type=click.Choice(["idx", "folder", "npz"]),
    required=True,
    help="Output format (npz: one file with x, y, classes and, if SRC has one, the test split).",
)
@load_options
@_sequences_option
def data_convert(src: str, out: str, fmt: str, channels, size, skip_bad, sequences) -> None:
    """Write SRC as IDX files (images, labels, classes.txt), an image folder, or a .npz file."""
    from cnnlab.data import save_idx_set, save_npz
    from cnnlab.data.folders import save_folder

    dataset = _load(src, "train", channels, size, skip_bad, sequences=sequences)
    if fmt == "idx":
        for path in save_idx_set(dataset, out):
            click.echo(str(path))
    elif fmt == "npz":
        test = _load(src, "test", channels, size, skip_bad, False, sequences)
        click.echo(str(save_npz(dataset, test, out)))
    else:
        click.echo(str(save_folder(dataset, out)))


@data.command("make-signals")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--train", "n_train", default=3000, type=click.IntRange(1, 1_000_000), **SHOW)
@click.option("--test", "n_test", default=1000, type=click.IntRange(0, 1_000_000), **SHOW)
@click.option(
    "--length", default=256, type=click.IntRange(64, 65536), help="Samples per signal.", **SHOW
)
@click.option(
    "--noise", default=0.5, type=click.FloatRange(0, 10), help="Std of the white noise.", **SHOW
)
@click.option("--seed", default=0, type=click.IntRange(0), **SHOW)
def data_make_signals(out: str, n_train: int, n_test: int, length: int, noise: float, seed: int):
    """Write a .npz of noisy 1-D waveforms of 5 classes (a 1-D CNN's task; see
    cnnlab/data/signals.py)."""
    from cnnlab.data.signals import save_signals

    click.echo(str(save_signals(out, n_train, n_test, length, noise, seed)))
