"""Control 3: connection pool.

The pool the API services read must be large enough for the agents (size, overflow, a
timeout, pre_ping), every service that uses it must really get that pool (its
compose environment can override it), and all those pools together must fit in
Postgres' max_connections minus the superuser-reserved ones. A stack without a pool
config file may set the pool only in each service's environment (pool.*_env), or in
the query of its database URL (pgx's pool_max_conns, Prisma's connection_limit): the
same settings are then judged there, in that library's names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stackproof.compare import at_least
from stackproof.evidence import Location
from stackproof.errors import NotDeclared, StackError, not_applicable
from stackproof.resources.load import run_load
from stackproof.target.postgres import POSTMASTER_ONLY, SETTINGS, PostgresSettings, client_overrides, postgres_settings
from stackproof.resources.pool_code import CodePool, code_pool_of, effective
from stackproof.target.pgbouncer import Bouncer, bouncer_in_front, bouncers
from stackproof.target.pool_libraries import UrlPool, library_reading, url_pool_of
from stackproof.target.service_config import pool_config_of
from stackproof.io.yamlio import load_yaml

pytestmark = pytest.mark.control("connection_pool")


# --- what is checked (plain functions, reused by the live checks) -----------------


def pool_section(stack, path: Path) -> dict:
    """The pool mapping of a config file: the known application's (pool_libraries) when one reads the file,
    else the profile's pool.config_key (e.g. database.postgres.pool)."""
    return stack.needs(f"pool config {path}", lambda: _pool_section(stack, path))


def _pool_section(stack, path: Path) -> dict:
    node = load_yaml(path, stack.rel(path))
    library = library_reading(stack, path)
    key = pool_key(stack, path)
    for part in key.split("."):
        if library is not None and isinstance(node, dict) and node.get(part) is None:
            return {}  # none of its pool keys set: the application's defaults
        if not isinstance(node, dict) or part not in node:
            raise StackError(f"{stack.rel(path)}: no {key} mapping (missing {part!r})")
        node = node[part]
    if not isinstance(node, dict):
        raise StackError(f"{stack.rel(path)}: {key} is not a mapping")
    return node


def pool_key(stack, path: Path) -> str:
    """The key path of a config file's pool mapping."""
    library = library_reading(stack, path)
    return library.config_key if library is not None else stack.profile["pool"]["config_key"]


@dataclass(frozen=True)
class PoolSetting:
    """One pool setting as a config file gives it."""

    name: str  # how the file names it: its key, or `cap - size` for an overflow under a cap
    present: bool  # the file sets it, or the application reading it has a default for it
    value: object
    default: str = ""  # the value is the application's default for a key left out ("LiteLLM's default 10")
    lacks: str = ""  # the application has no such setting: why

    @property
    def shown(self) -> str:
        if self.default:
            return f"not set: {self.default}"
        return repr(self.value) if self.present else "not set"


def config_setting(stack, path: Path, section: dict, setting: str) -> PoolSetting:
    """A setting of the pool mapping of the config file `path`. Read by a known application: in its keys, its
    default for a key left out. Else under the key pool.settings gives it; with a cap (pool.settings.max_connections,
    an asyncpg-style `max_connections` beside `min_connections`) the overflow is the cap less the size."""
    library = library_reading(stack, path)
    if library is not None:
        if setting in library.lacks:
            return PoolSetting(setting, True, 0 if setting == "max_overflow" else None, lacks=library.lacks[setting])
        key = library.keys[setting]
        if section.get(key) is not None:
            return PoolSetting(key, True, section[key])
        return PoolSetting(key, True, library.defaults[setting], default=library.default_text(setting))
    names = stack.profile["pool"]["settings"]
    cap, size = names["max_connections"], names["size"]
    if setting == "max_overflow" and cap:
        name = f"{cap} - {size}"
        if cap not in section or size not in section:
            return PoolSetting(name, False, None)
        return PoolSetting(name, True, as_int(section[cap], cap) - as_int(section[size], size))
    return PoolSetting(names[setting], names[setting] in section, section.get(names[setting]))


def size_and_overflow(stack, path: Path) -> tuple[int, int]:
    """The size and overflow of a config file's pool mapping, integers (else a StackError naming the key)."""
    section = pool_section(stack, path)
    where = f"{stack.rel(path)}: {pool_key(stack, path)}"
    found = []
    for setting in ("size", "max_overflow"):
        pool_setting = config_setting(stack, path, section, setting)
        found.append(as_int(pool_setting.value, f"{where}.{pool_setting.name}"))
    return found[0], found[1]


