"""Waivers (stackproof/waivers.py): a failure accepted until a date makes the run GO, in every output at
once; on its date it fails again, saying so; a waiver that matches nothing is reported; the stack cannot
waive its own checks under --strict-profile; a malformed waiver file is a session error, never ignored."""

from __future__ import annotations

import datetime as dt
import os
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from harness import operator_interface

from stackproof.report.waivers import WAIVER_FILE, check_names, load_waivers

KEY_FILE = "ai-stack/compose/secrets/stack_api_key"
OWNER_ONLY = "suites/test_api_key_permissions.py::test_secret_files_owner_only"
TODAY = dt.datetime.now(dt.timezone.utc).date()


def waiver_yaml(expires: dt.date, *extra: str) -> str:
    """A waiver of the key-mode check (by its check id), and `extra` entries."""
    entries = [f"  - check: test_secret_files_owner_only\n    justification: key mode fixed in CHG-42\n"
               f"    owner: sec-team\n    expires: {expires.isoformat()}\n", *extra]
    return "waivers:\n" + "".join(entries)


UNMATCHED = "  - check: test_no_such_check\n    justification: stale\n    owner: nobody\n    expires: 2999-01-01\n"
UNUSED = "  - control: connection_pool\n    justification: pool resize pending\n    owner: dba\n    expires: 2999-01-01\n"


def junit(path: Path) -> tuple[dict[str, str], dict[str, ET.Element]]:
    suite = ET.parse(path).getroot().find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    return props, {f"{case.get('classname')}::{case.get('name')}": case for case in suite.findall("testcase")}


def case_properties(case: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in case.iter("property")}


def rows_of(run) -> dict[str, dict]:
    return {row["nodeid"]: row for control in run.report["controls"] for row in control["checks"]}


def test_a_waiver_makes_a_failing_stack_go_until_its_date(stack_copy, run_static, tmp_path):
    """A 0644 key, waived by the operator's file (outside the stack dir, so it applies under --strict-profile,
    and it replaces the stack's own waivers.yml): GO, exit 0, JUnit without a failure (the check an xfail with
    its waiver as a property, the suite's `waived` count), WAIVED in every report, a single history line under
    xdist. With the waiver's date come, the same failure is NO-GO with "waiver expired on <date>"; the stack's
    own waivers.yml (used when --waivers is not given) is named as the stack's, and under --strict-profile it
    is refused: NO-GO, naming why."""
    (stack_copy / KEY_FILE).chmod(0o644)
    (stack_copy / WAIVER_FILE).write_text(waiver_yaml(TODAY - dt.timedelta(days=1), UNUSED))  # the stack's own
    operator = tmp_path / "ops-waivers.yml"
    operator.write_text(waiver_yaml(TODAY + dt.timedelta(days=30), UNMATCHED))
    xml = tmp_path / "waived.xml"
    reports = tmp_path / "waived"
    waived = run_static(stack_copy, "-n", "2", "--strict-profile", "--profile", str(operator_interface(tmp_path)),
                        "--waivers", str(operator), "--junitxml", str(xml), report_dir=reports)

    assert waived.ret == 0 and waived.passed, waived.stdout[-3000:]
    assert waived.report["verdict"]["line"].startswith(
        "STATIC PASS: every static check passed or is waived (1 failing check(s) waived); ")
    row = rows_of(waived)[OWNER_ONLY]
    assert row["status"] == "FAIL" and row["waived"] and row["waiver"]["owner"] == "sec-team"
    assert "0644" in row["reason"]  # the failure itself is still told
    control = next(c for c in waived.report["controls"] if c["id"] == "api_key_permissions")
    assert control["waived"] and control["reason"].startswith("waived: key mode fixed in CHG-42 (owner: sec-team")
    assert waived.report["totals"]["waived"] == 1
    states = {entry["check"] or entry["control"]: entry["state"] for entry in waived.report["waivers"]["entries"]}
    assert states == {"test_secret_files_owner_only": "applied", "test_no_such_check": "unmatched"}
    assert waived.report["waivers"]["source"] == "operator"
    assert "WARNING: waiver for check test_no_such_check" in waived.stdout and "matches no check" in waived.stdout
    assert "1 xfailed" in waived.stdout
    props, cases = junit(xml)
    assert (props["verdict"], props["waived"], props["waivers_unmatched"]) == ("STATIC PASS", "1", "1")
    case = cases["suites.test_api_key_permissions::test_secret_files_owner_only"]
    assert case.find("failure") is None and case.find("skipped").get("type") == "pytest.xfail"
    assert case_properties(case)["waiver"].startswith("key mode fixed in CHG-42 (owner: sec-team")
    assert not any(c.find("failure") is not None or c.find("error") is not None for c in cases.values())
    markdown = (reports / "validation-report.md").read_text()
    assert "## 1. API key permissions: WAIVED" in markdown and "## Waivers" in markdown and "UNMATCHED" in markdown
    assert '<span class="waived">WAIVED</span>' in (reports / "validation-report.html").read_text()
    assert len((reports / "history.jsonl").read_text().splitlines()) == 1  # the controller wrote, once

    xml = tmp_path / "expired.xml"
    expired = run_static(stack_copy, "--junitxml", str(xml))  # the stack's own waivers.yml, its date passed
    assert expired.ret == 1 and expired.failed_gate, expired.stdout[-3000:]
    row = rows_of(expired)[OWNER_ONLY]
    expired_on = (TODAY - dt.timedelta(days=1)).isoformat()
    assert row["status"] == "FAIL" and not row["waived"] and row["waiver"]["expired"]
    assert row["reason"].startswith(f"waiver expired on {expired_on}: secret file mode is not 0400/0600")
    assert f"API key permissions failed: waiver expired on {expired_on}" in expired.report["verdict"]["reason"]
    assert expired.report["waivers"]["source"] == "stack"
    assert {e["state"] for e in expired.report["waivers"]["entries"]} == {"expired", "unused"}
    props, cases = junit(xml)
    case = cases["suites.test_api_key_permissions::test_secret_files_owner_only"]
    assert props["verdict"] == "STATIC FAIL" and case.find("failure") is not None
    assert "waiver_expired" in case_properties(case)

    refused = run_static(stack_copy, "--strict-profile")  # the stack's own waivers.yml, under --strict-profile
    assert refused.ret == 1 and refused.failed_gate
    reason = refused.report["verdict"]["reason"]
    assert reason.startswith("waiver file waivers.yml is inside the stack dir: refused under --strict-profile"), reason
    assert refused.report["session_errors"] == [refused.report["waivers"]["error"]]
    assert not any(row.get("waived") for row in rows_of(refused).values())


