"""The classic architectures as spec files. This module only lists and reads them."""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).parent
DEFAULT = "mnistnet"


def names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def spec(name: str) -> dict:
    return yaml.safe_load((HERE / f"{name}.yaml").read_text(encoding="utf-8"))
