"""How the stack is reached: local disk or a running container.

Checks take a testinfra `Host` and ask it about files and commands
(`host.file(path).mode`, `host.run(...)`), so the same check runs against the
stack's files (static) and inside its containers (live). These backends only add
what testinfra lacks: a timeout on every command, so nothing can hang a run.
"""

from __future__ import annotations

import testinfra.host
from testinfra.backend.base import CommandResult
from testinfra.backend.docker import DockerBackend
from testinfra.backend.local import LocalBackend

from . import proc


class _BoundedRun:
    """Mixin: run local commands (including `docker exec`) with a timeout."""

    timeout: float = 20.0
    where: str = "local"

    def run_local(self, command: str, *args: str) -> CommandResult:
        command = self.quote(command, *args)
        cmd = self.encode(command)
        done = proc.run(cmd, shell=True, timeout=self.timeout, where=self.where)
        return self.result(done.returncode, cmd, done.stdout, done.stderr)


class BoundedLocalBackend(_BoundedRun, LocalBackend):
    pass


class BoundedDockerBackend(_BoundedRun, DockerBackend):
    pass


def local_host(timeout: float) -> testinfra.host.Host:
    backend = BoundedLocalBackend()
    backend.timeout, backend.where = timeout, "local"
    return testinfra.host.Host(backend)


def container_host(container: str, timeout: float) -> testinfra.host.Host:
    backend = BoundedDockerBackend(container)
    backend.timeout, backend.where = timeout, f"container {container}"
    return testinfra.host.Host(backend)
