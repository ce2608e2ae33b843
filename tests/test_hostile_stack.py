"""A hostile or careless stack cannot hang the run, exhaust its memory, escape the sandbox,
read what it was not given, or change the stack dir; each class of input, not one example.

The mechanisms first (proc.run, the safe reader: fast, no suite run), then the suite on
copies of the reference stack: bounded, a complete report set, the right control failing
with one line, no secret in any output."""

from __future__ import annotations

import os
import re
import resource
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import assert_no_secret_in, assert_only_control_fails, stack_secrets

from stackproof.io import proc
from stackproof.errors import StackError
from stackproof.io.files import read_stack_file

MONITOR = "scripts/monitor-tls-certs.sh"
ROTATE = "scripts/rotate-api-key.sh"
KEY = "ai-stack/compose/secrets/stack_api_key"
PASSWORD = "ai-stack/compose/secrets/postgres_password"
COMPOSE = "ai-stack/compose/docker-compose.yml"
REPORTS = {"validation-report.html", "validation-report.md", "validation-report.json"}

# every way a child can outlive its parent: (id, shell fragment starting it; {n} makes its sleep unique)
ESCAPES = [
    ("setsid", "setsid sleep {n} &"),
    ("double-fork", "( (sleep {n} &) & )"),
    ("closed-stdio", "setsid sleep {n} </dev/null >/dev/null 2>&1 &"),
    ("own-group-holding-pipes", "(set -m; sleep {n} &)"),
]


