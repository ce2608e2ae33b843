"""The validation report: one row per check, control statuses, totals, verdict.

`ValidationReport` is the plugin's state object (like junitxml's LogXML). Where a check
runs (the serial process, or an xdist worker) it turns the check's reports into a row,
scrubbed and cleaned, and attaches it to the check's teardown report (`stackproof_row`,
which xdist carries to the controller like any report attribute), with the row's
secret-free facts as JUnit properties. Where the run is controlled (the serial process,
or the xdist controller) the rows are collected from those reports, in collection order,
and the report set is written once, at the end of the session. Workers write nothing.

A run that executes no check (`--collect-only`, nothing selected) writes no report. An
interrupted run (`--run-timeout`, Ctrl-C, `-x`) writes an INCOMPLETE report, an internal
error an ERROR report; both are NO-GO. The exit code follows the verdict.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Callable

import pytest

from stackproof import __version__
from stackproof.report import environment
from stackproof.report import render
from stackproof.controls import BY_ID, CONTROLS
from stackproof.errors import ENVIRONMENT_ERROR, StackError
from stackproof.evidence import EVIDENCE_KEY
from stackproof.report.history import RunHistory, record_of, regressions_reason
from stackproof.redact import Redactor, strip_controls, text_of
from stackproof.report.waivers import UNMATCHED, WaiverSet

PASS, FAIL, SKIPPED, NOT_PROVEN = "PASS", "FAIL", "SKIPPED", "NOT PROVEN"
LIVE_ONLY = "LIVE ONLY"  # in a static run: a control only its live checks can prove
GO, NO_GO, STATIC_PASS, STATIC_FAIL = "GO", "NO-GO", "STATIC PASS", "STATIC FAIL"
PASSING_DECISIONS = (GO, STATIC_PASS)
COMPLETE, INCOMPLETE, ERROR = "COMPLETE", "INCOMPLETE", "ERROR"
BLOCKED_PREFIX = "blocked by "  # a skip whose input an earlier failing check already ruled out
NOT_FINISHED_PREFIX = "not finished: "  # a check an interrupted run did not finish
ENVIRONMENT_PREFIX = ENVIRONMENT_ERROR  # a skip for a tool missing where the suite runs (errors.environment_error)
REPORT_NAME = "validation-report"
SCHEMA_VERSION = "2.0"
"""Version of the JSON report's schema (docs/report.schema.json; changes: docs/report-schema-changelog.md)."""
SUFFIXES = ("json", "md", "html")
JUNIT_PROPERTIES = ("control", "mode", "test", "expected", "result")
ROW_ATTRIBUTE = "stackproof_row"  # the row, on a check's teardown report
TARGET_ERRORS_ATTRIBUTE = "stackproof_target_errors"  # the target errors seen where the check ran
ENGINE_ATTRIBUTE = "stackproof_engine"  # the engine the live checks found where the check ran
ENGINE_VERSION_ATTRIBUTE = "stackproof_engine_version"  # ... and its version


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
    ran: bool = False  # ran to a pass or a fail
    duration_s: float = 0.0  # setup, call and teardown


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


def _check_name(item: pytest.Item) -> str:
    """A check's name in the report: its docstring's first line, with the parameter id if any."""
    doc = (getattr(getattr(item, "function", None), "__doc__", None) or "").strip().splitlines()
    name = doc[0] if doc else item.name
    callspec = getattr(item, "callspec", None)
    return f"{name} [{callspec.id}]" if callspec else name


def control_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("control")
    return marker.args[0] if marker else None


