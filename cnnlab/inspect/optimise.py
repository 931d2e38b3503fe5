"""The 0.1 name of cnnlab.inspect.optimize."""

from cnnlab.inspect.optimize import invert, maximize  # noqa: F401
