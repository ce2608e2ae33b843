"""Waived failures as expected failures (as pytest's skipping.py turns xfail into outcomes).

Where the run is controlled, a tryfirst `pytest_runtest_logreport` sees each setup/call/teardown report
before the terminal, JUnit and pytest's failure count: a failure a current waiver covers becomes an
expected failure (`outcome` skipped, `wasxfail` naming the waiver), so the exit code, `-x` and JUnit
treat it as one; its teardown report gets a `waiver` property (`waiver_expired` for an expired one,
which leaves the failure a failure). The check's row still says FAIL: the report marks it WAIVED.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stackproof.redact import Redactor
from stackproof.report.waivers import WaiverSet


class WaiverOutcomes:
    def __init__(self, waivers: WaiverSet | None, control_of: Callable[[str], str | None], redactor: Redactor):
        self.waivers = waivers
        self.control_of = control_of  # node id -> control, None for what is not a check
        self.redactor = redactor

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        waivers = self.waivers
        if waivers is None or not waivers.waivers or report.when not in ("setup", "call", "teardown"):
            return
        control = self.control_of(report.nodeid)
        if control is None:
            return
        if report.failed and not hasattr(report, "wasxfail"):
            waiver = waivers.judge_failure(report.nodeid, control)
            if waiver is not None:
                report.outcome = "skipped"
                report.wasxfail = f"waived: {self.redactor.clean(waiver.describe())}"
        if report.when == "teardown":
            if report.nodeid in waivers.waived:
                report.user_properties.append(("waiver", self.redactor.clean(waivers.waived[report.nodeid].describe())))
            elif report.nodeid in waivers.expired:
                report.user_properties.append(
                    ("waiver_expired", self.redactor.clean(waivers.expired[report.nodeid].describe())))
