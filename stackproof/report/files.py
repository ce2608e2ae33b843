"""The report set on disk: validation-report.{json,md,html,sarif}, written as one set or not at all."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

REPORT_NAME = "validation-report"
SUFFIXES = ("json", "md", "html", "sarif")
STAGING_PREFIX = ".stackproof-report-"


def real_report_dir(path: Path, stack_dir: Path) -> Path:
    """Where the report set goes, as a real directory. Inside the stack dir (a CI checkout whose `reports/`
    came with the pull request), every symlink on the way down from the stack dir is removed (the link,
    never what it points to), so the run writes, and deletes its stale set, only there. Outside the stack
    dir the operator's path is taken as it resolves. `path` is absolute, its symlinks not yet resolved."""
    try:
        rest = path.relative_to(stack_dir)
    except ValueError:
        return path.resolve()
    current = stack_dir
    for part in rest.parts:
        current = current / part
        if current.is_symlink():
            current.unlink()
    return current


def unlink_if_not_regular(path: Path) -> None:
    """Remove the entry at `path` when it is a symlink or a special file (never its target), so that the
    file about to be written there lands in the report dir; a regular file is left for the writer."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        path.unlink(missing_ok=True)


class ReportFiles:
    """The report set in `report_dir`, and `copies`: a suffix's file also written where the operator asked
    (`--sarif PATH` for an upload step that wants a fixed path), each time the set is written."""

    def __init__(self, report_dir: Path):
        self.report_dir = report_dir
        self.copies: dict[str, Path] = {}
        self.written: list[Path] = []

    def path(self, suffix: str) -> Path:
        return self.report_dir / f"{REPORT_NAME}.{suffix}"

    def remove_set(self, keep: Path | None = None) -> None:
        """Remove an earlier run's report files (and leftovers of an interrupted write), so a stale
        report never stands beside this run's or in its place."""
        if not self.report_dir.is_dir():
            return
        for suffix in SUFFIXES:
            for path in (self.path(suffix), self.path(f"{suffix}.tmp")):
                path.unlink(missing_ok=True)
        for staging in self.report_dir.glob(f"{STAGING_PREFIX}*"):
            if staging != keep:
                shutil.rmtree(staging, ignore_errors=True)

    def write_set(self, files: dict[str, str]) -> None:
        """Write the files as one set: all rendered into a staging dir first, then the old set
        removed and each new file renamed into place; nothing of the staging dir stays."""
        self.report_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.report_dir))
        try:
            for suffix, text in files.items():
                (staging / self.path(suffix).name).write_text(text, encoding="utf-8", errors="replace")
            self.remove_set(keep=staging)
            self.written = []
            for suffix in files:
                path = self.path(suffix)
                os.replace(staging / path.name, path)
                self.written.append(path)
            for suffix, copy in self.copies.items():
                if suffix in files:
                    self._write_copy(copy, files[suffix])
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _write_copy(self, path: Path, text: str) -> None:
        """Written beside `path` and renamed over it: a link or special file there is replaced, never followed."""
        path.parent.mkdir(parents=True, exist_ok=True)
        unlink_if_not_regular(path)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as handle:
            handle.write(text)
        os.replace(temporary, path)
        self.written.append(path)
