"""How the stack's own files are reached: a testinfra host on the local disk.

Static checks take a testinfra `Host` and ask it about files and commands
(`host.file(path).mode`, `host.run(...)`). This backend only adds what testinfra lacks: a
timeout on every command, so nothing can hang a run. Containers are not reached through
testinfra (one exec per fact): live checks use the file probe (stackproof/probe.py), one exec
per container.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import testinfra.host
from testinfra.backend.base import CommandResult
from testinfra.backend.local import LocalBackend

from stackproof.io import proc


class _BoundedRun:
    """Mixin: run local commands with a timeout."""

    timeout: float = 20.0
    where: str = "local"

    if TYPE_CHECKING:  # what the backend it is mixed into provides
        def quote(self, command: str, *args: str) -> str: ...
        def encode(self, command: str) -> bytes: ...
        def result(self, *args: Any) -> CommandResult: ...

    def run_local(self, command: str, *args: str) -> CommandResult:
        command = self.quote(command, *args)
        cmd = self.encode(command)
        done = proc.run(cmd, shell=True, timeout=self.timeout, where=self.where)
        return self.result(done.returncode, cmd, done.stdout, done.stderr)


class BoundedLocalBackend(_BoundedRun, LocalBackend):
    pass


def local_host(timeout: float) -> testinfra.host.Host:
    backend = BoundedLocalBackend()
    backend.timeout, backend.where = timeout, "local"
    return testinfra.host.Host(backend)
