"""Every subprocess the suite starts goes through `run`: bounded in time, output, memory, CPU and
file size, and nothing it started outlives it.

Hand-written on top of `subprocess`, because `communicate()` waits for end-of-file on the
pipes: a child that escapes into its own session (`setsid sleep 600 &`) or a double fork
keeps them open forever, and a flood (`yes`) is buffered without limit. Here the pipes are
read with a selector, the output is capped while it is read, the drain after the main
process exits is short, and at the end the process group is killed, then every process
that still carries the run's marker in its environment (an escaped child keeps it, wherever
it went), then the main process is reaped.

The stack chooses the input of every program the suite runs (a 400-byte promtool rule test can
ask for 10^8 samples, an env file can be a 3 GB sparse file), so each child starts under
resource limits that it and its children inherit, set by util-linux `prlimit` before the
program is executed (a `preexec_fn` is not safe while other threads run, and the tool versions
are asked from threads). Soft and hard limits are equal, so the child cannot raise them, but
for CPU time, whose soft limit sends SIGXCPU (named) a second before the hard one kills.
"""

from __future__ import annotations

import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

from stackproof.errors import StackError

MAX_OUTPUT = 8 * 1024 * 1024  # bytes per stream
DRAIN_AFTER_EXIT = 1.0  # seconds left to children that still hold the pipes once the main process exited
RUN_MARKER = "STACKPROOF_RUN_MARKER"  # environment variable that marks every process of one run
POLL = 0.05
MIB = 1024 * 1024
# Every child's limits (prlimit options). The heap cap is RLIMIT_DATA, not the address space: a Go
# program (promtool, amtool, docker compose) reserves about 1 GiB of address space before it allocates
# anything, so only RLIMIT_DATA (brk and private writable mappings) bounds what it grows with its input.
# The address space still bounds shared mappings, which RLIMIT_DATA does not count.
LIMITS = {
    "--data": 256 * MIB,  # heap: promtool, amtool and compose need under 100 MiB on the largest stacks tried
    "--as": 2048 * MIB,  # everything mapped, shared memory included
    "--fsize": 64 * MIB,  # the largest file it may write
    "--core": 0,  # no core dump (promtool runs in the stack's dir)
}
# How a refused allocation or write shows in stderr, where the program survives to say it: a line Go's or
# Python's runtime starts with, or that ends with C's strerror (Python ignores SIGXFSZ and gets EFBIG)
OUT_OF_MEMORY_STARTS = (b"fatal error: out of memory", b"fatal error: runtime: out of memory", b"runtime: out of memory",
                        b"fatal error: runtime: cannot allocate memory",  # Go, when its runtime's own mmap is refused
                        b"MemoryError")
OUT_OF_MEMORY_ENDS = (b"Cannot allocate memory",)
FILE_TOO_LARGE_ENDS = (b"File too large",)
EXEC_FAILED = b"prlimit: failed to execute "  # how prlimit says the program could not be started (exit 126, 127)


