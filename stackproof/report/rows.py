"""Per-check rows, made where the check runs (the serial process, or an xdist worker).

`RowRecorder` (like junitxml's per-test reporter) turns a check's setup, call and teardown reports
into one `CheckRow`: its status from the outcome, its reason from the exception, its `not_run` kind
from the skip's type (`outcome.NotRun`), its mode from its marker. At teardown the row, scrubbed and
cleaned, rides on the teardown report (`stackproof_row`), with its secret-free facts as JUnit
properties; xdist carries it to the controller like any report attribute. The first report a
process sends also carries its plan (every check it collected: control, mode, name), so the xdist
controller, which collects nothing, has a row for a check that never reports (an interrupted run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pytest

from stackproof.controls import BY_ID, remedy_of
from stackproof.errors import StackError
from stackproof.evidence import EVIDENCE_KEY
from stackproof.redact import Redactor, strip_controls, text_of
from stackproof.report.outcome import NotRunKind, Status, not_run_kind

JUNIT_PROPERTIES = ("control", "mode", "test", "expected", "result")
ROW_ATTRIBUTE = "stackproof_row"  # the row, on a check's teardown report
PLAN_ATTRIBUTE = "stackproof_plan"  # {nodeid: [control, mode, name, severity, fix]}, on the first report of a process
TARGET_ERRORS_ATTRIBUTE = "stackproof_target_errors"  # the target errors seen where the check ran
ENGINE_ATTRIBUTE = "stackproof_engine"  # the engine the live checks found where the check ran
ENGINE_VERSION_ATTRIBUTE = "stackproof_engine_version"  # ... and its version


@dataclass
class CheckRow:
    control: str
    nodeid: str
    name: str
    mode: str  # static | live (from its marker)
    status: str = Status.SKIPPED
    test: str = ""
    result: str = ""
    expected: str = ""
    reason: str = ""
    notes: tuple[str, ...] = ()
    ran: bool = False  # ran to a pass or a fail
    duration_s: float = 0.0  # setup, call and teardown
    not_run: str | None = None  # a skipped check: why (outcome.NotRunKind)
    internal_error: bool = False  # it failed on an exception of the suite's own code, not a finding
    severity: str = ""  # critical, high or medium (its remediation marker; controls.Severity)
    fix: str = ""  # what to do when it fails (its remediation marker)
    locations: tuple[dict, ...] = ()  # where its finding is: {path, line, key} (evidence.Location)

    @classmethod
    def from_dict(cls, data: dict) -> CheckRow:
        row = cls(**{key: value for key, value in data.items() if key in ROW_FIELDS})
        row.notes, row.locations = tuple(row.notes), tuple(row.locations)
        return row


ROW_FIELDS = {f.name for f in fields(CheckRow)}


def reason_of(excinfo: pytest.ExceptionInfo) -> str:
    """The one line that explains a failure, error or skip."""
    exc = excinfo.value
    try:
        if isinstance(exc, (pytest.skip.Exception, pytest.fail.Exception)):
            text = exc.msg
        elif isinstance(exc, (AssertionError, StackError)):
            text = str(exc) or "assertion failed"
        else:
            text = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose message cannot be rendered
        text = type(exc).__name__
    lines = [line.strip() for line in text_of(text).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def is_internal_error(exc: BaseException) -> bool:
    """A failure that is not a finding about the stack: neither an assertion, nor a StackError, nor pytest.fail."""
    return not isinstance(exc, (AssertionError, StackError, pytest.fail.Exception, pytest.skip.Exception))


def check_name(item: pytest.Item) -> str:
    """A check's name in the report: its docstring's first line, with the parameter id if any."""
    doc = (getattr(getattr(item, "function", None), "__doc__", None) or "").strip().splitlines()
    name = doc[0] if doc else item.name
    callspec = getattr(item, "callspec", None)
    return f"{name} [{callspec.id}]" if callspec else name


def control_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("control")
    return marker.args[0] if marker else None


def mode_of(item: pytest.Item) -> str:
    """static or live, from the check's marker (the plugin refuses a check marked neither or both)."""
    return "live" if item.get_closest_marker("live") else "static"


def row_of(item: pytest.Item) -> CheckRow | None:
    control = control_of(item)
    if control is None:
        return None
    remedy = remedy_of(item)
    severity, fix = (str(remedy.severity), remedy.fix) if remedy else ("", "")
    return CheckRow(control, item.nodeid, check_name(item), mode_of(item), severity=severity, fix=fix)


def plan_entry(row: CheckRow, redactor: Redactor) -> list[str]:
    """What the xdist controller learns of a check before it reports (`planned_row` reads it back)."""
    return [row.control, row.mode, redactor.clean(row.name), row.severity, row.fix]


def suite_control(nodeid: str) -> str | None:
    """The control a node id's suite file is about (suites/test_<control>.py), for the xdist controller,
    which knows a check only by its node id until a worker reports it."""
    control = Path(nodeid.partition("::")[0]).stem.removeprefix("test_")
    return control if control in BY_ID else None


