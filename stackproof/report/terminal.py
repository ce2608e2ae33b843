"""The terminal: the answer first.

On a run of checks, by default, the terminal shows after the progress line one line per control
(status and, for one that is not PASS, its first reason), a check that broke on the suite's own code
as one line naming it, what weakens or changes the verdict, the verdict and where the reports are.
pytest's own long sections (tracebacks of the checks, the short summary that cuts reasons) are
left out: they describe the suite's code, not the stack, and the report holds every detail. `-v`,
`--tb` or `-r` given explicitly bring them back, below the answer.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable

import pytest

from stackproof.report.outcome import RunStatus, Status, check_status, control_status
from stackproof.report.waivers import UNMATCHED

DETAIL_FLAGS = ("--tb", "-r", "--fulltrace", "--full-trace", "--showlocals", "-l")
WIDE = 10  # the status column


def asks_for_detail(config: pytest.Config) -> bool:
    """Whether the user asked for pytest's own detail: -v, or --tb / -r / -l given explicitly (command
    line, PYTEST_ADDOPTS or the ini's addopts)."""
    if config.option.verbose > 0:
        return True
    words = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    words += config.getini("addopts")
    return any(word == flag or word.startswith(flag) and flag in ("--tb", "-r") for word in words for flag in DETAIL_FLAGS)


class TerminalAnswer:
    """A pytest plugin object, registered where the run is controlled; `summary` gives the report's
    summary (None when the run wrote none), `written` the report files."""

    def __init__(self, config: pytest.Config, summary: Callable[[], dict | None], written: Callable[[], list]):
        self.config = config
        self.summary = summary
        self.written = written

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """A run that wrote a report, without an explicit wish for detail: no failure sections (tracebacks)
        and no short summary of pytest's own (set here, after every check, before the terminal summarises)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.summary() and not asks_for_detail(self.config):
            self.config.option.tbstyle = "no"
            reporter.reportchars = ""

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter):
        """The answer before pytest's own sections (a tryfirst wrapper runs before the terminal's)."""
        summary = self.summary()
        if summary:
            terminalreporter.section("stackproof validation report")
            for line, markup in answer_lines(summary, self.written()):
                terminalreporter.write_line(line, **markup)
        return (yield)


def answer_lines(summary: dict, written: list) -> list[tuple[str, dict]]:
    """The lines of the answer (below the section's title), each with its terminal markup."""
    verdict, run = summary["verdict"], summary["run"]
    lines: list[tuple[str, dict]] = [(f"TARGET ERROR: {error}", {"red": True, "bold": True}) for error in summary["target_errors"]]
    for control in summary["controls"]:
        status = control_status(control)
        reason = f": {control['reason']}" if control["reason"] and status != Status.PASS else ""
        color = {Status.PASS: {"green": True}, Status.FAIL: {"red": True}}.get(status, {"yellow": True})
        lines.append((f"{status:{WIDE}} {control['title']}{reason}", color))
    for control in summary["controls"]:
        for row in control["checks"]:
            if row.get("internal_error") and check_status(row) == Status.FAIL:
                text = (f"{'ERROR':{WIDE}} {row['nodeid']} broke: {row['reason']} (its row in the report holds "
                        "the detail; -v or --tb shows the traceback)")
                lines.append((text, {"red": True}))
    lines += _waiver_lines(summary) + _history_lines(summary)
    profile = summary.get("profile", {})
    lines += [(f"WEAKENED by the profile: {line}", {"yellow": True}) for line in profile.get("weakened", [])]
    lines += [(f"ignored (--strict-profile): {line}", {}) for line in profile.get("ignored", [])]
    lines += [(f"RUN ERROR: {error}", {"red": True, "bold": True}) for error in summary.get("session_errors", [])]
    if run["status"] != RunStatus.COMPLETE:
        lines.append((f"run {run['status']}: {run['reason']}", {"red": True}))
    lines.append((verdict["line"], {"bold": True, "green" if verdict["passed"] else "red": True}))
    lines += [(f"report: {path}", {}) for path in written]
    return lines


def _waiver_lines(summary: dict) -> list[tuple[str, dict]]:
    """Waived and expired failures, and unmatched waivers (a warning)."""
    lines = []
    for control in summary["controls"]:
        for row in control["checks"]:
            if check_status(row) == Status.WAIVED:
                waiver = row["waiver"]
                text = (f"{'WAIVED':{WIDE}} {row['nodeid']}: {waiver['justification']} (owner: {waiver['owner']}, "
                        f"expires {waiver['expires']})")
                lines.append((text, {"yellow": True}))
            elif row.get("waiver") and row["status"] == Status.FAIL:
                lines.append((f"{'FAIL':{WIDE}} {row['nodeid']}: {row['reason']}", {"red": True}))
    waivers = summary.get("waivers") or {}
    for entry in waivers.get("entries", []):
        if entry["state"] == UNMATCHED:
            subject = f"check {entry['check']}" if entry["check"] else f"control {entry['control']}"
            lines.append((f"WARNING: waiver for {subject} ({waivers['file']}) matches no check of this run",
                          {"yellow": True}))
    return lines


def _history_lines(summary: dict) -> list[tuple[str, dict]]:
    """What changed since the last run (or the baseline), and the history's notes."""
    history = summary.get("history") or {}
    lines = []
    if history.get("previous"):
        since = "the baseline" if history["previous"]["source"] == "baseline" else "the last run"
        for key, words, color in (("new_failures", "failing", "red"), ("fixed", "fixed", "green"),
                                  ("flapping", "flapping", "yellow")):
            if history[key]:
                ids = ", ".join(check["nodeid"].partition("::")[2] for check in history[key][:10])
                more = f" (and {len(history[key]) - 10} more)" if len(history[key]) > 10 else ""
                label = f"{words} since {since}" if key != "flapping" else "flapping in the last runs"
                lines.append((f"{label}: {ids}{more}", {color: True}))
    lines += [(note, {"yellow": True}) for note in history.get("notes", [])]
    return lines
