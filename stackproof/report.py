"""The validation report: one row per check, control statuses, totals, verdict.

`ValidationReport` is the plugin's state object (like junitxml's LogXML): it is
registered in pytest_configure, fills rows from the run's hooks and writes the
report files at the end of the session.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import pytest

from . import __version__, render
from .controls import CONTROLS
from .errors import StackError
from .evidence import EVIDENCE_KEY
from .redact import Redactor, clean

PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"
REPORT_NAME = "validation-report"
SCHEMA_VERSION = "1.2"
"""Version of the JSON report's schema (docs/report.schema.json; changes: docs/report-schema-changelog.md)."""


@dataclass
class CheckRow:
    control: str
    nodeid: str
    name: str
    mode: str  # static | live
    status: str = SKIPPED
    test: str = ""
    result: str = ""
    expected: str = ""
    reason: str = ""
    notes: tuple[str, ...] = ()
    ran: bool = False


def reason_of(excinfo: pytest.ExceptionInfo) -> str:
    """The one line that explains a failure, error or skip."""
    exc = excinfo.value
    if isinstance(exc, (pytest.skip.Exception, pytest.fail.Exception)):
        text = exc.msg
    elif isinstance(exc, (AssertionError, StackError)):
        text = str(exc) or "assertion failed"
    else:
        text = f"{type(exc).__name__}: {exc}"
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _check_name(item: pytest.Item) -> str:
    """A check's name in the report: its docstring's first line, with the parameter id if any."""
    doc = (getattr(getattr(item, "function", None), "__doc__", None) or "").strip().splitlines()
    name = doc[0] if doc else item.name
    callspec = getattr(item, "callspec", None)
    return f"{name} [{callspec.id}]" if callspec else name


def control_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("control")
    return marker.args[0] if marker else None