# --- the waiver file's rules, without a suite run -----------------------------------------------------------------

VALID = "  - check: test_x\n    justification: j\n    owner: o\n    expires: 2030-01-01\n"


@pytest.mark.parametrize("text, problem", [
    ('waivers:\n  - check: test_x\n    justification: j\n    owner: o\n    expires: "2030-01-01"\n',
     "waivers[0].expires: Input should be a valid date (YYYY-MM-DD, unquoted), got str '2030-01-01'"),
    ("waivers:\n  - check: test_x\n    justification: j\n    owner: o\n    expires: 2030-13-01\n",
     "invalid YAML value: month must be in 1..12"),
    ("waivers:\n  - check: test_x\n    control: alert_rules\n    justification: j\n    owner: o\n    expires: 2030-01-01\n",
     "waivers[0]: a waiver names exactly one of check: or control:"),
    ("waivers:\n  - justification: j\n    owner: o\n    expires: 2030-01-01\n",
     "waivers[0]: a waiver names exactly one of check: or control:"),
    ("waivers:\n" + VALID + "  - control: no_such_control\n    justification: j\n    owner: o\n    expires: 2030-01-01\n",
     "waivers[1]: unknown control 'no_such_control'"),
    ("waivers:\n  - check: test_x\n    owner: o\n    expires: 2030-01-01\n", "waivers[0].justification: Field required"),
    ("waivers:\n  - check: test_x\n    justification: '  '\n    owner: o\n    expires: 2030-01-01\n",
     "waivers[0].justification: String should have at least 1 character"),
    ("waivers:\n  - check: [a, b]\n    justification: j\n    owner: o\n    expires: 2030-01-01\n",
     "waivers[0].check: Input should be a valid string"),
    ("waivers:\n" + VALID.replace("    expires", "    reviewed: yes\n    expires"), "waivers[0].reviewed: Extra inputs are not permitted"),
    ("waiver:\n" + VALID, "waiver: Extra inputs are not permitted"),
    ("- " + VALID.strip(), "must be a mapping with a list 'waivers'"),
    ("waivers: {}\n", "waivers: Input should be a valid list"),
    ("waivers: []\nwaivers: []\n", "duplicate key 'waivers'"),
    ("a: &a [1,2,3,4,5,6,7,8,9]\n" + "".join(f"{c}: &{c} [" + ",".join(["*" + p] * 9) + "]\n"
                                               for p, c in zip("abcdefg", "bcdefgh", strict=True)),
     "aliases expand to more than"),
    ("waivers: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 100 levels"),
    ("waivers: [\n", "invalid YAML"),
    (b"waivers: [\xff\xfe]\n", "not UTF-8 text"),
], ids=["quoted-date", "impossible-date", "check-and-control", "no-subject", "unknown-control", "no-justification",
        "blank-justification", "check-not-a-string", "unknown-key", "unknown-top-key", "a-list", "waivers-a-mapping",
        "duplicate-key", "alias-bomb", "deep-nesting", "broken-yaml", "not-utf8"])
