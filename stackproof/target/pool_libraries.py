"""Applications whose database pool the suite knows: where they read it, and what they take when it is not set.

A stack that runs such an application (LiteLLM's proxy, say) does not write its pool in our vocabulary
(`database.postgres.pool` with size, overflow, timeout and pre-ping): the application reads its own keys and
falls back to its own defaults. Judging its config file by our keys would report "not set" for a pool that
is set, or pass a mapping the application never reads. So the pool of a service that runs a known
application is read in that application's keys, a key it leaves out takes the application's default (named
in the check's result), and a setting the application has no notion of (an overflow, a pre-ping) is not
applicable.

Which application a service runs is read from the compose model (its image and the flag that names its
config file), not from the stack's profile: the stack cannot lower its own bar by claiming one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class PoolLibrary:
    """An application with a database pool of its own: its config file's flag, the mapping its pool keys are
    in, each setting's key, the value it takes for one left out, and why it has none of some settings."""

    name: str
    keys: dict[str, str]  # setting (size, timeout) -> its key in its config mapping, or its URL query parameter
    defaults: dict[str, object]  # setting -> the value it takes when its key is not set
    image: re.Pattern | None = None  # the images that run it (an application with a config file)
    config_flag: str = ""  # the command-line flag that names its config file
    config_key: str = ""  # the mapping of the config file its pool keys are in
    lacks: dict[str, str] = field(default_factory=dict)  # setting -> why the application has no such setting
    no_breaker: str = ""  # why its config can hold no breaker for the database ("": it can)
    source: str = ""  # where its keys and defaults are written down

    def default_text(self, setting: str) -> str:
        """`LiteLLM's default 10` for a setting left out."""
        return f"{self.name}'s default {self.defaults[setting]!r}"


LITELLM = PoolLibrary(
    name="LiteLLM",
    image=re.compile(r"(^|/)litellm(-database|-non_root)?(:|@|$)"),
    config_flag="--config",
    config_key="general_settings",
    keys={"size": "database_connection_pool_limit", "timeout": "database_connection_pool_timeout"},
    defaults={"size": 10, "timeout": 60},
    lacks={"max_overflow": "LiteLLM's Prisma client keeps one pool of database_connection_pool_limit "
                           "connections, with no overflow above it",
           "pre_ping": "LiteLLM's Prisma client has no pre-ping setting"},
    no_breaker="LiteLLM has no circuit breaker for its database (its router's allowed_fails and cooldown_time "
               "guard model deployments)",
    source="litellm/proxy/proxy_cli.py (LiteLLMDatabaseConnectionPool), 1.80 to 1.110",
)
POOL_LIBRARIES = (LITELLM,)

# Client libraries that read their pool from the query of the database URL. Told apart by the size parameter,
# which only they read; a URL without it leaves the pool at a default that depends on the host's CPUs, so such a
# URL is not taken for one of them (the suite says the pool is not set anywhere it reads).
PGX = PoolLibrary(
    name="pgx",
    keys={"size": "pool_max_conns"},
    defaults={"pre_ping": True},
    lacks={"max_overflow": "pgx's pool (pgxpool) keeps at most pool_max_conns connections, with no overflow above it",
           "timeout": "pgx's pool waits for a connection as long as the request's context allows: no pool timeout "
                      "to set"},
    source="jackc/pgx v5 pgxpool.ParseConfig (pool_max_conns; a connection idle over a second is pinged before use)",
)
PRISMA = PoolLibrary(
    name="Prisma",
    keys={"size": "connection_limit", "timeout": "pool_timeout"},
    defaults={"timeout": 10},
    lacks={"max_overflow": "Prisma's pool keeps at most connection_limit connections, with no overflow above it",
           "pre_ping": "Prisma's pool has no pre-ping setting"},
    source="Prisma's connection URL reference (connection_limit, pool_timeout default 10 s)",
)
URL_POOL_LIBRARIES = (PGX, PRISMA)
POSTGRES_URL = re.compile(r"^postgres(?:ql)?(?:\+\w+)?://", re.I)


@dataclass(frozen=True)
class UrlPool:
    """A pool a service sets in the query of its database URL: the library that reads it, the variable that
    holds the URL, and the query's parameters (never the URL itself: it may hold a password)."""

    library: PoolLibrary
    service: str
    variable: str
    params: dict[str, str]

    def value(self, setting: str) -> tuple[str, object, str]:
        """(the parameter's name, its value, the default's text when the URL leaves it out)."""
        key = self.library.keys.get(setting, "")
        if key in self.params:
            return key, self.params[key], ""
        default = self.library.defaults.get(setting)
        return key or setting, default, self.library.default_text(setting) if default is not None else ""


def url_pool_of(svc) -> UrlPool | None:
    """The pool a service sets in a Postgres URL of its environment (pgx's pool_max_conns, Prisma's
    connection_limit), None when no such URL names one."""
    for variable, value in sorted(svc.environment.items()):
        if not value or not POSTGRES_URL.match(value):
            continue
        params = {key: values[-1] for key, values in parse_qs(urlsplit(value).query).items()}
        for library in URL_POOL_LIBRARIES:
            if library.keys["size"] in params:
                return UrlPool(library, svc.name, variable, params)
    return None


def config_argument(command: list[str], flag: str) -> str | None:
    """The value of `flag` in a command line (`--config PATH` or `--config=PATH`), None without it."""
    for index, word in enumerate(command):
        if word == flag and index + 1 < len(command):
            return command[index + 1]
        if word.startswith(flag + "="):
            return word[len(flag) + 1:]
    return None


def pool_library_of(svc) -> tuple[PoolLibrary, Path] | None:
    """The known application a compose service runs, and the host file of the config it names on its command
    line (a bind mount): None when the service runs none, names no config, or its config is not bind-mounted."""
    image = (svc.image or "").lower()
    for library in POOL_LIBRARIES:
        if library.image is None or not library.image.search(image):
            continue
        container_path = config_argument([*svc.entrypoint, *svc.command], library.config_flag)
        host = svc.host_path_for(container_path) if container_path and container_path.startswith("/") else None
        if host is not None:
            return library, host
    return None


def library_reading(stack, path: Path) -> PoolLibrary | None:
    """The known application that reads the config file `path` as its own (a service runs it with `path`
    bind-mounted where its config flag points): its keys and defaults are that file's pool. None: the
    profile's pool keys apply."""
    def find() -> PoolLibrary | None:
        wanted = path.resolve()
        for svc in stack.compose.services.values():
            found = pool_library_of(svc)
            if found is not None and found[1].resolve() == wanted:
                return found[0]
        return None
    return stack.needs(f"pool library of {path}", find)
