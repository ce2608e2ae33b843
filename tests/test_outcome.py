"""The verdict as a table (kube-bench's style): every outcome a check can have, alone and in pairs, with
and without waivers, through the control summary and `decide`; and the same rows merged as the xdist
controller receives them (in any order, a worker's plan first, one check never reported) give the
verdict the serial run gives. No suite runs here: this is the decision itself."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from stackproof.controls import CONTROLS
from stackproof.redact import Redactor
from stackproof.report.collector import TargetInfo, ValidationReport
from stackproof.report.outcome import (BlockedBy, EnvironmentProblem, LiveOnly, NotApplicable, NotProven, NotRunKind,
                                       RunStatus, Status, check_status, control_summary, decide, not_run_kind)
from stackproof.report.rows import PLAN_ATTRIBUTE, ROW_ATTRIBUTE, CheckRow, clean_row, plan_entry
from stackproof.report.waivers import Waiver, WaiverSet
from stackproof.report.waiving import WaiverOutcomes

P0 = next(c for c in CONTROLS if c.p0)
WAIVER = {"justification": "accepted", "owner": "ops", "expires": "2999-01-01"}

# outcome name -> (row fields, the check's status as shown, in a live run: the control status it alone gives
# and whether that is GO; in a static run (static outcomes only): the same for the static gate)
OUTCOMES = {
    "pass": ({"status": "PASS"}, "PASS", ("PASS", True), ("PASS", True)),
    "fail": ({"status": "FAIL"}, "FAIL", ("FAIL", False), ("FAIL", False)),
    "waived fail": ({"status": "FAIL", "waived": True, "waiver": WAIVER}, "WAIVED", ("FAIL", True), ("FAIL", True)),
    "blocked": ({"status": "SKIPPED", "not_run": "blocked"}, "BLOCKED", ("NOT PROVEN", False), ("NOT PROVEN", False)),
    "not applicable": ({"status": "SKIPPED", "not_run": "not_applicable"}, "SKIPPED", ("NOT PROVEN", False),
                       ("LIVE ONLY", True)),
    "environment": ({"status": "SKIPPED", "not_run": "environment"}, "SKIPPED", ("NOT PROVEN", False),
                    ("NOT PROVEN", False)),
    "not proven": ({"status": "SKIPPED", "not_run": "not_proven"}, "SKIPPED", ("NOT PROVEN", False),
                   ("NOT PROVEN", False)),
    "not finished": ({"status": "SKIPPED", "not_run": "not_finished"}, "SKIPPED", ("NOT PROVEN", False),
                     ("NOT PROVEN", False)),
    "live pass": ({"status": "PASS", "mode": "live"}, "PASS", ("PASS", True), None),
    "live only": ({"status": "SKIPPED", "not_run": "live_only", "mode": "live"}, "SKIPPED", ("NOT PROVEN", False), None),
    "live not applicable": ({"status": "SKIPPED", "not_run": "not_applicable", "mode": "live"}, "SKIPPED",
                            ("NOT PROVEN", False), None),
}
STATIC = [name for name, (*_, static) in OUTCOMES.items() if static is not None]
PASSED = {True: "GO", False: "NO-GO"}
STATIC_PASSED = {True: "STATIC PASS", False: "STATIC FAIL"}
# beside a passing check: whether the control still passes (a skip of nothing to judge does; others do not)
KEEPS_PASS = {"pass", "live pass", "not applicable"}


def row(name: str, number: int = 0) -> dict:
    fields, *_ = OUTCOMES[name]
    data = {"control": P0.id, "nodeid": f"suites/test_{P0.id}.py::t{number}", "name": f"check {number}", "mode": "static",
            "reason": f"{name} {number}", "waived": False, "waiver": None, "not_run": None, **fields}
    data["blocked"] = data["not_run"] == "blocked" and data["status"] == "SKIPPED"
    data["environment_error"] = data["not_run"] == "environment" and data["status"] == "SKIPPED"
    return data


def verdict(rows: list[dict], live: bool = True, status: RunStatus = RunStatus.COMPLETE) -> tuple[dict, dict]:
    """The control's summary and the verdict, in a live run (the deploy gate) or a static one."""
    control = control_summary(P0, rows, None, live_run=live)
    run = {"live": live, "status": status, "reason": "stopped" if status != RunStatus.COMPLETE else ""}
    return control, decide([control], rows, run)