def run(
    cmd: Sequence[str] | str | bytes,  # bytes: a shell command line (testinfra encodes them)
    *,
    timeout: float,
    where: str,
    shell: bool = False,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    input: bytes | None = None,
    max_output: int = MAX_OUTPUT,
) -> subprocess.CompletedProcess:
    """Run `cmd` and return its CompletedProcess (output as bytes); stdin is closed, or `input`.

    A run that does not finish within `timeout`, or writes more than `max_output` bytes to
    stdout or stderr, is killed with its whole tree and raises a one-line StackError naming `where`;
    so does one that a limit stopped (`LIMITS`, and `timeout` seconds of CPU time)."""
    argv = [*limits(timeout), *((["/bin/sh", "-c", cmd]) if shell else ([cmd] if isinstance(cmd, (str, bytes)) else cmd))]
    marker = secrets.token_hex(16)
    started = time.time()
    child_env = dict(os.environ if env is None else env)
    child_env[RUN_MARKER] = marker
    stdin_file = None
    if input is not None:
        stdin_file = tempfile.TemporaryFile()
        stdin_file.write(input)
        stdin_file.seek(0)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL if stdin_file is None else stdin_file,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, env=child_env, cwd=cwd,
        )
    except OSError as exc:  # prlimit itself missing (util-linux)
        raise StackError(f"{where}: cannot run ({exc.strerror})") from None
    finally:
        if stdin_file is not None:
            stdin_file.close()
    try:
        outcome, out_buffer, err_buffer = _collect(proc, time.monotonic() + timeout, max_output)
    finally:
        kill_tree(proc.pid, marker, started)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:  # both are pipes (PIPE)
                pipe.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # unkillable (D state): say so rather than hang
            raise StackError(f"{where}: process {proc.pid} did not die after SIGKILL") from None
    if outcome == "timeout":
        raise StackError(f"{where}: did not finish within {timeout:g}s")
    if outcome in ("stdout", "stderr"):
        raise StackError(f"{where}: wrote more than {max_output} bytes to {outcome}, stopped")
    out, err = bytes(out_buffer), bytes(err_buffer)
    if proc.returncode in (126, 127) and err.startswith(EXEC_FAILED):  # not found, not executable, bad interpreter
        raise StackError(f"{where}: cannot run ({err.splitlines()[0].rsplit(b': ', 1)[-1].decode(errors='replace')})")
    stopped_by = limit_reached(proc.returncode, err, cpu_seconds(timeout))
    if stopped_by:
        raise StackError(f"{where}: stopped at {stopped_by}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def cpu_seconds(timeout: float) -> int:
    """A child's CPU time limit: its wall-clock timeout, so one that spins on several threads ends as soon."""
    return max(1, math.ceil(timeout))


def limits(timeout: float) -> list[str]:
    """The prlimit command that starts a child under `LIMITS` and its CPU time limit (SIGXCPU at the
    limit, SIGKILL a second later). prlimit is found on the suite's PATH, not the child's: a child given
    a narrow PATH (the probe's tools only) is still started under its limits."""
    cpu = cpu_seconds(timeout)
    return [shutil.which("prlimit") or "prlimit", *(f"{option}={value}" for option, value in LIMITS.items()), f"--cpu={cpu}:{cpu + 1}", "--"]


def limit_reached(returncode: int, stderr: bytes, cpu: int) -> str:
    """Which limit stopped a child that failed, in words ('' when none did): the signal of the CPU time
    or file size limit, or the line its runtime printed on stderr when the heap cap refused an allocation."""
    # the head too: Go prints its fatal error first, then every goroutine's stack
    text = stderr if len(stderr) <= 131072 else stderr[:65536] + b"\n" + stderr[-65536:]
    lines = [line.strip() for line in text.splitlines()] if returncode > 0 else []
    # the soft limit's signal, or a runtime that catches it and says so ("SIGXCPU: ..."), or, for one that
    # ignores it (Go's runtime does), the kernel's SIGKILL at the hard limit a second later: a multi-threaded
    # child spends its CPU time faster than the clock, so this limit can come before the timeout
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL) or any(line.startswith(b"SIGXCPU") for line in lines):
        return f"its CPU time limit ({cpu} s)"
    if returncode == -signal.SIGXFSZ or any(line.endswith(FILE_TOO_LARGE_ENDS) for line in lines):
        return f"its file size limit ({LIMITS['--fsize'] // MIB} MiB)"
    if any(line.startswith(OUT_OF_MEMORY_STARTS) or line.endswith(OUT_OF_MEMORY_ENDS) for line in lines):
        return f"its memory limit ({LIMITS['--data'] // MIB} MiB of heap, {LIMITS['--as'] // MIB} MiB mapped)"
    return ""


def _collect(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[str, bytearray, bytearray]:
    """Read both pipes until end-of-file, the deadline, the cap, or shortly after the process exited.
    Returns (outcome: "done" | "timeout" | "stdout" | "stderr", stdout, stderr)."""
    assert proc.stdout is not None and proc.stderr is not None  # started with PIPE for both
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    buffers = {out_fd: ("stdout", bytearray()), err_fd: ("stderr", bytearray())}
    selector = selectors.DefaultSelector()
    for fd in buffers:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    exited_at = None
    outcome = "done"
    try:
        while selector.get_map():
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > DRAIN_AFTER_EXIT:
                break  # what still holds the pipes is an escaped child: it is killed below
            if now >= deadline:
                outcome = "timeout" if proc.poll() is None else "done"
                break
            for key, _ in selector.select(min(POLL, deadline - now)):
                name, buffer = buffers[key.fd]
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                buffer += chunk
                if len(buffer) > cap:
                    return name, buffers[out_fd][1], buffers[err_fd][1]
        if outcome == "done":
            remaining = deadline - time.monotonic()
            try:
                proc.wait(timeout=max(remaining, 0))
            except subprocess.TimeoutExpired:
                outcome = "timeout"
    finally:
        selector.close()
    return outcome, buffers[out_fd][1], buffers[err_fd][1]


def kill_tree(pid: int, marker: str, started: float = 0.0) -> None:
    """SIGKILL the process group of `pid` and every process whose environment holds the run's marker
    (children that left the group: setsid, double fork, closed stdio). Repeated while new ones appear,
    since a dying parent may just have forked. `started` (time.time() before the run's process was
    started) narrows the search to processes that can be the run's."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    needle = f"{RUN_MARKER}={marker}".encode()
    for _ in range(5):
        found = [other for other in _marked(needle, started) if other != os.getpid()]
        if not found:
            return
        for other in found:
            try:
                os.kill(other, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


def _marked(needle: bytes, started: float) -> list[int]:
    """The processes whose environment holds `needle`, among those that may have started since `started`.

    A /proc/<pid> directory's ctime is when the kernel first made its inode, never before the process
    existed: one stat skips every process that was already there (reading each environment of a busy
    machine's processes after every run cost more than many of the runs)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_ctime < started - 1:  # a second of slack for the clocks' granularity
                continue
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                if needle in handle.read():
                    found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return found