def as_int(value, where: str) -> int:
    """An integer setting: YAML int or decimal string; anything else is a stack error."""
    if isinstance(value, bool):
        raise StackError(f"{where}: {value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value.strip()) <= MAX_DIGITS:
        return int(value)
    raise StackError(f"{where}: {value[:40] + '…' if isinstance(value, str) and len(value) > 40 else value!r} "
                     "is not an integer")


MAX_DIGITS = 18  # a setting of more digits is no pool size (int() refuses strings past 4,300 digits)


ENV_KEYS = {"size": "size_env", "max_overflow": "overflow_env", "timeout": "timeout_env", "pre_ping": "pre_ping_env"}
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def set_in_environment(stack) -> bool:
    """Whether the pool is set only in the services' environment: the profile names no pool config file and
    a service sets the pool's size or overflow variable."""
    cfg = stack.profile["pool"]
    return not stack.profile["paths"]["pool_config"] and any(
        svc.environment.get(cfg["size_env"]) or svc.environment.get(cfg["overflow_env"])
        for svc in stack.compose.services.values())


def url_pools(stack) -> dict[str, UrlPool | None]:
    """Each API service's pool as the query of its database URL sets it, when the stack sets its pool in no
    config file and no pool variable and some API service's URL names one; empty otherwise."""
    if stack.profile["paths"]["pool_config"] or set_in_environment(stack):
        return {}
    found = {svc.name: url_pool_of(svc) for svc in stack.roles.api_services()}
    return found if any(found.values()) else {}


def code_pools(stack) -> dict[str, CodePool | None]:
    """Each API service's pool as its code builds it, when the stack sets its pool in no config file, no pool
    variable and no database URL, and some API service's code builds one; empty otherwise."""
    if stack.profile["paths"]["pool_config"] or set_in_environment(stack) or url_pools(stack):
        return {}
    found = {svc.name: code_pool_of(stack, svc) for svc in stack.roles.api_services()}
    return found if any(found.values()) else {}


def code_default(stack, name: str, variable: str, setting: str) -> tuple[object, str, str] | None:
    """What the service's code takes for a pool setting whose variable its environment leaves unset: (the value,
    where the code says it, how: the code's default for the variable; else, when the code reads no variable
    for the setting, the value it sets itself or the library's default). None: the code does not say."""
    pool = code_pool_of(stack, stack.compose.services[name])
    if pool is None:
        return None
    given = next((found for found in pool.settings.values() if found.variable == variable), None)
    if given is None and setting in pool.settings and not pool.settings[setting].variable:
        given = pool.settings[setting]
        how = "the library's default" if given.library_default else f"the code sets {given.keyword}"
    else:
        how = "the code's default"
    if given is None or given.value is None:
        return None
    return given.value, pool.where, how


CODE_PLACE = re.compile(r".+:\d+")  # file:line, where the code says a default


def code_location(place: str) -> Location:
    file, _, line = place.rpartition(":")
    return Location(file, int(line))


def code_values(stack, name: str, pool: CodePool) -> dict[str, tuple[object, str]]:
    """What one service gets of each setting its code gives: (value, how it is shown), its environment's variable
    winning over the code's default; the overflow of a pool with a cap is the cap less the size."""
    environment = stack.compose.services[name].environment
    values = {setting: effective(given, environment, boolean=setting == "pre_ping")
              for setting, given in pool.settings.items()}
    if "cap" in values:
        (size, size_shown), (cap, cap_shown) = values["size"], values.pop("cap")
        both = isinstance(size, int) and isinstance(cap, int) and not isinstance(size, bool)
        values["max_overflow"] = (cap - size if both else None, f"{cap_shown} less {size_shown}")
    return values


def set_in(stack, service: str, *variables: str) -> str:
    """The file that sets a service's pool variables (relative): an `env_file` of it, or a compose file."""
    return ", ".join(dict.fromkeys(stack.rel(stack.environment_source(service, var)) for var in variables))


def by_file(found: list[tuple[str, str]], lead: str = "") -> str:
    """(file, finding) pairs as one line, the findings grouped under the file that holds them (after `lead`)."""
    grouped: dict[str, list[str]] = {}
    for file, finding in found:
        grouped.setdefault(file, []).append(finding)
    return "; ".join(f"{file}: {lead}{'; '.join(findings)}" for file, findings in grouped.items())


def env_setting(setting: str, text: str):
    """A pool setting as an environment variable gives it: a boolean word for pre_ping, a number for the
    others; a value that is neither stays text (and fails the check's predicate)."""
    word = text.strip().lower()
    if setting == "pre_ping":
        return True if word in TRUE_WORDS else False if word in FALSE_WORDS else text
    try:
        return int(word)
    except ValueError:
        try:
            return float(word)
        except ValueError:
            return text


@dataclass
class ServicePool:
    """The pool one service really gets: config file values, then its environment's overrides."""

    service: str
    size: int
    overflow: int
    config: str  # config file, relative to the stack
    overrides: dict[str, str]  # env var -> value, for the evidence
    replicas: int = 1  # containers of the service, each with its own pool
    no_overflow: str = ""  # the application it runs has no overflow: why (its overflow is 0, never judged)
    source: str = ""  # where a pool set outside a config file and a variable comes from ("DATABASE_URL pool_max_conns")

    def too_small(self, cfg: dict) -> bool:
        """Below the profile's minimums: size, overflow (when the pool has one), size + overflow."""
        return self.size < cfg["min_size"] or self.max < cfg["min_total"] or (
            not self.no_overflow and self.overflow < cfg["min_overflow"])

    @property
    def max(self) -> int:
        return self.size + self.overflow

    @property
    def demand(self) -> str:
        """The service's share of the Postgres connections, as the evidence writes it."""
        return f"{self.service} {self.replicas} × {self.max}" if self.replicas != 1 else f"{self.service} {self.max}"

    def describe(self) -> str:
        via = f" ({', '.join(f'{k}={v}' for k, v in self.overrides.items())})" if self.overrides else \
            f" ({self.source})" if self.source else ""
        overflow = "no overflow" if self.no_overflow else f"overflow {self.overflow}"
        return f"{self.service}: size {self.size}, {overflow}, max {self.max}{via}"


def connections_needed(pools: list[ServicePool]) -> int:
    """Every container of every pooled service holds its own pool: at worst all of them are full."""
    return sum(pool.max * pool.replicas for pool in pools)


@dataclass
class PostgresDemand:
    """Who opens Postgres connections when every pool is full: the services connected directly, and the
    PgBouncer services in front of the others (each opens its own server pool, whatever the pools behind it)."""

    direct: list[ServicePool]
    behind: dict[str, list[ServicePool]]  # PgBouncer service -> the pools of the services connecting through it
    bouncers: dict[str, Bouncer]

    @property
    def total(self) -> int:
        return connections_needed(self.direct) + sum(self.bouncers[name].server_connections for name in self.behind)

    @property
    def shown(self) -> str:
        return " + ".join([pool.demand for pool in self.direct] + [self.bouncers[name].describe() for name in self.behind])


def postgres_demand(stack, pools: list[ServicePool]) -> PostgresDemand:
    direct, behind = [], {}
    for pool in pools:
        bouncer = bouncer_in_front(stack, pool.service)
        if bouncer is None:
            direct.append(pool)
        else:
            behind.setdefault(bouncer, []).append(pool)
    return PostgresDemand(direct, behind, bouncers(stack))


def service_pools(stack) -> list[ServicePool]:
    """Every compose service that reads a pool config (see pool_config_of) or sets a pool
    env var, with its effective pool."""
    cfg = stack.profile["pool"]
    compose = stack.compose
    compose_file = stack.rel(compose.files[0])
    pools = []
    for name, svc in compose.services.items():
        mounted, _ = pool_config_of(stack, svc)
        library = library_reading(stack, mounted) if mounted is not None else None
        env = {var: svc.environment.get(var) for var in (cfg["size_env"], cfg["overflow_env"])}
        # a known application reads its own keys, never the profile's variables
        overrides = {var: value for var, value in env.items() if value not in (None, "") and library is None}
        url = url_pool_of(svc) if mounted is None and not overrides and not stack.profile["paths"]["pool_config"] \
            else None
        if url is not None:
            key, value, _ = url.value("size")
            pools.append(ServicePool(name, as_int(value, f"{set_in(stack, name, url.variable)}: {name}: {url.variable} {key}"),
                                     0, set_in(stack, name, url.variable), {}, svc.replicas,
                                     url.library.lacks["max_overflow"], f"{url.variable} {key}={value}"))
            continue
        code = code_pool_of(stack, svc) if mounted is None and not overrides and url is None \
            and not stack.profile["paths"]["pool_config"] else None
        if code is not None:
            values = code_values(stack, name, code)
            found = {setting: values[setting][0] for setting in ("size", "max_overflow")}
            unknown = [f"{setting} ({values[setting][1]})" for setting, value in found.items() if not isinstance(value, int)]
            if unknown:
                raise NotDeclared(f"{code.where}: the pool {code.call} builds for {name} is not known without running "
                                  f"the code: {', '.join(unknown)}")
            pools.append(ServicePool(name, int(found["size"]), int(found["max_overflow"]), code.file, {}, svc.replicas,
                                     source=f"{code.call} at {code.where}"))
            continue
        if mounted is None and not overrides:
            continue
        if mounted is None and not stack.profile["paths"]["pool_config"]:  # set only in the environment
            # a variable the service leaves unset takes the default of the code that reads it
            settings = {cfg["size_env"]: "size", cfg["overflow_env"]: "max_overflow"}
            defaults = {var: code_default(stack, name, var, settings[var]) for var, value in env.items()
                        if value in (None, "")}
            unset = [var for var, found in defaults.items() if found is None or not isinstance(found[0], int)]
            if unset:
                raise StackError(f"{set_in(stack, name, *overrides)}: {name}: sets {', '.join(overrides)} but not "
                                 f"{', '.join(unset)}: "
                                 "the most connections its pool opens is not known")
            size, overflow = (int(defaults[var][0]) if defaults.get(var) else 0  # type: ignore[index,call-overload]
                              for var in (cfg["size_env"], cfg["overflow_env"]))
            config = compose_file  # the variables set are read below
        else:
            config_path = Path(mounted) if mounted is not None else stack.path("pool_config")
            size, overflow = size_and_overflow(stack, config_path)
            config = stack.rel(config_path)
        if cfg["size_env"] in overrides:
            size = as_int(overrides[cfg["size_env"]], f"{set_in(stack, name, cfg['size_env'])}: {name}: {cfg['size_env']}")
        if cfg["overflow_env"] in overrides:
            overflow = as_int(overrides[cfg["overflow_env"]],
                              f"{set_in(stack, name, cfg['overflow_env'])}: {name}: {cfg['overflow_env']}")
        pools.append(ServicePool(name, size, overflow, config, overrides, svc.replicas,
                                 library.lacks.get("max_overflow", "") if library is not None else ""))
    if not pools:
        raise StackError(f"{compose_file}: no service reads the pool config {stack.rel(stack.path('pool_config'))} "
                         "(through a bind mount, an environment variable naming a mounted file, or a COPY of its "
                         "Dockerfile)")
    return pools


def api_pools(stack) -> list[ServicePool]:
    """The pools of the services that serve the agents (roles.api_services): those the minimums are for. A
    service of another kind (a worker with a small pool of its own) counts in the Postgres budget only."""
    api = {svc.name for svc in stack.roles.api_services()}
    return [pool for pool in service_pools(stack) if pool.service in api]


def postgres_limits(stack) -> tuple[int, int, PostgresSettings]:
    """(max_connections, superuser_reserved_connections, the effective settings with their sources)."""
    found = postgres_settings(stack)
    return found.integer("max_connections"), found.integer("superuser_reserved_connections"), found


# --- static checks ------------------------------------------------------------------

# (setting, expected, predicate on the config value)
CONFIG_RULES = [
    ("size", "integer >= {min_size}", lambda v, c: not isinstance(v, bool) and isinstance(v, int) and v >= c["min_size"]),
    (
        "max_overflow",
        "integer >= {min_overflow}",
        lambda v, c: not isinstance(v, bool) and isinstance(v, int) and v >= c["min_overflow"],
    ),
    ("timeout", "a positive number of seconds", lambda v, c: not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0),
    ("pre_ping", "true", lambda v, c: v is True),
]


@pytest.mark.static
@pytest.mark.parametrize("setting, expected, ok", CONFIG_RULES, ids=[rule[0] for rule in CONFIG_RULES])
@pytest.mark.remediation("high",
                         "Set the pool where the services read it (their config file, environment or database URL): a "
                         "size of at least 20, an overflow of at least 30 where the pool has one, a timeout, and "
                         "pre-ping.")
def test_pool_config_setting(stack, evidence, setting, expected, ok):
    """The pool gives each API service enough connections, waits a bounded time and tests connections."""
    cfg = stack.profile["pool"]
    if set_in_environment(stack):
        environment_setting(stack, evidence, setting, expected.format(**cfg), ok)
        return
    if urls := url_pools(stack):
        url_setting(stack, evidence, urls, setting, expected.format(**cfg), ok)
        return
    if in_code := code_pools(stack):
        code_setting(stack, evidence, in_code, setting, expected.format(**cfg), ok)
        return
    path = stack.path("pool_config")
    found = config_setting(stack, path, pool_section(stack, path), setting)
    if found.lacks:
        not_applicable(f"{stack.rel(path)}: {found.lacks}")
    mapping = pool_key(stack, path)
    key = f"{mapping}.{found.name}"
    expected = expected.format(**cfg)
    evidence.record(test=f"{key} in {stack.rel(path)}", expected=expected, result=found.shown)
    evidence.locate(stack.locate(path, *mapping.split("."), found.name.split(" - ")[0]))
    assert found.present, f"{stack.rel(path)}: {key} is not set (expected {expected})"
    assert ok(found.value, cfg), f"{stack.rel(path)}: {key} is {found.shown} (expected {expected})"


def environment_setting(stack, evidence, setting: str, expected: str, ok) -> None:
    """A pool set only in the environment: each API service's variable for the setting (pool.*_env)."""
    cfg = stack.profile["pool"]
    var, compose = cfg[ENV_KEYS[setting]], stack.rel(stack.compose.files[0])
    values = {svc.name: svc.environment.get(var) for svc in stack.roles.api_services()}
    defaults = {name: code_default(stack, name, var, setting) for name, value in values.items() if value in (None, "")}
    evidence.record(test=f"{var} in the environment of {', '.join(values)} ({compose}; no pool config file)",
                    expected=expected,
                    result="; ".join(f"{name}: {value}" if value not in (None, "") else
                                     f"{name}: not set: {defaults[name][2]} {defaults[name][0]!r} ({defaults[name][1]})"
                                     if defaults.get(name) else f"{name}: not set" for name, value in values.items()))
    unset = [name for name, found in defaults.items() if found is None]
    wrong = [(set_in(stack, name, var), f"{name}: {var}={value}") for name, value in values.items()
             if value not in (None, "") and not ok(env_setting(setting, value), cfg)]
    wrong += [(where, f"{name}: {var} not set: {how} {default!r}")
              for name, (default, where, how) in ((n, d) for n, d in defaults.items() if d is not None)
              if not ok(default, cfg)]
    evidence.locate(*(stack.locate_compose("services", name, "environment") for name in unset),
                    *(code_location(file) if CODE_PLACE.fullmatch(file) else stack.locate(stack.root / file)
                      for file, _ in wrong))
    assert not unset, f"{compose}: {var} is not set for {', '.join(unset)} (expected {expected})"
    assert not wrong, f"{by_file(wrong)} (expected {expected})"


def url_setting(stack, evidence, urls: dict[str, UrlPool | None], setting: str, expected: str, ok) -> None:
    """A pool set in the services' database URLs: each API service's query parameter for the setting, in its
    library's name (its default when the URL leaves it out); not applicable where the library has no such
    setting. The URL itself is never shown: only the parameter."""
    judged = {name: pool for name, pool in urls.items() if pool is None or setting not in pool.library.lacks}
    if not judged:
        not_applicable("; ".join(f"{set_in(stack, name, pool.variable)}: {name}: {pool.library.lacks[setting]}"
                                 for name, pool in urls.items() if pool is not None))
    shown, wrong = {}, []
    for name, pool in judged.items():
        if pool is None:
            shown[name] = "its database URL sets no pool parameter"
            wrong.append((stack.rel(stack.compose.files[0]), f"{name}: its database URL sets no pool parameter"))
            continue
        key, value, default = pool.value(setting)
        shown[name] = f"{pool.variable} {key}=" + (f"not set: {default}" if default else str(value))
        if value is None or not ok(value if isinstance(value, bool) else env_setting(setting, str(value)), stack.profile["pool"]):
            wrong.append((set_in(stack, name, pool.variable), f"{name}: {shown[name]}"))
    evidence.record(test=f"the pool parameters of the database URL of {', '.join(judged)} (no pool config file)",
                    expected=expected, result="; ".join(f"{name}: {text}" for name, text in shown.items()))
    evidence.locate(*(stack.locate_compose("services", name, "environment") for name in judged))
    assert not wrong, f"{by_file(wrong)} (expected {expected})"


def code_setting(stack, evidence, pools: dict[str, CodePool | None], setting: str, expected: str, ok) -> None:
    """A pool built in the services' code: each API service's argument for the setting, as its environment's
    variable or the code's default gives it; not applicable where the library has no such setting; not proven
    where the code computes it otherwise."""
    judged = {name: pool for name, pool in pools.items() if pool is None or setting not in pool.library.lacks}
    if not judged:
        not_applicable("; ".join(f"{pool.where}: {name}: {pool.library.lacks[setting]}"
                                 for name, pool in pools.items() if pool is not None))
    shown, wrong, unknown = {}, [], []
    for name, pool in judged.items():
        if pool is None:
            shown[name] = "its code builds no pool the suite reads"
            unknown.append(f"{name}: its code builds no pool the suite reads (SQLAlchemy, asyncpg, psycopg_pool)")
            continue
        value, how = code_values(stack, name, pool)[setting]
        shown[name] = f"{pool.call} {how}"
        if value is None or (setting != "pre_ping" and isinstance(value, str)):
            unknown.append(f"{pool.where}: {name}: {pool.call} {how}")
        elif not ok(value, stack.profile["pool"]):
            wrong.append((pool.where, f"{name}: {pool.call} {how}"))
    evidence.record(test=f"the pool each of {', '.join(judged)} builds in its code (no pool config file)",
                    expected=expected, result="; ".join(f"{name}: {text}" for name, text in shown.items()))
    evidence.locate(*(Location(pool.file, pool.line) for pool in judged.values() if pool is not None))
    assert not wrong, f"{by_file(wrong)} (expected {expected})"
    if unknown:
        raise NotDeclared("; ".join(unknown))


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Raise `size` + `max_overflow` to at least the profile's `pool.min_total` (50 by default).")
def test_pool_config_total(stack, evidence):
    """size + max_overflow is the most connections one service opens under load."""
    cfg = stack.profile["pool"]
    if set_in_environment(stack):
        pools = api_pools(stack)
        evidence.record(test=f"{cfg['size_env']} + {cfg['overflow_env']} of each API service "
                             f"({stack.rel(stack.compose.files[0])}; no pool config file)",
                        expected=f">= {cfg['min_total']}",
                        result="; ".join(f"{p.service}: {p.size} + {p.overflow} = {p.max}" for p in pools))
        small = [(set_in(stack, p.service, cfg["size_env"], cfg["overflow_env"]),
                  f"{p.service}: {cfg['size_env']} + {cfg['overflow_env']} = {p.max}") for p in pools if p.max < cfg["min_total"]]
        assert not small, f"{by_file(small)} (expected >= {cfg['min_total']})"
        return
    if url_pools(stack) or code_pools(stack):
        pools = api_pools(stack)
        evidence.record(test="the most connections the pool of each API service opens, as its database URL or "
                             "its code sets it (no pool config file)",
                        expected=f">= {cfg['min_total']}", result="; ".join(p.describe() for p in pools))
        small = [(p.config, p.describe()) for p in pools if p.max < cfg["min_total"]]
        assert not small, f"{by_file(small)} (expected >= {cfg['min_total']})"
        return
    path = stack.path("pool_config")
    mapping = pool_key(stack, path)
    where = f"{stack.rel(path)}: {mapping}"
    evidence.locate(stack.locate(path, *mapping.split(".")))
    size, overflow = size_and_overflow(stack, path)
    total, result = pool_total(stack, path, size, overflow)
    evidence.expect(f"{mapping}.{total} in {stack.rel(path)}", f"{where}: {total} =", size + overflow,
                    at_least(cfg["min_total"]), result=result)


def pool_total(stack, path: Path, size: int, overflow: int) -> tuple[str, str]:
    """(how a config file's pool names the most connections it opens, that number as the evidence shows it)."""
    library = library_reading(stack, path)
    if library is not None:
        found = config_setting(stack, path, pool_section(stack, path), "size")
        shown = f"{size} ({found.default})" if found.default else str(size)
        return found.name, shown + (" (no overflow)" if "max_overflow" in library.lacks else f" + {overflow} = {size + overflow}")
    names = stack.profile["pool"]["settings"]
    return names["max_connections"] or f"{names['size']} + {names['max_overflow']}", f"{size} + {overflow} = {size + overflow}"


def config_source(stack) -> str:
    """How the API services get their pool from the config file, as the evidence says it: in a known
    application's keys (which no pool variable overrides), else with the pool variables they set overriding it."""
    path = stack.path("pool_config")
    library = library_reading(stack, path)
    if library is not None:
        return f"reading {stack.rel(path)} in {library.name}'s keys"
    cfg = stack.profile["pool"]
    variables = [var for var in (cfg["size_env"], cfg["overflow_env"])
                 if any(svc.environment.get(var) for svc in stack.roles.api_services())]
    return f"reading {stack.rel(path)}" + (f", {'/'.join(variables)} overriding it" if variables else
                                           ", no pool variable overriding it")


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Remove the pool override from the service's environment (or raise it): the pool the "
                         "service gets must meet the same minimums.")
