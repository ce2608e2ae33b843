"""Control 3: connection pool.

The pool in config.yaml must be large enough for the agents (size, overflow, a
timeout, pre_ping), every service that uses it must really get that pool (its
compose environment can override it), and all those pools together must fit in
Postgres' max_connections minus the superuser-reserved ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from plugins.errors import StackError
from plugins.yamlio import load_yaml

pytestmark = pytest.mark.control("connection_pool")


# --- what is checked (plain functions, reused by the live checks) -----------------


def pool_section(stack, path: Path) -> dict:
    """The pool mapping (profile pool.config_key, e.g. database.postgres.pool) of a config file."""
    node = load_yaml(path, stack.rel(path))
    key = stack.profile["pool"]["config_key"]
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise StackError(f"{stack.rel(path)}: no {key} mapping (missing {part!r})")
        node = node[part]
    if not isinstance(node, dict):
        raise StackError(f"{stack.rel(path)}: {key} is not a mapping")
    return node


def as_int(value, where: str) -> int:
    """An integer setting: YAML int or decimal string; anything else is a stack error."""
    if isinstance(value, bool):
        raise StackError(f"{where}: {value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise StackError(f"{where}: {value!r} is not an integer")


@dataclass
class ServicePool:
    """The pool one service really gets: config file values, then its environment's overrides."""

    service: str
    size: int
    overflow: int
    config: str  # config file, relative to the stack
    overrides: dict[str, str]  # env var -> value, for the evidence

    @property
    def max(self) -> int:
        return self.size + self.overflow

    def describe(self) -> str:
        via = f" ({', '.join(f'{k}={v}' for k, v in self.overrides.items())})" if self.overrides else ""
        return f"{self.service}: size {self.size}, overflow {self.overflow}, max {self.max}{via}"


def service_pools(stack) -> list[ServicePool]:
    """Every compose service that mounts a pool config (profile pool.config_mount) or sets a pool
    env var, with its effective pool."""
    cfg = stack.profile["pool"]
    compose = stack.compose
    compose_file = stack.rel(compose.files[0])
    pools = []
    for name, svc in compose.services.items():
        mounted = svc.host_path_for(cfg["config_mount"])
        env = {var: svc.environment.get(var) for var in (cfg["size_env"], cfg["overflow_env"])}
        overrides = {var: value for var, value in env.items() if value not in (None, "")}
        if mounted is None and not overrides:
            continue
        config_path = Path(mounted) if mounted is not None else stack.path("pool_config")
        section = pool_section(stack, config_path)
        where = f"{stack.rel(config_path)}: {cfg['config_key']}"
        size = as_int(section.get("size"), f"{where}.size")
        overflow = as_int(section.get("max_overflow"), f"{where}.max_overflow")
        if cfg["size_env"] in overrides:
            size = as_int(overrides[cfg["size_env"]], f"{compose_file}: {name}: {cfg['size_env']}")
        if cfg["overflow_env"] in overrides:
            overflow = as_int(overrides[cfg["overflow_env"]], f"{compose_file}: {name}: {cfg['overflow_env']}")
        pools.append(ServicePool(name, size, overflow, stack.rel(config_path), overrides))
    if not pools:
        raise StackError(f"{compose_file}: no service mounts the pool config at {cfg['config_mount']}")
    return pools


def postgres_settings(command: list[str]) -> dict[str, str]:
    """Server settings given on the postgres command line (`-c name=value`, `-cname=value`, `--name=value`)."""
    settings = {}
    args = iter(command)
    for arg in args:
        if arg == "-c":
            arg = next(args, "")
        elif arg.startswith("-c"):
            arg = arg[2:]
        elif arg.startswith("--"):
            arg = arg[2:]
        else:
            continue
        name, sep, value = arg.partition("=")
        if sep:
            settings[name.strip().replace("-", "_").lower()] = value.strip()
    return settings


