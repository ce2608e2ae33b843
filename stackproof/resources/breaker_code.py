"""Circuit breakers declared in a service's Python code, read with `ast`: the code is parsed, never run.

Many stacks keep no breaker in a config file: the service builds one in code, with pybreaker's or
aiobreaker's `CircuitBreaker(...)`, the `circuitbreaker` package's `@circuit(...)` decorator, or a
hand-written class of that name. What the checks judge is what the profile's `breakers.settings` names
(the failure threshold, the recovery time, the half-open trial calls), read from the call's literal
arguments, else from the defaults of a hand-written class's `__init__` in the same code, else from the
library's own defaults. The state encoding of the breaker gauge is read where the code says it: the
HELP text of the gauge (`"0 closed, 1 half-open, 2 open"`), or the class's state constants.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from stackproof.io.files import read_stack_text, walk_files

BREAKER_CALLS = frozenset({"CircuitBreaker", "circuit"})
# profile setting (breakers.settings) -> the keyword arguments that give it in the libraries AI stacks use
KEYWORDS = {
    "threshold": ("fail_max", "failure_threshold", "max_failures"),
    "recovery": ("reset_timeout", "recovery_timeout", "timeout_duration"),
    "half_open": ("half_open_max", "half_open_max_calls", "half_open_calls"),
}
# what a library does when the call leaves a setting out (its documented defaults; one trial call half-open)
LIBRARY_DEFAULTS = {
    "pybreaker": {"threshold": 5, "recovery": 60, "half_open": 1},
    "aiobreaker": {"threshold": 5, "recovery": 60, "half_open": 1},
    "circuitbreaker": {"threshold": 5, "recovery": 30, "half_open": 1},
}
TIMEDELTA_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600}
STATE_WORDS = {"closed": "closed", "open": "open", "half-open": "half_open", "half_open": "half_open", "halfopen": "half_open"}
STATE_TEXT = re.compile(r"(\d+)\s*[:=]?\s*(half[-_ ]?open|closed|open)\b", re.I)
STATE_CONSTANTS = {"CLOSED": "closed", "OPEN": "open", "HALF_OPEN": "half_open"}
TEST_CODE = re.compile(r"(^test_.*|_test)\.py$")
SKIP_DIRS = frozenset({".git", "node_modules", ".venv", "venv", "__pycache__", ".tox", "tests", "test"})
MAX_FILES = 5_000
MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class CodeBreaker:
    """One breaker the code builds: the dependency it is named for, where, and its settings by role."""

    name: str | None
    file: str  # relative to the stack dir
    line: int
    settings: dict[str, object]


@dataclass(frozen=True)
class BreakerCode:
    """What a service's code declares: its breakers and, when the code says it, the state encoding."""

    breakers: list[CodeBreaker]
    states: dict[str, int] | None


def read_breaker_code(stack, directory: Path) -> BreakerCode:
    """The breakers and state encoding of the Python files under `directory` (tests left out: a test builds
    breakers of its own)."""
    trees = []
    for path in walk_files(directory, stack.rel(directory), MAX_FILES, SKIP_DIRS):
        if path.suffix != ".py" or TEST_CODE.search(path.name) or not path.is_file() or not stack.inside(path):
            continue
        try:
            trees.append((stack.rel(path), ast.parse(read_stack_text(path, stack.rel(path), MAX_FILE_BYTES))))
        except (SyntaxError, ValueError):
            continue  # not Python this interpreter reads: it declares nothing the suite can see
    classes = {node.name: node for _, tree in trees for node in ast.walk(tree)
               if isinstance(node, ast.ClassDef) and node.name in BREAKER_CALLS}
    breakers, states = [], None
    for rel, tree in trees:
        library = _breaker_library(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in BREAKER_CALLS:
                defaults = _init_defaults(classes[_name(node.func)]) if _name(node.func) in classes else \
                    LIBRARY_DEFAULTS.get(library or "", {})
                breakers.append(CodeBreaker(_breaker_name(node), rel, node.lineno, {**defaults, **_settings(node)}))
            elif states is None and isinstance(node, ast.Call) and _name(node.func) == "Gauge":
                states = _states_in_text(" ".join(_strings(node)))
    for node in classes.values():
        states = states or _state_constants(node)
    return BreakerCode(breakers, states)


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _breaker_library(tree: ast.Module) -> str | None:
    """The breaker library a file imports its breaker from, if any."""
    for node in ast.walk(tree):
        modules = [node.module] if isinstance(node, ast.ImportFrom) else \
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        for module in modules:
            if module and module.split(".")[0] in LIBRARY_DEFAULTS:
                return module.split(".")[0]
    return None


def _literal(node: ast.expr):
    """A literal argument's value: a constant, or `timedelta(seconds=N)` as seconds; None for anything else
    (a variable's value is not known without running the code)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Call) and _name(node.func) == "timedelta" and not node.args:
        parts = [(TIMEDELTA_SECONDS.get(k.arg or ""), _literal(k.value)) for k in node.keywords]
        if parts and all(unit and isinstance(value, (int, float)) for unit, value in parts):
            return sum(unit * value for unit, value in parts)
    return None


def _settings(call: ast.Call) -> dict[str, object]:
    found = {}
    for keyword in call.keywords:
        role = next((role for role, names in KEYWORDS.items() if keyword.arg in names), None)
        if role is not None and (value := _literal(keyword.value)) is not None:
            found[role] = value
    return found


def _breaker_name(call: ast.Call) -> str | None:
    """The dependency a breaker is named for: its `name=` argument, else its first positional string."""
    for keyword in call.keywords:
        if keyword.arg == "name" and isinstance(value := _literal(keyword.value), str):
            return value
    first = _literal(call.args[0]) if call.args else None
    return first if isinstance(first, str) else None


def _init_defaults(cls: ast.ClassDef) -> dict[str, object]:
    """The settings a hand-written breaker class's `__init__` gives by default."""
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is None:
        return {}
    args = init.args.args[len(init.args.args) - len(init.args.defaults):]
    pairs = [*zip(args, init.args.defaults, strict=True), *zip(init.args.kwonlyargs, init.args.kw_defaults, strict=True)]
    found = {}
    for arg, default in pairs:
        role = next((role for role, names in KEYWORDS.items() if arg.arg in names), None)
        if role is not None and default is not None and (value := _literal(default)) is not None:
            found[role] = value
    return found


def _strings(call: ast.Call) -> list[str]:
    return [value for arg in [*call.args, *(k.value for k in call.keywords)] if isinstance(value := _literal(arg), str)]


def _states_in_text(text: str) -> dict[str, int] | None:
    """`0 closed, 1 half-open, 2 open` in a gauge's HELP text: the encoding, when it names all three states."""
    found = {STATE_WORDS[word.lower().replace(" ", "")]: int(code) for code, word in STATE_TEXT.findall(text)}
    return found if set(found) == {"closed", "open", "half_open"} else None


def _state_constants(cls: ast.ClassDef) -> dict[str, int] | None:
    """`CLOSED, HALF_OPEN, OPEN = 0, 1, 2` (or one assignment each) in a breaker class."""
    found = {}
    for node in cls.body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        names = target.elts if isinstance(target, ast.Tuple) else [target]
        values = value.elts if isinstance(value, ast.Tuple) else [value]
        for name, item in zip(names, values, strict=False):  # a mismatched unpacking: what pairs up
            if isinstance(name, ast.Name) and name.id in STATE_CONSTANTS and isinstance(code := _literal(item), int):
                found[STATE_CONSTANTS[name.id]] = code
    return found if len(found) == 3 else None