@pytest.mark.parametrize("name", OUTCOMES)
def test_one_outcome(name):
    _, shown, (status, go), static = OUTCOMES[name]
    control, decision = verdict([row(name)])
    assert (control["status"], check_status(row(name)), decision["decision"]) == (status, shown, PASSED[go])
    assert control["waived"] == (name == "waived fail") and bool(decision["reason"]) != go
    if static is not None:
        control, decision = verdict([row(name)], live=False)
        assert (control["status"], decision["decision"], decision["gate"]) == (static[0], STATIC_PASSED[static[1]],
                                                                                "static")


@pytest.mark.parametrize("first,second", list(itertools.combinations_with_replacement(OUTCOMES, 2)))
def test_every_pair_of_outcomes_in_a_live_run(first, second):
    """FAIL wins over everything; then a skip meant to run (any but not-applicable, any live skip) leaves
    the control NOT PROVEN; a control passes only with a pass and nothing else but passes or static skips
    of nothing to judge. Waived failures do not block GO; an environment error, a live skip on a live run
    and an unproven control do."""
    rows = [row(first, 0), row(second, 1)]
    control, decision = verdict(rows)
    names = {first, second}
    if names & {"fail", "waived fail"}:
        expected = "FAIL"
    elif names <= KEEPS_PASS and names & {"pass", "live pass"}:
        expected = "PASS"
    else:
        expected = "NOT PROVEN"
    assert control["status"] == expected
    assert control["waived"] == ("waived fail" in names and "fail" not in names)
    blocking = ("fail" in names or expected == "NOT PROVEN" or "environment" in names
                or any(r["mode"] == "live" and r["status"] == "SKIPPED" for r in rows))
    assert decision["decision"] == PASSED[not blocking], decision


@pytest.mark.parametrize("first,second", list(itertools.combinations_with_replacement(STATIC, 2)))
def test_every_pair_of_outcomes_in_a_static_run(first, second):
    """The static gate by the same rules, but a control whose static checks had nothing to judge is LIVE ONLY
    and does not hold the gate back."""
    control, decision = verdict([row(first, 0), row(second, 1)], live=False)
    names = {first, second}
    if names & {"fail", "waived fail"}:
        expected = "FAIL"
    elif names == {"not applicable"}:
        expected = "LIVE ONLY"
    elif names <= KEEPS_PASS:
        expected = "PASS"
    else:
        expected = "NOT PROVEN"
    assert control["status"] == expected
    blocking = "fail" in names or expected == "NOT PROVEN" or "environment" in names
    assert (decision["decision"], decision["passed"]) == (STATIC_PASSED[not blocking], not blocking), decision


@pytest.mark.parametrize("status", [RunStatus.INCOMPLETE, RunStatus.ERROR])
def test_a_run_that_did_not_complete_is_no_go_whatever_its_checks(status):
    _, decision = verdict([row("pass")], status=status)
    assert decision["decision"] == "NO-GO" and not decision["passed"] and decision["reason"].startswith(
        "run incomplete" if status == RunStatus.INCOMPLETE else "internal error")


