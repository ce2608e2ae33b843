"""History: one JSON line per run, and what changed since the previous run of the same target.

Every run that executes checks appends a record to a JSON Lines file (`--history PATH`, default
`history.jsonl` in the report dir; `--no-history` neither reads nor writes it): when it ran, the
target (the stack dir and compose project), its git commit, each control's and each check's status
and the verdict. The report then compares the run with the previous run of the same target (or, with
`--baseline PATH`, with an earlier JSON report): new failures, fixed checks, checks still failing
(since when), checks that flap (changed between pass and fail at least twice in the last 30 runs), and
each control's status across the last 30 runs (a strip).

The file lives in the report dir and outlives any one run, so it may hold anything: a line cut by a
killed run, a line from another version, garbage. Only its tail is read (the last MAX_TAIL_BYTES, at most
MAX_LINES lines, each at most MAX_LINE_BYTES); a line that is not a valid record is skipped and counted in
a note, never an error of the run. The file is appended under an advisory lock with one write, and
cut back to its newest lines when it outgrows MAX_FILE_BYTES.
Hand-written: JSON Lines needs no library, and none bounds a tail read like this.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from stackproof.errors import StackError
from stackproof.io.files import read_stack_file
from stackproof.report.outcome import Decision, Status, check_status, control_status
from stackproof.report.waivers import check_id

HISTORY_FILE = "history.jsonl"
RECORD_VERSION: Literal[1] = 1
WINDOW = 30  # runs in the strip and the flapping window, this one included
FLAPPING_CHANGES = 2  # changes between pass and fail in the window that make a check flapping
MAX_TAIL_BYTES = 8 * 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024
MAX_LINES = 2000
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_BASELINE_BYTES = 64 * 1024 * 1024
LOCK_WAIT_SECONDS = 5.0
SHOWN_REGRESSIONS = 3  # regressed checks named in the verdict's reason

Short = Annotated[str, StringConstraints(max_length=4096)]
CheckStatus = Literal["PASS", "FAIL", "WAIVED", "SKIPPED"]
ControlStatus = Literal["PASS", "FAIL", "WAIVED", "NOT PROVEN", "SKIPPED", "LIVE ONLY"]
FAILING = (Status.FAIL, Status.WAIVED)  # a failure, accepted or not


class Record(BaseModel):
    """One run, as a history line."""

    model_config = ConfigDict(strict=True, extra="ignore")

    v: Literal[1] = RECORD_VERSION
    time: Short
    target: Short
    project: Short | None = None
    commit: Short | None = None
    run: Short = "COMPLETE"
    verdict: Literal["GO", "NO-GO", "STATIC PASS", "STATIC FAIL"] | None = None
    controls: dict[Short, ControlStatus] = Field(max_length=100)
    checks: dict[Short, CheckStatus] = Field(max_length=100_000)

    def same_target(self, other: "Record") -> bool:
        return (self.target, self.project) == (other.target, other.project)


class _BaselineCheck(BaseModel):
    model_config = ConfigDict(extra="ignore")
    nodeid: Short
    status: Literal["PASS", "FAIL", "SKIPPED"]
    waived: bool = False


class _BaselineControl(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Short
    status: Literal["PASS", "FAIL", "NOT PROVEN", "SKIPPED", "LIVE ONLY"]
    waived: bool = False
    checks: list[_BaselineCheck]


class _BaselineTarget(BaseModel):
    model_config = ConfigDict(extra="ignore")
    stack_dir: Short | None
    compose_project: Short | None = None
    git_commit: Short | None = None


class _BaselineReport(BaseModel):
    """What a comparison needs of an earlier JSON report (docs/report.schema.json, any 1.x or 2.x)."""

    model_config = ConfigDict(extra="ignore")
    schema_version: Annotated[str, StringConstraints(pattern=r"^[12]\.[0-9]+$")]
    generated: Short
    target: _BaselineTarget
    run: dict = {}
    controls: list[_BaselineControl]
    verdict: dict


def recorded_status(status: Status) -> str:
    """A status as the history keeps it: a blocked check is SKIPPED (records stay readable by earlier versions)."""
    return str(Status.SKIPPED if status == Status.BLOCKED else status)


def record_of(summary: dict) -> Record:
    """The history line of a run, from its report summary (before its verdict is decided: without one)."""
    controls = summary["controls"]
    return Record(
        time=summary["generated"], target=summary["target"]["stack_dir"] or "",
        project=summary["target"]["compose_project"], commit=summary["target"]["git_commit"],
        run=summary["run"].get("status", "COMPLETE"), verdict=summary.get("verdict", {}).get("decision"),
        controls={c["id"]: cast(ControlStatus, recorded_status(control_status(c))) for c in controls},
        checks={row["nodeid"]: cast(CheckStatus, recorded_status(check_status(row))) for c in controls for row in c["checks"]},
    )


def load_baseline(path: Path) -> Record:
    """An earlier JSON report as a record to compare with; a file that is not one is a one-line StackError."""
    source = f"--baseline {path}"
    try:
        data = json.loads(read_stack_file(path, source, MAX_BASELINE_BYTES).decode("utf-8"))
        report = _BaselineReport.model_validate(data)
    except (ValueError, RecursionError) as exc:  # JSON, UTF-8 or the report's shape (ValidationError is one)
        first = exc.errors(include_url=False)[0] if isinstance(exc, ValidationError) else None
        why = (f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first else type(exc).__name__)
        raise StackError(f"{source}: not a stackproof JSON report ({why})") from None
    return Record(
        time=report.generated, target=report.target.stack_dir or "", project=report.target.compose_project,
        commit=report.target.git_commit, run=str(report.run.get("status", "COMPLETE")),
        verdict=report.verdict.get("decision") if report.verdict.get("decision") in [str(d) for d in Decision] else None,
        controls={c.id: cast(ControlStatus, recorded_status(control_status(c.model_dump()))) for c in report.controls},
        checks={row.nodeid: cast(CheckStatus, recorded_status(check_status(row.model_dump())))
                for c in report.controls for row in c.checks},
    )


def _open_regular(path: Path, flags: int) -> int:
    """A descriptor of `path`, a regular file (never blocking on a FIFO or a device, never through a symlink:
    a checkout that commits `reports/history.jsonl` as a link must not make the run append outside);
    OSError otherwise."""
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return fd


def _read_tail(fd: int) -> tuple[list[bytes], bool]:
    """The last complete lines of the file (bounded), and whether it ends with a newline."""
    size = os.fstat(fd).st_size
    start = max(0, size - MAX_TAIL_BYTES)
    chunks, total = [], 0
    while total < size - start:
        chunk = os.pread(fd, min(1024 * 1024, size - start - total), start + total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    data = b"".join(chunks)
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first one is cut
    return [line for line in lines[-MAX_LINES:] if line.strip()], data.endswith(b"\n") or not data


def parse_lines(lines: list[bytes]) -> tuple[list[Record], int]:
    """The valid records among `lines`, and how many lines were not one."""
    records, bad = [], 0
    for line in lines:
        if len(line) > MAX_LINE_BYTES:
            bad += 1
            continue
        try:
            records.append(Record.model_validate(json.loads(line)))
        except (ValueError, RecursionError):  # JSON, UTF-8, the record's shape (ValidationError is a ValueError)
            bad += 1
    return records, bad


class RunHistory:
    """The history file of the run (None: --no-history) and the baseline it compares with, if any."""

    def __init__(self, path: Path | None, baseline: Record | None = None):
        self.path = path
        self.baseline = baseline
        self.notes: list[str] = []
        self._records: list[Record] | None = None
        self.appended = False

    def records(self) -> list[Record]:
        """The valid records of the file's tail, oldest first (read once)."""
        if self._records is None:
            self._records = []
            if self.path is not None and (self.path.exists() or self.path.is_symlink()):
                try:
                    fd = _open_regular(self.path, os.O_RDONLY)
                    try:
                        lines, _ = _read_tail(fd)
                    finally:
                        os.close(fd)
                except OSError as exc:
                    self.notes.append(f"history {self.path} not read: {exc.strerror or exc}")
                    return self._records
                self._records, bad = parse_lines(lines)
                if bad:
                    self.notes.append(f"history {self.path}: {bad} unreadable line(s) skipped")
        return self._records

    def compare(self, current: Record, names: dict[str, str]) -> dict:
        """The report's history section: the run against the previous run of its target (or the baseline),
        and the last WINDOW runs of the target. `names`: node id -> the check's name in the report."""
        earlier = [record for record in self.records() if record.same_target(current)][-(WINDOW - 1):]
        previous = self.baseline or (earlier[-1] if earlier else None)
        chain = [self.baseline] if self.baseline else earlier  # the runs before this one, for "failing since"
        new, fixed, still = [], [], []
        if previous is not None:
            for nodeid, status in current.checks.items():
                before = previous.checks.get(nodeid)
                if status == Status.FAIL and before not in FAILING:
                    new.append(_check(nodeid, names))
                elif status == Status.PASS and before in FAILING:
                    fixed.append(_check(nodeid, names))
                elif status == Status.FAIL:
                    still.append({**_check(nodeid, names), "since": _failing_since(nodeid, chain)})
        runs = [*earlier, current]
        flapping = []
        for nodeid in current.checks:
            outcomes = [record.checks.get(nodeid) in FAILING for record in runs
                        if record.checks.get(nodeid) in (Status.PASS, *FAILING)]
            changes = sum(a != b for a, b in zip(outcomes, outcomes[1:], strict=False))
            if changes >= FLAPPING_CHANGES:
                flapping.append({**_check(nodeid, names), "changes": changes})
        return {
            "file": str(self.path) if self.path else None,
            "previous": None if previous is None else {
                "source": "baseline" if self.baseline else "history", "time": previous.time,
                "commit": previous.commit, "verdict": previous.verdict, "target": previous.target},
            "new_failures": new,
            "fixed": fixed,
            "still_failing": still,
            "flapping": flapping,
            "runs": [{"time": r.time, "commit": r.commit, "verdict": r.verdict} for r in runs],
            "trend": [{"control": control, "statuses": [r.controls.get(control) for r in runs]}
                      for control in current.controls],
            "notes": list(self.notes),
        }

    def append(self, record: Record) -> None:
        """Add the run's line (once per run) under an advisory lock; cut the file back to its newest lines
        when it has grown past MAX_FILE_BYTES. A file that cannot be written is a note, not an error."""
        if self.path is None or self.appended:
            return
        self.appended = True
        line = record.model_dump_json(exclude_none=False).encode() + b"\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = _open_regular(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            try:
                _lock(fd)
                lines, ends_with_newline = _read_tail(fd)
                os.write(fd, (b"" if ends_with_newline else b"\n") + line)
                if os.fstat(fd).st_size > MAX_FILE_BYTES:
                    self._cut(self.path, lines + [line.rstrip(b"\n")])
            finally:
                os.close(fd)
        except OSError as exc:
            self.notes.append(f"history {self.path} not written: {exc.strerror or exc}")

    def _cut(self, path: Path, lines: list[bytes]) -> None:
        """Replace the file with its newest valid lines (at most half the tail size). The new file is made
        by mkstemp (a random name, O_EXCL): a checkout that commits a symlink at a name it can predict (the
        history's name and the run's pid) must not make the run write through it, outside the report dir."""
        kept, size = [], 0
        for line in reversed(lines):
            size += len(line) + 1
            if size > MAX_TAIL_BYTES // 2:
                break
            kept.append(line)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"".join(line + b"\n" for line in reversed(kept)))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError:
            os.unlink(tmp)
            raise