def placeholder_row(nodeid: str) -> CheckRow | None:
    """The row of a check known only by its node id (xdist controller, until the check's own row arrives):
    the control from its suite file, the mode from its name (live checks are named test_live_*)."""
    path, _, name = nodeid.partition("::")
    control = Path(path).stem.removeprefix("test_")
    mode = "live" if name.startswith("test_live") else "static"
    return CheckRow(control, nodeid, name, mode) if control in BY_ID else None


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


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class ValidationReport:
    def __init__(self, config: pytest.Config, report_dir: Path, target: Callable[[], "TargetInfo"], redactor: Redactor,
                 target_errors: Callable[[], list[str]] = list, profile: Callable[[], dict] | None = None):
        self.config = config
        self.target_errors = target_errors  # problems of the whole target, listed once at the top
        self.received_target_errors: list[str] = []  # ... as seen where the checks ran (xdist workers)
        self.report_dir = report_dir
        self.target = target  # called once, when the summary is built
        self.profile = profile  # the profile's sources, changed and weakened values; called once too
        self.redactor = redactor
        self.rows: dict[str, CheckRow] = {}  # in collection order
        self.finished: set[str] = set()  # checks whose teardown report arrived
        self.engine: str | None = None  # compose, swarm or podman, once known (--engine or the live connection)
        self.engine_version: str | None = None  # the engine's version, once a live check reached it
        self.started = dt.datetime.now(dt.timezone.utc)
        self.clock = time.monotonic()  # the run's duration is measured from here
        self.tool_versions: Future | None = None  # environment.tool_versions(), asked when the session starts
        self.written: list[Path] = []
        self.summary: dict | None = None
        self.interruption = ""  # why the run stopped early (KeyboardInterrupt, run timeout)
        self.internal_error = ""
        self.session: pytest.Session | None = None
        self._writing = threading.Lock()  # the session's end and the watchdog's hard stop
        self.session_errors: list[str] = []  # failures of the run as a whole (the stack dir changed)
        self.waivers: WaiverSet | None = None  # where the run is controlled: the waivers (stackproof/waivers.py)
        self.history: RunHistory | None = None  # ... and the history file (stackproof/history.py), unless --no-history

    def add_session_error(self, text: str) -> None:
        """A failure of the whole run, not of one check: the verdict is NO-GO with it as the reason."""
        self.session_errors.append(text)

    # --- where checks run: rows from the check's own reports -------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            control = control_of(item)
            if control is not None:
                mode = "live" if item.get_closest_marker("live") else "static"
                self.rows[item.nodeid] = CheckRow(control, item.nodeid, _check_name(item), mode)
        if self.rows and not is_worker(self.config) and not self.config.option.collectonly:
            self.remove_report_set()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        rep = outcome.get_result()
        self._scrub(rep)
        control = control_of(item)
        if control is None:
            return
        row = self.rows.setdefault(
            item.nodeid, CheckRow(control, item.nodeid, _check_name(item), "live" if item.get_closest_marker("live") else "static"))
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
                row.status, row.reason, row.ran = FAIL, reason, True
        elif rep.when == "call" and rep.passed:
            row.status, row.ran = PASS, True
        row.duration_s = round(row.duration_s + rep.duration, 3)
        if rep.when == "teardown":
            data = self._clean_row(row)
            setattr(rep, ROW_ATTRIBUTE, data)
            setattr(rep, TARGET_ERRORS_ATTRIBUTE, [self.redactor.clean(error) for error in self.target_errors()])
            setattr(rep, ENGINE_ATTRIBUTE, self.engine)
            setattr(rep, ENGINE_VERSION_ATTRIBUTE, self.engine_version)
            rep.user_properties.extend((key, data[key] or "-") for key in JUNIT_PROPERTIES)

    def _scrub(self, rep: pytest.TestReport) -> None:
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

    def _clean_row(self, row: CheckRow) -> dict:
        data = asdict(row)
        for key in ("name", "test", "result", "expected", "reason"):
            data[key] = self.redactor.clean(data[key])
        data["notes"] = [self.redactor.clean(note) for note in row.notes]
        return data

    # --- where the run is controlled: rows from the reports received -----------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        """xdist controller: the checks a worker collected (the same on every worker), in order."""
        if self.rows:
            return
        for nodeid in ids:
            row = placeholder_row(nodeid)
            if row is not None:
                self.rows[nodeid] = row
        if self.rows:
            self.remove_report_set()

    @pytest.hookimpl(tryfirst=True, specname="pytest_runtest_logreport")
    def pytest_runtest_logreport_waivers(self, report: pytest.TestReport) -> None:
        """Where the run is controlled, before the terminal, JUnit and pytest's failure count see the report: a
        failure a waiver covers becomes an expected failure (xfail: not a failure for the exit code, `-x` or
        JUnit), WAIVED in the report; one whose waiver expired stays a failure. The waived check's testcase
        gets a `waiver` property (`waiver_expired` for an expired one)."""
        waivers = self.waivers
        if not waivers or not waivers.waivers or report.when not in ("setup", "call", "teardown"):
            return
        row = self.rows.get(report.nodeid) or placeholder_row(report.nodeid)
        if row is None:
            return
        if report.failed and not hasattr(report, "wasxfail"):
            waiver = waivers.judge_failure(report.nodeid, row.control)
            if waiver is not None:
                report.outcome = "skipped"
                report.wasxfail = f"waived: {self.redactor.clean(waiver.describe())}"
        if report.when == "teardown":
            if report.nodeid in waivers.waived:
                report.user_properties.append(("waiver", self.redactor.clean(waivers.waived[report.nodeid].describe())))
            elif report.nodeid in waivers.expired:
                report.user_properties.append(
                    ("waiver_expired", self.redactor.clean(waivers.expired[report.nodeid].describe())))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, ROW_ATTRIBUTE, None)
        if isinstance(data, dict):
            row = CheckRow(**{key: value for key, value in data.items() if key in ROW_FIELDS})
            row.notes = tuple(row.notes)
            self.rows[report.nodeid] = row
            self.finished.add(report.nodeid)
            self.engine = self.engine or getattr(report, ENGINE_ATTRIBUTE, None)
            self.engine_version = self.engine_version or getattr(report, ENGINE_VERSION_ATTRIBUTE, None)
            for error in getattr(report, TARGET_ERRORS_ATTRIBUTE, None) or []:
                if error not in self.received_target_errors:
                    self.received_target_errors.append(self.redactor.clean(error))
        elif report.failed and report.when not in ("setup", "call", "teardown"):  # xdist: its worker crashed
            row = self.rows.get(report.nodeid) or placeholder_row(report.nodeid)
            if row is not None:
                lines = text_of(str(report.longrepr)).strip().splitlines()
                row.status, row.ran, row.reason = FAIL, True, lines[0] if lines else "the check crashed"
                self.rows[report.nodeid] = row
                self.finished.add(report.nodeid)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Where the report is written, the tools' versions are asked now, beside the checks, so the
        report waits for nothing at the end."""
        self.session = session
        if not is_worker(self.config) and not self.config.option.collectonly:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stackproof-tool-versions")
            self.tool_versions = pool.submit(environment.tool_versions)
            pool.shutdown(wait=False)  # the thread ends with its one task; the report waits for its result

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo) -> None:
        lines = text_of(str(excinfo.value)).strip().splitlines()
        self.interruption = lines[0] if lines else f"interrupted ({excinfo.typename})"

    def pytest_internalerror(self, excrepr, excinfo: pytest.ExceptionInfo) -> None:
        self.internal_error = reason_of(excinfo)

    def runs_checks(self) -> bool:
        """Whether this run writes a report: it set out to execute checks (it collected some, and is not
        --collect-only or --setup-plan, nor an xdist worker). An interrupted or broken run that had
        collected its checks writes one too: INCOMPLETE or ERROR."""
        option = self.config.option
        if is_worker(self.config) or option.collectonly or getattr(option, "setupplan", False):
            return False
        return bool(self.rows)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Build and write the report set, then make the exit code and JUnit follow the verdict
        (tryfirst: before junitxml and pytest-html write their files)."""
        if not self.runs_checks():
            return
        with self._writing:
            self.write(session, int(exitstatus))
        if not self.summary["verdict"]["passed"] and session.exitstatus in (pytest.ExitCode.OK,
                                                                                 pytest.ExitCode.INTERRUPTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # an interrupted run is a NO-GO (2 is a usage error)
        self.annotate_junit()

    def write(self, session: pytest.Session | None, exitstatus: int) -> None:
        try:
            self.summary = self.build_summary(session, exitstatus)
            files = render.render_all(self.summary)
        except Exception as exc:  # never a GO file, never no file: an ERROR report
            self.internal_error = f"building the report: {reason_of(pytest.ExceptionInfo.from_exception(exc))}"
            self.summary = self.error_summary()
            files = render.render_all(self.summary)
        self.write_report_set(files)
        if self.history is not None and self.summary.get("controls"):  # an ERROR report has nothing to remember
            self.history.append(record_of(self.summary))

    def write_interrupted(self, why: str) -> None:
        """The watchdog's hard stop (another thread): the run did not end after its interruption, so the
        report of what ran so far is written now, INCOMPLETE and NO-GO, replacing any set of this run."""
        if not self.runs_checks():
            return
        if not self._writing.acquire(timeout=10):  # the session's own write is stuck (a reader blocked on
            self.internal_error = f"{why}; the report could not be finished"  # the stack): constants only
            self.write_report_set(render.render_all(self.error_summary()))
            return
        try:
            self.interruption, self.written = why, []
            self.write(self.session, int(pytest.ExitCode.INTERRUPTED))
        finally:
            self._writing.release()

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.summary:
            return
        verdict, run = self.summary["verdict"], self.summary["run"]
        color = {"green": True} if verdict["passed"] else {"red": True}
        terminalreporter.section("stackproof validation report")
        for error in self.summary["target_errors"]:
            terminalreporter.write_line(f"TARGET ERROR: {error}", red=True, bold=True)
        for control in self.summary["controls"]:
            terminalreporter.write_line(f"{render.control_status(control):10} {control['title']}")
        self._terminal_waivers_and_history(terminalreporter)
        for line in self.summary.get("profile", {}).get("weakened", []):
            terminalreporter.write_line(f"WEAKENED by the profile: {line}", yellow=True)
        for line in self.summary.get("profile", {}).get("ignored", []):
            terminalreporter.write_line(f"ignored (--strict-profile): {line}")
        for error in self.summary.get("session_errors", []):
            terminalreporter.write_line(f"RUN ERROR: {error}", red=True, bold=True)
        if run["status"] != COMPLETE:
            terminalreporter.write_line(f"run {run['status']}: {run['reason']}", red=True)
        terminalreporter.write_line(verdict["line"], bold=True, **color)
        for path in self.written:
            terminalreporter.write_line(f"report: {path}")

    def _terminal_waivers_and_history(self, terminalreporter) -> None:
        """Waived and expired failures, unmatched waivers (a warning), and what changed since the last run."""
        for control in self.summary["controls"]:
            for row in control["checks"]:
                if row.get("waived"):
                    terminalreporter.write_line(f"WAIVED     {row['nodeid']}: {row['waiver']['justification']} "
                                                f"(owner: {row['waiver']['owner']}, expires {row['waiver']['expires']})",
                                                yellow=True)
                elif row.get("waiver") and row["status"] == FAIL:
                    terminalreporter.write_line(f"FAIL       {row['nodeid']}: {row['reason']}", red=True)
        waivers = self.summary.get("waivers") or {}
        for entry in waivers.get("entries", []):
            if entry["state"] == UNMATCHED:
                subject = f"check {entry['check']}" if entry["check"] else f"control {entry['control']}"
                terminalreporter.write_line(f"WARNING: waiver for {subject} ({waivers['file']}) matches no check "
                                            "of this run", yellow=True)
        history = self.summary.get("history") or {}
        if history.get("previous"):
            since = "the baseline" if history["previous"]["source"] == "baseline" else "the last run"
            for key, words, color in (("new_failures", "failing", "red"), ("fixed", "fixed", "green"),
                                      ("flapping", "flapping", "yellow")):
                if history[key]:
                    ids = ", ".join(check["nodeid"].partition("::")[2] for check in history[key][:10])
                    more = f" (and {len(history[key]) - 10} more)" if len(history[key]) > 10 else ""
                    label = f"{words} since {since}" if key != "flapping" else "flapping in the last runs"
                    terminalreporter.write_line(f"{label}: {ids}{more}", **{color: True})
        for note in history.get("notes", []):
            terminalreporter.write_line(note, yellow=True)

    # --- files ----------------------------------------------------------------------

    def remove_report_set(self, keep: Path | None = None) -> None:
        """Remove an earlier run's report files (and leftovers of an interrupted write), so a stale
        report never stands beside this run's or in its place."""
        if not self.report_dir.is_dir():
            return
        for suffix in SUFFIXES:
            for path in (self.report_dir / f"{REPORT_NAME}.{suffix}", self.report_dir / f"{REPORT_NAME}.{suffix}.tmp"):
                path.unlink(missing_ok=True)
        for staging in self.report_dir.glob(".stackproof-report-*"):
            if staging != keep:
                shutil.rmtree(staging, ignore_errors=True)

    def write_report_set(self, files: dict[str, str]) -> None:
        """Write the three files as one set: all rendered into a staging dir first, then the old set
        removed and each new file renamed into place; nothing of the staging dir stays."""
        self.report_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".stackproof-report-", dir=self.report_dir))
        try:
            for suffix, text in files.items():
                (staging / f"{REPORT_NAME}.{suffix}").write_text(text, encoding="utf-8", errors="replace")
            self.remove_report_set(keep=staging)
            for suffix in files:
                path = self.report_dir / f"{REPORT_NAME}.{suffix}"
                os.replace(staging / path.name, path)
                self.written.append(path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def annotate_junit(self) -> None:
        """JUnit (when --junitxml is given): the suite is named stackproof, the verdict and its reason are
        suite properties, and a NO-GO without a failing testcase gets a failing testcase `verdict`."""
        from _pytest.junitxml import xml_key

        xml = self.config.stash.get(xml_key, None)
        if xml is None:
            return
        unlink_if_not_regular(Path(xml.logfile))  # junitxml opens it for writing next, following links
        verdict, run = self.summary["verdict"], self.summary["run"]
        xml.suite_name = "stackproof"
        xml.add_global_property("verdict", verdict["decision"])
        xml.add_global_property("verdict_reason", verdict["reason"] or "-")
        xml.add_global_property("run_status", run["status"])
        waived = self.waivers.waived if self.waivers else {}
        if self.waivers and self.waivers.file:
            xml.add_global_property("waived", str(len(waived)))
            xml.add_global_property("waivers_expired", str(len(self.waivers.expired)))
            entries = (self.summary.get("waivers") or {}).get("entries", [])
            xml.add_global_property("waivers_unmatched", str(sum(e["state"] == UNMATCHED for e in entries)))
        if not verdict["passed"] and not any(row.status == FAIL and nodeid not in waived
                                                   for nodeid, row in self.rows.items()):
            location = ("stackproof", None, "verdict")
            for when, outcome, longrepr in (("call", "failed", verdict["line"]), ("teardown", "passed", None)):
                xml.pytest_runtest_logreport(
                    pytest.TestReport("stackproof::verdict", location, {}, outcome, longrepr, when, [], 0.0))

    # --- summary ---------------------------------------------------------------------

    @cached_property
    def target_info(self) -> "TargetInfo":
        return self.target()

    def run_state(self, exitstatus: int) -> tuple[str, str]:
        """COMPLETE, INCOMPLETE (checks not run: interrupted, stopped early) or ERROR, and why."""
        if self.internal_error or exitstatus == pytest.ExitCode.INTERNAL_ERROR:
            return ERROR, self.internal_error or "pytest internal error"
        not_run = [nodeid for nodeid in self.rows if nodeid not in self.finished]
        if self.interruption or exitstatus == pytest.ExitCode.INTERRUPTED or not_run:
            session = self.session
            why = self.interruption or (session and (session.shouldfail or session.shouldstop)) or "stopped early"
            return INCOMPLETE, f"{why}; {len(not_run)} of {len(self.rows)} check(s) not run"
        return COMPLETE, ""

    def build_summary(self, session: pytest.Session | None = None, exitstatus: int = 0) -> dict:
        self.session = session or self.session
        status, why = self.run_state(exitstatus)
        rows = []
        for nodeid, row in self.rows.items():
            data = self._clean_row(row)
            if nodeid not in self.finished:
                data["status"], data["reason"] = SKIPPED, NOT_FINISHED_PREFIX + self.redactor.clean(why)
            rows.append(data)
        for data in rows:
            data["blocked"] = data["status"] == SKIPPED and data["reason"].startswith(BLOCKED_PREFIX)
            data["environment_error"] = data["status"] == SKIPPED and data["reason"].startswith(ENVIRONMENT_PREFIX)
            self._mark_waiver(data)
        live_run = any(row["mode"] == "live" for row in rows)
        controls = [_control_summary(control, [r for r in rows if r["control"] == control.id], self.engine, live_run)
                    for control in CONTROLS]
        run = {"live": live_run, "engine": self.engine, "status": status, "reason": self.redactor.clean(why),
               "duration_s": round(time.monotonic() - self.clock, 3)}
        target_errors = list(dict.fromkeys([*(self.redactor.clean(e) for e in self.target_errors()),
                                            *self.received_target_errors]))
        session_errors = [self.redactor.clean(error) for error in self.session_errors]
        summary = {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "stackproof", "version": __version__},
            "generated": self.started.isoformat(timespec="seconds"),
            "target": self._target_dict(),
            "run": run,
            "target_errors": target_errors,
            "profile": self._clean_tree(self.profile() if self.profile else {}),
            "environment": self._clean_tree(self.environment()),
            "session_errors": session_errors,
            "controls": controls,
            "totals": _totals(rows),
        }
        if self.waivers is not None:
            summary["waivers"] = self._clean_tree(self.waivers.summary(rows))
        if self.history is not None:
            names = {row["nodeid"]: row["name"] for row in rows}
            summary["history"] = self._clean_tree(self.history.compare(record_of(summary), names))
        summary["verdict"] = decide(controls, rows, run, target_errors, session_errors,
                                    leading=regressions_reason(summary.get("history")))
        return summary

    def _mark_waiver(self, data: dict) -> None:
        """A failed check's waiver: WAIVED (`waived`) while it applies; once expired, the failure's reason says so."""
        waivers = self.waivers
        waived = waivers.waived.get(data["nodeid"]) if waivers else None
        expired = waivers.expired.get(data["nodeid"]) if waivers else None
        data["waived"] = data["status"] == FAIL and waived is not None
        waiver = waived if data["waived"] else expired if data["status"] == FAIL else None
        data["waiver"] = self._clean_tree(waiver.as_dict(waivers.today)) if waiver is not None else None
        if waiver is not None and waiver is expired:
            data["reason"] = self.redactor.clean(f"waiver expired on {expired.expires.isoformat()}: {data['reason']}")

    def environment(self) -> dict:
        """The engine the run targets (credentials removed) and the tools' versions (see environment.py)."""
        try:
            asked = self.tool_versions
            tools = asked.result(timeout=environment.TOOL_TIMEOUT + 5) if asked else environment.tool_versions()
        except Exception as exc:  # the report is written whatever a tool does
            tools = {"error": f"versions not read: {type(exc).__name__}"}
        engine = {"kind": self.engine, "host": environment.engine_host(), "version": self.engine_version}
        return {"engine": engine, "tools": tools}

    def _clean_tree(self, value):
        """A JSON-able value with every string scrubbed and cleaned (the profile's values come from the stack)."""
        if isinstance(value, dict):
            return {key: self._clean_tree(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._clean_tree(item) for item in value]
        return self.redactor.clean(value) if isinstance(value, str) else value

    def _target_dict(self) -> dict:
        try:
            info = asdict(self.target_info)
        except Exception as exc:
            return {"stack_dir": f"unreadable: {type(exc).__name__}", "git_commit": None, "compose_project": None,
                    "profile": None}
        return {key: None if value is None else self.redactor.clean(value) for key, value in info.items()}

    def error_summary(self) -> dict:
        """The report of a run that broke: made only of constants and the cleaned error line."""
        reason = f"internal error: {self.redactor.clean(self.internal_error)}"
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "stackproof", "version": __version__},
            "generated": self.started.isoformat(timespec="seconds"),
            "target": {"stack_dir": None, "git_commit": None, "compose_project": None, "profile": None},
            "run": {"live": False, "status": ERROR, "reason": reason, "duration_s": round(time.monotonic() - self.clock, 3)},
            "target_errors": [],
            "controls": [],
            "totals": _totals([]),
            "verdict": {"decision": NO_GO, "gate": "deploy", "passed": False, "reason": reason,
                        "line": f"NO-GO: {reason}"},
        }


