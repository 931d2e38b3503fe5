"""The `cnnlab` command. Each subcommand parses flags and calls the library; no logic lives here.

root.py        the group, one-line errors, options and defaults the commands share
data.py        data fetch / info / convert / make-signals
models.py      zoo, summary, gradcheck
training.py    train, eval, predict
shipping.py    export, serve
inspecting.py  inspect ..., convolve, report
"""

from __future__ import annotations

from cnnlab.cli import data, inspecting, models, shipping, training  # noqa: F401  (they register)
from cnnlab.cli.root import cli


def main() -> None:
    cli(prog_name="cnnlab")
