"""cnnlab: build, train, look inside and ship convolutional neural networks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cnnlab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