def test_effective_pool_per_service(stack, evidence):
    """What counts is the pool each service gets: a pool variable in its environment overrides its config file."""
    cfg = stack.profile["pool"]
    pools = api_pools(stack)
    source = "set only in the environment" if set_in_environment(stack) else "set in the database URLs" \
        if url_pools(stack) else "built in their code" if code_pools(stack) else config_source(stack)
    overflow = f"overflow >= {cfg['min_overflow']}" + (" where the pool has one" if any(p.no_overflow for p in pools) else "")
    expected = f"size >= {cfg['min_size']}, {overflow}, max >= {cfg['min_total']}"
    evidence.record(test=f"effective pool of each API service, {source} ({stack.rel(stack.compose.files[0])})",
                    expected=f"each: {expected}", result="; ".join(pool.describe() for pool in pools))
    wrong = [(set_in(stack, pool.service, *pool.overrides) if pool.overrides else pool.config, pool.describe())
             for pool in pools if pool.too_small(cfg)]
    evidence.locate(*(stack.locate_compose("services", pool.service, "environment") for pool in pools
                      if pool.too_small(cfg)))
    assert not wrong, f"{by_file(wrong, 'pool too small for ')} (expected {expected})"


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Raise Postgres' `max_connections` (where it is set last: command line, "
                         "postgresql.auto.conf, postgresql.conf) or lower the pools or replicas, so every pool fits "
                         "beside the reserved connections; behind PgBouncer, raise its `max_client_conn` or lower "
                         "the pools behind it, and size its `default_pool_size` for Postgres.")