def postgres_limits(stack) -> tuple[int, int, str]:
    """(max_connections, superuser_reserved_connections, where they came from)."""
    cfg = stack.profile["pool"]
    compose = stack.compose
    compose_file = stack.rel(compose.files[0])
    service = compose.services.get(cfg["postgres_service"])
    if service is None:
        raise StackError(f"{compose_file}: no service {cfg['postgres_service']!r} (profile pool.postgres_service)")
    settings = postgres_settings(service.command)
    where = f"{compose_file}: {service.name} command"
    max_conn = as_int(settings.get("max_connections", cfg["default_max_connections"]), f"{where} max_connections")
    reserved = as_int(
        settings.get("superuser_reserved_connections", cfg["default_reserved_connections"]),
        f"{where} superuser_reserved_connections",
    )
    source = "command" if "max_connections" in settings else "Postgres default"
    return max_conn, reserved, source


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
def test_pool_config_setting(stack, evidence, setting, expected, ok):
    """The shared pool config gives each service enough connections, waits a bounded time and tests connections."""
    cfg = stack.profile["pool"]
    path = stack.path("pool_config")
    key = f"{cfg['config_key']}.{setting}"
    section = pool_section(stack, path)
    value = section.get(setting)
    expected = expected.format(**cfg)
    evidence.record(
        test=f"{key} in {stack.rel(path)}",
        expected=expected,
        result="not set" if setting not in section else repr(value),
    )
    assert setting in section, f"{stack.rel(path)}: {key} is not set (expected {expected})"
    assert ok(value, cfg), f"{stack.rel(path)}: {key} is {value!r} (expected {expected})"


@pytest.mark.static
def test_pool_config_total(stack, evidence):
    """size + max_overflow is the most connections one service opens under load."""
    cfg = stack.profile["pool"]
    path = stack.path("pool_config")
    section = pool_section(stack, path)
    where = f"{stack.rel(path)}: {cfg['config_key']}"
    size = as_int(section.get("size"), f"{where}.size")
    overflow = as_int(section.get("max_overflow"), f"{where}.max_overflow")
    evidence.record(
        test=f"{cfg['config_key']}.size + max_overflow in {stack.rel(path)}",
        expected=f">= {cfg['min_total']}",
        result=f"{size} + {overflow} = {size + overflow}",
    )
    assert size + overflow >= cfg["min_total"], (
        f"{where}: size + max_overflow = {size + overflow} (expected >= {cfg['min_total']})"
    )


@pytest.mark.static
def test_effective_pool_per_service(stack, evidence):
    """What counts is the pool each service gets: a DB_POOL_* variable in its environment overrides config.yaml."""
    cfg = stack.profile["pool"]
    pools = service_pools(stack)
    evidence.record(
        test=f"effective pool of each service mounting {cfg['config_mount']} ({cfg['size_env']}/{cfg['overflow_env']} "
        f"overrides from {stack.rel(stack.compose.files[0])})",
        expected=f"each: size >= {cfg['min_size']}, overflow >= {cfg['min_overflow']}, max >= {cfg['min_total']}",
        result="; ".join(pool.describe() for pool in pools),
    )
    wrong = [
        pool.describe()
        for pool in pools
        if pool.size < cfg["min_size"] or pool.overflow < cfg["min_overflow"] or pool.max < cfg["min_total"]
    ]
    assert not wrong, (
        f"{stack.rel(stack.compose.files[0])}: pool too small for {'; '.join(wrong)} "
        f"(expected size >= {cfg['min_size']}, overflow >= {cfg['min_overflow']}, max >= {cfg['min_total']})"
    )


@pytest.mark.static
def test_pools_fit_postgres(stack, evidence):
    """If every pool fills up at once, Postgres must still accept them all (and keep its reserved slots)."""
    pools = service_pools(stack)
    max_conn, reserved, source = postgres_limits(stack)
    available = max_conn - reserved
    total = sum(pool.max for pool in pools)
    service = stack.profile["pool"]["postgres_service"]
    evidence.record(
        test=f"sum of the services' max pools vs {service} max_connections - superuser_reserved_connections",
        expected=f"< {max_conn} - {reserved} = {available}",
        result=" + ".join(f"{pool.service} {pool.max}" for pool in pools) + f" = {total}",
    )
    evidence.note(f"max_connections={max_conn} ({source}), superuser_reserved_connections={reserved}")
    assert total < available, (
        f"{stack.rel(stack.compose.files[0])}: the pools need up to {total} connections but {service} allows "
        f"max_connections {max_conn} - {reserved} reserved = {available}"
    )
