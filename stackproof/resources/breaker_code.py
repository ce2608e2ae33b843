"""Circuit breakers declared in a service's Python code, read with `ast`: the code is parsed, never run.

Many stacks keep no breaker in a config file: the service builds one in code, with pybreaker's or
aiobreaker's `CircuitBreaker(...)`, the `circuitbreaker` package's `@circuit(...)` decorator, or a
hand-written class of that name. What the checks judge is what the profile's `breakers.settings` names
(the failure threshold, the recovery time, the half-open trial calls), read from the call's literal
arguments, else from the defaults of a hand-written class's `__init__` in the same code, else from the
library's own defaults. The state encoding of the breaker gauge is read where the code says it: the
HELP text of the gauge (`"0 closed, 1 half-open, 2 open"`), or the class's state constants.

Go services are read too (`.go` files, vendored code and tests left out): sony/gobreaker's `gobreaker.Settings{...}`
literal, found by text (Go has no parser in this process; the literal's fields are plain `Key: value` pairs):
`Name`, `MaxRequests` (the half-open trial calls, 0 meaning 1), `Timeout` (the time open, 0 meaning 60 s) and a
`ReadyToTrip` that compares `counts.ConsecutiveFailures` (absent: gobreaker's `ConsecutiveFailures > 5`). The state
encoding is the gauge's `Help:` text, else gobreaker's own (closed 0, half-open 1, open 2) when the code exports
`float64(....State())`.

Java services built with Spring keep resilience4j's breakers in `application.yml` (or `.properties`):
`resilience4j.circuitbreaker.instances.<name>` over `configs.default`, judged in resilience4j's names.
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from stackproof.errors import StackError
from stackproof.io.pysource import parse_python
from stackproof.io.files import read_stack_text, walk_files
from stackproof.io.yamlio import parse_yaml

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
# a state's code is a small number: a longer digit run is no code (and int() refuses one past 4,300 digits)
STATE_TEXT = re.compile(r"(?<!\d)(\d{1,3})(?!\d)\s*(?:[:=]\s*)?(half[-_ ]?open|closed|open)\b", re.I)
STATE_CONSTANTS = {"CLOSED": "closed", "OPEN": "open", "HALF_OPEN": "half_open"}
TEST_CODE = re.compile(r"(^test_.*|_test)\.py$|_test\.go$")
SKIP_DIRS = frozenset({".git", "node_modules", ".venv", "venv", "__pycache__", ".tox", "tests", "test", "vendor"})
GO_SETTINGS = re.compile(r"\bgobreaker\.Settings\s*\{")
GO_FIELD = {"name": re.compile(r"\bName\s*:\s*\"([^\"]*)\""),
            "half_open": re.compile(r"\bMaxRequests\s*:\s*(?:uint32\()?\s*(\d{1,9})(?!\d)"),
            "recovery": re.compile(r"\bTimeout[ \t]*:[ \t]*([^,}\n]*)"),  # up to the field's end: no backtracking
            "threshold": re.compile(r"ConsecutiveFailures\s*(>=|>)\s*(?:uint32\()?\s*(\d{1,9})(?!\d)")}
GO_UNITS = {"time.Millisecond": 0.001, "time.Second": 1, "time.Minute": 60, "time.Hour": 3600}
GO_KEYS = {"threshold": "ReadyToTrip (ConsecutiveFailures)", "recovery": "Timeout", "half_open": "MaxRequests"}
GOBREAKER_DEFAULTS = {"threshold": 6, "recovery": 60, "half_open": 1}  # ReadyToTrip: ConsecutiveFailures > 5
GOBREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}  # gobreaker.StateClosed, StateHalfOpen, StateOpen
SPRING_CONFIG = re.compile(r"application(-[\w-]+)?\.(ya?ml|properties)")
RESILIENCE4J_KEYS = {"threshold": "minimumNumberOfCalls × failureRateThreshold", "recovery": "waitDurationInOpenState",
                     "half_open": "permittedNumberOfCallsInHalfOpenState"}
RESILIENCE4J_DEFAULTS = {"failureRateThreshold": 50, "minimumNumberOfCalls": 100, "waitDurationInOpenState": "60s",
                         "permittedNumberOfCallsInHalfOpenState": 10}
BRACES = re.compile(r"[{}]")
MAX_GO_LITERAL = 8192  # characters of a Settings literal read
MAX_GO_BREAKERS = 100  # Settings literals read per file
GO_HELP = re.compile(r"\bHelp\s*:\s*\"([^\"]*)\"")
GO_STATE_EXPORTED = re.compile(r"float64\(\s*[\w.]+\.State\(\)\s*\)")
MAX_FILES = 5_000
MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class CodeBreaker:
    """One breaker the code builds: the dependency it is named for, where, and its settings by role."""

    name: str | None
    file: str  # relative to the stack dir
    line: int
    settings: dict[str, object]
    call: str = ""  # how the code builds it, as a reason names it (empty: `CircuitBreaker(<name>)`)
    keys: dict[str, str] | None = None  # setting role -> the library's name for it (None: the profile's)


@dataclass(frozen=True)
class BreakerCode:
    """What a service's code declares: its breakers and, when the code says it, the state encoding."""

    breakers: list[CodeBreaker]
    states: dict[str, int] | None