@dataclass
class TargetInfo:
    stack_dir: str
    git_commit: str | None
    compose_project: str | None
    profile: str | None
    compose_loader: str | None = None  # how the compose model was read (the Python fallback is named)


def _totals(rows: list[dict]) -> dict:
    totals = {
        "passed": sum(row["status"] == PASS for row in rows),
        "failed": sum(row["status"] == FAIL for row in rows),
        "skipped": sum(row["status"] == SKIPPED for row in rows),
        "blocked": sum(row.get("blocked", False) for row in rows),
        "waived": sum(row.get("waived", False) for row in rows),
    }
    ran = totals["passed"] + totals["failed"]
    totals["total"] = len(rows)
    totals["success_rate"] = round(100.0 * totals["passed"] / ran, 1) if ran else 0.0
    return totals


def unproving(row: dict) -> bool:
    """A skip that leaves its control unproven, and the verdict NO-GO (see `decide`): the check was
    meant to run and did not (a live check, a check blocked by a failure, a tool missing where the
    suite ran, a check an interrupted run did not finish). A static check that has nothing to judge
    in this stack (a skip of another kind) does not."""
    return row["status"] == SKIPPED and (row["mode"] == "live" or row.get("blocked") or row.get("environment_error")
                                         or row["reason"].startswith(NOT_FINISHED_PREFIX))


