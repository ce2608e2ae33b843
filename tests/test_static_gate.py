"""A static run says what it is: the static gate (STATIC PASS / STATIC FAIL), never a deploy decision;
a control only live checks can prove is LIVE ONLY, neither PASS nor NOT PROVEN; GO and NO-GO come only
from a run with live checks. (The reference stack's STATIC PASS: tests/test_reference_stack.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from stackproof.redact import Redactor
from stackproof.report.collector import TargetInfo, ValidationReport
from stackproof.report.rows import CheckRow


def summary_of(*rows: CheckRow) -> dict:
    report = ValidationReport(None, Path("/nonexistent"), lambda: TargetInfo("s", None, None, None), Redactor())
    for row in rows:
        report.rows[row.nodeid] = row
        report.finished.add(row.nodeid)
    return report.build_summary()


def every_control_passes(mode: str, skip: str = "") -> list[CheckRow]:
    """One passing check of `mode` per control (but `skip`'s, skipped with nothing to judge statically)."""
    from stackproof.controls import CONTROLS

    return [CheckRow(c.id, f"suites/test_{c.id}.py::t_{mode}", c.id, mode,
                     *(("SKIPPED", "", "", "", "judged live by test_x") if c.id == skip else ("PASS",)),
                     ran=c.id != skip, not_run="not_applicable" if c.id == skip else None) for c in CONTROLS]


def statuses(summary: dict) -> dict[str, str]:
    return {c["id"]: c["status"] for c in summary["controls"]}


def test_static_pass_is_not_go():
    summary = summary_of(*every_control_passes("static"))
    verdict = summary["verdict"]
    assert (verdict["decision"], verdict["gate"], verdict["passed"]) == ("STATIC PASS", "static", True)
    assert verdict["line"] == ("STATIC PASS: every static check passed; the live checks were not run (Docker secrets "
                               "mode: live only); not a deploy decision")
    assert statuses(summary)["docker_secrets_mode"] == "LIVE ONLY"


def test_nothing_to_judge_statically_is_live_only_not_red():
    """A correct stack without recorded disclosure responses: its static disclosure checks have nothing to judge;
    the static gate still passes, the control is LIVE ONLY with the reason of its skip."""
    summary = summary_of(*every_control_passes("static", skip="progressive_disclosure"))
    disclosure = next(c for c in summary["controls"] if c["id"] == "progressive_disclosure")
    assert (disclosure["status"], disclosure["reason"]) == ("LIVE ONLY", "judged live by test_x")
    assert summary["verdict"]["decision"] == "STATIC PASS"


@pytest.mark.parametrize("row, decision", [
    (CheckRow("docker_secrets_mode", "suites/a.py::t_bad", "declares mode", "static", "FAIL", reason="mode 0444"),
     "STATIC FAIL"),
    (CheckRow("connection_pool", "suites/a.py::t_blocked", "pool", "static", "SKIPPED", reason="blocked by t: no pool",
              not_run="blocked"),
     "STATIC FAIL"),
    (CheckRow("alert_rules", "suites/a.py::t_env", "rules", "static", "SKIPPED",
              reason="environment error: promtool not installed", not_run="environment"), "STATIC FAIL"),
], ids=["a-static-failure-of-a-live-only-control", "blocked", "environment-error"])
def test_static_fail(row, decision):
    """A static failure fails the gate, also for a control only live checks can prove (then FAIL, not LIVE
    ONLY); a blocked check or an environment error leaves its control NOT PROVEN: STATIC FAIL."""
    rows = [r for r in every_control_passes("static") if r.control != row.control] + [row]
    summary = summary_of(*rows)
    verdict = summary["verdict"]
    assert (verdict["decision"], verdict["passed"]) == (decision, False) and verdict["line"].startswith("STATIC FAIL: ")
    assert statuses(summary)[row.control] in ("FAIL", "NOT PROVEN")


def test_a_control_without_any_selected_check_is_not_proven():
    """`-k` selecting one check does not pass the static gate: the controls none of whose checks ran are NOT
    PROVEN, not LIVE ONLY."""
    rows = [row for row in every_control_passes("static") if row.control == "docker_secrets_mode"]
    summary = summary_of(*rows)
    assert statuses(summary)["connection_pool"] == "NOT PROVEN" and summary["verdict"]["decision"] == "STATIC FAIL"


def test_go_and_no_go_only_from_a_run_with_live_checks():
    rows = every_control_passes("static") + every_control_passes("live")
    assert summary_of(*rows)["verdict"]["decision"] == "GO"
    assert set(statuses(summary_of(*rows)).values()) == {"PASS"}
    rows[-1] = CheckRow(rows[-1].control, rows[-1].nodeid, "x", "live", "SKIPPED", reason="live check not run: no engine",
                        not_run="live_only")
    verdict = summary_of(*rows)["verdict"]
    assert (verdict["decision"], verdict["gate"], verdict["passed"]) == ("NO-GO", "deploy", False)
