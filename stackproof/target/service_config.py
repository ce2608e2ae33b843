"""The config file an API service reads its database settings from.

Shared by the connection-pool control (the pool section) and the circuit-breaker control
(the breaker section of the same file).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from stackproof.errors import StackError
from stackproof.io.files import read_stack_text
from stackproof.io.yamlio import load_yaml
from stackproof.target.dockerfile import copied_into_image
from stackproof.target.pool_libraries import POSTGRES_URL, URL_POOL_LIBRARIES, url_pool_of

POOL_VARIABLES = [  # (pool.*_env key, what the name of a variable setting it ends with)
    ("size_env", re.compile(r"POOL_?SIZE$")),
    ("overflow_env", re.compile(r"POOL_?(MAX_?)?OVERFLOW$")),
    ("timeout_env", re.compile(r"POOL_?TIMEOUT$")),
    ("pre_ping_env", re.compile(r"POOL_?PRE_?PING$")),
]
# an env file's line that names a variable: set, empty, or commented out (`# NAME=`, `# NAME` alone)
ENV_LINE = re.compile(r"^[ \t]*(?:#[ \t]*)?(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*(?:=(.*))?$", re.M)
MAX_ENV_FILE_BYTES = 1024 * 1024


def pool_config_of(stack, svc) -> tuple[Path | None, str]:
    """The pool config a service reads, and how it was found: a file its environment points at
    (through its bind mounts) that holds the pool section, else a bind mount of paths.pool_config, else
    paths.pool_config copied into its image by its Dockerfile (when the profile names one: a pool set only
    in the environment has none)."""
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
    copied = copied_into_image(stack, svc, configured)
    if copied is not None:
        return configured, f"copied into its image at {copied[0]} ({copied[1]})"
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


def is_pool_variable(name: str) -> bool:
    return any(pattern.search(name) for _, pattern in POOL_VARIABLES)


def pool_not_found(stack, looked: str) -> str:
    """Why no pool is known, said of the stack: the API services have no pool setting where the suite reads one
    (a config file they mount, the profile's pool variables in their environment); the pool variables their env
    files name only commented out or empty; and where their code is, whose defaults then apply. `looked` is where
    the suite looked, as the profile names it."""
    try:
        services = stack.roles.api_services()
    except StackError:  # the API services are not known: the other controls say why
        return f"no pool config file: looked for {looked}"
    cfg = stack.profile["pool"]
    names = ", ".join(svc.name for svc in services)
    said = [f"no pool setting for {names}: no config file they mount holds a pool mapping (pool.config_key), and their "
            "environment sets no pool variable (pool.size_env and pool.overflow_env, or a name ending in POOL_SIZE "
            "and POOL_OVERFLOW)"]
    unnamed = sorted({f"{svc.name}: {var}" for svc in services for var, value in svc.environment.items()
                      if value and is_pool_variable(var) and var not in (cfg["size_env"], cfg["overflow_env"])})
    if unnamed:
        said.append(f"pool variables set but not both of size and overflow: {', '.join(unnamed)}")
    urls = sorted(f"{svc.name}: {var}" for svc in services if url_pool_of(svc) is None
                  for var, value in svc.environment.items() if value and POSTGRES_URL.match(value))
    if urls:
        said.append(f"their database URLs name no pool parameter ({', '.join(urls)}; looked for "
                    f"{', '.join(library.keys['size'] for library in URL_POOL_LIBRARIES)})")
    unset: dict[str, set[str]] = {}
    for svc in services:
        for env_file in stack.env_files_of(svc.name):
            for var, value in ENV_LINE.findall(read_stack_text(env_file, stack.rel(env_file), MAX_ENV_FILE_BYTES)):
                if is_pool_variable(var) and not svc.environment.get(var) and not value.strip().strip("'\""):
                    unset.setdefault(stack.rel(env_file), set()).add(var)
    for file, variables in unset.items():
        said.append(f"{file} names {', '.join(sorted(variables))} only commented out or empty")
    said.append("so their pools are what their code sets by default (" +
                "; ".join(f"{svc.name}: {code_place(stack, svc)}" for svc in services) + ")")
    return "; ".join(said)


def code_place(stack, svc) -> str:
    """Where a service's code is, as a reason names it: its build context (inside the stack dir or not), or
    its image."""
    context = svc.build_context
    if context is not None:
        where = os.path.relpath(context, stack.root)
        return f"build context {where}" + ("" if stack.inside(context) else ", outside the stack dir")
    return f"image {svc.image}" if svc.image else "no image or build context"
