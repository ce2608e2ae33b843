"""The settings the Postgres server of a stack runs with, followed through every source it reads.

Postgres takes a setting from, in rising precedence: its built-in default; postgresql.conf
(`config_file`, by default in the data directory) and the files it includes (`include`,
`include_if_exists`, `include_dir`), read in order, the last assignment winning;
postgresql.auto.conf in the data directory (`ALTER SYSTEM`, also from an init script of the
official image's /docker-entrypoint-initdb.d); and its command line (`-c name=value`,
`--name=value`, the short flags `-N` and `-B`), the last one winning. A reader that looks at one
of these passes a stack that sets the value again in another, so every assignment is kept and
the evidence says which won over which.

A container path is read only where a bind mount brings it into the stack dir: a data
directory in a named volume holds initdb's file, which sets these to the defaults.

`PGOPTIONS` is read by clients (libpq), never by the server: a postmaster setting in it cannot
change the server, and makes every connection that client opens fail (`client_overrides`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from stackproof.errors import StackError
from stackproof.io.files import list_dir, read_stack_text

SETTINGS = ("max_connections", "superuser_reserved_connections", "shared_buffers")
# the server's defaults where the profile has none (initdb writes max_connections = 100, shared_buffers = 128MB)
BUILTIN = {"shared_buffers": "128MB"}
SHORT_FLAGS = {"N": "max_connections", "B": "shared_buffers"}  # postgres(1)
# postgres(1) options that take an argument (getopt "B:bc:C:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:W:-:")
ARGUMENT_FLAGS = set("BcCDdfhkNprStW")
OFFICIAL_DATA_DIR = "/var/lib/postgresql/data"
INITDB_DIR = "/docker-entrypoint-initdb.d"
MAX_INCLUDE_DEPTH = 10  # as Postgres (CONF_FILE_MAX_DEPTH)
CONFIG_CAP = 1024 * 1024
POSTMASTER_ONLY = SETTINGS  # settings a session (PGOPTIONS) cannot change

_CONF_LINE = re.compile(r"""^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?\s*('(?:[^']|'')*'|[^\s#']+)?""")
_ALTER_SYSTEM = re.compile(r"ALTER\s+SYSTEM\s+(?:SET\s+(\w+)\s*(?:=|\bTO\b)\s*('(?:[^']|'')*'|[\w.]+)|RESET\s+(\w+))",
                           re.IGNORECASE)
_MEMORY_UNITS = {"b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "tb": 1024 ** 4}


@dataclass(frozen=True)
class Assignment:
    """One place that sets a setting: its value as written, and where (for the evidence)."""

    value: str
    source: str


@dataclass
class Setting:
    """A setting's effective value: the last assignment Postgres reads, and those it overrides."""

    name: str
    assignments: list[Assignment] = field(default_factory=list)

    @property
    def winner(self) -> Assignment:
        return self.assignments[-1]

    @property
    def value(self) -> str:
        return self.winner.value

    def describe(self) -> str:
        """`max_connections=200 (compose.yml: postgres command -c, over conf/postgresql.conf:3 = 100)`."""
        overridden = [f"{a.source} = {a.value}" for a in reversed(self.assignments[:-1])]
        return f"{self.name}={self.value} ({self.winner.source}" + (
            f", over {'; '.join(overridden)})" if overridden else ")")


@dataclass
class PostgresSettings:
    """The effective settings of the postgres role's service, and what the reader could not follow."""

    service: str
    settings: dict[str, Setting]
    notes: list[str]

    def integer(self, name: str) -> int:
        setting = self.settings[name]
        value = setting.value.strip()
        if not re.fullmatch(r"[+-]?\d+", value):
            raise StackError(f"{setting.winner.source}: {name} {value!r} is not an integer")
        return int(value)

    def blocks(self, name: str) -> int:
        """A memory setting in 8 kB pages (Postgres' unit for shared_buffers; a bare number is pages)."""
        setting = self.settings[name]
        match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", setting.value)
        if not match or (match.group(2) and match.group(2).lower() not in _MEMORY_UNITS):
            raise StackError(f"{setting.winner.source}: {name} {setting.value!r} is not a memory size")
        number, unit = int(match.group(1)), match.group(2).lower()
        return number if not unit else number * _MEMORY_UNITS[unit] // 8192

    def describe(self) -> str:
        return "; ".join(setting.describe() for setting in self.settings.values())


