"""Kept so that `from cnnlab import layers` goes on working: the code is in cnnlab.model.layers."""

from cnnlab.model.layers import *  # noqa: F403
from cnnlab.model.layers import conv_of, gabor_bank, gabor_kernel  # noqa: F401