def _control_summary(control, rows: list[dict], engine: str | None, live_run: bool = True) -> dict:
    """FAIL when a check failed; PASS when checks ran and passed and none that was meant to run was
    skipped; NOT PROVEN otherwise: a control counts as proven only by checks that ran (a skipped live
    check proves nothing, whatever its static siblings did). A FAIL whose every failing check is waived
    is `waived` (shown WAIVED; it does not block GO). In a static run, a control that only live checks can
    prove (its static checks cannot, or had nothing to judge, and none failed) is LIVE ONLY: neither PASS
    nor NOT PROVEN, since the run never set out to prove it."""
    failing = [row for row in rows if row["status"] == FAIL]
    waived = bool(failing) and all(row.get("waived") for row in failing)
    missing = [row for row in rows if unproving(row)]
    if failing:
        status = FAIL
    elif any(row["status"] == PASS for row in rows) and not missing:
        status = PASS
    else:
        status = NOT_PROVEN
    nothing_to_judge = status == NOT_PROVEN and bool(rows) and not missing  # (no check of it selected: NOT PROVEN)
    if not live_run and ((status == PASS and not control.proven_statically) or nothing_to_judge):
        status = LIVE_ONLY
    modes = sorted({row["mode"] for row in rows if row["status"] == PASS})
    validated = "both" if len(modes) == 2 else (modes[0] if modes and status == PASS else "-")
    if waived:
        waiver = failing[0]["waiver"]
        reason = f"waived: {waiver['justification']} (owner: {waiver['owner']}, expires {waiver['expires']})"
    elif status == FAIL:
        reason = next(row["reason"] for row in failing if not row.get("waived"))
    elif status == NOT_PROVEN:
        first = (missing or [row for row in rows if row["reason"]] or [None])[0]
        reason = first["reason"] if first else "no check of it ran"
        if len(missing) > 1:
            reason = f"{len(missing)} checks not run, the first: {reason}"
    elif status == LIVE_ONLY:
        skipped = next((row["reason"] for row in rows if row["status"] == SKIPPED), "")
        reason = skipped or "its static checks passed, but only its live checks prove it"
    else:
        reason = ""
    return {
        "id": control.id,
        "title": control.title,
        "impact": control.impact,
        "p0": control.p0,
        "warning": control.warning_for(engine),
        "status": status,
        "validated": validated,
        "reason": reason,
        "waived": waived,
        "duration_s": round(sum(row.get("duration_s", 0.0) for row in rows), 3),
        "checks": rows,
    }


