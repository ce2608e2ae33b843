"""Reading the stack's files safely: regular files only, never blocking, never more than a cap.

Every reader of a stack file goes through `read_stack_file` (YAML, secrets, certificates,
recorded responses, .env, rule files, a script's `#!` line, what a script wrote). A FIFO
blocks `open()` until a writer comes, and `/dev/zero` never ends, while `st_size` is 0 for
both: so the type is checked before opening (following a symlink, whose target is what would
be read), the file is opened non-blocking, checked again on the open descriptor (the path may
have been swapped in between), and the cap is counted on the bytes actually read.
Hand-written because no library combines these; the open/fstat/read pattern is the standard one.
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
from pathlib import Path

from stackproof.errors import StackError

DEFAULT_CAP = 4 * 1024 * 1024
CHUNK = 64 * 1024
MAX_WALK_ENTRIES = 10_000  # entries of a stack dir the suite lists file by file (a secrets dir)

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((text for test, text in _KINDS if test(mode)), "not a regular file")


def _not_regular(name: str, mode: int) -> StackError:
    return StackError(f"{name}: {kind_of(mode)}, not a regular file")


def require_regular(path: Path, name: str, *, follow: bool = True) -> os.stat_result:
    """The stat of `path` if it is (or, with `follow`, links to) a regular file; else a one-line StackError
    naming `name`. For files handed to another program (docker compose, promtool), which would block on a
    FIFO too."""
    try:
        st = os.stat(path, follow_symlinks=follow)
    except FileNotFoundError:
        raise StackError(f"{name}: file not found") from None
    except OSError as exc:
        raise StackError(f"{name}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(name, st.st_mode)
    return st


def require_small_file(path: Path, name: str, cap: int) -> None:
    """`path` (its symlinks followed) is a regular file of at most `cap` bytes; else a one-line StackError
    naming `name`. For a file another program reads whole, which bounds neither (docker compose reads an
    env_file that is a FIFO, /dev/zero or a sparse 3 GB file until it runs out of memory or time)."""
    if require_regular(path, name).st_size > cap:
        raise StackError(f"{name}: larger than the {cap}-byte limit")


def read_stack_file(path: Path, name: str, cap: int = DEFAULT_CAP, *, truncate: bool = False,
                    follow: bool = True) -> bytes:
    """The bytes of a regular file, at most `cap` of them.

    `name` is how messages show the file (the stack-relative path, not a symlink's target).
    A larger file is an error, or, with `truncate`, its first `cap` bytes (a `#!` line).
    Without `follow`, a symlink is not a regular file (what a stack script left in its box)."""
    require_regular(path, name, follow=follow)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    except OSError as exc:
        raise StackError(f"{name}: cannot read ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(name, mode)
        chunks, total = [], 0
        while total <= cap:
            try:
                chunk = os.read(fd, min(CHUNK, cap + 1 - total))
            except OSError as exc:
                raise StackError(f"{name}: cannot read ({exc.strerror})") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > cap:
        if truncate:
            return data[:cap]
        raise StackError(f"{name}: larger than the {cap}-byte limit")
    return data


def glob_paths(pattern: str, name: str, max_matches: int = MAX_WALK_ENTRIES) -> list[Path]:
    """The paths a pattern of the stack matches (Prometheus' `rule_files: [alerts/*.yml]`), sorted, as Go's
    filepath.Glob matches them for Prometheus and promtool: `*` matches a leading dot too (a `.old.yml`
    beside the rules is loaded). Bounded: a pattern such as `**` over a huge tree is a one-line StackError
    naming `name`."""
    found = []
    for match in glob.iglob(pattern, include_hidden=True):
        found.append(Path(match))
        if len(found) > max_matches:
            raise StackError(f"{name}: matches more than {max_matches} paths, not read")
    return sorted(found)


def list_dir(directory: Path, name: str, max_entries: int = MAX_WALK_ENTRIES) -> list[Path]:
    """The entries of one directory in byte order of their names (as Postgres reads an include_dir),
    bounded: more than `max_entries` is a one-line StackError naming `name`."""
    try:
        with os.scandir(directory) as entries:
            listed = []
            for entry in entries:
                listed.append(Path(entry.path))
                if len(listed) > max_entries:
                    raise StackError(f"{name}: more than {max_entries} entries, not read")
    except OSError as exc:
        raise StackError(f"{name}: cannot list ({exc.strerror})") from None
    return sorted(listed, key=lambda path: os.fsencode(path.name))


def walk_files(top: Path, name: str, max_entries: int = MAX_WALK_ENTRIES, skip: frozenset[str] = frozenset(),
               *, truncate: bool = False) -> list[Path]:
    """Every entry under `top` that is not a directory, sorted. Walked with a list, not recursion (Path.rglob
    recurses per level: a tree nested 1,500 deep raised RecursionError), without following a symlink into a
    directory (a loop, a way out) or entering a directory named in `skip`, and bounded: more than `max_entries`
    entries is a one-line StackError naming `name`, not a million files listed one by one (with `truncate`,
    the files found until then). An unreadable directory is skipped, as rglob skips it."""
    found: list[Path] = []
    pending, seen = [top], 0
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        seen += len(entries)
        if seen > max_entries:
            if truncate:  # what was found so far (init's look over a whole repository)
                break
            raise StackError(f"{name}: more than {max_entries} entries, not read")
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if not (is_dir and entry.name in skip):
                (pending if is_dir else found).append(Path(entry.path))
    return sorted(found)


def mirror_files(root: Path, files: dict[Path, int], into: Path) -> tuple[Path, str]:
    """Copies of `files` (path -> cap; each lexically inside `root`) at the same places under a new dir in
    `into` named like `root`; returns it, and a digest of what it holds (each copy's place and bytes). A
    program given the copies reads what was checked, however the stack's files change meanwhile, and
    nothing else of the stack (nor, through a link, outside it)."""
    mirror = into / root.name
    mirror.mkdir(mode=0o700)
    digest = hashlib.sha256()
    for path, cap in sorted(files.items()):
        relative = path.relative_to(root)
        target = mirror / relative
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = read_stack_file(path, str(relative), cap)
        target.write_bytes(data)
        digest.update(repr((str(relative), len(data))).encode())
        digest.update(data)
    return mirror, digest.hexdigest()


def read_stack_text(path: Path, name: str, cap: int = DEFAULT_CAP) -> str:
    """A regular file's text (UTF-8, undecodable bytes replaced), at most `cap` bytes."""
    return read_stack_file(path, name, cap).decode("utf-8", errors="replace")


GIT_FILE_CAP = 1024 * 1024  # HEAD, config, commondir, a ref: a few lines each
GIT_INDEX_CAP = 256 * 1024 * 1024  # the index grows with the tracked files
GIT_FILES = {"HEAD": GIT_FILE_CAP, "config": GIT_FILE_CAP, "commondir": GIT_FILE_CAP, "gitdir": GIT_FILE_CAP,
             "packed-refs": 64 * 1024 * 1024, "index": GIT_INDEX_CAP}


def require_readable_git(start: Path) -> None:
    """Before a git library opens the repository that holds `start` (found upwards, as git does): the files
    it reads (.git or the gitfile, HEAD, config, the index, packed refs, the ref HEAD names) are regular files,
    not symlinks, within their caps. A FIFO at .git/HEAD would block the report's last step forever, a
    symlink to /dev/zero would be read whole. A one-line StackError otherwise."""
    for directory in (start, *start.parents):
        git = directory / ".git"
        if os.path.lexists(git):
            break
    else:
        return
    where = f"{git.name}" if directory == start else str(git)
    st = os.lstat(git)
    if stat.S_ISREG(st.st_mode):
        if st.st_size > GIT_FILE_CAP:
            raise StackError(f"{where}: larger than the {GIT_FILE_CAP}-byte limit")
        return  # a worktree's gitfile: what it points to is outside this checkout's files
    if not stat.S_ISDIR(st.st_mode):
        raise _not_regular(where, st.st_mode) if not stat.S_ISLNK(st.st_mode) else StackError(f"{where}: a symlink")
    for name, cap in GIT_FILES.items():
        _require_small_regular(git / name, f"{where}/{name}", cap)
    if os.path.lexists(git / "HEAD"):
        head = read_stack_file(git / "HEAD", f"{where}/HEAD", GIT_FILE_CAP, follow=False)
        if head.startswith(b"ref: "):
            ref = os.fsdecode(head[5:].strip())
            if ".." not in Path(ref).parts and not ref.startswith("/"):
                _require_small_regular(git / ref, f"{where}/{ref}", GIT_FILE_CAP)


def _require_small_regular(path: Path, name: str, cap: int) -> None:
    if not os.path.lexists(path):
        return
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise StackError(f"{name}: a symlink, not read")
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(name, st.st_mode)
    if st.st_size > cap:
        raise StackError(f"{name}: larger than the {cap}-byte limit")
