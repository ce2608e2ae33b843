"""How the stack's own files are reached: a testinfra host on the local disk.

Static checks take a testinfra `Host` and ask it about files (`host.file(path).mode`) and
commands (`host.run(...)`). This backend adds what testinfra lacks for a stack on this disk:
- a timeout on every command, so nothing can hang a run;
- file facts read with `os.stat` (`LocalFile`), not one shell per fact. testinfra's local File
  asks `sh -c 'stat -Lc %a …'` for each property; a static run asked 33 of them, some 3 ms of CPU
  each, which the self-tests' few hundred runs turned into half a minute.

Containers are not reached through testinfra (one exec per fact): live checks use the file probe
(stackproof/engine/probe.py), one exec per container.
"""

from __future__ import annotations

import datetime as dt
import os
import stat

import testinfra.host
from testinfra.backend.base import CommandResult
from testinfra.backend.local import LocalBackend

from stackproof.io import proc


class LocalFile:
    """One path's facts with the meaning testinfra's GNU File module gives them: `exists`, `is_file` and
    `is_directory` follow symlinks (`test -e/-f/-d`), `mode`, `uid` and `mtime` are the target's
    (`stat -L`), `is_symlink` is the path itself (`test -L`), `linked_to` the fully resolved path
    (`realpath`). A fact of a path that is not there raises FileNotFoundError, as testinfra's raise."""

    def __init__(self, path: str):
        self.path = path

    @property
    def exists(self) -> bool:
        return os.path.exists(self.path)

    @property
    def is_file(self) -> bool:
        return os.path.isfile(self.path)

    @property
    def is_directory(self) -> bool:
        return os.path.isdir(self.path)

    @property
    def is_symlink(self) -> bool:
        return os.path.islink(self.path)

    @property
    def linked_to(self) -> str:
        return os.path.realpath(self.path)

    @property
    def mode(self) -> int:
        return stat.S_IMODE(os.stat(self.path).st_mode)

    @property
    def uid(self) -> int:
        return os.stat(self.path).st_uid

    @property
    def mtime(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(os.stat(self.path).st_mtime)


class BoundedLocalBackend(LocalBackend):
    """testinfra's local backend with a timeout on every command."""

    timeout: float = 20.0

    def run_local(self, command: str, *args: str) -> CommandResult:
        cmd = self.encode(self.quote(command, *args))
        done = proc.run(cmd, shell=True, timeout=self.timeout, where="local")
        return self.result(done.returncode, cmd, done.stdout, done.stderr)


class LocalHost(testinfra.host.Host):
    """A testinfra host whose `file()` reads the local disk directly (`LocalFile`)."""

    def file(self, path: str) -> LocalFile:
        return LocalFile(path)


def local_host(timeout: float) -> LocalHost:
    backend = BoundedLocalBackend()
    backend.timeout = timeout
    return LocalHost(backend)
