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


def make_tiny_idx(
    root: Path, n_train: int = 600, n_test: int = 200, size: int = 12, seed: int = 0
) -> Path:
    """A learnable 4-class task on disk in MNIST's IDX layout: a bright square in one quadrant."""
    import numpy as np

    from cnnlab.data.idx import write_idx

    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 4, n)
        images = rng.integers(0, 40, size=(n, size, size)).astype(np.uint8)
        half = size // 2
        for i, c in enumerate(labels):
            top, left = (c // 2) * half + 1, (c % 2) * half + 1
            images[i, top : top + half - 2, left : left + half - 2] = rng.integers(150, 256)
        return images, labels.astype(np.uint8)

    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = make(n)
        write_idx(root / f"{prefix}-images-idx3-ubyte", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", y)
    return root


TINY_SPEC = """\
name: tiny
input: [1, 12, 12]
classes: 4
layers:
  - {type: conv, filters: 4, kernel: 3}
  - {type: relu}
  - {type: pool, size: 2}
  - {type: dense, units: 16}
  - {type: relu}
  - {type: dense}
"""


def train_tiny(root: Path, epochs: int = 2) -> Path:
    """TINY_SPEC trained on make_tiny_idx data (Adam, lr 0.01, no augmentation) into ROOT/run,
    with the spec at ROOT/tiny.yaml and the data in ROOT/data; returns ROOT/run."""
    from cnnlab.train import TrainConfig, train

    (root / "tiny.yaml").write_text(TINY_SPEC)
    train(
        TrainConfig(
            model=str(root / "tiny.yaml"),
            data=str(make_tiny_idx(root / "data")),
            epochs=epochs,
            batch_size=32,
            optimizer="adam",
            lr=0.01,
            augment="none",
            out=str(root / "run"),
        )
    )
    return root / "run"


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, Path]:
    """(data directory, spec file) for fast training tests."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    return make_tiny_idx(tmp_path / "data"), spec


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory, mnist_root) -> Path:
    """One run of the one-convolution MNIST net, one epoch on all
    60k images, shared by every test that needs a model trained on real digits."""
    from cnnlab.train import TrainConfig, train

    out = tmp_path_factory.mktemp("mnist") / "run"
    recipe = {"epochs": 1, "optimizer": "adam", "lr": 2e-3, "augment": "none", "val_split": 0.0}
    train(TrainConfig(model="mnist-1conv", label_smoothing=0.0, out=str(out), **recipe))
    return out