def test_what_the_reason_names_first():
    """Target error before session error before failure before environment error before live skip."""
    run = {"live": True, "status": RunStatus.COMPLETE, "reason": ""}
    rows = [row("fail", 0), row("environment", 1), row("live only", 2)]

    def reason(rows: list[dict], *errors, leading: str = "") -> str:
        return decide([control_summary(P0, rows, None)], rows, run, *errors, leading=leading)["reason"]

    assert reason(rows, ["t"], ["s"]) == "target error: t"
    assert reason(rows, [], ["s"]) == "s"
    assert reason(rows).startswith(f"{P0.title} failed: fail 0")
    assert reason(rows[1:]).startswith("1 check(s) not run, environment 1")
    assert reason(rows[2:]).startswith("1 live check(s) skipped: live only 2")
    assert reason(rows, leading="regressed: x").startswith("regressed: x; ")


@pytest.mark.parametrize("exc,kind", [
    (BlockedBy("test_pool_size", "no pool"), NotRunKind.BLOCKED),
    (NotApplicable("nothing here"), NotRunKind.NOT_APPLICABLE),
    (LiveOnly("no engine"), NotRunKind.LIVE_ONLY),
    (EnvironmentProblem("promtool not installed"), NotRunKind.ENVIRONMENT),
    (NotProven("a task unreached"), NotRunKind.NOT_PROVEN),
    (pytest.skip.Exception("a plain skip"), NotRunKind.NOT_APPLICABLE),
    (AssertionError("not a skip"), None),
])
def test_the_kind_comes_from_the_type_not_the_words(exc, kind):
    assert not_run_kind(exc) == kind
    if kind is not None:
        assert isinstance(exc, pytest.skip.Exception)  # pytest, JUnit and xdist see a skip
    assert not_run_kind(NotApplicable("blocked by test_x: looks blocked")) == NotRunKind.NOT_APPLICABLE


# --- the xdist merge ------------------------------------------------------------------------

class _Config:
    """What the collector asks of a controller's config."""

    class option:
        collectonly = False


def _report(nodeid: str, when: str, outcome: str, **attributes) -> pytest.TestReport:
    rep = pytest.TestReport(nodeid, ("suites/x.py", 1, nodeid), {}, outcome, None, when, [], 0.0)
    for name, value in attributes.items():
        setattr(rep, name, value)
    return rep


def _collector(waivers: WaiverSet | None = None) -> ValidationReport:
    report = ValidationReport(_Config(), Path("/nonexistent"), lambda: TargetInfo("s", None, None, None), Redactor())
    report.waivers = waivers
    return report


ROWS = [CheckRow("api_key_permissions", "suites/test_api_key_permissions.py::test_a", "a", "static", "PASS", ran=True),
        CheckRow("api_key_permissions", "suites/test_api_key_permissions.py::test_live_b", "b", "live", "FAIL",
                 reason="b failed", ran=True),
        CheckRow("connection_pool", "suites/test_connection_pool.py::test_c", "c", "static", "SKIPPED",
                 reason="blocked by test_a: x", not_run="blocked"),
        CheckRow("connection_pool", "suites/test_connection_pool.py::test_effective", "d", "live", "SKIPPED",
                 reason="live check not run: no engine", not_run="live_only")]


def _serial() -> dict:
    report = _collector()
    for check in ROWS:
        report.rows[check.nodeid] = CheckRow.from_dict(clean_row(check, report.redactor))
        report.finished.add(check.nodeid)
    return report.build_summary()


@pytest.mark.parametrize("seed", range(3))
def test_the_xdist_merge_gives_the_serial_verdict(seed):
    """The controller knows the checks by node id, their rows from the reports, in any order of arrival."""
    controller = _collector()
    ids = [check.nodeid for check in ROWS]
    controller.pytest_xdist_node_collection_finished(None, ids)
    plan = {check.nodeid: plan_entry(check, controller.redactor) for check in ROWS}
    arrivals = ROWS[:]
    random.Random(seed).shuffle(arrivals)
    controller.pytest_runtest_logreport(_report(arrivals[0].nodeid, "setup", "passed", **{PLAN_ATTRIBUTE: plan}))
    for check in arrivals:
        data = clean_row(check, controller.redactor)
        controller.pytest_runtest_logreport(_report(check.nodeid, "teardown", "passed", **{ROW_ATTRIBUTE: data}))
    merged, serial = controller.build_summary(), _serial()
    assert [c["status"] for c in merged["controls"]] == [c["status"] for c in serial["controls"]]
    assert [r["nodeid"] for c in merged["controls"] for r in c["checks"]] == ids  # collection order, not arrival
    assert merged["verdict"] == serial["verdict"] and merged["totals"] == serial["totals"]


