"""The reference stack's files a live self-test changed, saved on disk until they are put back.

A live defect's test rewrites files of `stack/` in place and restores them in a `finally` block. A
run killed mid-test (a CI time limit, a session stopped) never gets there, and every later run starts
from a stack with the defect still in it: a 10-day certificate left by an interrupted run made 167
copy-based self-tests fail tls_monitoring the next morning. So what a test saves is written to
`.selftest-journal/` first, with the pid and start time of the process that saved it, and removed
when it is restored. `restore_interrupted()` puts back what a process that is gone left there;
`bin/stackproof selftest` runs it (this file as a script) before anything reads the stack.

Standard library only: the script runs before the self-tests' packages are imported.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from itertools import count
from pathlib import Path

# (another dir for the journal's own self-tests)
JOURNAL = Path(os.environ.get("STACKPROOF_SELFTEST_JOURNAL") or Path(__file__).resolve().parent.parent / ".selftest-journal")
_ENTRY_NUMBERS = count()


@dataclass
class SavedFile:
    """A file's bytes, mode and owner before a defect changed it (content None: it did not exist)."""

    path: Path
    content: bytes | None
    mode: int | None
    owner: tuple[int, int] | None
    entry: Path | None = None  # its copy in the journal, removed once restored


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None when it is gone: with the pid, it
    tells a live writer from a later process that reused the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def save_file(path: Path) -> SavedFile:
    """`path` as it is now, also written to the journal before the caller changes it."""
    if path.exists():
        st = path.stat()
        saved = SavedFile(path, path.read_bytes(), st.st_mode & 0o7777, (st.st_uid, st.st_gid))
    else:
        saved = SavedFile(path, None, None, None)
    entry = JOURNAL / f"{os.getpid()}-{next(_ENTRY_NUMBERS)}"
    entry.mkdir(parents=True)
    if saved.content is not None:
        (entry / "content").write_bytes(saved.content)
    meta = {"path": str(path), "mode": saved.mode, "owner": saved.owner,
            "pid": os.getpid(), "started": _start_time(os.getpid())}
    (entry / "meta.json").write_text(json.dumps(meta))  # last: an entry without it is incomplete
    saved.entry = entry
    return saved


def restore_file(saved: SavedFile) -> None:
    """Put the file back as it was saved (owner and mode too), and drop its journal entry. A file whose
    dir is gone (a copy of the stack a run made for itself, removed since) has nothing to restore."""
    if saved.path.parent.is_dir():
        _put_back(saved)
    if saved.entry is not None:
        shutil.rmtree(saved.entry, ignore_errors=True)


def _put_back(saved: SavedFile) -> None:
    if saved.content is None:
        saved.path.unlink(missing_ok=True)
        return
    saved.path.chmod(0o600)
    saved.path.write_bytes(saved.content)
    os.chown(saved.path, *saved.owner)
    saved.path.chmod(saved.mode)


def restore_interrupted() -> list[Path]:
    """Restore every file saved by a process that is gone, oldest save last (so that a file saved
    twice ends as it was first); the paths restored."""
    restored = []
    entries = sorted(JOURNAL.glob("*/meta.json"), key=lambda m: m.stat().st_mtime, reverse=True) if JOURNAL.is_dir() else []
    for meta_file in entries:
        meta = json.loads(meta_file.read_text())
        if _start_time(meta["pid"]) == meta["started"]:
            continue  # its writer still runs (another self-test run): it restores the file itself
        content = meta_file.parent / "content"
        saved = SavedFile(Path(meta["path"]), content.read_bytes() if content.exists() else None, meta["mode"],
                          tuple(meta["owner"]) if meta["owner"] else None, meta_file.parent)
        if saved.path.parent.is_dir():
            restored.append(saved.path)
        restore_file(saved)
    for leftover in JOURNAL.glob("*") if JOURNAL.is_dir() else []:
        # an entry without meta.json: its writer was killed while saving (the file was not changed yet)
        if not (leftover / "meta.json").exists() and not Path(f"/proc/{leftover.name.split('-')[0]}").exists():
            shutil.rmtree(leftover, ignore_errors=True)
    return restored


if __name__ == "__main__":
    # exit 3 when something was restored: the running reference stack may still serve the defect
    paths = restore_interrupted()
    for restored_path in paths:
        print(f"restored {restored_path} (changed by a self-test run that was interrupted)", file=sys.stderr)
    sys.exit(3 if paths else 0)
