"""The config file an API service reads its database settings from.

Shared by the connection-pool control (the pool section) and the circuit-breaker control
(the breaker section of the same file).
"""

from __future__ import annotations

from pathlib import Path

from stackproof.errors import StackError
from stackproof.io.yamlio import load_yaml


def pool_config_of(stack, svc) -> tuple[Path | None, str]:
    """The pool config a service reads, and how it was found: a file its environment points at
    (through its bind mounts) that holds the pool section, else a bind mount of paths.pool_config
    (when the profile names one: a pool set only in the environment has none)."""
    key = stack.profile["pool"]["config_key"].split(".")
    for var, value in sorted(svc.environment.items()):
        if not value or not value.startswith("/"):
            continue
        host = svc.host_path_for(value)
        if host is not None and stack.inside(host) and host.is_file() and host.suffix in (".yml", ".yaml") \
                and holds(host, key):  # a bind mount of an outside dir is never read in the stack's name
            return host, f"{var}={value}"
    if not stack.profile["paths"]["pool_config"]:
        return None, ""
    configured = stack.path("pool_config")
    for mount in svc.volumes:
        if mount.type == "bind" and (str(configured) == mount.source
                                     or str(configured).startswith(mount.source.rstrip("/") + "/")):
            return configured, f"mounted at {mount.target}"
    return None, ""


def holds(path: Path, key: list[str]) -> bool:
    """Whether a YAML file has a mapping at the key's parts (an unreadable file has none)."""
    try:
        node = load_yaml(path, path.name)
    except StackError:
        return False
    for part in key:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, dict)
