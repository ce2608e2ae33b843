"""The file probe (stackproof/probe.py) run here with the local `sh`: for every kind of file and every
special mode bit, what it reports equals os.stat, with `stat` in the PATH and with only POSIX `ls`
(the fallback for minimal images); hostile names are never echoed back."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from stackproof.engine import probe
from stackproof.io import proc

TOOLS = ("id", "ls", "sha256sum")  # what the script calls besides `stat`


def _tree(root: Path) -> list[str]:
    """Every kind of path the probe may meet."""
    files = []
    for name, mode in (("key-0400", 0o400), ("open-0644", 0o644), ("none-0000", 0o000), ("setuid-4755", 0o4755),
                       ("setgid-2750", 0o2750), ("suid-noexec-4644", 0o4644), ("sticky-1600", 0o1600)):
        path = root / name
        path.write_bytes(f"secret of {name}\n".encode())
        path.chmod(mode)
        files.append(str(path))
    (root / "dir-1777").mkdir()
    (root / "dir-1777").chmod(0o1777)
    (root / "dir-0700").mkdir(mode=0o700)
    (root / "link-to-key").symlink_to(root / "key-0400")
    (root / "dangling").symlink_to(root / "nowhere")
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    sock.close()
    (root / "name with spaces\tand\ttabs\nand a newline").write_text("x")
    for name in ("dir-1777", "dir-0700", "link-to-key", "dangling", "fifo", "sock",
                 "name with spaces\tand\ttabs\nand a newline", "missing"):
        files.append(str(root / name))
    return [*files, "/dev/null"]


@pytest.fixture
def world_dir():
    """A directory every user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="stackproof-probe-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture(params=["stat", "ls only"])
def path_env(request, world_dir: Path) -> dict[str, str]:
    if request.param == "stat":
        return {**os.environ, "PATH": "/usr/bin:/bin"}
    tools = world_dir / "tools"
    tools.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} not installed"
        (tools / tool).symlink_to(found)
    return {**os.environ, "PATH": str(tools)}


NOBODY = 65534


@pytest.mark.parametrize("as_user", ["self", "nobody"])
def test_probe_matches_os_stat_for_every_kind_of_file(world_dir: Path, path_env: dict[str, str], as_user: str):
    """Mode, type, owner and sha256 as os.stat sees them; readability as the user the
    probe runs as (root reads everything; nobody only what "other" may read)."""
    if as_user == "nobody" and os.geteuid() != 0:
        pytest.skip("running the probe as another user needs root")
    root = world_dir / "tree"
    root.mkdir(mode=0o755)
    paths = _tree(root)
    user = [shutil.which("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if as_user == "nobody" else []
    done = proc.run([*user, "/bin/sh", "-c", probe.PROBE_SCRIPT, "probe", *paths],
                    timeout=20, where="probe", env=path_env)
    assert done.returncode == 0, done.stderr
    assert b"secret of" not in done.stdout and b"spaces" not in done.stdout  # no content, no names
    facts = probe.parse("local", paths, done.stdout)
    assert facts.exec_ids == ((NOBODY, NOBODY) if user else (os.getuid(), os.getgid()))
    for path in paths:
        got = facts.file(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            assert not got.exists, path
            continue
        assert got.exists, path
        assert (got.mode, got.is_file, got.uid, got.gid) == (stat.S_IMODE(st.st_mode), stat.S_ISREG(st.st_mode),
                                                              st.st_uid, st.st_gid), path
        readable = bool(st.st_mode & 0o004) if user else os.access(path, os.R_OK)
        assert got.readable == readable, path
        if stat.S_ISREG(st.st_mode) and got.readable:
            assert got.sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest(), path


def test_probe_output_that_is_not_the_probes_fails_naming_the_container():
    with pytest.raises(Exception, match="container web-1: the file probe did not answer for every path"):
        probe.parse("web-1", ["/run/secrets/key"], b"id\t0\t0\nproc\t0\t0\n")
    with pytest.raises(Exception, match="container web-1: unreadable probe line"):
        probe.parse("web-1", ["/run/secrets/key"], b"id\t0\t0\nfile\tnot-a-number\tmissing\n")
