"""The bounds that keep a spec (from a file, a --set, or a checkpoint's JSON) from hanging or
exhausting memory, and the error every spec problem raises, with values shown cut short."""

from __future__ import annotations

import reprlib

from cnnlab.errors import CnnlabError

# Bounds that keep a spec (from a file, a --set, or a checkpoint's JSON) from hanging or
# exhausting memory. Each is checked before anything is allocated; the zoo's largest models
# use a fraction of each (vgg16: 138M parameters, 15.5G multiply-adds, 3.2M values per map).
MAX_SPEC_BYTES = 4 << 20  # a spec file; the zoo's largest is 3 KB
MAX_SPEC_NODES = 1_000_000  # YAML values after aliases are expanded (a "billion laughs" stops here)
MAX_SPEC_DEPTH = 32  # YAML nesting; a spec needs 4
MAX_INT = 2**31 - 1  # any integer field
MAX_LAYERS = 10_000  # layers after repeats, a dense_block's layers included
MAX_PARAMETERS = 1_000_000_000  # weights and buffers of the whole model (4 GB of float32)
MAX_ACTIVATION = 1 << 28  # values in any one tensor a layer makes, per example (1 GB of float32)
MAX_MACS = 10**12  # multiply-adds per example, about a minute of one CPU core
MAX_GABOR_WORK = 1 << 22  # filters x kernel^2 of a Gabor bank, each filter drawn in Python


class SpecError(CnnlabError):
    pass


SHORT = reprlib.Repr()
SHORT.maxstring = SHORT.maxother = SHORT.maxlong = 40
SHORT.maxlist = SHORT.maxtuple = SHORT.maxdict = 4
SHORT.maxlevel = 2


def brief(v) -> str:
    """repr(v) cut short: an error message stays one short line whatever the spec holds."""
    text = SHORT.repr(v).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."
