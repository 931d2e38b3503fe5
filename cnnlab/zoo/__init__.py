"""Kept so that `from cnnlab import zoo` goes on working: the specs are in cnnlab/model/zoo."""

from cnnlab.model.zoo import DEFAULT, HERE, names, spec  # noqa: F401
