"""Kept so that `from cnnlab.optim import ...` goes on working: the pieces now live in
cnnlab.train."""

from cnnlab.train.average import WeightAverage  # noqa: F401
from cnnlab.train.config import OPTIMIZERS, SCHEDULES  # noqa: F401
from cnnlab.train.curvature import (  # noqa: F401
    CurvatureTracker,
    buffers_kept,
    hessian_vector_product,
    largest_hessian_eigenvalue,
    lecun_rate,
)
from cnnlab.train.optim import SGD, make_optimizer  # noqa: F401
from cnnlab.train.schedule import lr_factor  # noqa: F401
