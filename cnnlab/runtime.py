"""Kept so that `from cnnlab.runtime import ...` goes on working: see cnnlab.train.runtime."""

from cnnlab.train.runtime import autocast_dtype, keep_freed_memory  # noqa: F401
