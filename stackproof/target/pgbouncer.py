"""PgBouncer between the services and Postgres: how many clients it takes and how many server connections it opens.

A service whose database host is a PgBouncer service holds no Postgres connection of its own: its pool holds
client connections to PgBouncer, which accepts at most `max_client_conn` of them and opens at most
`default_pool_size` (plus `reserve_pool_size` under pressure) server connections per database and user, all of
them capped by `max_db_connections` when it is set. Summing the pools behind it against Postgres'
`max_connections` would fail a correct stack (and pass one whose bouncer opens more than Postgres allows), so
the Postgres budget counts PgBouncer's server pool instead, and the pools behind it must fit `max_client_conn`.

The settings are read as PgBouncer reads them: its ini file (the file its command line names, else the image's
usual place, through a bind mount), else the environment the common images turn into that file (edoburu's
`DEFAULT_POOL_SIZE`, bitnami's `PGBOUNCER_DEFAULT_POOL_SIZE`), else PgBouncer's own defaults. Which service is a
PgBouncer is read from the compose model (image or program), never from the stack's profile.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from stackproof.errors import StackError
from stackproof.io.files import read_stack_text

# pgbouncer.ini's [pgbouncer] settings the budget needs, with PgBouncer's defaults (its config reference)
DEFAULTS = {"max_client_conn": 100, "default_pool_size": 20, "reserve_pool_size": 0, "max_db_connections": 0}
INI_PLACES = ("/etc/pgbouncer/pgbouncer.ini", "/opt/bitnami/pgbouncer/conf/pgbouncer.ini")
MAX_INI_BYTES = 1024 * 1024
MAX_DIGITS = 9  # more is no number of connections (and int() refuses strings past 4,300 digits)


@dataclass(frozen=True)
class Bouncer:
    """A PgBouncer service: its settings, where each came from, and the database entries it pools."""

    service: str
    settings: dict[str, int]
    sources: dict[str, str]  # setting -> "pgbouncer/pgbouncer.ini", "environment DEFAULT_POOL_SIZE", "PgBouncer's default"
    databases: int  # entries of [databases] (at least one): each database/user pair gets a pool of its own
    replicas: int = 1  # its containers: each opens its own server pools

    @property
    def server_connections(self) -> int:
        """The most Postgres connections its containers open: each pool at its size and reserve, capped by
        max_db_connections (counted once per [databases] entry: one user per database)."""
        settings = self.settings
        opened = (settings["default_pool_size"] + settings["reserve_pool_size"]) * self.databases
        cap = settings["max_db_connections"] * self.databases
        return (min(opened, cap) if cap else opened) * self.replicas

    def describe(self) -> str:
        settings = self.settings
        shown = f"default_pool_size {settings['default_pool_size']} + reserve_pool_size {settings['reserve_pool_size']}"
        if self.databases != 1:
            shown = f"{self.databases} databases × ({shown})"
        if settings["max_db_connections"]:
            shown += f", max_db_connections {settings['max_db_connections']}"
        replicas = f"{self.replicas} × " if self.replicas != 1 else ""
        return f"{self.service} {replicas}{self.server_connections // self.replicas} ({shown})"

    def source_of(self, setting: str) -> str:
        return f"{setting} {self.settings[setting]} from {self.sources[setting]}"


def is_bouncer(svc) -> bool:
    """A PgBouncer service: its image's name (the last part of its repository, before a tag or digest) speaks of
    pgbouncer, or its program is pgbouncer."""
    repository = re.split(r"[@:]", (svc.image or "").rsplit("/", 1)[-1], maxsplit=1)[0]
    program = [*svc.entrypoint, *svc.command][:1]
    return "pgbouncer" in repository.lower() or any(Path(word).name == "pgbouncer" for word in program)


def bouncer_of(stack, svc) -> Bouncer:
    """The settings a PgBouncer service runs with."""
    ini = _ini_file(stack, svc)
    settings, sources, databases = {}, {}, 1
    parsed = None
    if ini is not None:
        parsed = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parsed.read_string(read_stack_text(ini, stack.rel(ini), MAX_INI_BYTES), stack.rel(ini))
        except configparser.Error as exc:
            raise StackError(f"{stack.rel(ini)}: not a PgBouncer ini file ({type(exc).__name__})") from None
        databases = max(1, len([name for name in parsed.options("databases") if name != "*"])
                        if parsed.has_section("databases") else 1)
    for setting, default in DEFAULTS.items():
        if parsed is not None and parsed.has_option("pgbouncer", setting):
            value, source = parsed.get("pgbouncer", setting), stack.rel(ini)
        elif (variable := next((v for v in (setting.upper(), f"PGBOUNCER_{setting.upper()}")
                                if svc.environment.get(v)), None)) is not None:
            value, source = svc.environment[variable], f"{stack.rel(stack.environment_source(svc.name, variable))} "\
                                                         f"({svc.name} environment {variable})"
        else:
            value, source = str(default), "PgBouncer's default"
        if not value.strip().isdigit() or len(value.strip()) > MAX_DIGITS:
            raise StackError(f"{source}: {setting} = {value[:40]!r} is not a number of connections")
        settings[setting], sources[setting] = int(value), source
    return Bouncer(svc.name, settings, sources, databases, svc.replicas)


def _ini_file(stack, svc) -> Path | None:
    """The ini file PgBouncer reads, on the host: the .ini its command line names, else the image's usual
    place, when a bind mount inside the stack dir brings it in (else its settings come from the environment)."""
    named = [word for word in [*svc.entrypoint, *svc.command] if word.endswith(".ini") and word.startswith("/")]
    for place in [*named, *INI_PLACES]:
        host = svc.host_path_for(place)
        if host is not None and stack.inside(host) and host.is_file():
            return host
    return None


def clients_of(svc, bouncer: str) -> bool:
    """Whether a service's database host is the PgBouncer service: a variable set to its name, a URL whose host
    it is, or a libpq `host=` in a connection string."""
    for value in svc.environment.values():
        if not value:
            continue
        if value == bouncer or re.search(rf"(^|\s)host={re.escape(bouncer)}(\s|$)", value):
            return True
        if "://" in value:
            try:
                if urlsplit(value).hostname == bouncer:
                    return True
            except ValueError:
                continue
    return False


def bouncers(stack) -> dict[str, Bouncer]:
    """The stack's PgBouncer services and their settings, by name."""
    return stack.needs("PgBouncer services", lambda: {
        name: bouncer_of(stack, svc) for name, svc in stack.compose.services.items() if is_bouncer(svc)})


def bouncer_in_front(stack, service: str) -> str | None:
    """The PgBouncer service a service connects through, None when it connects to Postgres directly."""
    svc = stack.compose.services[service]
    return next((name for name in bouncers(stack) if name != service and clients_of(svc, name)), None)
