"""Database pools built in a service's Python code, read with `ast`: the code is parsed, never run.

Many services keep no pool config file: the code builds the pool, with literal settings
(`create_engine(url, pool_size=5)`) or settings read from the environment with a default
(`pool_size=int(os.environ.get("DB_POOL_SIZE", "20"))`). What the service gets is then the
variable when its compose environment sets it, else the code's default, else the library's own
default for an argument left out. A value computed otherwise (a settings object, arithmetic) is not
known without running the code: it is not read, and the check that needs it is not proven.

The libraries AI stacks build pools with: SQLAlchemy's `create_engine`/`create_async_engine`
(`pool_size` 5, `max_overflow` 10, `pool_timeout` 30, `pool_pre_ping` off by default), asyncpg's
`create_pool` (`min_size`/`max_size` 10/10: the overflow is the cap less the size; no pool timeout
or pre-ping) and psycopg_pool's `ConnectionPool`/`AsyncConnectionPool` (`min_size` 4, `max_size` the
same by default, `timeout` 30, a `check` callback tests a connection before use).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from stackproof.io.pysource import parse_python
from stackproof.io.files import read_stack_text, walk_files
from stackproof.resources.breaker_code import MAX_FILE_BYTES, MAX_FILES, SKIP_DIRS, TEST_CODE
from stackproof.resources.breakers import code_dir


@dataclass(frozen=True)
class PoolLibraryCall:
    """A call that builds a pool: its keyword for each setting, and its defaults."""

    library: str
    keywords: dict[str, str]  # size, cap (the most connections, when the library has one), max_overflow, timeout, pre_ping
    defaults: dict[str, object]
    lacks: dict[str, str]  # setting -> why the library has no such setting


CALLS = {
    "create_engine": PoolLibraryCall(
        "SQLAlchemy", {"size": "pool_size", "max_overflow": "max_overflow", "timeout": "pool_timeout",
                       "pre_ping": "pool_pre_ping"},
        {"size": 5, "max_overflow": 10, "timeout": 30, "pre_ping": False}, {}),
    "create_pool": PoolLibraryCall(
        "asyncpg", {"size": "min_size", "cap": "max_size"}, {"size": 10, "cap": 10},
        {"timeout": "asyncpg's pool waits on acquire() as each call says: no pool timeout to set",
         "pre_ping": "asyncpg's pool has no pre-ping setting (it resets a connection on release)"}),
    "ConnectionPool": PoolLibraryCall(
        "psycopg_pool", {"size": "min_size", "cap": "max_size", "timeout": "timeout", "pre_ping": "check"},
        {"size": 4, "timeout": 30, "pre_ping": False}, {}),
}
CALLS["create_async_engine"] = CALLS["create_engine"]
CALLS["AsyncConnectionPool"] = CALLS["ConnectionPool"]
ENVIRONMENT_READERS = frozenset({"getenv", "get"})  # os.getenv(NAME, default), os.environ.get(NAME, default)
TRUE_WORDS = ("true", "1", "yes", "on")


@dataclass(frozen=True)
class CodeSetting:
    """One pool setting as the code gives it: a literal, or an environment variable with its default."""

    keyword: str
    value: object  # the literal, or the variable's default in the code (None: none, or not readable)
    variable: str | None = None
    library_default: bool = False  # the argument is left out: the library's default

    def shown(self) -> str:
        if self.library_default:
            return f"{self.keyword} left out: the library's default {self.value!r}"
        if self.variable:
            return f"{self.keyword} from {self.variable} (the code's default {self.value!r})"
        if self.value is None:
            return f"{self.keyword} computed when the code runs: not known without running it"
        return f"{self.keyword}={self.value!r}"


@dataclass(frozen=True)
class CodePool:
    """A pool the code builds: where, with which library's call, and each setting the call gives."""

    file: str  # relative to the stack dir
    line: int
    call: str
    library: PoolLibraryCall
    settings: dict[str, CodeSetting]  # size, cap, max_overflow, timeout, pre_ping: those the library has

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def code_pool_of(stack, svc) -> CodePool | None:
    """The pool a service's Python code builds (its build context inside the stack dir, or breakers.code):
    the first such call of its code, None when it builds none the suite reads."""
    directory = code_dir(stack, svc)
    if directory is None:
        return None
    pools = stack.needs(f"pool code of {directory}", lambda: read_pool_code(stack, directory))
    return pools[0] if pools else None


