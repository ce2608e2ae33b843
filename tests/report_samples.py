"""Recorded results for the report's self-tests: the rows a GO, a NO-GO and an INCOMPLETE run give,
built into summaries by the report's own builder (`ValidationReport.build_summary`), as a run does.
Cheaper than three suite runs, and what the renderers and the browser see is the real builder's output:
only the rows are recorded. The NO-GO has what makes a report hard to read: a failure with a long
reason and a long path, checks blocked by it, skipped live checks, a control with only passing checks."""

from __future__ import annotations

from pathlib import Path

from stackproof.controls import CONTROLS
from stackproof.redact import Redactor
from stackproof.report.collector import TargetInfo, ValidationReport
from stackproof.report.outcome import NotRunKind, Status
from stackproof.report.rows import CheckRow

LONG_PATH = "ai-stack/compose/prometheus/alerts/very/deeply/nested/directory/structure/service-availability-rules.yml"
LONG_REASON = (f"{LONG_PATH}: alert AIDBDown fires only after 15m (expected at most 5m); the on-call would learn of "
               "an outage of the AI database ten minutes after its users did, and the runbook link is missing")
SAMPLES = ("go", "no-go", "incomplete")
SEVERITIES = ("critical", "high", "medium", "high")


def _rows(control: str, live: bool) -> list[CheckRow]:
    rows = []
    for number in range(4):
        mode = "live" if live and number == 3 else "static"
        rows.append(CheckRow(
            control, f"suites/test_{control}.py::test_{mode}_check_{number}",
            f"Check {number} of {control.replace('_', ' ')}: the effective state matches the declared one.", mode,
            Status.PASS, test=f"{mode} view of ai-stack/compose/docker-compose.yml services.*", result="as expected: 0400",
            expected="0400 (no group/other bits)", ran=True, duration_s=0.0125 * (number + 1),
            severity=SEVERITIES[number], fix=f"Make check {number} of {control.replace('_', ' ')} hold: set the declared "
                                            "state where the stack declares it, and redeploy."))
    return rows


def sample_report(kind: str) -> ValidationReport:
    """The report state at the end of a `kind` run (one of SAMPLES)."""
    report = ValidationReport(None, Path("/nonexistent"),
                              lambda: TargetInfo("/srv/deploy/ai-stack", "0123456789ab", "ai-stack", "stackproof.yml",
                                                 compose_files=["ai-stack/compose/docker-compose.yml"]),
                              Redactor())
    report.engine, report.engine_version = ("compose", "Engine 26.1.5") if kind != "no-go" else (None, None)
    for control in CONTROLS:
        for row in _rows(control.id, live=True):
            report.rows[row.nodeid] = row
            report.finished.add(row.nodeid)
    rows = list(report.rows.values())
    if kind == "no-go":  # failures in the middle of the controls' order, the one passing control first
        alert_rules = [row for row in rows if row.control == "alert_rules"]
        alert_rules[1].status, alert_rules[1].reason = Status.FAIL, LONG_REASON
        alert_rules[1].locations = ({"path": LONG_PATH, "line": 12, "key": "groups[0].rules[3].for"},)
        alert_rules[2].status, alert_rules[2].ran, alert_rules[2].not_run = Status.SKIPPED, False, NotRunKind.BLOCKED
        alert_rules[2].reason = f"blocked by {alert_rules[1].name}: {LONG_PATH} unreadable"
        secrets = next(row for row in rows if row.control == "docker_secrets_mode")
        secrets.status, secrets.reason = Status.FAIL, "aidb: /run/secrets/stack_api_key is 0644 (expected 0400)"
        secrets.locations = ({"path": "ai-stack/compose/docker-compose.yml", "line": 41, "key": "services.aidb.secrets"},)
        for row in rows:
            if row.mode == "live" and row.status == Status.PASS and row.control != CONTROLS[0].id:
                row.status, row.ran, row.not_run = Status.SKIPPED, False, NotRunKind.LIVE_ONLY
                row.reason = "live check not run: Docker engine unreachable (ConnectionError: connection refused)"
    elif kind == "incomplete":
        report.interruption = "run time limit of 900s reached"
        for row in rows[len(rows) // 2:]:
            report.finished.discard(row.nodeid)
    return report


def sample_summary(kind: str) -> dict:
    return sample_report(kind).build_summary()