def planned_row(nodeid: str, plan: dict[str, list[str]]) -> CheckRow | None:
    """The row of a check the xdist controller knows only from a worker's plan, until its own row arrives."""
    entry = plan.get(nodeid)
    if not isinstance(entry, (list, tuple)) or len(entry) != 5:
        return None
    control, mode, name, severity, fix = entry
    return CheckRow(control, nodeid, name, mode, severity=severity, fix=fix)


class RowRecorder:
    """Where checks run: one row per check from its reports (a pytest plugin object)."""

    def __init__(self, redactor: Redactor, target_errors: Callable[[], list[str]] = list):
        self.redactor = redactor
        self.target_errors = target_errors
        self.engine: str | None = None  # set by the live fixture once it reached the engine
        self.engine_version: str | None = None
        self.plan: dict[str, list[str]] = {}
        self._plan_sent = False
        self._rows: dict[str, CheckRow] = {}  # the checks in progress

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.plan = {row.nodeid: plan_entry(row, self.redactor) for row in map(row_of, session.items) if row is not None}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        rep = outcome.get_result()
        self.scrub(rep)
        if not self._plan_sent and self.plan:
            setattr(rep, PLAN_ATTRIBUTE, self.plan)
            self._plan_sent = True
        row = self._rows.get(item.nodeid) or row_of(item)
        if row is None:
            return
        self._rows[item.nodeid] = row
        evidence = item.stash.get(EVIDENCE_KEY, None)
        if evidence is not None:
            row.test, row.expected, row.result = evidence.test, evidence.expected, evidence.result
            row.notes, row.locations = tuple(evidence.notes), tuple(location.as_dict() for location in evidence.locations)
        self._record_outcome(row, rep, call)
        row.duration_s = round(row.duration_s + rep.duration, 3)
        if rep.when == "teardown":
            del self._rows[item.nodeid]
            data = clean_row(row, self.redactor)
            setattr(rep, ROW_ATTRIBUTE, data)
            setattr(rep, TARGET_ERRORS_ATTRIBUTE, [self.redactor.clean(error) for error in self.target_errors()])
            setattr(rep, ENGINE_ATTRIBUTE, self.engine)
            setattr(rep, ENGINE_VERSION_ATTRIBUTE, self.engine_version)
            rep.user_properties.extend((key, data[key] or "-") for key in JUNIT_PROPERTIES)

    @staticmethod
    def _record_outcome(row: CheckRow, rep: pytest.TestReport, call: pytest.CallInfo) -> None:
        """The first failure of a check wins (a teardown error after a failed call keeps the call's reason)."""
        if row.status == Status.FAIL:
            return
        if rep.skipped and call.excinfo is not None:
            row.status, row.reason = Status.SKIPPED, reason_of(call.excinfo)
            row.not_run = not_run_kind(call.excinfo.value) or NotRunKind.NOT_APPLICABLE  # an xfail's exception
        elif rep.failed:
            reason = reason_of(call.excinfo) if call.excinfo is not None else "failed"
            if rep.when != "call":
                reason = f"error in {rep.when}: {reason}"
            row.status, row.reason, row.ran, row.not_run = Status.FAIL, reason, True, None
            row.internal_error = call.excinfo is not None and is_internal_error(call.excinfo.value)
        elif rep.when == "call" and rep.passed:
            row.status, row.ran = Status.PASS, True

    def scrub(self, rep: pytest.TestReport) -> None:
        """Remove secret values from pytest's own output of a check: its failure text (traceback,
        assertion explanation, `-l` locals, crash line) and captured output, after stripping ANSI and
        control characters (a key split by an escape sequence would be joined on the terminal) and
        replacing what is not text. Every output (terminal, JUnit, pytest-html) is made from these."""
        longrepr = rep.longrepr
        if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, message)
            rep.longrepr = (longrepr[0], longrepr[1], self.redactor.scrub(strip_controls(text_of(longrepr[2]))))
        elif longrepr is not None:
            text = str(longrepr)
            safe = self.redactor.scrub(strip_controls(text_of(text)))
            if safe != text:  # a secret, an escape sequence, an undecodable name: the cleaned text instead
                rep.longrepr = safe  # (pytest prints a string longrepr as is)
        rep.sections = [(title, self.redactor.scrub(strip_controls(text_of(body)))) for title, body in rep.sections]


def clean_row(row: CheckRow, redactor: Redactor) -> dict:
    """The row as a JSON-able dict, every text from the stack scrubbed and cleaned."""
    data = asdict(row)
    data["status"], data["not_run"] = str(row.status), row.not_run and str(row.not_run)
    for key in ("name", "test", "result", "expected", "reason"):
        data[key] = redactor.clean(data[key])
    data["notes"] = [redactor.clean(note) for note in row.notes]
    data["locations"] = [{key: redactor.clean(value) if isinstance(value, str) else value for key, value in place.items()}
                         for place in row.locations]
    return data