def read_pool_code(stack, directory: Path) -> list[CodePool]:
    """The pools the Python files under `directory` build (tests left out), in file order."""
    found = []
    for path in walk_files(directory, stack.rel(directory), MAX_FILES, SKIP_DIRS):
        if path.suffix != ".py" or TEST_CODE.search(path.name) or not path.is_file() or not stack.inside(path):
            continue
        tree = parse_python(read_stack_text(path, stack.rel(path), MAX_FILE_BYTES))
        if tree is None:
            continue
        constants = _module_constants(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in CALLS:
                call = _name(node.func)
                found.append(CodePool(stack.rel(path), node.lineno, call, CALLS[call], _settings(node, CALLS[call], constants)))
    return sorted(found, key=lambda pool: (pool.file, pool.line))


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    """NAME = expression at a module's top level: a pool argument that names one is read through it."""
    return {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def _settings(call: ast.Call, library: PoolLibraryCall, constants: dict[str, ast.expr]) -> dict[str, CodeSetting]:
    given = {keyword.arg: keyword.value for keyword in call.keywords if keyword.arg}
    settings = {}
    for setting, keyword in library.keywords.items():
        if keyword not in given:
            if setting in library.defaults:
                settings[setting] = CodeSetting(keyword, library.defaults[setting], library_default=True)
            continue
        if setting == "pre_ping" and keyword == "check":  # psycopg_pool: a check callback tests each connection
            settings[setting] = CodeSetting(keyword, True)
            continue
        value, variable = _value(given[keyword], constants)
        settings[setting] = CodeSetting(keyword, value, variable)
    if "cap" in library.keywords and "cap" not in settings and "size" in settings:  # psycopg_pool: max_size = min_size
        settings["cap"] = CodeSetting(library.keywords["cap"], settings["size"].value, settings["size"].variable,
                                      library_default=settings["size"].library_default)
    return settings


def _value(node: ast.expr, constants: dict[str, ast.expr], depth: int = 0) -> tuple[object, str | None]:
    """(the value, the environment variable it comes from) of a pool argument: a literal; a module constant;
    `int(...)`/`float(...)`/`bool(...)` of one; `os.getenv(NAME, default)`, `os.environ.get(NAME, default)`,
    `os.environ.get(NAME) or default`, `os.environ[NAME]`; `<one of those> == "true"` (or `.lower()` first).
    (None, None) for anything else."""
    if depth > 5:
        return None, None
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return node.value, None
    if isinstance(node, ast.Name) and node.id in constants:
        return _value(constants[node.id], constants, depth + 1)
    if isinstance(node, ast.Call) and _name(node.func) in ("int", "float", "bool") and len(node.args) == 1:
        value, variable = _value(node.args[0], constants, depth + 1)
        return _converted(_name(node.func), value), variable
    if isinstance(node, ast.Call) and _name(node.func) == "lower" and isinstance(node.func, ast.Attribute):
        value, variable = _value(node.func.value, constants, depth + 1)
        return value.lower() if isinstance(value, str) else value, variable
    if isinstance(node, ast.Call) and _name(node.func) in ENVIRONMENT_READERS and _reads_environment(node.func) \
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        default = _value(node.args[1], constants, depth + 1)[0] if len(node.args) > 1 else None
        return default, node.args[0].value
    if isinstance(node, ast.Subscript) and _is_environ(node.value) and isinstance(node.slice, ast.Constant):
        return None, str(node.slice.value)
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and len(node.values) == 2:
        _, variable = _value(node.values[0], constants, depth + 1)
        default, _ = _value(node.values[1], constants, depth + 1)
        return (default, variable) if variable else (None, None)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.In)):
        value, variable = _value(node.left, constants, depth + 1)
        right = node.comparators[0]
        words = [right.value] if isinstance(right, ast.Constant) else \
            [item.value for item in right.elts if isinstance(item, ast.Constant)] if isinstance(right, (ast.Tuple, ast.List, ast.Set)) else []
        if variable and words:
            return (str(value).lower() in [str(word).lower() for word in words]) if value is not None else None, variable
    return None, None


def _reads_environment(func: ast.expr) -> bool:
    """os.getenv / getenv / os.environ.get / environ.get."""
    if isinstance(func, ast.Name):
        return func.id == "getenv"
    return isinstance(func, ast.Attribute) and (func.attr == "getenv" or (func.attr == "get" and _is_environ(func.value)))


def _is_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (isinstance(node, ast.Name) and node.id == "environ")


def _converted(kind: str, value: object) -> object:
    """int("20") as the code would convert its default; a value that does not convert stays as it is."""
    if value is None:
        return None
    try:
        if kind == "bool":
            return bool(value)
        text = str(value)
        return int(text) if kind == "int" else float(text)
    except (TypeError, ValueError):
        return value


def effective(setting: CodeSetting, environment: dict[str, str | None], boolean: bool = False) -> tuple[object, str]:
    """What a service gets for a setting the code gives: (value, how it is shown). A variable its environment sets
    wins (read as the code reads it: a true word for a `boolean` setting, else a number); else the code's default."""
    if setting.variable and environment.get(setting.variable) not in (None, ""):
        text = str(environment[setting.variable])
        if boolean or isinstance(setting.value, bool):
            return text.strip().lower() in TRUE_WORDS, f"{setting.variable}={text}"
        try:
            number: object = int(text) if isinstance(setting.value, int) or setting.value is None else float(text)
        except ValueError:
            number = text
        return number, f"{setting.variable}={text}"
    if setting.variable:
        return setting.value, f"{setting.variable} not set: the code's default {setting.value!r}" \
            if setting.value is not None else f"{setting.variable} not set, and the code has no default"
    return setting.value, setting.shown()
