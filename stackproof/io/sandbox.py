"""Where the stack's own code runs: a throwaway box under bubblewrap.

The stack under test is untrusted (it comes from a pull request). Its scripts run in a
`ScriptBox`: a temp dir holding copies of only the files the script needs, owned by an
unprivileged uid, bound as `/sandbox` into a bubblewrap sandbox with the system read-only,
no network, private /tmp, IPC, UTS and pid namespaces, a cleared environment plus the
declared variables, resource limits (processes, open files, and those `proc.run` sets for
every child: heap, address space, file size, CPU time) and the run's time and output bounds.
When the run ends, bubblewrap dies and the kernel kills everything left in the sandbox's pid
namespace.

Without bubblewrap no stack code runs (`SandboxUnavailable`, which the plugin turns into a
skip saying why), unless the operator passes --trust-stack-code: then the script runs
directly, still as the unprivileged uid, with the cleared environment, in the box, bounded.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stackproof.io import proc
from stackproof.errors import StackError
from stackproof.io.files import read_stack_file

INSIDE = "/sandbox"
SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # beside /usr: binds or merged-/usr symlinks
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_SCRIPT_BYTES = 4 * 1024 * 1024
SCRIPT_OUTPUT = 1024 * 1024  # bytes per stream a stack script may print
# prlimit options for every process in the box, on top of those of every child (proc.LIMITS: heap,
# address space, file size, core dumps, CPU time), which bubblewrap and the script inherit
LIMITS = {
    "--nproc": 256,  # processes of the unprivileged uid (set here: the limit is counted per uid)
    "--nofile": 256,
}
TMP_SIZE = 64 * 1024**2  # the private /tmp (tmpfs)


class SandboxUnavailable(Exception):
    """Stack code cannot be run safely here; the check that needs it is skipped with this reason."""


@dataclass(frozen=True)
class Sandbox:
    """How stack code is run on this machine: under bubblewrap, or trusted (--trust-stack-code)."""

    bwrap: str | None
    trusted: bool
    unavailable: str = ""  # why bubblewrap cannot be used

    @classmethod
    def detect(cls, trusted: bool, timeout: float) -> "Sandbox":
        """Find bubblewrap and try it once (it needs namespaces, which a container may forbid)."""
        found = shutil.which("bwrap")
        if not found:
            return cls(None, trusted, "bubblewrap (bwrap) is not installed (Debian package 'bubblewrap')")
        try:
            done = proc.run([found, *_namespaces(), *_system_binds(), "--", "/bin/true"],
                            timeout=timeout, where="bwrap")
        except StackError as exc:
            return cls(None, trusted, str(exc))
        if done.returncode != 0:
            why = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit {done.returncode}"])[-1]
            return cls(None, trusted, f"bwrap cannot create its namespaces here ({why[:200]})")
        return cls(found, trusted)

    def require(self) -> None:
        if self.bwrap is None and not self.trusted:
            raise SandboxUnavailable(
                f"stack code not run: no sandbox: {self.unavailable}; install it, or pass --trust-stack-code "
                "to run the stack's scripts without one"
            )

    def box(self, uid: int | None, label: str) -> "ScriptBox":
        self.require()
        return ScriptBox(self, uid, label)


def _namespaces() -> list[str]:
    return ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session"]


def _system_binds() -> list[str]:
    """The system, read-only: /usr, /etc and the top-level dirs beside /usr as they are on the host."""
    args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev"]
    for name in SYSTEM_DIRS:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


class ScriptBox:
    """One throwaway dir for a stack script and the copies of the files it needs.

    Paths handed to the script are `inside(path)`; what it writes is read back from the box
    (`root`) with the bounded reader. `close()` removes it (the owner of `with` does)."""

    def __init__(self, sandbox: Sandbox, uid: int | None, label: str):
        self.sandbox = sandbox
        self.uid = uid
        self.root = Path(tempfile.mkdtemp(prefix=f"stackproof-{label}-"))
        self.root.chmod(0o700)

    def __enter__(self) -> "ScriptBox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def isolated(self) -> bool:
        return self.sandbox.bwrap is not None

    def inside(self, path: Path) -> str:
        """How the script sees a path of the box."""
        if not self.isolated:
            return str(path)
        return str(Path(INSIDE) / path.relative_to(self.root))

    def outside(self, text: str) -> str:
        """A text from the script with the box's paths shown as `(copy)/...`."""
        prefix = INSIDE if self.isolated else str(self.root)
        return text.replace(f"{prefix}/", "(copy)/")

    def copy_in(self, source: Path, relative: Path | str, name: str, *, cap: int = MAX_SCRIPT_BYTES) -> Path:
        """Copy one regular file of the stack (or of ours) into the box, keeping its permission bits."""
        data = read_stack_file(source, name, cap)
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(stat.S_IMODE(os.stat(source).st_mode))
        return target

    def write(self, relative: Path | str, data: bytes, mode: int) -> Path:
        """Put a file the suite made (a canary key) into the box with the permission bits of `mode`."""
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(stat.S_IMODE(mode))
        return target

    def files(self, under: Path | None = None) -> list[Path]:
        """The regular files the box holds (under `under`), symlinks not followed: a script may leave a
        link to any host file in its box, and what the suite reads back must be what the script wrote."""
        found = []
        for directory, _, names in os.walk(under or self.root):
            found += [Path(directory) / name for name in names
                      if stat.S_ISREG(os.lstat(Path(directory) / name).st_mode)]
        return found

    def mkdir(self, relative: Path | str, mode: int = 0o700) -> Path:
        path = self.root / relative
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        return path

    def hand_over(self) -> None:
        """Give the box to the script's uid (so it can write there, and root's bypass of modes is gone).
        Runs may share a box at the same time (the monitor's prefetched scenarios): an entry another
        run removes while this walks (a script's temp file) is simply gone, not an error."""
        if self.uid is None:
            return
        for directory, dirs, files in os.walk(self.root):  # os.walk ignores directories that vanish
            for name in [".", *dirs, *files]:
                try:
                    os.chown(os.path.join(directory, name), self.uid, self.uid, follow_symlinks=False)
                except FileNotFoundError:
                    continue

    def run(self, cmd: list[str], *, env: dict[str, str], stdin: str | None, where: str,
            timeout: float) -> subprocess.CompletedProcess:
        """Run `cmd` (paths already as `inside` gives them) in the box, bounded; raises StackError naming `where`."""
        script = Path(self.root / Path(cmd[0]).relative_to(INSIDE)) if self.isolated and cmd[0].startswith(INSIDE) \
            else Path(cmd[0])
        if script.is_file() and not os.stat(script).st_mode & 0o111:
            raise StackError(f"{where}: cannot run (not executable, mode {stat.S_IMODE(os.stat(script).st_mode):04o})")
        home = self.inside(self.root)
        environment = {"PATH": PATH, "HOME": home, "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp", **env}
        limits = ["prlimit", *(f"{option}={value}" for option, value in LIMITS.items()), "--"]
        drop = ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "--"] \
            if self.uid is not None else []
        data = None if stdin is None else stdin.encode()
        if not self.isolated:
            environment["TMPDIR"] = str(self.mkdir("tmp", 0o700))
        self.hand_over()
        if not self.isolated:
            return proc.run([*limits, *drop, *cmd], timeout=timeout, where=where, env=environment, cwd=self.root,
                            input=data, max_output=SCRIPT_OUTPUT)
        assert self.sandbox.bwrap is not None  # isolated
        argv = [self.sandbox.bwrap, *_namespaces(), *_system_binds(), "--size", str(TMP_SIZE), "--tmpfs", "/tmp",
                "--bind", str(self.root), INSIDE, "--chdir", INSIDE, "--clearenv"]
        for name, value in environment.items():
            argv += ["--setenv", name, value]
        return proc.run([*argv, "--", *limits, *drop, *cmd], timeout=timeout, where=where,
                        env={"PATH": PATH}, input=data, max_output=SCRIPT_OUTPUT)
