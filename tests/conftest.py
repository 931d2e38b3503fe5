import os
from pathlib import Path

import pytest

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def pytest_configure(config):
    # One cache for the whole session (subprocesses inherit it); MNIST comes from the
    # shared copy when present, so no test needs the network.
    cache = Path(config.rootpath) / ".pytest_cache" / "cnnlab-cache"
    os.environ.setdefault("CNNLAB_CACHE_DIR", str(cache))
    if SHARED_MNIST.is_dir():
        os.environ.setdefault("CNNLAB_MNIST_FROM", str(SHARED_MNIST))
    os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The verified MNIST cache (filled from ../shared/data/mnist, else from the usual sources)."""
    from cnnlab.data.mnist import fetch_mnist

    return fetch_mnist(quiet=True)