def read_breaker_code(stack, directory: Path) -> BreakerCode:
    """The breakers and state encoding of the Python files under `directory` (tests left out: a test builds
    breakers of its own)."""
    trees, go_breakers, go_states = [], [], None  # go_breakers: those read by text (Go, Spring's resilience4j)
    for path in walk_files(directory, stack.rel(directory), MAX_FILES, SKIP_DIRS):
        if SPRING_CONFIG.fullmatch(path.name) and path.is_file() and stack.inside(path):
            go_breakers += _resilience4j_breakers(stack.rel(path), read_stack_text(path, stack.rel(path), MAX_FILE_BYTES),
                                                  path.suffix)
            continue
        if path.suffix not in (".py", ".go") or TEST_CODE.search(path.name) or not path.is_file() \
                or not stack.inside(path):
            continue
        if path.suffix == ".go":
            text = read_stack_text(path, stack.rel(path), MAX_FILE_BYTES)
            go_breakers += _go_breakers(stack.rel(path), text)
            go_states = go_states or _go_states(text)
            continue
        module = parse_python(read_stack_text(path, stack.rel(path), MAX_FILE_BYTES))
        if module is not None:  # else not Python this interpreter reads: it declares nothing the suite can see
            trees.append((stack.rel(path), module))
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
    return BreakerCode(breakers + go_breakers, states or go_states)


