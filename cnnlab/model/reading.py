"""Reading specs: YAML with bounds on nesting and on what aliases expand to, files of bounded
size, zoo names. Torch-free, so that config files can be read with the same loader."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import CnnlabError
from cnnlab.model.bounds import MAX_SPEC_BYTES, MAX_SPEC_DEPTH, MAX_SPEC_NODES, SpecError


class _Refused(yaml.MarkedYAMLError):
    """A YAML document refused while it is composed, before any Python object is built."""


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that bounds nesting depth and what aliases expand to, counted node by
    node while the document is composed: a "billion laughs" spec, an alias to the node that
    holds it, or [[[[...]]]] is refused in a few milliseconds instead of being expanded."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> values under it, aliases expanded

    def _refuse(self, problem: str):
        raise _Refused(problem=problem, problem_mark=self.peek_event().start_mark)

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            target = self.anchors.get(self.peek_event().anchor)
            if target is not None and id(target) not in self._sizes:
                self._refuse("an alias refers to the node that contains it")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_SPEC_DEPTH:
            self._refuse(f"nested more than {MAX_SPEC_DEPTH} levels deep")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._sizes[id(child)] for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        if size > MAX_SPEC_NODES:
            self._refuse(
                f"expands to more than {MAX_SPEC_NODES} values (aliases repeat what they name)"
            )
        self._sizes[id(node)] = size
        return node


def load_yaml(text: str, what: str) -> Any:
    """Plain data from YAML text with the spec bounds; every failure is one SpecError line."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{what}: not valid YAML{where} ({getattr(e, 'problem', e)})") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more digits than Python reads
        raise SpecError(f"{what}: unreadable YAML value ({str(e).splitlines()[0][:200]})") from None


def load_spec(ref: str | os.PathLike) -> tuple[dict, str]:
    """A spec from a YAML file, or a zoo model by name. Returns (spec, source name)."""
    from cnnlab.model import zoo

    path = Path(ref)
    if not path.is_file():
        if str(ref) in zoo.names():
            return zoo.spec(str(ref)), str(ref)
        raise CnnlabError(
            f"{ref}: neither a spec file nor a zoo model (zoo: {', '.join(zoo.names())})"
        )
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(
                f"{path}: {size} bytes is too large for a spec (at most {MAX_SPEC_BYTES})"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read ({e})") from None
    return load_yaml(text, str(path)), str(path)