def test_pools_fit_postgres(stack, evidence):
    """If every pool fills up at once, Postgres must still accept them all (and keep its reserved slots). A
    service behind PgBouncer holds client connections to it: PgBouncer must accept them all (max_client_conn),
    and what counts against Postgres is PgBouncer's own server pool."""
    demand = postgres_demand(stack, service_pools(stack))
    max_conn, reserved, effective = postgres_limits(stack)
    available = max_conn - reserved
    service = stack.roles.name("postgres")
    evidence.record(
        test=f"sum of the max pools of the services' declared replicas vs {service} max_connections - superuser_reserved_connections"
             + (" (PgBouncer's server pool for the services behind it; their pools vs its max_client_conn)"
                if demand.behind else ""),
        expected=f"< {max_conn} - {reserved} = {available}",
        result=f"{demand.shown} = {demand.total}",
    )
    evidence.note(effective.describe())
    for note in effective.notes:
        evidence.note(note)
    for name, pools in demand.behind.items():
        bouncer = demand.bouncers[name]
        evidence.note(f"behind {name}: {' + '.join(pool.demand for pool in pools)} = {connections_needed(pools)} "
                      f"client connections; {bouncer.source_of('max_client_conn')}")
    sources = ", ".join(f"{name} from {effective.settings[name].winner.source}"
                        for name in ("max_connections", "superuser_reserved_connections"))
    compose = stack.rel(stack.compose.files[0])
    too_many_clients = [f"{' + '.join(pool.demand for pool in pools)} = {connections_needed(pools)} clients of {name}, "
                        f"which takes {demand.bouncers[name].source_of('max_client_conn')}"
                        for name, pools in demand.behind.items()
                        if connections_needed(pools) > demand.bouncers[name].settings["max_client_conn"]]
    assert not too_many_clients, f"{compose}: the pools behind PgBouncer need {'; '.join(too_many_clients)}"
    assert demand.total < available, (
        f"{compose}: the pools need up to {demand.total} connections "
        f"({demand.shown}) but {service} allows "
        f"max_connections {max_conn} - {reserved} reserved = {available} ({sources})"
    )


