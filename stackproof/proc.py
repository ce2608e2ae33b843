"""Every subprocess the suite starts goes through `run`: bounded in time, no stdin."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Sequence

from .errors import StackError


def run(
    cmd: Sequence[str] | str,
    *,
    timeout: float,
    where: str,
    shell: bool = False,
    **kwargs,
) -> subprocess.CompletedProcess:
    """Run `cmd` and return its CompletedProcess (output as bytes).

    On timeout the whole process group is killed (a script's children too) and a
    one-line StackError naming `where` is raised.
    """
    try:
        proc = subprocess.Popen(
            cmd,
            shell=shell,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            **kwargs,
        )
    except OSError as exc:  # not found, not executable, bad interpreter
        raise StackError(f"{where}: cannot run ({exc.strerror})") from None
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise StackError(f"{where}: did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise StackError(f"{where}: cannot run ({exc.strerror})") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