class ValidationReport:
    def __init__(self, config: pytest.Config, report_dir: Path, target: Callable[[], "TargetInfo"], redactor: Redactor,
                 target_errors: Callable[[], list[str]] = list, profile: Callable[[], dict] | None = None):
        self.config = config
        self.target_errors = target_errors  # problems of the whole target, listed once at the top
        self.report_dir = report_dir
        self.target = target  # called once, when the summary is built
        self.profile = profile  # the profile's sources, changed and weakened values; called once too
        self.redactor = redactor
        self.rows: dict[str, CheckRow] = {}
        self.live_run = False
        self.engine: str | None = None  # compose, swarm or podman, once known (--engine or the live connection)
        self.started = dt.datetime.now(dt.timezone.utc)
        self.written: list[Path] = []
        self.summary: dict | None = None
        self.session_errors: list[str] = []  # failures of the run as a whole (the stack dir changed)

    def add_session_error(self, text: str) -> None:
        """A failure of the whole run, not of one check: the verdict is NO-GO with it as the reason."""
        self.session_errors.append(text)

    # --- hooks ---------------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            control = control_of(item)
            if control is None:
                continue
            mode = "live" if item.get_closest_marker("live") else "static"
            self.live_run |= mode == "live"
            self.rows[item.nodeid] = CheckRow(control, item.nodeid, _check_name(item), mode)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        rep = outcome.get_result()
        self._scrub(rep)
        row = self.rows.get(item.nodeid)
        if row is None:
            return
        evidence = item.stash.get(EVIDENCE_KEY, None)
        if evidence is not None:
            row.test, row.expected, row.result = evidence.test, evidence.expected, evidence.result
            row.notes = tuple(evidence.notes)
        if rep.skipped and call.excinfo is not None:
            if row.status != FAIL:
                row.status, row.reason = SKIPPED, reason_of(call.excinfo)
        elif rep.failed:
            reason = reason_of(call.excinfo) if call.excinfo is not None else "failed"
            if rep.when != "call":
                reason = f"error in {rep.when}: {reason}"
            if row.status != FAIL:
                row.status, row.reason = FAIL, reason
        elif rep.when == "call" and rep.passed:
            row.status, row.ran = PASS, True

    def _scrub(self, rep: pytest.TestReport) -> None:
        """Remove secret values from pytest's own failure text and captured output."""
        if not self.redactor:
            return
        if rep.longrepr is not None:
            text = str(rep.longrepr)
            scrubbed = self.redactor.scrub(text)
            if scrubbed != text:
                rep.longrepr = scrubbed
        rep.sections = [(title, self.redactor.scrub(body)) for title, body in rep.sections]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.rows:
            return
        self.summary = self.build_summary()
        self.report_dir.mkdir(parents=True, exist_ok=True)
        for suffix, text in render.render_all(self.summary).items():
            path = self.report_dir / f"{REPORT_NAME}.{suffix}"
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
            self.written.append(path)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.summary:
            return
        verdict = self.summary["verdict"]
        color = {"green": True} if verdict["decision"] == "GO" else {"red": True}
        terminalreporter.section("stackproof validation report")
        for error in self.summary["target_errors"]:
            terminalreporter.write_line(f"TARGET ERROR: {error}", red=True, bold=True)
        for control in self.summary["controls"]:
            terminalreporter.write_line(f"{control['status']:8} {control['title']}")
        for line in self.summary["profile"].get("weakened", []):
            terminalreporter.write_line(f"WEAKENED by the profile: {line}", yellow=True)
        for line in self.summary["profile"].get("ignored", []):
            terminalreporter.write_line(f"ignored (--strict-profile): {line}")
        terminalreporter.write_line(verdict["line"], bold=True, **color)
        for path in self.written:
            terminalreporter.write_line(f"report: {path}")

    # --- summary ---------------------------------------------------------------

    @cached_property
    def target_info(self) -> "TargetInfo":
        return self.target()

    def build_summary(self) -> dict:
        rows = [self._clean_row(row) for row in self.rows.values()]
        controls = []
        for control in CONTROLS:
            mine = [row for row in rows if row["control"] == control.id]
            controls.append(_control_summary(control, mine, self.engine))
        totals = {
            "passed": sum(row["status"] == PASS for row in rows),
            "failed": sum(row["status"] == FAIL for row in rows),
            "skipped": sum(row["status"] == SKIPPED for row in rows),
        }
        ran = totals["passed"] + totals["failed"]
        totals["total"] = len(rows)
        totals["success_rate"] = round(100.0 * totals["passed"] / ran, 1) if ran else 0.0
        target_errors = [clean(self.redactor.scrub(error)) for error in self.target_errors()]
        session_errors = [clean(self.redactor.scrub(error)) for error in self.session_errors]
        verdict = decide(controls, rows, self.live_run)
        if target_errors or session_errors:
            reason = f"target error: {target_errors[0]}" if target_errors else session_errors[0]
            verdict = {"decision": "NO-GO", "reason": reason, "line": f"NO-GO: {reason}"}
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "stackproof", "version": __version__},
            "generated": self.started.isoformat(timespec="seconds"),
            "target": {k: None if v is None else clean(self.redactor.scrub(str(v))) for k, v in asdict(self.target_info).items()},
            "run": {"live": self.live_run, "engine": self.engine},
            "target_errors": target_errors,
            "profile": self._clean_tree(self.profile() if self.profile else {}),
            "session_errors": session_errors,
            "controls": controls,
            "totals": totals,
            "verdict": verdict,
        }

    def _clean_tree(self, value):
        """A JSON-able value with every string scrubbed and cleaned (the profile's values come from the stack)."""
        if isinstance(value, dict):
            return {key: self._clean_tree(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._clean_tree(item) for item in value]
        return clean(self.redactor.scrub(value)) if isinstance(value, str) else value

    def _clean_row(self, row: CheckRow) -> dict:
        data = asdict(row)
        for key in ("name", "test", "result", "expected", "reason"):
            data[key] = clean(self.redactor.scrub(data[key]))
        data["notes"] = [clean(self.redactor.scrub(note)) for note in row.notes]
        return data


@dataclass
class TargetInfo:
    stack_dir: str
    git_commit: str | None
    compose_project: str | None
    profile: str | None
    compose_loader: str | None = None  # how the compose model was read (the Python fallback is named)


def _control_summary(control, rows: list[dict], engine: str | None) -> dict:
    if any(row["status"] == FAIL for row in rows):
        status = FAIL
    elif any(row["status"] == PASS for row in rows):
        status = PASS
    else:
        status = SKIPPED
    modes = sorted({row["mode"] for row in rows if row["status"] == PASS})
    validated = "both" if len(modes) == 2 else (modes[0] if modes and status == PASS else "-")
    failing = [row for row in rows if row["status"] == status] if status != PASS else []
    return {
        "id": control.id,
        "title": control.title,
        "impact": control.impact,
        "p0": control.p0,
        "warning": control.warning_for(engine),
        "status": status,
        "validated": validated,
        "reason": failing[0]["reason"] if failing else "",
        "checks": rows,
    }


def decide(controls: list[dict], rows: list[dict], live_run: bool) -> dict:
    """GO only when every P0 control passes and, on a live run, no live check was skipped.
    The reason names what matters most: a failed control, then a skipped live check, then a control that never ran."""
    p0 = [c for c in controls if c["p0"]]
    failed = [c for c in p0 if c["status"] == FAIL]
    unproven = [c for c in p0 if c["status"] == SKIPPED]
    live_skips = [r for r in rows if r["mode"] == "live" and r["status"] == SKIPPED]
    if failed:
        reason = _control_reason(failed, "failed")
    elif live_run and live_skips:
        reason = f"{len(live_skips)} live check(s) skipped: {live_skips[0]['reason']}"
    elif unproven:
        reason = _control_reason(unproven, "not validated")
    else:
        return {"decision": "GO", "reason": "", "line": "GO: every P0 control passed"}
    return {"decision": "NO-GO", "reason": reason, "line": f"NO-GO: {reason}"}


def _control_reason(controls: list[dict], what: str) -> str:
    first = controls[0]
    others = f" (and {len(controls) - 1} more control(s))" if len(controls) > 1 else ""
    return f"{first['title']} {what}: {first['reason'] or 'no check of it ran'}{others}"
