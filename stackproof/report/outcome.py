"""Outcomes: what a check, a control and a run can come to, and the verdict over them.

One place for the words the report, the history and the renderers share (kube-bench's `State`,
InSpec's outcomes): `Status` (a check's or control's status), `RunStatus`, and the one family of
"not run" exceptions. A check that does not run raises a `NotRun` (a `pytest.skip.Exception`, so
pytest, JUnit and xdist see a skip); its row takes its kind from the exception's type
(`NotRunKind`), never from the words of its reason. `decide` turns the rows and control summaries
into GO / NO-GO.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import ClassVar

import pytest


class Status(StrEnum):
    """A check's or a control's status. Rows store PASS, FAIL or SKIPPED; BLOCKED (a skip an earlier
    failure caused) and WAIVED (a failure a waiver accepts) are how they are shown; NOT PROVEN is a
    control no check proved (SKIPPED in reports written before that name); LIVE ONLY, in a static run,
    a control only its live checks can prove."""

    PASS = "PASS"
    FAIL = "FAIL"
    SKIPPED = "SKIPPED"
    BLOCKED = "BLOCKED"
    WAIVED = "WAIVED"
    NOT_PROVEN = "NOT PROVEN"
    LIVE_ONLY = "LIVE ONLY"


class RunStatus(StrEnum):
    COMPLETE = "COMPLETE"
    INCOMPLETE = "INCOMPLETE"  # checks not finished: interrupted, stopped early
    ERROR = "ERROR"  # an internal error: the report has no controls


class Decision(StrEnum):
    """The deploy gate's GO / NO-GO (a run with live checks), or the static gate's (a run without)."""

    GO = "GO"
    NO_GO = "NO-GO"
    STATIC_PASS = "STATIC PASS"
    STATIC_FAIL = "STATIC FAIL"


class NotRunKind(StrEnum):
    """Why a check did not run: the row's `not_run`."""

    BLOCKED = "blocked"  # an earlier failing check, or a root cause (a target error), ruled out its input
    NOT_APPLICABLE = "not_applicable"  # the stack has nothing for it to judge
    LIVE_ONLY = "live_only"  # a live check on a run that reached no running stack
    ENVIRONMENT = "environment"  # a tool missing where the suite runs: an error of the environment, not the stack
    NOT_PROVEN = "not_proven"  # it ran, but what it must see could not be reached (a swarm task, no sandbox)
    NOT_FINISHED = "not_finished"  # the run was interrupted before the check ended


class NotRun(pytest.skip.Exception):  # type: ignore[name-defined]  # pytest types skip.Exception as a function's attribute, not a class
    """A check that did not run, and why. Its subclasses are the kinds; its message is the row's reason.
    A plain `pytest.skip` (a skip marker, a plugin's skip) counts as NOT_APPLICABLE."""

    kind: ClassVar[NotRunKind] = NotRunKind.NOT_APPLICABLE
    prefix: ClassVar[str] = ""  # what the reason starts with, for a reader of the text

    def __init__(self, reason: str):
        super().__init__(msg=self.prefix + reason)


class NotApplicable(NotRun):
    kind = NotRunKind.NOT_APPLICABLE


class BlockedBy(NotRun):
    """`blocked by <check or root cause>: <reason>`."""

    kind = NotRunKind.BLOCKED

    def __init__(self, by: str, reason: str):
        self.by = by
        super().__init__(f"blocked by {by}: {reason}")


class LiveOnly(NotRun):
    kind = NotRunKind.LIVE_ONLY
    prefix = "live check not run: "


class EnvironmentProblem(NotRun):
    kind = NotRunKind.ENVIRONMENT
    prefix = "environment error: "


class NotProven(NotRun):
    kind = NotRunKind.NOT_PROVEN


NOT_FINISHED_PREFIX = "not finished: "  # the reason of a check an interrupted run did not finish


