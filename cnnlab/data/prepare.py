"""Kept so that `from cnnlab.data.prepare import ...` goes on working: see cnnlab.infer.prepare."""

from cnnlab.infer.prepare import for_model, mnist_digit  # noqa: F401
