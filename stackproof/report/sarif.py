"""The report as SARIF 2.1.0 (`validation-report.sarif`), for code-scanning upload (GitHub's upload-sarif).

Made from the same summary as the other reports, so it tells the same verdict: one rule per check the run
collected (its remediation and its section on the control's page, `docs/controls/<control>.md`), one result
per check that failed (kind `fail`, its severity as the level) or left its control unproven (kind `open`,
level `none`, as SARIF requires for a result that is not a failure), each at the files and lines its
evidence located, relative to the stack dir (`%SRCROOT%`: the root of the deployment repository, which is
what code scanning resolves relative paths against). A waived failure is a result with an accepted
external suppression. The run's verdict is in the run's `properties`; target and run errors are
tool execution notifications.

Validated against the official schema (tests/sarif-schema-2.1.0.json) in tests/test_report_sarif.py.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from urllib.parse import quote

from stackproof.controls import Severity, check_anchor
from stackproof.report.outcome import RunStatus, Status, check_status, unproving

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SOURCE_ROOT = "%SRCROOT%"  # the stack dir: the deployment repository's root
LEVELS = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning"}
SECURITY_SEVERITY = {Severity.CRITICAL: "9.0", Severity.HIGH: "7.0", Severity.MEDIUM: "4.0"}
"""GitHub ranks security alerts by `security-severity` (critical from 9.0, high from 7.0, medium from 4.0)."""


def rule_id(row: dict) -> str:
    """One rule per check function: `<control>/<function>` (a parametrized check's instances share it)."""
    return f"{row['control']}/{check_anchor(row['nodeid'])}"


def _rule(row: dict, control: dict) -> dict:
    severity = Severity(row["severity"]) if row.get("severity") else Severity.HIGH
    fix = row.get("fix") or "See the control's page."
    doc = row.get("doc") or ""
    rule = {
        "id": rule_id(row),
        "name": check_anchor(row["nodeid"]),
        "shortDescription": {"text": row["name"].split(" [", 1)[0]},
        "fullDescription": {"text": f"{control['title']}: {control['impact']}"},
        "help": {"text": fix + (f" How to fix: {doc}" if doc else ""),
                 "markdown": f"**Fix:** {fix}" + (f"\n\n[How to fix]({doc})" if doc else "")},
        "defaultConfiguration": {"level": LEVELS[severity]},
        "properties": {"tags": ["stackproof", row["control"]], "severity": str(severity),
                       "security-severity": SECURITY_SEVERITY[severity]},
    }
    if doc:
        rule["helpUri"] = doc
    return rule


def _artifact(path: str) -> dict:
    return {"uri": quote(PurePosixPath(path).as_posix()), "uriBaseId": SOURCE_ROOT}


def _locations(row: dict, fallback: str | None) -> list[dict]:
    """The row's located files (and lines); without any, the deployed compose file, where the stack is declared
    (code scanning shows no result without a location)."""
    places = []
    for place in row.get("locations") or []:
        physical: dict = {"artifactLocation": _artifact(place["path"])}
        if place.get("line"):
            physical["region"] = {"startLine": place["line"]}
        location: dict = {"physicalLocation": physical}
        if place.get("key"):
            location["message"] = {"text": place["key"]}
        places.append(location)
    if not places and fallback:
        places.append({"physicalLocation": {"artifactLocation": _artifact(fallback)},
                       "message": {"text": "the stack's compose file (the check found no file of its own)"}})
    return places


def _result(row: dict, rule_index: int, fallback: str | None) -> dict:
    shown = check_status(row)
    failed = row["status"] == Status.FAIL
    result: dict = {
        "ruleId": rule_id(row),
        "ruleIndex": rule_index,
        "kind": "fail" if failed else "open",
        "level": LEVELS[Severity(row["severity"]) if row.get("severity") else Severity.HIGH] if failed else "none",
        "message": {"text": f"{shown}: {row['name']}: {row['reason'] or 'not run'}"},
        "locations": _locations(row, fallback),
        "properties": {"check": row["nodeid"], "status": str(shown), "mode": row["mode"]},
    }
    if shown == Status.WAIVED and row.get("waiver"):
        waiver = row["waiver"]
        result["suppressions"] = [{"kind": "external", "status": "accepted",
                                   "justification": f"{waiver.get('justification')} (owner: {waiver.get('owner')}, "
                                                    f"expires {waiver.get('expires')})"}]
    return result


def _source_root(stack_dir: str | None) -> dict:
    """%SRCROOT% as the stack dir's file: URI, when the report names an absolute stack dir."""
    if not stack_dir or not stack_dir.startswith("/"):
        return {}
    return {SOURCE_ROOT: {"uri": "file://" + quote(stack_dir.rstrip("/") + "/")}}


def sarif_log(summary: dict) -> dict:
    target = summary["target"]
    fallback = next(iter(target.get("compose_files") or []), None)
    rules: list[dict] = []
    index: dict[str, int] = {}
    results = []
    for control in summary["controls"]:
        for row in control["checks"]:
            if rule_id(row) not in index:
                index[rule_id(row)] = len(rules)
                rules.append(_rule(row, control))
            if row["status"] == Status.FAIL or unproving(row):
                results.append(_result(row, index[rule_id(row)], fallback))
    notifications = [{"level": "error", "message": {"text": text}}
                     for text in [*summary.get("target_errors", []), *summary.get("session_errors", [])]]
    run = {
        "tool": {"driver": {"name": "stackproof", "version": summary["tool"]["version"], "rules": rules}},
        "automationDetails": {"id": f"stackproof/{summary['verdict'].get('gate', 'deploy')}/"},
        "invocations": [{"executionSuccessful": summary["run"]["status"] == RunStatus.COMPLETE,
                         "toolExecutionNotifications": notifications}],
        "results": results,
        "properties": {"verdict": summary["verdict"], "stack_dir": target.get("stack_dir"),
                       "git_commit": target.get("git_commit"), "compose_project": target.get("compose_project")},
    }
    roots = _source_root(target.get("stack_dir"))
    if roots:
        run["originalUriBaseIds"] = roots
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def render_sarif(summary: dict) -> str:
    return json.dumps(sarif_log(summary), indent=2, ensure_ascii=True) + "\n"
