"""The session collector: the rows of the run, its summary and verdict, the report set at the end.

`ValidationReport` is the plugin's state object (like junitxml's LogXML) where the run is controlled
(the serial process, or the xdist controller): it collects the rows the checks' teardown reports
carry (made where each check ran, by `rows.RowRecorder`), in collection order, builds the summary
(statuses and verdict from `outcome`), and writes the report set once, at the end of the session
(`files.ReportFiles`); JUnit (`junit`) and the terminal (`terminal`) follow the same summary.
Workers write nothing.

A run that executes no check (`--collect-only`, nothing selected) writes no report. An
interrupted run (`--run-timeout`, Ctrl-C, `-x`) writes an INCOMPLETE report, an internal
error an ERROR report; both are NO-GO. The exit code follows the verdict.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import pytest

from stackproof import __version__
from stackproof.controls import CONTROLS, default_docs_base, doc_url
from stackproof.redact import Redactor, text_of
from stackproof.report import environment, junit, render
from stackproof.report.files import ReportFiles
from stackproof.report.history import RunHistory, record_of, regressions_reason
from stackproof.report.outcome import (NOT_FINISHED_PREFIX, Decision, NotRunKind, RunStatus, Status, control_summary,
                                       decide, totals)
from stackproof.report.rows import (ENGINE_ATTRIBUTE, ENGINE_VERSION_ATTRIBUTE, PLAN_ATTRIBUTE, ROW_ATTRIBUTE,
                                    TARGET_ERRORS_ATTRIBUTE, CheckRow, clean_row, planned_row, reason_of, row_of,
                                    suite_control)
from stackproof.report.waivers import WaiverSet

SCHEMA_VERSION = "2.3"
"""Version of the JSON report's schema (docs/report.schema.json; changes: docs/report-schema-changelog.md)."""


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class ValidationReport:
    def __init__(self, config: pytest.Config, report_dir: Path, target: Callable[[], "TargetInfo"], redactor: Redactor,
                 target_errors: Callable[[], list[str]] = list, profile: Callable[[], dict] | None = None,
                 docs_base: str | None = None):
        self.config = config
        self.docs_base = docs_base or default_docs_base()  # each row links to its section under it (controls.doc_url)
        self.target_errors = target_errors  # problems of the whole target, listed once at the top
        self.received_target_errors: list[str] = []  # ... as seen where the checks ran (xdist workers)
        self.report_dir = report_dir
        self.files = ReportFiles(report_dir)
        self.target = target  # called once, when the summary is built
        self.profile = profile  # the profile's sources, changed and weakened values; called once too
        self.redactor = redactor
        self.collected: list[str] = []  # the node ids of the run's checks, in collection order
        self.rows: dict[str, CheckRow] = {}  # their rows, once known (xdist controller: from a worker's plan)
        self.finished: set[str] = set()  # checks whose teardown report arrived
        self.engine: str | None = None  # compose, swarm or podman, once known (--engine or the live connection)
        self.engine_version: str | None = None  # the engine's version, once a live check reached it
        self.started = dt.datetime.now(dt.timezone.utc)
        self.clock = time.monotonic()  # the run's duration is measured from here
        self.tool_versions: Future | None = None  # environment.tool_versions(), asked when the session starts
        self.summary: dict | None = None
        self.interruption = ""  # why the run stopped early (KeyboardInterrupt, run timeout)
        self.internal_error = ""
        self.session: pytest.Session | None = None
        self._writing = threading.Lock()  # the session's end and the watchdog's hard stop
        self.session_errors: list[str] = []  # failures of the run as a whole (the stack dir changed)
        self.waivers: WaiverSet | None = None  # where the run is controlled: the waivers (report/waivers.py)
        self.history: RunHistory | None = None  # ... and the history file (report/history.py), unless --no-history

    def add_session_error(self, text: str) -> None:
        """A failure of the whole run, not of one check: the verdict is NO-GO with it as the reason."""
        self.session_errors.append(text)

    @property
    def checks(self) -> list[str]:
        """The run's checks: those collected, and any whose row arrived (or was given) otherwise."""
        return list(dict.fromkeys([*self.collected, *self.rows]))

    @property
    def written(self) -> list[Path]:
        return self.files.written

    def control_of(self, nodeid: str) -> str | None:
        """The control of a check by its node id (None for a test that is not a check)."""
        row = self.rows.get(nodeid)
        return row.control if row else suite_control(nodeid)

    # --- the checks of the run ---------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for row in map(row_of, session.items):
            if row is not None:
                self.rows[row.nodeid] = row
        self.collected = list(self.rows)
        if self.collected and not is_worker(self.config) and not self.config.option.collectonly:
            self.files.remove_set()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        """xdist controller: the checks a worker collected (the same on every worker), in order; their
        rows (control, mode, name) come with the worker's first report, its plan."""
        if self.collected:
            return
        self.collected = [nodeid for nodeid in ids if suite_control(nodeid)]
        if self.collected:
            self.files.remove_set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        plan = getattr(report, PLAN_ATTRIBUTE, None)
        if isinstance(plan, dict):
            self._take_plan(plan)
        data = getattr(report, ROW_ATTRIBUTE, None)
        if isinstance(data, dict):
            self.rows[report.nodeid] = CheckRow.from_dict(data)
            self.finished.add(report.nodeid)
            self.engine = self.engine or getattr(report, ENGINE_ATTRIBUTE, None)
            self.engine_version = self.engine_version or getattr(report, ENGINE_VERSION_ATTRIBUTE, None)
            for error in getattr(report, TARGET_ERRORS_ATTRIBUTE, None) or []:
                if error not in self.received_target_errors:
                    self.received_target_errors.append(self.redactor.clean(error))
        elif report.failed and report.when not in ("setup", "call", "teardown"):  # xdist: its worker crashed
            row = self.rows.get(report.nodeid)
            if row is not None:
                lines = text_of(str(report.longrepr)).strip().splitlines()
                row.status, row.ran, row.reason = Status.FAIL, True, lines[0] if lines else "the check crashed"
                self.rows[report.nodeid] = row
                self.finished.add(report.nodeid)

    def _take_plan(self, plan: dict) -> None:
        """A worker's plan: a row for each check the controller knew only by its node id, in collection order."""
        if all(nodeid in self.rows for nodeid in self.collected):
            return
        known, self.rows = self.rows, {}
        for nodeid in dict.fromkeys([*self.collected, *known]):
            row = known.get(nodeid) or planned_row(nodeid, plan)
            if row is not None:
                self.rows[nodeid] = row

    # --- the session ---------------------------------------------------------------------

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
        return bool(self.checks)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Build and write the report set, then make the exit code and JUnit follow the verdict
        (tryfirst: before junitxml and pytest-html write their files)."""
        if not self.runs_checks():
            return
        with self._writing:
            self.write(session, int(exitstatus))
        summary = self.summary
        assert summary is not None  # write() always leaves one (an error summary at worst)
        if not summary["verdict"]["passed"] and session.exitstatus in (pytest.ExitCode.OK,
                                                                            pytest.ExitCode.INTERRUPTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # an interrupted run is a NO-GO (2 is a usage error)
        junit.annotate(self.config, summary)

    def write(self, session: pytest.Session | None, exitstatus: int) -> None:
        try:
            self.summary = self.build_summary(session, exitstatus)
            files = render.render_all(self.summary)
        except Exception as exc:  # never a GO file, never no file: an ERROR report
            self.internal_error = f"building the report: {reason_of(pytest.ExceptionInfo.from_exception(exc))}"
            self.summary = self.error_summary()
            files = render.render_all(self.summary)
        self.files.write_set(files)
        if self.history is not None and self.summary.get("controls"):  # an ERROR report has nothing to remember
            self.history.append(record_of(self.summary))

    def write_interrupted(self, why: str) -> None:
        """The watchdog's hard stop (another thread): the run did not end after its interruption, so the
        report of what ran so far is written now, INCOMPLETE and NO-GO, replacing any set of this run."""
        if not self.runs_checks():
            return
        if not self._writing.acquire(timeout=10):  # the session's own write is stuck (a reader blocked on
            self.internal_error = f"{why}; the report could not be finished"  # the stack): constants only
            self.files.write_set(render.render_all(self.error_summary()))
            return
        try:
            self.interruption = why
            self.write(self.session, int(pytest.ExitCode.INTERRUPTED))
        finally:
            self._writing.release()

    # --- summary ---------------------------------------------------------------------

    @cached_property
    def target_info(self) -> "TargetInfo":
        return self.target()

    def run_state(self, exitstatus: int) -> tuple[RunStatus, str]:
        """COMPLETE, INCOMPLETE (checks not run: interrupted, stopped early) or ERROR, and why."""
        if self.internal_error or exitstatus == pytest.ExitCode.INTERNAL_ERROR:
            return RunStatus.ERROR, self.internal_error or "pytest internal error"
        not_run = [nodeid for nodeid in self.checks if nodeid not in self.finished]
        if self.interruption or exitstatus == pytest.ExitCode.INTERRUPTED or not_run:
            session = self.session
            why = self.interruption or (session and (session.shouldfail or session.shouldstop)) or "stopped early"
            return RunStatus.INCOMPLETE, f"{why}; {len(not_run)} of {len(self.checks)} check(s) not run"
        return RunStatus.COMPLETE, ""

    def build_summary(self, session: pytest.Session | None = None, exitstatus: int = 0) -> dict:
        self.session = session or self.session
        status, why = self.run_state(exitstatus)
        rows = []
        for nodeid, row in self.rows.items():
            data = clean_row(row, self.redactor)
            if nodeid not in self.finished:
                data["status"], data["not_run"] = str(Status.SKIPPED), str(NotRunKind.NOT_FINISHED)
                data["reason"] = NOT_FINISHED_PREFIX + self.redactor.clean(why)
            data["blocked"] = data["status"] == Status.SKIPPED and data["not_run"] == NotRunKind.BLOCKED
            data["environment_error"] = data["status"] == Status.SKIPPED and data["not_run"] == NotRunKind.ENVIRONMENT
            data["doc"] = doc_url(self.docs_base, data["control"], nodeid)
            self._mark_waiver(data)
            rows.append(data)
        live_run = any(row["mode"] == "live" for row in rows)
        controls = [{**control_summary(control, [r for r in rows if r["control"] == control.id], self.engine, live_run),
                     "doc": doc_url(self.docs_base, control.id)} for control in CONTROLS]
        run = {"live": live_run, "engine": self.engine, "status": str(status),
               "reason": self.redactor.clean(why), "duration_s": round(time.monotonic() - self.clock, 3)}
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
            "totals": totals(rows),
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
        data["waived"] = data["status"] == Status.FAIL and waived is not None
        waiver = waived if data["waived"] else expired if data["status"] == Status.FAIL else None
        data["waiver"] = self._clean_tree(waiver.as_dict(waivers.today)) if waiver is not None and waivers else None
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
                    "profile": None, "compose_files": []}
        return self._clean_tree(info)

    def error_summary(self) -> dict:
        """The report of a run that broke: made only of constants and the cleaned error line."""
        reason = f"internal error: {self.redactor.clean(self.internal_error)}"
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "stackproof", "version": __version__},
            "generated": self.started.isoformat(timespec="seconds"),
            "target": {"stack_dir": None, "git_commit": None, "compose_project": None, "profile": None},
            "run": {"live": False, "status": str(RunStatus.ERROR), "reason": reason,
                    "duration_s": round(time.monotonic() - self.clock, 3)},
            "target_errors": [],
            "controls": [],
            "totals": totals([]),
            "verdict": {"decision": str(Decision.NO_GO), "gate": "deploy", "passed": False, "reason": reason,
                        "line": f"NO-GO: {reason}"},
        }


@dataclass
class TargetInfo:
    stack_dir: str
    git_commit: str | None
    compose_project: str | None
    profile: str | None
    compose_loader: str | None = None  # how the compose model was read (the Python fallback is named)
    compose_files: list[str] = field(default_factory=list)  # the compose model's files, relative to the stack dir
