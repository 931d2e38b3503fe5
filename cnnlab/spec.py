"""Kept so that `from cnnlab.spec import build` goes on working: the code is in cnnlab.model."""

from cnnlab.model.bounds import SpecError  # noqa: F401
from cnnlab.model.kinds import KINDS  # noqa: F401
from cnnlab.model.net import Net  # noqa: F401
from cnnlab.model.reading import load_spec, load_yaml  # noqa: F401
from cnnlab.model.spec import (  # noqa: F401
    _expand,
    apply_overrides,
    build,
    normalise,
    normalize,
    retarget,
    to_spec,
)
