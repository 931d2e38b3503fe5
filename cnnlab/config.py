"""Kept so that `from cnnlab.config import TrainConfig` goes on working: see cnnlab.train.config."""

from cnnlab.train.config import *  # noqa: F403
from cnnlab.train.config import load_config, parse_shape, parse_size  # noqa: F401