def test_a_malformed_waiver_file_is_one_line_naming_where(tmp_path, text, problem):
    """Every class of malformed file is an error naming the file and the entry: the plugin makes it a session error."""
    (tmp_path / WAIVER_FILE).write_bytes(text if isinstance(text, bytes) else text.encode())
    waivers = load_waivers(tmp_path, "", False, TODAY)
    assert waivers.error.startswith(f"waiver file {WAIVER_FILE}: "), waivers.error
    assert problem in waivers.error and "\n" not in waivers.error
    assert waivers.waivers == ()


@pytest.mark.parametrize("kind", ["fifo", "huge", "directory", "link-out"])
def test_a_hostile_waiver_file_does_not_hang(tmp_path, kind):
    """A FIFO (which blocks open()), a file over the size cap, a directory, or a link leading out of the stack dir:
    an error naming the file, returned at once."""
    stack = tmp_path / "stack"
    stack.mkdir()
    path = stack / WAIVER_FILE
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "huge":
        path.write_text("waivers:\n" + VALID * 200_000)
    elif kind == "directory":
        path.mkdir()
    else:
        (tmp_path / "outside.yml").write_text("waivers:\n" + VALID)
        path.symlink_to(tmp_path / "outside.yml")
    result = {}
    worker = threading.Thread(target=lambda: result.update(w=load_waivers(stack, "", False, TODAY)), daemon=True)
    worker.start()
    worker.join(20)
    assert "w" in result, f"loading a {kind} waiver file hung"
    assert result["w"].error.startswith(f"waiver file {WAIVER_FILE}"), result["w"].error


def test_the_waiver_rules(tmp_path):
    """A waiver applies before its date and not from it; a missing --waivers file is an error, a missing
    default file is none; --waivers pointing into the stack dir (a link followed) is the stack's file."""
    (tmp_path / WAIVER_FILE).write_text("waivers:\n" + VALID)
    waivers = load_waivers(tmp_path, "", False, dt.date(2029, 12, 31))
    assert waivers.judge_failure("suites/test_a.py::test_x", "alert_rules") is not None
    waivers = load_waivers(tmp_path, "", False, dt.date(2030, 1, 1))
    assert waivers.judge_failure("suites/test_a.py::test_x", "alert_rules") is None
    assert "suites/test_a.py::test_x" in waivers.expired

    assert "file not found" in load_waivers(tmp_path, str(tmp_path / "nope.yml"), False, TODAY).error
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_waivers(empty, "", True, TODAY).file is None and load_waivers(empty, "", True, TODAY).error == ""
    link = tmp_path.parent / f"{tmp_path.name}-link.yml"
    link.symlink_to(tmp_path / WAIVER_FILE)
    try:
        refused = load_waivers(tmp_path, str(link), True, TODAY)
        assert refused.source == "stack" and "refused under --strict-profile" in refused.error
        assert load_waivers(tmp_path, str(link), False, TODAY).error == ""
    finally:
        link.unlink()


@pytest.mark.parametrize("name, matches", [
    ("suites/test_pool.py::test_size[size]", True),
    ("suites/test_pool.py::test_size", True),
    ("test_size[size]", True),
    ("test_size", True),
    ("test_size[overflow]", False),
    ("test_siz", False),
    ("suites/test_other.py::test_size", False),
])
def test_a_check_waiver_names_a_node_id_or_a_check_id(name, matches):
    assert (name in check_names("suites/test_pool.py::test_size[size]")) is matches