def not_run_kind(exc: BaseException) -> NotRunKind | None:
    """The kind of a skip (None for anything else)."""
    if isinstance(exc, NotRun):
        return exc.kind
    return NotRunKind.NOT_APPLICABLE if isinstance(exc, pytest.skip.Exception) else None


# --- how a row or control is shown -----------------------------------------------------

def check_status(row: dict) -> Status:
    """A check's status as shown and remembered: BLOCKED for a skip an earlier failure caused, WAIVED for
    a failure a waiver accepts, else its own."""
    if row["status"] == Status.SKIPPED and row.get("not_run") == NotRunKind.BLOCKED:
        return Status.BLOCKED
    if row["status"] == Status.FAIL and row.get("waived"):
        return Status.WAIVED
    return Status(row["status"])


def control_status(control: dict) -> Status:
    """A control's status as shown: a FAIL whose every failure is waived is WAIVED."""
    return Status.WAIVED if control["status"] == Status.FAIL and control.get("waived") else Status(control["status"])


def unproving(row: dict) -> bool:
    """A skip that leaves its control unproven, and the verdict NO-GO (see `decide`): the check was
    meant to run and did not (a live check, or any kind but NOT_APPLICABLE). A static check that has
    nothing to judge in this stack does not."""
    return row["status"] == Status.SKIPPED and (row["mode"] == "live" or row.get("not_run") != NotRunKind.NOT_APPLICABLE)


# --- totals, control summaries, verdict --------------------------------------------------

def totals(rows: list[dict]) -> dict:
    counts = {
        "passed": sum(row["status"] == Status.PASS for row in rows),
        "failed": sum(row["status"] == Status.FAIL for row in rows),
        "skipped": sum(row["status"] == Status.SKIPPED for row in rows),
        "blocked": sum(check_status(row) == Status.BLOCKED for row in rows),
        "waived": sum(check_status(row) == Status.WAIVED for row in rows),
    }
    ran = counts["passed"] + counts["failed"]
    counts["total"] = len(rows)
    counts["success_rate"] = round(100.0 * counts["passed"] / ran, 1) if ran else 0.0
    return counts


def control_summary(control, rows: list[dict], engine: str | None, live_run: bool = True) -> dict:
    """FAIL when a check failed; PASS when checks ran and passed and none that was meant to run was
    skipped; NOT PROVEN otherwise: a control counts as proven only by checks that ran (a skipped live
    check proves nothing, whatever its static siblings did). A FAIL whose every failing check is waived
    is `waived` (shown WAIVED; it does not block GO). In a static run, a control that only live checks can
    prove (its static checks cannot, or had nothing to judge, and none failed) is LIVE ONLY: neither PASS
    nor NOT PROVEN, since the run never set out to prove it."""
    failing = [row for row in rows if row["status"] == Status.FAIL]
    waived = bool(failing) and all(row.get("waived") for row in failing)
    missing = [row for row in rows if unproving(row)]
    if failing:
        status = Status.FAIL
    elif any(row["status"] == Status.PASS for row in rows) and not missing:
        status = Status.PASS
    else:
        status = Status.NOT_PROVEN
    nothing_to_judge = status == Status.NOT_PROVEN and bool(rows) and not missing  # (no check of it selected: NOT PROVEN)
    if not live_run and ((status == Status.PASS and not control.proven_statically) or nothing_to_judge):
        status = Status.LIVE_ONLY
    modes = sorted({row["mode"] for row in rows if row["status"] == Status.PASS})
    validated = "both" if len(modes) == 2 else (modes[0] if modes and status == Status.PASS else "-")
    if waived:
        waiver = failing[0]["waiver"]
        reason = f"waived: {waiver['justification']} (owner: {waiver['owner']}, expires {waiver['expires']})"
    elif status == Status.FAIL:
        reason = next(row["reason"] for row in failing if not row.get("waived"))
    elif status == Status.NOT_PROVEN:
        first = next(iter(missing or [row for row in rows if row["reason"]]), None)
        reason = first["reason"] if first else "no check of it ran"
        if len(missing) > 1:
            reason = f"{len(missing)} checks not run, the first: {reason}"
    elif status == Status.LIVE_ONLY:
        skipped = next((row["reason"] for row in rows if row["status"] == Status.SKIPPED), "")
        reason = skipped or "its static checks passed, but only its live checks prove it"
    else:
        reason = ""
    return {
        "id": control.id,
        "title": control.title,
        "impact": control.impact,
        "p0": control.p0,
        "warning": control.warning_for(engine),
        "status": str(status),
        "validated": validated,
        "reason": reason,
        "waived": waived,
        "duration_s": round(sum(row.get("duration_s", 0.0) for row in rows), 3),
        "checks": rows,
    }