def decide(controls: list[dict], rows: list[dict], run: dict, target_errors: list[str] = (),
           session_errors: list[str] = (), leading: str = "") -> dict:
    """GO only when the run completed, the target could be read, every P0 control passed (or its every
    failure is waived), no check was skipped for an environment error and, on a live run, no live check was
    skipped. The reason names what matters most: a broken or incomplete run, a target error, a failed
    control, an environment error, a skipped live check, an unproven control. A session error (the stack dir
    changed during the run, a refused waiver file) is NO-GO too. `leading` (the checks that regressed since
    the last run) comes first in a NO-GO's reason.

    A run without live checks decides no deployment: it is the static gate, STATIC PASS or STATIC FAIL by
    the same rules (a LIVE ONLY control does not hold it back), and says so."""
    gate = "deploy" if run["live"] else "static"
    p0 = [c for c in controls if c["p0"]]
    failed = [c for c in p0 if c["status"] == FAIL and not c.get("waived")]
    unproven = [c for c in p0 if c["status"] == NOT_PROVEN]
    environment = [r for r in rows if r["environment_error"]]
    live_skips = [r for r in rows if r["mode"] == "live" and r["status"] == SKIPPED]
    if run["status"] == ERROR:
        reason = run["reason"] if run["reason"].startswith("internal error") else f"internal error: {run['reason']}"
    elif run["status"] == INCOMPLETE:
        reason = f"run incomplete: {run['reason']}" + (f"; {_control_reason(failed, 'failed')}" if failed else "")
    elif target_errors:
        reason = f"target error: {target_errors[0]}"
    elif session_errors:
        reason = session_errors[0]
    elif failed:
        reason = _control_reason(failed, "failed")
    elif environment:
        reason = f"{len(environment)} check(s) not run, {environment[0]['reason']}"
    elif run["live"] and live_skips:
        reason = f"{len(live_skips)} live check(s) skipped: {live_skips[0]['reason']}"
    elif unproven:
        reason = _control_reason(unproven, "NOT PROVEN")
    else:
        waived = sum(row.get("waived", False) for row in rows)
        waived_text = f" ({waived} failing check(s) waived)" if waived else ""
        if gate == "static":
            live_only = [c["title"] for c in controls if c["status"] == LIVE_ONLY]
            line = (f"STATIC PASS: every static check passed{' or is waived' if waived else ''}{waived_text}; "
                    f"the live checks were not run{' (' + ', '.join(live_only) + ': live only)' if live_only else ''}"
                    "; not a deploy decision")
            return {"decision": STATIC_PASS, "gate": gate, "passed": True, "reason": "", "line": line}
        line = f"GO: every P0 control passed or is waived{waived_text}" if waived else "GO: every P0 control passed"
        return {"decision": GO, "gate": gate, "passed": True, "reason": "", "line": line}
    reason = f"{leading}; {reason}" if leading else reason
    decision = NO_GO if gate == "deploy" else STATIC_FAIL
    return {"decision": decision, "gate": gate, "passed": False, "reason": reason, "line": f"{decision}: {reason}"}


def _control_reason(controls: list[dict], what: str) -> str:
    first = controls[0]
    others = f" (and {len(controls) - 1} more control(s))" if len(controls) > 1 else ""
    return f"{first['title']} {what}: {first['reason'] or 'no check of it ran'}{others}"