def postgres_settings(stack) -> PostgresSettings:
    """The effective settings (SETTINGS) of the postgres role's service, from every source it reads."""
    return stack.needs("postgres settings", lambda: _read(stack))


def _read(stack) -> PostgresSettings:
    svc = stack.roles.service("postgres")
    compose_file = stack.rel(stack.compose.files[0])
    cfg = stack.profile["pool"]
    defaults = {"max_connections": str(cfg["default_max_connections"]),
                "superuser_reserved_connections": str(cfg["default_reserved_connections"]), **BUILTIN}
    settings = {name: Setting(name, [Assignment(defaults[name], "Postgres default")]) for name in SETTINGS}
    notes: list[str] = []
    argv = server_arguments([*svc.entrypoint, *svc.command])
    command_line = command_settings(argv, f"{compose_file}: {svc.name} command")
    given = {name: assignments[-1].value for name, assignments in command_line.items()}
    data_dir = given.get("data_directory") or data_dir_argument(argv) or svc.environment.get("PGDATA") or OFFICIAL_DATA_DIR
    config_file = given.get("config_file") or str(PurePosixPath(data_dir) / "postgresql.conf")
    files = ConfigFiles(stack, svc, notes)
    for name, value, source in files.read(config_file):
        if name in settings:
            settings[name].assignments.append(Assignment(value, source))
    auto = [*init_script_settings(stack, svc, notes), *files.read(str(PurePosixPath(data_dir) / "postgresql.auto.conf"))]
    for name, value, source in auto:
        if name in settings:
            if value is None:  # ALTER SYSTEM RESET: back to what postgresql.conf says
                settings[name].assignments.append(Assignment(settings[name].assignments[0].value, source))
            else:
                settings[name].assignments.append(Assignment(value, source))
    for name, assignments in command_line.items():
        if name in settings:
            settings[name].assignments += assignments
    return PostgresSettings(svc.name, settings, notes)


def server_arguments(argv: list[str]) -> list[str]:
    """The arguments the postgres server gets: those after the `postgres`/`postmaster` program, or all
    of them when the command starts with an option (the official image prepends `postgres`); a
    shell command line (`sh -c "exec postgres ..."`) is split as the shell would split it."""
    for index, arg in enumerate(argv):
        if PurePosixPath(arg).name in ("postgres", "postmaster"):
            return argv[index + 1:]
    for arg in argv:
        if re.search(r"\b(postgres|postmaster)\b", arg) and " " in arg:
            try:
                words = shlex.split(arg)
            except ValueError:
                continue
            found = server_arguments(words)
            if found:
                return found
    return argv if argv and argv[0].startswith("-") else []


def command_settings(argv: list[str], where: str) -> dict[str, list[Assignment]]:
    """Settings on a postgres command line, in order: `-c name=value`, `-cname=value`, `--name=value`,
    `-N n`, `-B n` (and `-N60`); other options' arguments are skipped, not read as settings."""
    found: dict[str, list[Assignment]] = {}
    args = iter(argv)
    for arg in args:
        if arg.startswith("--") and "=" in arg:
            name, _, value = arg[2:].partition("=")
            flag = "--"
        elif len(arg) >= 2 and arg[0] == "-" and arg[1] in ARGUMENT_FLAGS:
            flag, value = arg[:2], arg[2:] or next(args, "")
            if flag == "-c":
                name, sep, value = value.partition("=")
                if not sep:
                    continue
            elif arg[1] in SHORT_FLAGS:
                name = SHORT_FLAGS[arg[1]]
            else:
                continue
        else:
            continue
        name = name.strip().replace("-", "_").lower()
        found.setdefault(name, []).append(Assignment(value.strip(), f"{where} {flag}"))
    return found


def data_dir_argument(argv: list[str]) -> str | None:
    """The data directory given with `-D dir` (the last one)."""
    found = None
    for index, arg in enumerate(argv):
        if arg == "-D" and index + 1 < len(argv):
            found = argv[index + 1]
        elif arg.startswith("-D") and len(arg) > 2:
            found = arg[2:]
    return found