def decide(controls: list[dict], rows: list[dict], run: dict, target_errors: Iterable[str] = (),
           session_errors: Iterable[str] = (), leading: str = "") -> dict:
    """GO only when the run completed, the target could be read, every P0 control passed (or its every
    failure is waived), no check was skipped for an environment error and, on a live run, no live check was
    skipped. The reason names what matters most: a broken or incomplete run, a target error, a failed
    control, an environment error, a skipped live check, an unproven control. A session error (the stack dir
    changed during the run, a refused waiver file) is NO-GO too. `leading` (the checks that regressed since
    the last run) comes first in a NO-GO's reason.

    A run without live checks decides no deployment: it is the static gate, STATIC PASS or STATIC FAIL by
    the same rules (a LIVE ONLY control does not hold it back), and says so. `passed` says whether the gate
    passed, whichever it is."""
    target_errors, session_errors = list(target_errors), list(session_errors)
    gate = "deploy" if run["live"] else "static"
    p0 = [c for c in controls if c["p0"]]
    failed = [c for c in p0 if c["status"] == Status.FAIL and not c.get("waived")]
    unproven = [c for c in p0 if c["status"] == Status.NOT_PROVEN]
    environment = [r for r in rows if r["status"] == Status.SKIPPED and r.get("not_run") == NotRunKind.ENVIRONMENT]
    live_skips = [r for r in rows if r["mode"] == "live" and r["status"] == Status.SKIPPED]
    if run["status"] == RunStatus.ERROR:
        reason = run["reason"] if run["reason"].startswith("internal error") else f"internal error: {run['reason']}"
    elif run["status"] == RunStatus.INCOMPLETE:
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
        waived = sum(check_status(row) == Status.WAIVED for row in rows)
        waived_text = f" ({waived} failing check(s) waived)" if waived else ""
        if gate == "static":
            live_only = [c["title"] for c in controls if c["status"] == Status.LIVE_ONLY]
            line = (f"STATIC PASS: every static check passed{' or is waived' if waived else ''}{waived_text}; "
                    f"the live checks were not run{' (' + ', '.join(live_only) + ': live only)' if live_only else ''}"
                    "; not a deploy decision")
            return {"decision": str(Decision.STATIC_PASS), "gate": gate, "passed": True, "reason": "", "line": line}
        line = f"GO: every control passed or is waived{waived_text}" if waived else "GO: every control passed"
        return {"decision": str(Decision.GO), "gate": gate, "passed": True, "reason": "", "line": line}
    reason = f"{leading}; {reason}" if leading else reason
    decision = Decision.NO_GO if gate == "deploy" else Decision.STATIC_FAIL
    return {"decision": str(decision), "gate": gate, "passed": False, "reason": reason, "line": f"{decision}: {reason}"}


def _control_reason(controls: list[dict], what: str) -> str:
    first = controls[0]
    others = f" (and {len(controls) - 1} more control(s))" if len(controls) > 1 else ""
    return f"{first['title']} {what}: {first['reason'] or 'no check of it ran'}{others}"