@pytest.mark.static
@pytest.mark.remediation("medium",
                         "Remove server-start settings (max_connections, shared_buffers, ...) from the service's "
                         "PGOPTIONS; set them on the Postgres server.")
def test_clients_do_not_set_server_settings(stack, evidence):
    """PGOPTIONS is sent by a client at every connection: a server-start setting in it (max_connections, ...)
    cannot change the server and makes Postgres refuse every connection of that service."""
    wrong = client_overrides(stack)
    evidence.record(
        test=f"PGOPTIONS of every service in {stack.rel(stack.compose.files[0])}",
        expected="no server-start setting (" + ", ".join(POSTMASTER_ONLY) + ")",
        result="; ".join(wrong) or "none",
    )
    assert not wrong, f"{stack.rel(stack.compose.files[0])}: {'; '.join(wrong)}"


# --- live checks ----------------------------------------------------------------------


def gauges(text: str, where: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text page."""
    try:
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}
    except Exception as exc:  # the parser raises ValueError and friends
        raise StackError(f"{where}: not Prometheus text format ({type(exc).__name__})") from None


def pool_gauges(live) -> dict[str, float]:
    """The unlabelled gauges of the metrics_service role's /metrics page."""
    service = live.http.metrics_service
    response = live.http.metrics_page(service)
    where = f"service {service} {live.stack.profile['live']['metrics_url']}"
    if response.status != 200:
        raise StackError(f"{where}: HTTP {response.status}")
    return gauges(response.body.decode(errors="replace"), where)


def postgres_settings_live(live, *names: str) -> list[int]:
    """The integer settings Postgres runs with (pg_settings.setting: memory in its unit, 8 kB pages for
    shared_buffers), asked in one psql call in the postgres container as the compose user, one per line;
    the password stays in the container."""
    svc = live.stack.roles.service("postgres")
    env = svc.environment
    query = "SELECT " + ", ".join(f"(SELECT setting FROM pg_settings WHERE name = '{name}')" for name in names)
    script = 'PGPASSWORD="$(cat "$1" 2>/dev/null)" exec psql -h 127.0.0.1 -U "$2" -d "$3" -XAt -F "\n" -c "$4"'
    code, out = live.containers.exec(svc.name, ["sh", "-c", script, "sh", env.get("POSTGRES_PASSWORD_FILE") or "/dev/null",
                                     env.get("POSTGRES_USER") or "postgres", env.get("POSTGRES_DB") or "postgres", query])
    values = out.decode(errors="replace").strip().splitlines()
    if code != 0 or len(values) != len(names) or not all(v.strip().isdigit() for v in values):
        raise StackError(f"service {svc.name}: SHOW {', '.join(names)} failed (exit {code}): {values[-1:] or ''}")
    return [int(v) for v in values]


@pytest.mark.live
@pytest.mark.remediation("high",
                         "Rebuild or recreate the API service so that it runs with the pool its config file declares "
                         "(a stale image or an environment override wins otherwise).")
def test_live_pool_matches_config(stack, live, evidence):
    """The running API service must use the pool its files give it (its config file, else its environment, database
    URL or code): a stale image, or a pool variable overriding its config file, would give it another one."""
    cfg = stack.profile["pool"]
    service = live.http.metrics_service
    declared = next((p for p in service_pools(stack) if p.service == service), None)
    if stack.profile["paths"]["pool_config"]:
        path = stack.path("pool_config")
        evidence.locate(stack.locate(path, *pool_key(stack, path).split(".")))
        configured, source = size_and_overflow(stack, path), stack.rel(path)
    elif declared is not None:  # set in its environment, its database URL or its code: what the service gets
        configured, source = (declared.size, declared.overflow), f"{declared.config}: {declared.describe()}"
    else:
        raise NotDeclared(f"{service} (roles.metrics_service) has no pool the suite reads in its files")
    found = pool_gauges(live)
    running = found.get(cfg["size_metric"]), found.get(cfg["overflow_metric"])
    shown = " / ".join("missing" if v is None else f"{v:g}" for v in running)
    evidence.record(
        test=f"{cfg['size_metric']} / {cfg['overflow_metric']} on {service} {stack.profile['live']['metrics_url']}",
        expected=f"{configured[0]} / {configured[1]} ({source}), size >= {cfg['min_size']}, "
        f"overflow >= {cfg['min_overflow']}",
        result=shown,
    )
    if declared and declared.overrides:
        evidence.note(f"compose environment of {service}: {declared.describe()}")
    assert running == configured, (
        f"service {service}: /metrics reports pool size / max_overflow {shown}, {source} configures "
        f"{configured[0]} / {configured[1]}" + (f" ({declared.describe()})" if declared and declared.overrides
                                                and stack.profile["paths"]["pool_config"] else "")
    )
    assert running[0] >= cfg["min_size"] and running[1] >= cfg["min_overflow"], (
        f"service {service}: pool size / max_overflow {shown} (expected >= {cfg['min_size']} / {cfg['min_overflow']})"
    )


@pytest.mark.live
@pytest.mark.remediation("high",
                         "Recreate Postgres so it runs with the settings its files declare; a difference names the "
                         "source that should have won.")
def test_live_postgres_max_connections(stack, live, evidence):
    """The pools must fit the limits Postgres really runs with, and those must be the ones its files and
    command line give (a source the static reader does not see, or a stale data directory, would differ)."""
    running = dict(zip(SETTINGS, postgres_settings_live(live, *SETTINGS), strict=True))
    max_conn, reserved = running["max_connections"], running["superuser_reserved_connections"]
    effective = postgres_limits(stack)[2]
    declared = {name: effective.integer(name) for name in SETTINGS[:2]}
    declared["shared_buffers"] = effective.blocks("shared_buffers")
    pools = [replace(pool, replicas=live.containers.replicas(pool.service)) for pool in service_pools(stack)]
    demand = postgres_demand(stack, pools)
    total = demand.total
    service = stack.roles.name("postgres")
    evidence.record(
        test=f"pg_settings {', '.join(SETTINGS)} (shared_buffers in 8 kB pages) in {service}; "
             "sum of the max pools of the services' running containers",
        expected=" / ".join(str(declared[name]) for name in SETTINGS) + f"; sum < {max_conn - reserved}",
        result=" / ".join(str(running[name]) for name in SETTINGS) + f"; {demand.shown} = {total}",
    )
    evidence.note(effective.describe())
    differ = [f"{name} {running[name]}, expected {declared[name]} from {effective.settings[name].winner.source}"
              for name in SETTINGS if running[name] != declared[name]]
    assert not differ, f"service {service}: runs with {'; '.join(differ)}"
    assert total < max_conn - reserved, (
        f"service {service}: the pools need up to {total} connections ({demand.shown}), "
        f"Postgres allows {max_conn - reserved}"
    )


@pytest.mark.live
@pytest.mark.remediation("high",
                         "Size the pool (and Postgres' `max_connections`) for the agents' peak concurrency, and "
                         "check the pool timeout: errors and timeouts under load mean requests queue or fail.")
def test_live_load_concurrent_clients(stack, live, evidence):
    """The agents' peak load (each client holding a pooled connection) must be served without errors or pool timeouts."""
    cfg, pool_cfg = stack.profile["live"], stack.profile["pool"]
    clients, endpoint = cfg["load_clients"], cfg["load_endpoint"]
    evidence.record(
        test=f"{clients} concurrent GET {endpoint} through {stack.roles.name('tls_terminator')} with the API key",
        expected=f"{clients} × HTTP 200, no pool timeout",
    )
    headers = {cfg["api_key_header"]: live.http.api_key()}

    def hold() -> tuple[str, float]:
        response = live.http.https(endpoint, headers)
        kind = str(response.status) + (" pool timeout" if b"pool timeout" in response.body else "")
        return kind, response.json().get("checked_out_after", 0) if response.status == 200 else 0

    result = run_load(clients, hold, live.timeout,
                      sample=lambda: pool_gauges(live).get(pool_cfg["checked_out_metric"], 0.0))
    outcome = result.describe()
    evidence.record(
        result=f"{outcome}; latency p50 {result.percentile(50):.3f}s, p95 {result.percentile(95):.3f}s; "
        f"peak checked-out connections {int(result.peak)}"
    )
    assert result.statuses == {"200": clients}, (
        f"service {stack.roles.name('tls_terminator')} {endpoint} under {clients} clients: {outcome}")