def _resilience4j_breakers(rel: str, text: str, suffix: str) -> list[CodeBreaker]:
    """The breakers a Spring application's config declares for resilience4j, one per instance, its `baseConfig`
    (else `configs.default`) under it, resilience4j's defaults under both. The failures that open it are the
    fewest its window can hold at the failure rate: ceil(minimumNumberOfCalls × failureRateThreshold / 100)."""
    if suffix == ".properties":
        tree: dict = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip().startswith("resilience4j.circuitbreaker.") and not key.lstrip().startswith("#"):
                node = tree
                *parents, leaf = key.strip().split(".")
                for part in parents:
                    node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
                node[leaf] = value.strip()
    else:
        try:
            tree = parse_yaml(text, rel)
        except StackError:
            return []
    section = ((tree or {}).get("resilience4j") or {}).get("circuitbreaker") if isinstance(tree, dict) else None
    if not isinstance(section, dict) or not isinstance(section.get("instances"), dict):
        return []
    configs: dict = section["configs"] if isinstance(section.get("configs"), dict) else {}
    found = []
    for name, instance in section["instances"].items():
        instance = instance if isinstance(instance, dict) else {}
        base = configs.get(_spring_value(instance, "baseConfig") or "default") or {}
        merged = {**RESILIENCE4J_DEFAULTS, **{_camel(k): v for k, v in base.items()},
                  **{_camel(k): v for k, v in instance.items()}}
        settings: dict[str, object] = {}
        try:
            calls, rate = int(merged["minimumNumberOfCalls"]), float(merged["failureRateThreshold"])
            settings["threshold"] = max(1, -(-calls * rate // 100))
        except (TypeError, ValueError):
            pass  # a placeholder (${...}) or an expression: not known without the running application
        recovery = _spring_duration(merged["waitDurationInOpenState"])
        if recovery is not None:
            settings["recovery"] = recovery
        try:
            settings["half_open"] = int(merged["permittedNumberOfCallsInHalfOpenState"])
        except (TypeError, ValueError):
            pass
        declared_at = next((number for number, text_line in enumerate(text.splitlines(), start=1)
                            if re.search(rf"(^|[.\s]){re.escape(str(name))}[.:=]", text_line)), 1)
        found.append(CodeBreaker(str(name), rel, declared_at, {k: int(v) if isinstance(v, float) and v.is_integer() else v
                                                        for k, v in settings.items()},
                                 call=f"resilience4j.circuitbreaker.instances.{name}", keys=RESILIENCE4J_KEYS))
    return found


def _camel(key: object) -> str:
    """Spring's relaxed binding: `wait-duration-in-open-state` is `waitDurationInOpenState`."""
    head, *rest = str(key).split("-")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _spring_value(mapping: dict, key: str):
    return next((value for name, value in mapping.items() if _camel(name) == key), None)


def _spring_duration(value: object) -> float | None:
    """A Spring Duration in seconds: `30s`, `2m`, `500ms`, ISO-8601 `PT30S`, or a bare number of milliseconds."""
    text = str(value).strip()
    if text.isdigit():
        return int(text) / 1000
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    if match:
        return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?", text, re.I)
    if match and any(match.groups()):
        hours, minutes, secs = (float(part or 0) for part in match.groups())
        return hours * 3600 + minutes * 60 + secs
    return None


def _go_breakers(rel: str, text: str) -> list[CodeBreaker]:
    """The `gobreaker.Settings{...}` literals of a Go file, with gobreaker's defaults for what they leave out."""
    found = []
    for match in itertools.islice(GO_SETTINGS.finditer(text), MAX_GO_BREAKERS):
        literal = _braced(text, match.end() - 1)
        settings: dict[str, object] = dict(GOBREAKER_DEFAULTS)
        if (half_open := GO_FIELD["half_open"].search(literal)) is not None:
            settings["half_open"] = int(half_open.group(1)) or 1  # 0: gobreaker lets one request through
        if (timeout := GO_FIELD["recovery"].search(literal)) is not None:
            seconds = _go_duration(timeout.group(1))
            if seconds is None:
                del settings["recovery"]  # a value computed at run time: not known without running the code
            else:
                settings["recovery"] = seconds or 60  # 0: gobreaker's 60 s
        if "ReadyToTrip" in literal:
            trip = GO_FIELD["threshold"].search(literal)
            if trip is None:
                del settings["threshold"]  # trips on something else than consecutive failures: not a count
            else:
                settings["threshold"] = int(trip.group(2)) + (1 if trip.group(1) == ">" else 0)
        name = GO_FIELD["name"].search(literal)
        found.append(CodeBreaker(name.group(1) if name else None, rel, text.count("\n", 0, match.start()) + 1,
                                 settings, call=f'gobreaker.Settings{{Name: "{name.group(1) if name else ""}"}}',
                                 keys=GO_KEYS))
    return found


def _braced(text: str, start: int) -> str:
    """The text of the brace block opening at `start`, nested blocks (a ReadyToTrip func) included, within
    MAX_GO_LITERAL characters (a Settings literal is a few lines; an unclosed one is not read to the file's end)."""
    window = text[start:start + MAX_GO_LITERAL]
    depth = 0
    for brace in BRACES.finditer(window):
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            return window[:brace.end()]
    return window


def _go_duration(expression: str) -> float | None:
    """A Go duration literal in seconds: `30 * time.Second`, `time.Second * 30`, `time.Duration(30) * time.Second`,
    `time.Minute`; a bare number is nanoseconds, as Go counts a Duration. None for anything else (a value
    computed at run time)."""
    words = [re.sub(r"^time\.Duration\((.*)\)$", r"\1", word) for word in re.split(r"\s*\*\s*", expression.strip())]
    units = [GO_UNITS[word] for word in words if word in GO_UNITS]
    numbers = [float(word) for word in words if re.fullmatch(r"\d+(\.\d+)?", word)]
    if not words or len(units) + len(numbers) != len(words) or len(units) > 1 or len(numbers) > 1:
        return None
    return (numbers[0] if numbers else 1) * (units[0] if units else 1e-9)


def _go_states(text: str) -> dict[str, int] | None:
    """The encoding a Go file states: a gauge's Help text, else gobreaker's when it exports State() as a number."""
    for help_text in GO_HELP.findall(text):
        if (states := _states_in_text(help_text)) is not None:
            return states
    return dict(GOBREAKER_STATES) if "gobreaker" in text and GO_STATE_EXPORTED.search(text) else None


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
