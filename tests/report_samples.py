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
from stackproof.report.history import RunHistory, record_of
from stackproof.report.outcome import NotRunKind, Status
from stackproof.report.rows import CheckRow

LONG_PATH = "ai-stack/compose/prometheus/alerts/very/deeply/nested/directory/structure/service-availability-rules.yml"
LONG_REASON = (f"{LONG_PATH}: alert AIDBDown fires only after 15m (expected at most 5m); the on-call would learn of "
               "an outage of the AI database ten minutes after its users did, and the runbook link is missing")
SAMPLES = ("go", "no-go", "incomplete")
SEVERITIES = ("critical", "high", "medium", "high")


REAL_CHECK_COUNTS = {"api_key_permissions": 9, "docker_secrets_mode": 3, "connection_pool": 11, "alert_rules": 11,
                     "tls_monitoring": 27, "progressive_disclosure": 5, "circuit_breakers": 8}
"""Checks per control of the suites as collected in a live run: the size of a real GO report."""
LONG_RESULT = ("run 1: exit 0, hmac:4b239ba9b90b (64 bytes) -> hmac:9c51bff074f6 (64 bytes), backup "
               "ai-stack/compose/secrets/backups/stack_api_key.20261203T232014.699131686Z 0400, key 0400, audit +1 "
               "line(s), 129 reads of the key during the run; run 2: exit 0, hmac:9c51bff074f6 -> hmac:1f0e5a")


def _rows(control: str, live: bool, count: int = 4) -> list[CheckRow]:
    rows = []
    for number in range(count):
        mode = "live" if live and number % 4 == 3 else "static"
        rows.append(CheckRow(
            control, f"suites/test_{control}.py::test_{mode}_check_{number}",
            f"Check {number} of {control.replace('_', ' ')}: the effective state matches the declared one.", mode,
            Status.PASS, test=f"{mode} view of ai-stack/compose/docker-compose.yml services.*",
            result=LONG_RESULT if number % 5 == 4 else "as expected: 0400",
            expected="0400 (no group/other bits)", ran=True, duration_s=0.0125 * (number + 1),
            severity=SEVERITIES[number % 4], fix=f"Make check {number} of {control.replace('_', ' ')} hold: set the "
                                                 "declared state where the stack declares it, and redeploy."))
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


def full_go_summary(history_dir: Path) -> dict:
    """A GO the size of a real one (REAL_CHECK_COUNTS, some long evidence), after nine earlier runs of the
    target that alternate NO-GO and GO (a history, so the report has its trend strip): the print self-test's
    page count is about this report."""
    history = RunHistory(history_dir / "history.jsonl")
    for number in range(9):
        history.append(record_of(sample_summary("no-go" if number % 2 else "go")))
        history.appended = False  # one line per run: each earlier summary is a run of its own
    report = sample_report("go")
    report.rows.clear()
    for control in CONTROLS:
        for row in _rows(control.id, live=True, count=REAL_CHECK_COUNTS[control.id]):
            report.rows[row.nodeid] = row
            report.finished.add(row.nodeid)
    report.history = history
    return report.build_summary()
