"""Read-only, enforced: the stack dir is fingerprinted when the run starts and when it ends.

A fingerprint maps every entry (relative path) to its type, mode, owner and content (sha256
of a regular file, the target of a symlink), without following links or opening anything
but regular files. It is bounded: past MAX_ENTRIES entries the walk stops (and says so),
past MAX_HASHED_BYTES the remaining files are compared by size and mtime instead of content.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

MAX_ENTRIES = 100_000
MAX_HASHED_BYTES = 512 * 1024**2
CHUNK = 1024 * 1024


def fingerprint(root: Path, exclude: tuple[Path, ...] = ()) -> dict[str, tuple]:
    """relative path -> (type, mode, uid, gid, content) of every entry under `root`, but the entries in
    `exclude` (the report dir and JUnit file, when the operator puts them inside the stack dir)."""
    found: dict[str, tuple] = {}
    budget = [MAX_HASHED_BYTES]
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            found[_rel(root, directory) + "/"] = ("unreadable", exc.errno)
            continue
        for entry in entries:
            if len(found) >= MAX_ENTRIES:
                found["…"] = ("more than", MAX_ENTRIES)
                return found
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            path = Path(entry.path)
            if path in exclude:
                continue
            found[_rel(root, path)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                       _content(path, st, budget))
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)
    return found


def changed_paths(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """Paths added, removed or different, sorted."""
    return sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root)) if path != root else "."


def _content(path: Path, st: os.stat_result, budget: list[int]):
    if stat.S_ISLNK(st.st_mode):
        try:
            return os.readlink(path)
        except OSError:
            return None
    if not stat.S_ISREG(st.st_mode):
        return None
    if st.st_size > budget[0]:
        return ("size", st.st_size, st.st_mtime_ns)
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        return ("unreadable", exc.errno, st.st_size, st.st_mtime_ns)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ("swapped",)
        read = 0
        while read <= st.st_size:  # a file growing meanwhile is cut at its first size: it differs anyway
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            read += len(chunk)
    finally:
        os.close(fd)
    budget[0] -= read
    return digest.hexdigest()
