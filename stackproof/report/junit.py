"""The verdict in JUnit (when --junitxml is given), so a CI that reads only JUnit sees the same answer."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from stackproof.report.files import unlink_if_not_regular
from stackproof.report.outcome import Status, check_status
from stackproof.report.waivers import UNMATCHED

VERDICT_NODEID = "stackproof::verdict"


def annotate(config: pytest.Config, summary: dict) -> None:
    """The suite is named stackproof, the verdict and its reason are suite properties (and the waivers'
    counts), and a NO-GO without a failing testcase gets a failing testcase `verdict`."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    unlink_if_not_regular(Path(xml.logfile))  # junitxml opens it for writing next, following links
    verdict, run = summary["verdict"], summary["run"]
    rows = [row for control in summary["controls"] for row in control["checks"]]
    xml.suite_name = "stackproof"
    xml.add_global_property("verdict", verdict["decision"])
    xml.add_global_property("verdict_reason", verdict["reason"] or "-")
    xml.add_global_property("run_status", run["status"])
    waivers = summary.get("waivers") or {}
    if waivers.get("file"):
        xml.add_global_property("waived", str(sum(check_status(row) == Status.WAIVED for row in rows)))
        xml.add_global_property("waivers_expired", str(sum(bool(row.get("waiver")) and not row.get("waived")
                                                           and row["status"] == Status.FAIL for row in rows)))
        xml.add_global_property("waivers_unmatched", str(sum(e["state"] == UNMATCHED for e in waivers.get("entries", []))))
    if not verdict["passed"] and not any(check_status(row) == Status.FAIL for row in rows):
        location = ("stackproof", None, "verdict")
        steps: tuple[tuple[Literal["call", "teardown"], Literal["failed", "passed"], str | None], ...] = (
            ("call", "failed", verdict["line"]), ("teardown", "passed", None))
        for when, outcome, longrepr in steps:
            xml.pytest_runtest_logreport(pytest.TestReport(VERDICT_NODEID, location, {}, outcome, longrepr, when, [], 0.0))
