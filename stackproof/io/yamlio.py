"""Loading YAML from the stack safely: size cap, bounded depth and node count, no alias
bombs, no duplicate keys.

Two passes, both in libyaml's C parser where PyYAML has it (about five times faster than the
pure-Python one, and every check parses the stack's YAML):
1. the event stream is walked once, flat (no recursion), and the bounds are checked on it: depth,
   nodes as written, and what aliases add once expanded. A hostile file costs at most MAX_NODES
   events of work and never reaches a composer.
2. only then is the document composed and constructed. PyYAML's composers are recursive (the C
   one without Python's recursion check): the depth bound of pass 1 is what keeps them safe.
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

# libyaml's parser when PyYAML was built with it (its wheels are), else the pure-Python one
_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):
    """SafeLoader (C where available) that refuses duplicate mapping keys. The bounds are checked
    before it composes anything (`_check_bounds`)."""

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


_NODE_EVENTS = (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)
_END_EVENTS = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _events(text: str):
    """The parser's events. libyaml stops at its own nesting limit (deeper than ours) while scanning
    ahead through flow collections: said in our words, as the same bound."""
    try:
        yield from yaml.parse(text, Loader=_BaseLoader)
    except yaml.MarkedYAMLError as exc:
        if "maximum nesting depth" in str(exc.problem):
            raise _BoundExceeded(f"nested deeper than {MAX_DEPTH} levels", exc.problem_mark) from None
        raise


def _check_bounds(text: str) -> None:
    """Walk the event stream once: depth, nodes as written, nodes that aliases add.

    A bomb is told from a large file by what aliases add: 10,000 plain alerts are many nodes as
    written, and pass; nine aliases of nine aliases... add millions, and do not. Each open
    collection keeps its size with every alias expanded; an alias adds its anchor's size (an
    anchor still open, a cycle, counts once)."""
    nodes = 0
    sizes: list[int] = [0]  # expanded size of each open collection; [0]: the stream
    anchors: list[str | None] = [None]
    anchored: dict[str, int] = {}
    for event in _events(text):
        if isinstance(event, _NODE_EVENTS):
            nodes += 1
            if len(sizes) > MAX_DEPTH:
                raise _BoundExceeded(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            if nodes > MAX_NODES:
                raise _BoundExceeded(f"more than {MAX_NODES} nodes", event.start_mark)
            if isinstance(event, yaml.AliasEvent):
                sizes[-1] += anchored.get(event.anchor, 1)
                if sum(sizes) - nodes > MAX_ALIAS_NODES:
                    raise _BoundExceeded(f"aliases expand to more than {MAX_ALIAS_NODES} extra nodes (YAML bomb?)",
                                         event.start_mark)
            elif isinstance(event, yaml.ScalarEvent):
                sizes[-1] += 1
                if event.anchor:
                    anchored[event.anchor] = 1
            else:
                if event.anchor:
                    anchored[event.anchor] = 1
                sizes.append(1)
                anchors.append(event.anchor)
        elif isinstance(event, _END_EVENTS):
            size, anchor = sizes.pop(), anchors.pop()
            if anchor:
                anchored[anchor] = size
            sizes[-1] += size


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; any problem becomes a one-line StackError naming `source`."""
    try:
        _check_bounds(text)
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


KeyPath = tuple[str | int, ...]


def key_path_text(keys: KeyPath) -> str:
    """A key path as the report writes it: `services.aidb.secrets[0].mode`."""
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def key_position(text: str, keys: KeyPath) -> tuple[int, int | None]:
    """How many of `keys` the document has, and the 1-based line of the deepest of them (a mapping key's own
    line; a sequence item's line), so a finding about a key the file lacks points at its parent. (0, None): the
    text is no YAML or not even the first key is there. Bounded like parse_yaml (the bounds are checked first)."""
    try:
        _check_bounds(text)
        node = yaml.compose(text, Loader=_BaseLoader)
    except yaml.YAMLError:
        return 0, None
    depth, line = 0, None
    for key in keys:
        if isinstance(node, yaml.MappingNode) and isinstance(key, str):
            found = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
        depth += 1
    return depth, line
