"""Where the run ran: the engine it targets and the versions of the tools whose verdicts it relies on.

An on-call reading a NO-GO first asks "was it the stack or the machine?": the report names the
engine (`DOCKER_HOST` without its credentials, or the local socket, and the engine's version when
a live check reached it) and the versions of promtool, openssl, docker-compose, Python, pytest
and stackproof. Each tool is asked once, through `proc.run` (bounded in time and output), all
at the same time, so the whole look-up costs about the slowest tool's start-up; a tool that is
missing or does not answer is named as such, never waited for.
"""

from __future__ import annotations

import os
import platform
import shutil
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

from stackproof import __version__
from stackproof.io import proc
from stackproof.target.compose import compose_binary

TOOL_TIMEOUT = 5.0  # seconds per tool: a version query answers in milliseconds
NOT_INSTALLED = "not installed"
UNPARSABLE = "DOCKER_HOST (unparsable, not shown)"
SOCKET_SCHEMES = ("unix", "npipe")  # a local socket: its path is shown; of a remote engine only host and port


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:160] if lines else ""


def _tool_commands() -> dict[str, list[str] | None]:
    """Each external tool the checks use, and the command that prints its version (None: not installed)."""
    compose = compose_binary()
    found = {name: shutil.which(name) for name in ("promtool", "openssl", "amtool", "bwrap")}
    return {
        "promtool": [found["promtool"], "--version"] if found["promtool"] else None,
        "amtool": [found["amtool"], "--version"] if found["amtool"] else None,
        "openssl": [found["openssl"], "version"] if found["openssl"] else None,
        "docker-compose": [*compose, "version", "--short"] if compose else None,
        "bwrap": [found["bwrap"], "--version"] if found["bwrap"] else None,
    }


_ASKED: dict[tuple, str] = {}  # (command, the binary's identity) -> its version line


def _version(command: list[str] | None) -> str:
    """The version line `command` prints. Asked once per binary and process (its path, inode, size and
    mtime: a reinstalled tool is asked again): a process that runs the suite many times, as the
    self-tests' in-process runs do, would otherwise start five tools per run for the same answer."""
    if command is None:
        return NOT_INSTALLED
    try:
        found = os.stat(command[0])
        key: tuple = (tuple(command), found.st_ino, found.st_size, found.st_mtime_ns)
    except OSError:
        key = ()
    if key and key in _ASKED:
        return _ASKED[key]
    answer = _ask(command)
    if key and not answer.startswith("unknown"):
        _ASKED[key] = answer
    return answer


def _ask(command: list[str]) -> str:
    try:
        result = proc.run(command, timeout=TOOL_TIMEOUT, where=os.path.basename(command[0]))
    except Exception as exc:  # a tool that hangs or cannot start: named, not fatal
        return f"unknown ({type(exc).__name__})"
    output = result.stdout.decode("utf-8", "replace") or result.stderr.decode("utf-8", "replace")
    return _first_line(output) or "unknown"


def tool_versions() -> dict[str, str]:
    """Every tool's version line; the external ones asked concurrently."""
    commands = _tool_commands()
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        external = dict(zip(commands, pool.map(_version, commands.values()), strict=True))
    return {"python": platform.python_version(), "pytest": pytest.__version__, "stackproof": __version__, **external}


def engine_host(docker_host: str | None = None) -> str:
    """The engine the live checks target, as the report shows it: `DOCKER_HOST` reduced to scheme, host
    and port (an ssh:// or tcp:// URL may carry a user, a password, a token in its query), a local
    socket's path, or "local" for the default socket."""
    value = (docker_host if docker_host is not None else os.environ.get("DOCKER_HOST", "")).strip()
    if not value:
        return "local (default socket)"
    try:
        parts = urllib.parse.urlsplit(value)
        host = parts.hostname or ""
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return UNPARSABLE
    if parts.scheme in SOCKET_SCHEMES and not parts.netloc:
        return f"{parts.scheme}://{parts.path}"
    if not parts.scheme or not host:
        return UNPARSABLE
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number: the host alone
        port = ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}"