def survivors(n: int) -> list[int]:
    """Processes still running `sleep n`."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    if handle.read().split(b"\0")[:2] == [b"sleep", str(n).encode()]:
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def unique_seconds() -> int:
    return 600 + (os.getpid() * 7 + time.monotonic_ns()) % 5000


# --- the mechanisms ---------------------------------------------------------------------------


@pytest.mark.parametrize("main", ["true", "sleep 300"], ids=["parent-exits", "parent-hangs"])
@pytest.mark.parametrize("escape", [e[1] for e in ESCAPES], ids=[e[0] for e in ESCAPES])
def test_no_child_outlives_a_run(escape, main):
    n = unique_seconds()
    started = time.monotonic()
    try:
        done = proc.run(["bash", "-c", f"{escape.format(n=n)}\n{main}"], timeout=3, where="hostile")
    except StackError as exc:
        assert main != "true" and str(exc) == "hostile: did not finish within 3s"
    else:
        assert main == "true" and done.returncode == 0
    assert time.monotonic() - started < 8
    time.sleep(0.1)
    assert survivors(n) == [], "a child of the run is still alive"


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_flood_of_output_is_cut_while_it_is_read(stream):
    started = time.monotonic()
    redirect = "" if stream == "stdout" else " >&2"
    with pytest.raises(StackError, match=f"flood: wrote more than 1048576 bytes to {stream}, stopped"):
        proc.run(["bash", "-c", f"yes{redirect}"], timeout=60, where="flood", max_output=1024 * 1024)
    assert time.monotonic() - started < 10


GIB = 1024**3
# every way a child can take more than its share: (id, Python program, the limit that must stop it)
HOGS = [
    ("heap", "b = bytearray(1 << 30)", "its memory limit"),
    ("shared-mapping", "import mmap; m = mmap.mmap(-1, 3 << 30); m[::4096] = b'x' * ((3 << 30) // 4096)",
     "its memory limit"),
    ("limit-raised-first", "import resource\ntry:\n    resource.setrlimit(resource.RLIMIT_DATA, (-1, -1))\n"
                           "except (ValueError, OSError):\n    pass\nb = bytearray(1 << 30)", "its memory limit"),
    ("grandchild", "import subprocess, sys; sys.exit(subprocess.run([sys.executable, '-c', 'bytearray(1 << 30)'])"
                   ".returncode)", "its memory limit"),
    ("huge-file", "open('big.bin', 'wb').write(b'x' * (100 << 20))", "its file size limit (64 MiB)"),
]


@pytest.mark.parametrize("program, limit", [h[1:] for h in HOGS], ids=[h[0] for h in HOGS])
def test_a_child_cannot_take_more_than_its_limits(program, limit, tmp_path):
    """Whatever the stack makes a program do with its input (grow its heap, map shared memory, raise its own
    limit first, leave it to a child, write a huge file), the child stops at its limit at once, the run
    names the limit, and no child of the test ever held 512 MB."""
    started = time.monotonic()
    with pytest.raises(StackError, match=f"^hog: stopped at {re.escape(limit)}"):
        proc.run([sys.executable, "-c", program], timeout=30, where="hog", cwd=tmp_path)
    assert time.monotonic() - started < 10
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 512 * 1024
    assert not (tmp_path / "big.bin").exists() or (tmp_path / "big.bin").stat().st_size <= 64 << 20


@pytest.mark.parametrize("escape", ["setsid", "double-fork"])
def test_limits_follow_a_child_that_leaves_the_group(escape, tmp_path):
    """A child that leaves the process group (its own session, a double fork) keeps the limits: they are
    inherited, and equal soft and hard limits cannot be raised by it."""
    start = {"setsid": "setsid sh -c 'cat /proc/self/limits >{out}' &", "double-fork": "( (cat /proc/self/limits >{out} &) & )"}
    out = tmp_path / "limits"
    proc.run(["sh", "-c", start[escape].format(out=out) + "\nsleep 0.5"], timeout=10, where="escape")
    limits = {line[:26].strip(): line[26:].split()[:2] for line in out.read_text().splitlines()[1:]}
    assert limits["Max data size"] == [str(proc.LIMITS["--data"])] * 2
    assert limits["Max address space"] == [str(proc.LIMITS["--as"])] * 2
    assert limits["Max file size"] == [str(proc.LIMITS["--fsize"])] * 2
    assert limits["Max cpu time"] == ["10", "11"]


def special_files(where: Path) -> dict[str, Path]:
    """One of each kind of file that is not a regular file, reached directly and through a symlink."""
    fifo = where / "fifo"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(where / "socket"))
    (where / "dir").mkdir()
    made = {"fifo": fifo, "socket": where / "socket", "directory": where / "dir", "dev-zero": Path("/dev/zero"),
            "dev-tty-like": Path("/dev/null")}
    for name, target in list(made.items()):
        link = where / f"link-to-{name}"
        link.symlink_to(target)
        made[f"link-to-{name}"] = link
    return made


def test_only_regular_files_are_read(tmp_path):
    """Every kind of special file is one line naming the name it was asked by, at once."""
    for name, path in special_files(tmp_path).items():
        started = time.monotonic()
        with pytest.raises(StackError) as caught:
            read_stack_file(path, f"stack/{name}")
        assert str(caught.value).startswith(f"stack/{name}: ") and "not a regular file" in str(caught.value), name
        assert "\n" not in str(caught.value) and time.monotonic() - started < 1, name


def test_the_cap_is_counted_while_reading(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2000)
    with pytest.raises(StackError, match="big: larger than the 1000-byte limit"):
        read_stack_file(big, "big", 1000)
    assert read_stack_file(big, "big", 1000, truncate=True) == b"x" * 1000


# --- the suite on hostile copies ------------------------------------------------------------------


def prepend_to_script(relative: str, text: str):
    """Insert shell lines right after the script's `set` line (its first command)."""
    def inject(stack: Path) -> None:
        path = stack / relative
        lines = path.read_text().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if line.startswith("set -"))
        path.write_text("".join(lines[:at + 1]) + text + "\n" + "".join(lines[at + 1:]))
    return inject


def complete(run) -> None:
    """A bounded run wrote the whole report set and explained every failure in one line."""
    assert run.report is not None, run.stdout[-3000:]
    assert {p.name for p in run.report_dir.iterdir()} >= REPORTS
    assert "INTERNALERROR" not in run.stdout
    for control in run.failed_controls:
        assert all(reason and "\n" not in reason for reason in run.reasons(control))


def test_hostile_children_of_a_stack_script(stack_copy, run_static):
    """The monitor starts children every way that escapes (own session, double fork, closed stdio) and then
    hangs: one timeout, the report set is complete, nothing survives the run."""
    n = unique_seconds()
    prepend_to_script(MONITOR, "\n".join(escape.format(n=n) for _, escape in ESCAPES) + "\nsleep 300")(stack_copy)
    started = time.monotonic()
    run = run_static(stack_copy, "--stack-timeout", "3")
    assert time.monotonic() - started < 120
    complete(run)
    assert_only_control_fails(run, "tls_monitoring", f"{MONITOR}: did not finish within 3s")
    time.sleep(0.1)
    assert survivors(n) == []


