"""The one exception type users see: a one-line message naming the thing that is wrong."""


class CnnlabError(Exception):
    """A failure caused by the user's input (a file, a spec, a flag), reported in one line."""