def test_a_check_no_worker_finished_keeps_its_marked_mode():
    """Interrupted under xdist: the unreported check is NOT FINISHED with the mode its marker gave (the plan),
    whatever its name says; the run is INCOMPLETE."""
    controller = _collector()
    controller.pytest_xdist_node_collection_finished(None, [check.nodeid for check in ROWS])
    plan = {check.nodeid: plan_entry(check, controller.redactor) for check in ROWS}
    controller.pytest_runtest_logreport(_report(ROWS[0].nodeid, "setup", "passed", **{PLAN_ATTRIBUTE: plan}))
    for check in ROWS[:3]:
        controller.pytest_runtest_logreport(
            _report(check.nodeid, "teardown", "passed", **{ROW_ATTRIBUTE: clean_row(check, controller.redactor)}))
    controller.interruption = "run time limit of 1s reached"
    summary = controller.build_summary()
    last = summary["controls"][2]["checks"][-1]
    assert (last["nodeid"], last["mode"], last["status"], last["not_run"]) == (ROWS[3].nodeid, "live", "SKIPPED",
                                                                              "not_finished")
    assert summary["run"]["status"] == "INCOMPLETE" and summary["verdict"]["decision"] == "NO-GO"


@pytest.mark.parametrize("expires,waived", [("2999-01-01", True), ("2000-01-01", False)])
def test_a_waiver_over_the_merge(expires, waived):
    """The waiver plugin turns the failing reports of a waived check into expected failures as they arrive;
    the row stays FAIL and the report marks it WAIVED (its control does not block GO), or, expired, says so
    in the reason (the control fails the verdict)."""
    waiver = Waiver.model_validate({"check": "test_fails", "justification": "accepted", "owner": "ops",
                                    "expires": __import__("datetime").date.fromisoformat(expires)})
    waivers = WaiverSet(file="waivers.yml", waivers=(waiver,))
    controller = _collector(waivers)
    rows = [CheckRow("alert_rules", "suites/test_alert_rules.py::test_fails", "f", "static", "FAIL", reason="bad",
                     ran=True),
            CheckRow("alert_rules", "suites/test_alert_rules.py::test_passes", "p", "static", "PASS", ran=True)]
    plugin = WaiverOutcomes(waivers, controller.control_of, controller.redactor)
    controller.pytest_xdist_node_collection_finished(None, [r.nodeid for r in rows])
    for check in rows:
        call = _report(check.nodeid, "call", "failed" if check.status == "FAIL" else "passed")
        plugin.pytest_runtest_logreport(call)
        assert call.outcome == ("skipped" if check.status == "FAIL" and waived else
                                "failed" if check.status == "FAIL" else "passed")
        teardown = _report(check.nodeid, "teardown", "passed", **{ROW_ATTRIBUTE: clean_row(check, controller.redactor)})
        plugin.pytest_runtest_logreport(teardown)
        controller.pytest_runtest_logreport(teardown)
    summary = controller.build_summary()
    rules = summary["controls"][3]
    assert rules["waived"] == waived and check_status(rules["checks"][0]) == (Status.WAIVED if waived else Status.FAIL)
    assert rules["checks"][0]["reason"].startswith("waiver expired on 2000-01-01") != waived
    assert summary["verdict"]["reason"].startswith(f"{rules['title']} failed") != waived