def fifo(relative: str):
    def inject(stack: Path) -> None:
        (stack / relative).unlink()
        os.mkfifo(stack / relative)
    return inject


def dev_zero(relative: str):
    def inject(stack: Path) -> None:
        (stack / relative).unlink()
        (stack / relative).symlink_to("/dev/zero")
    return inject


# (stack files, what the failures must name, controls that must still pass); the key and the monitor script
# fail different controls, so one run covers both. A broken compose file is one target error: the checks skip
# "blocked by the compose model". (The profile as a special file is a usage error: tests/test_usage_errors.py.)
SPECIAL_TARGETS = [
    ([KEY, MONITOR], [KEY, MONITOR], ["docker_secrets_mode", "connection_pool"]),
    ([COMPOSE], ["docker-compose.yml"], ["progressive_disclosure"]),
]
KINDS = [("fifo", fifo, "a FIFO, not a regular file"), ("dev-zero", dev_zero, "a character device, not a regular file")]


@pytest.mark.parametrize("kind, make, says", KINDS, ids=[k[0] for k in KINDS])
@pytest.mark.parametrize("targets, fragments, passing", SPECIAL_TARGETS, ids=["key-and-script", "compose"])
def test_special_file_in_the_stack(stack_copy, run_static, targets, fragments, passing, kind, make, says):
    """A FIFO, or a symlink to /dev/zero, where the stack has a file: no hang, no memory blow-up, NO-GO with
    one line naming the stack's file."""
    secrets = stack_secrets(stack_copy)
    for target in targets:
        make(target)(stack_copy)
    started = time.monotonic()
    run = run_static(stack_copy, "--stack-timeout", "5")
    assert time.monotonic() - started < 150
    complete(run)
    assert run.failed_gate and run.ret == 1
    # a compose file that cannot be read is the run's one target error, not a failure of some control
    reasons = [r for c in run.failed_controls for r in run.reasons(c)] + run.report["target_errors"]
    for fragment in fragments:  # the stack's file is named (a symlink out may be refused as leading outside first)
        assert any(fragment in r for r in reasons), (fragment, reasons)
    if kind == "fifo":
        assert any(says in r for r in reasons), reasons
    for control in passing:  # LIVE ONLY: passed as far as a static run can prove it
        assert run.statuses[control] in ("PASS", "LIVE ONLY"), (control, run.reasons(control))
    assert_no_secret_in(run, secrets)


def test_a_flooding_stack_script(stack_copy, run_static):
    prepend_to_script(MONITOR, "yes stackproof-flood")(stack_copy)
    run = run_static(stack_copy)
    complete(run)
    assert_only_control_fails(run, "tls_monitoring", f"{MONITOR}: wrote more than 1048576 bytes to stdout, stopped")


def test_a_script_writing_into_its_stack_writes_into_the_copy(stack_copy, run_static):
    """The monitor logs into its own dir, the stack's and /tmp: only the sandbox's copy and its private /tmp
    change; the run is GO."""
    in_tmp = Path(f"/tmp/stackproof-hostile-{unique_seconds()}.log")
    prepend_to_script(MONITOR, 'here="$(dirname "$0")"; echo ran >>"$here/monitor.log"; '
                               'echo ran >>"$here/../ai-stack/compose/monitor.log"; '
                               f'echo ran >>"{stack_copy}/monitor.log" 2>/dev/null || true; '
                               f'echo ran >>"{in_tmp}"')(stack_copy)
    run = run_static(stack_copy)
    complete(run)
    assert run.passed, {c: run.reasons(c) for c in run.failed_controls}
    assert not list(stack_copy.rglob("monitor.log"))
    assert not in_tmp.exists()


STACK_WRITER = '''
import pathlib, pytest
@pytest.hookimpl(trylast=True)
def pytest_runtest_call(item):
    if item.name == "test_secrets_dir_mode":
        stack = pathlib.Path(item.config.getoption("stack_dir"))
        (stack / "scripts/left-behind.log").write_text("written during the run")
        (stack / "stackproof.yml").chmod(0o666)
'''


