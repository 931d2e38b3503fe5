r"""Class-name files (classes.txt, CIFAR's batches.meta.txt): one name per line, exactly.

A name is written as it is unless it holds something a stripped line cannot carry. Then:
a backslash is written `\\`; a newline, carriage return or tab `\n`, `\r`, `\t`; any
other control, line-separator or lone-surrogate character, and whitespace at either end of
the name, `\xHH` or `\uHHHH`. Reading strips each line and undoes exactly these escapes
(any other backslash stays as it is), so a plain file without backslashes reads as it always
did, and every name a folder or a dataset can hold comes back exactly.

Blank lines at the end of a file are ignored; a blank line before the last name is refused,
because dropping it would shift every later label. An empty name cannot be written.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from cnnlab.errors import CnnlabError

MAX_NAMES_BYTES = 16 << 20  # 100,000 names of 160 bytes each; a larger file is not a name list
SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})")
_NEEDS_CODE = {"Cc", "Zl", "Zp", "Cs"}  # control, line and paragraph separators, surrogates


def encode_name(name: str) -> str:
    """One class name as one line of a names file (see the module docstring)."""
    if not isinstance(name, str) or not name:
        raise CnnlabError(f"class name {name!r} cannot be written: a class needs a non-empty name")
    start, end = len(name) - len(name.lstrip()), len(name.rstrip())
    out = []
    for i, c in enumerate(name):
        if c in SHORT_ESCAPES:
            out.append(SHORT_ESCAPES[c])
        elif i < start or i >= end or unicodedata.category(c) in _NEEDS_CODE:
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


def decode_name(line: str) -> str:
    """Undo encode_name on one stripped line."""

    def one(m: re.Match) -> str:
        code = m.group(1)
        if code[0] in "xu":
            return chr(int(code[1:], 16))
        return {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}[code]

    return _UNESCAPE.sub(one, line)


def write_names(path: str | os.PathLike, names: list[str]) -> Path:
    path = Path(path)
    path.write_text("".join(encode_name(n) + "\n" for n in names), encoding="utf-8")
    return path


def read_names(path: str | os.PathLike, max_names: int) -> list[str]:
    """The names in a names file, checked: bounded size, UTF-8 text, no blank line inside."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_NAMES_BYTES:
            raise CnnlabError(
                f"{path}: {size} bytes is too large for a list of class names "
                f"(at most {MAX_NAMES_BYTES} bytes)"
            )
        raw = path.read_bytes()
    except OSError as e:
        raise CnnlabError(f"{path}: cannot read ({e.strerror or e})") from None
    if b"\x00" in raw:
        raise CnnlabError(f"{path}: binary data (a NUL byte at offset {raw.index(0)}), not names")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CnnlabError(f"{path}: not UTF-8 text (byte offset {e.start})") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) > max_names:
        raise CnnlabError(f"{path}: {len(lines)} class names, more than the cap of {max_names}")
    for number, line in enumerate(lines, 1):
        if not line:
            raise CnnlabError(
                f"{path}: line {number} is blank; each line names one class, in label order "
                "(write a name there, or remove the line and renumber the labels)"
            )
    return [decode_name(line) for line in lines]
