"""Loading YAML from the stack safely: size cap, no alias bombs, no duplicate keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import StackError

MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_EXPANDED_NODES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses alias bombs and duplicate mapping keys."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise yaml.YAMLError(f"expands to more than {MAX_EXPANDED_NODES} nodes through aliases (YAML bomb?)")
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


def load_yaml(path: Path, source: str | None = None) -> Any:
    """Read and parse a YAML file of the stack."""
    source = source or str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise StackError(f"{source}: file not found") from None
    except OSError as exc:
        raise StackError(f"{source}: cannot read ({exc.strerror})") from None
    if size > MAX_YAML_BYTES:
        raise StackError(f"{source}: {size} bytes, larger than the {MAX_YAML_BYTES}-byte limit for YAML")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise StackError(f"{source}: not UTF-8 text") from None
    except OSError as exc:
        raise StackError(f"{source}: cannot read ({exc.strerror})") from None
    return parse_yaml(text, source)