def _lock(fd: int) -> None:
    """An exclusive advisory lock on the history file, waited for at most LOCK_WAIT_SECONDS."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise OSError(errno.EWOULDBLOCK, "locked by another run") from None
            time.sleep(0.05)


def _check(nodeid: str, names: dict[str, str]) -> dict:
    return {"nodeid": nodeid, "name": names.get(nodeid, check_id(nodeid))}


def _failing_since(nodeid: str, chain: list[Record]) -> str:
    """When the check's current run of failures began: the earliest of the consecutive failing runs before this one."""
    since = ""
    for record in reversed(chain):
        if record.checks.get(nodeid) not in FAILING:
            break
        since = record.time
    return since


def regressions_reason(history: dict | None) -> str:
    """The verdict's leading words when checks regressed: 'regressed since the last run: a, b (and 2 more)'."""
    if not history or not history.get("new_failures"):
        return ""
    new = history["new_failures"]
    since = "the baseline" if history["previous"]["source"] == "baseline" else "the last run"
    named = ", ".join(check_id(check["nodeid"]) for check in new[:SHOWN_REGRESSIONS])
    more = f" (and {len(new) - SHOWN_REGRESSIONS} more)" if len(new) > SHOWN_REGRESSIONS else ""
    return f"regressed since {since}: {named}{more}"
