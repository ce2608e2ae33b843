"""Loading YAML from the stack safely: size cap, bounded depth and node count, no alias
bombs, no duplicate keys.

PyYAML's composer is recursive: without a depth bound, a deeply nested file ends in
RecursionError, which names no file. The bounds are checked while the node tree is built,
so a hostile file costs at most MAX_NODES nodes of work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stackproof.errors import StackError
from stackproof.io.files import read_stack_file

MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 100  # nesting levels; real compose files, profiles and rule files use fewer than 15
MAX_NODES = 1_000_000  # nodes as written; more than a 4 MB file of real configuration holds
MAX_ALIAS_NODES = 100_000  # nodes that aliases add once expanded (a "billion laughs" bomb)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting and size and refuses alias bombs and duplicate mapping keys.

    A bomb is told from a large file by what aliases add: 10,000 plain alerts are many nodes
    as written, and pass; nine aliases of nine aliases... add millions, and do not."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_DEPTH:
            raise _BoundExceeded(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
        if self._nodes > MAX_NODES:
            raise _BoundExceeded(f"more than {MAX_NODES} nodes", self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            added = _expanded_size(node, {}) - self._nodes
            if added > MAX_ALIAS_NODES:
                raise yaml.YAMLError(f"aliases expand to more than {MAX_ALIAS_NODES} extra nodes (YAML bomb?)")
        return node

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.YAMLError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _BoundExceeded(yaml.MarkedYAMLError):
    def __init__(self, problem: str, mark):
        super().__init__(problem=problem, problem_mark=mark)


def _expanded_size(node, memo: dict) -> int:
    """Node count once every alias is expanded; memoised, so a bomb costs little to measure."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # cycles count once
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; any problem becomes a one-line StackError naming `source`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise StackError(f"{source}:{where} invalid YAML: {' '.join(str(problem).split())}") from None
    except (ValueError, OverflowError) as exc:  # a scalar the constructors cannot build: a date 2026-13-01
        raise StackError(f"{source}: invalid YAML value: {' '.join(str(exc).split())}") from None


def load_yaml(path: Path, source: str | None = None) -> Any:
    """Read (regular files only, bounded: safeio) and parse a YAML file of the stack."""
    source = source or str(path)
    try:
        text = read_stack_file(path, source, MAX_YAML_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise StackError(f"{source}: not UTF-8 text") from None
    return parse_yaml(text, source)
