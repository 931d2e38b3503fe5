"""The Python API: the top-level names, and every 0.1 import path still working."""

import importlib
import subprocess
import sys

import pytest

import cnnlab


def test_top_level_names_load_lazily_and_build():
    code = "import cnnlab, sys; assert 'torch' not in sys.modules; m = cnnlab.build('lenet5'); print(m.spec['name'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "lenet5", out.stderr
    assert cnnlab.to_spec(cnnlab.build("lenet5"))["name"] == "lenet5"
    with pytest.raises(AttributeError):
        cnnlab.no_such_thing  # noqa: B018


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("cnnlab.spec", "build", "cnnlab.model.spec"),
        ("cnnlab.spec", "Net", "cnnlab.model.net"),
        ("cnnlab.spec", "KINDS", "cnnlab.model.kinds"),
        ("cnnlab.layers", "StochasticPool2d", "cnnlab.model.layers"),
        ("cnnlab.zoo", "names", "cnnlab.model.zoo"),
        ("cnnlab.config", "TrainConfig", "cnnlab.train.config"),
        ("cnnlab.optim", "make_optimizer", "cnnlab.train.optim"),
        ("cnnlab.optim", "CurvatureTracker", "cnnlab.train.curvature"),
        ("cnnlab.runtime", "keep_freed_memory", "cnnlab.train.runtime"),
        ("cnnlab.evaluate", "metrics", "cnnlab.infer.evaluate"),
        ("cnnlab.data.prepare", "mnist_digit", "cnnlab.infer.prepare"),
        ("cnnlab.train", "train", "cnnlab.train.setup"),
        ("cnnlab.train", "TrainConfig", "cnnlab.train.config"),
    ],
)
def test_old_import_paths_give_the_same_objects(old, name, new):
    assert getattr(importlib.import_module(old), name) is getattr(
        importlib.import_module(new), name
    )


def test_the_old_spellings_are_kept_beside_the_new():
    from cnnlab.infer import Normalise, Normalize
    from cnnlab.infer.evaluate import normaliser, normalizer
    from cnnlab.model.spec import normalise, normalize

    assert Normalise is Normalize and normaliser is normalizer and normalise is normalize
    from cnnlab.inspect.neighbors import neighbors, neighbours
    from cnnlab.inspect.optimise import maximize as old_maximize
    from cnnlab.inspect.optimize import maximize

    assert neighbours is neighbors and old_maximize is maximize