class ConfigFiles:
    """postgresql.conf-format files of one container, read through its bind mounts into the stack dir."""

    def __init__(self, stack, svc, notes: list[str]):
        self.stack, self.svc, self.notes = stack, svc, notes

    def host_file(self, container_path: str) -> Path | None:
        host = self.svc.host_path_for(container_path)
        if host is None:
            return None
        if not self.stack.inside(host):
            raise StackError(f"service {self.svc.name}: {container_path} is mounted from {host}, outside the stack dir")
        return host

    def read(self, container_path: str, depth: int = 0, required: bool = False):
        """(name, value, source) of every assignment in the file and the files it includes, in order."""
        if depth > MAX_INCLUDE_DEPTH:
            raise StackError(f"service {self.svc.name}: {container_path}: includes nested deeper than {MAX_INCLUDE_DEPTH}")
        host = self.host_file(container_path)
        if host is None or not host.exists():
            if required:  # Postgres does not start without an `include`d file
                raise StackError(f"service {self.svc.name}: included file {container_path} is not in the stack's files")
            if host is None and depth == 0:
                self.notes.append(f"{container_path} is not mounted from the stack (initdb's defaults)")
            return
        name = self.stack.rel(host)
        for number, line in enumerate(read_stack_text(host, name, CONFIG_CAP).splitlines(), 1):
            match = _CONF_LINE.match(line)
            if not match or match.group(2) is None:
                continue
            key, value = match.group(1).lower(), unquote(match.group(2))
            if key in ("include", "include_if_exists"):
                yield from self.read(self.resolve(container_path, value), depth + 1, required=key == "include")
            elif key == "include_dir":
                yield from self.read_dir(self.resolve(container_path, value), depth + 1)
            else:
                yield key, value, f"{name}:{number}"

    def read_dir(self, container_dir: str, depth: int):
        """An include_dir: its `*.conf` files (not hidden ones) in name order, as Postgres reads them."""
        host = self.host_file(container_dir)
        if host is None or not host.is_dir():
            raise StackError(f"service {self.svc.name}: include_dir {container_dir} is not in the stack's files")
        for entry in list_dir(host, f"service {self.svc.name}: include_dir {container_dir}"):
            if entry.name.endswith(".conf") and not entry.name.startswith("."):
                yield from self.read(str(PurePosixPath(container_dir) / entry.name), depth, required=True)

    @staticmethod
    def resolve(including: str, target: str) -> str:
        return target if target.startswith("/") else str(PurePosixPath(including).parent / target)


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'").replace("\\'", "'")
    return value


def init_script_settings(stack, svc, notes: list[str]):
    """`ALTER SYSTEM SET/RESET` in the SQL and shell scripts the official image runs once, at initdb time,
    from /docker-entrypoint-initdb.d: they write postgresql.auto.conf in the data directory."""
    host = svc.host_path_for(INITDB_DIR)
    if host is None or not (svc.image or "").split("/")[-1].startswith("postgres") or svc.build_context:
        return
    scripts = list_dir(host, f"service {svc.name}: {INITDB_DIR}") if host.is_dir() else [host]
    for script in scripts:
        if script.suffix not in (".sql", ".sh") or not stack.inside(script) or not script.is_file():
            continue
        text = read_stack_text(script, stack.rel(script), CONFIG_CAP)
        for match in _ALTER_SYSTEM.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            source = f"{stack.rel(script)}:{line} ALTER SYSTEM"
            if match.group(3):
                yield match.group(3).lower(), None, source
            else:
                yield match.group(1).lower(), unquote(match.group(2)), source


def client_overrides(stack) -> list[str]:
    """Services whose PGOPTIONS sets a postmaster setting: the server refuses every such connection."""
    found = []
    for name, svc in stack.compose.services.items():
        options = svc.environment.get("PGOPTIONS") or ""
        try:
            words = shlex.split(options)
        except ValueError:
            words = options.split()
        for setting in command_settings(words, "PGOPTIONS"):
            if setting in POSTMASTER_ONLY:
                found.append(f"service {name}: PGOPTIONS sets {setting}, which only a server restart can change "
                             "(every connection it opens is refused)")
    return found