def test_a_run_that_changes_the_stack_dir_is_no_go(stack_copy, run_suite, pytester):
    """Read-only, enforced: whatever changed the stack dir during the run (here a plugin standing in for a
    bug), the verdict is NO-GO naming the paths, and the exit code says so."""
    pytester.makepyfile(stack_writer=STACK_WRITER)
    run = run_suite(stack_copy, "-m", "static", "-p", "stack_writer")
    complete(run)
    assert run.failed_controls == set()
    assert run.failed_gate and run.ret == 1
    reason = run.report["verdict"]["reason"]
    assert reason == "the run changed the stack dir (read-only): scripts/left-behind.log, stackproof.yml", reason


class Listener(threading.Thread):
    """A TCP listener on loopback that counts connections (what a script without network must never reach)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
                self.connections += 1
                conn.close()
            except OSError:
                continue

    def close(self):
        self.stop.set()
        self.join(5)
        self.server.close()


def test_a_script_cannot_reach_network_environment_or_other_secrets(stack_copy, run_suite, monkeypatch):
    """The monitor and the rotate script try the network, a token in the caller's environment and the other
    secret (through the stack's layout and its absolute path). If any of it worked they would exit 42 (and
    fail their control) after printing what they found; the sandbox holds, so the run is GO and no secret shows."""
    token = "ci-" + os.urandom(16).hex()
    monkeypatch.setenv("CI_TOKEN", token)
    listener = Listener()
    listener.start()
    try:
        probe = (
            'found=""\n'
            'if [[ -n "${CI_TOKEN:-}" ]]; then echo "token $CI_TOKEN"; found=1; fi\n'
            f'if timeout 2 bash -c "echo hi >/dev/tcp/127.0.0.1/{listener.port}" 2>/dev/null; then echo network; found=1; fi\n'
            f'for f in "$(dirname "$0")/../{PASSWORD}" "{stack_copy / PASSWORD}" '
            '"${secrets_dir:-/nonexistent}/postgres_password"; do\n'
            '  if [[ -r "$f" ]]; then echo "password $(cat "$f")"; found=1; fi\n'
            'done\n'
            'if [[ -n "$found" ]]; then exit 42; fi\n'
        )
        prepend_to_script(MONITOR, probe)(stack_copy)
        replace_point = 'key="$secrets_dir/$name"\n'
        text = (stack_copy / ROTATE).read_text()
        assert replace_point in text
        (stack_copy / ROTATE).write_text(text.replace(replace_point, replace_point + probe))
        secrets = stack_secrets(stack_copy)
        run = run_suite(stack_copy, "-m", "static")
    finally:
        listener.close()
    complete(run)
    assert run.passed, {c: run.reasons(c) for c in run.failed_controls}
    assert listener.connections == 0
    assert_no_secret_in(run, [*secrets, token.encode()])


@pytest.fixture
def no_bwrap_on_path(tmp_path, monkeypatch):
    """PATH as it is, less bubblewrap: every other program of PATH is linked into one dir."""
    bin_dir = tmp_path / "bin-without-bwrap"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = bin_dir / entry.name
            if entry.name != "bwrap" and not target.exists() and not target.is_symlink():
                target.symlink_to(entry.path)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_without_a_sandbox_stack_code_is_not_run_unless_trusted(stack_copy, run_static, no_bwrap_on_path):
    """No bubblewrap: the checks that run the stack's scripts are skipped saying why, and the verdict is
    NO-GO; --trust-stack-code runs them anyway (outside bubblewrap) and the reference stack is GO."""
    untrusted = run_static(stack_copy)
    complete(untrusted)
    rows = {row["nodeid"].rsplit("::", 1)[-1]: row for c in untrusted.report["controls"] for row in c["checks"]}
    for check in ("test_monitor_interface", "test_rotate_script", "test_tls_alert_metrics_are_produced"):
        assert rows[check]["status"] == "SKIPPED", rows[check]
        assert "stack code not run: no sandbox: bubblewrap (bwrap) is not installed" in rows[check]["reason"]
    assert untrusted.failed_controls == set()
    assert untrusted.failed_gate and "no sandbox" in untrusted.report["verdict"]["reason"]
    assert untrusted.ret == 1
    trusted = run_static(stack_copy, "--trust-stack-code")
    complete(trusted)
    assert trusted.passed, {c: trusted.reasons(c) for c in trusted.failed_controls}
