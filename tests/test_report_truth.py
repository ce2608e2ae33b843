"""The report always tells the truth, once: one verdict for serial and xdist runs, an exit code and JUnit
that follow it, a complete set of files that replaces the last one, an ERROR or INCOMPLETE report instead
of a stale or missing one, whatever the values in it."""

from __future__ import annotations

import os
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from harness import without_own_links

KEY_FILE = "ai-stack/compose/secrets/stack_api_key"
ALERTS_DIR = "ai-stack/compose/prometheus/alerts"
REPORT_FILES = {"validation-report.json", "validation-report.md", "validation-report.html", "validation-report.sarif"}
HISTORY = "history.jsonl"  # outlives the runs: each run that executed checks appends to it
HOSTILE_NAME = '![x](https://evil.example/x.png) [a](https://evil.example) <https://evil.example> <img src=x> www.evil.example'
CRASH_PLUGIN = '''
import pytest
def pytest_runtest_logfinish(nodeid, location):
    if "test_secrets_dir_mode" in nodeid:
        raise RuntimeError("plugin crash in the middle of the run")
'''


def check_statuses(run) -> dict[str, str]:
    return {row["nodeid"]: row["status"] for control in run.report["controls"] for row in control["checks"]}


def junit_facts(path: Path) -> tuple[ET.Element, dict[str, str], list[ET.Element]]:
    suite = ET.parse(path).getroot().find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    return suite, props, suite.findall("testcase")


@pytest.mark.parametrize("broken", [False, True], ids=["go", "no-go"])
def test_xdist_run_gives_the_serial_verdict_exit_code_statuses_and_junit(stack_copy, run_static, tmp_path, broken):
    """`-n 2`: the controller builds the one report from the workers' rows; JUnit carries control, mode, test,
    expected and result per check and the verdict per suite."""
    if broken:
        (stack_copy / KEY_FILE).chmod(0o644)
    runs = {}
    for label, args in (("serial", ()), ("xdist", ("-n", "2"))):
        junit = tmp_path / f"{label}.xml"
        runs[label] = run = run_static(stack_copy, *args, "--junitxml", str(junit))
        assert run.report is not None, run.stdout[-3000:]
        suite, props, cases = junit_facts(junit)
        assert suite.get("name") == "stackproof"
        assert props["verdict"] == run.verdict and props["verdict_reason"] == (run.report["verdict"]["reason"] or "-")
        checks = [case for case in cases if case.get("name") != "verdict"]
        assert len(checks) == len(check_statuses(run))
        for case in checks:
            names = {p.get("name") for p in case.iter("property")}
            assert {"control", "mode", "test", "expected", "result"} <= names, case.get("name")
    serial, xdist = runs["serial"], runs["xdist"]
    assert (xdist.verdict, xdist.ret, check_statuses(xdist)) == (serial.verdict, serial.ret, check_statuses(serial))
    assert xdist.statuses == serial.statuses
    assert (serial.verdict, serial.ret) == (("STATIC FAIL", 1) if broken else ("STATIC PASS", 0))


def test_the_report_set_is_replaced_whole_and_renders_anything(stack_copy, run_static, run_suite, tmp_path, pytester):
    """An earlier GO set is replaced by an ERROR set after a crash (never a GO file, nothing stale or
    temporary left), kept by --collect-only (which writes nothing), and replaced by a complete NO-GO set
    whose values hold an undecodable file name (a lone surrogate once decoded) and Markdown links, images and
    HTML. (A `\\udcff` escape inside the YAML is refused by libyaml, so the surrogate comes from the name.)"""
    reports = tmp_path / "reports"
    go = run_static(stack_copy, report_dir=reports)
    assert go.passed and go.ret == 0, go.stdout[-2000:]
    (reports / "validation-report.md.tmp").write_text("half a report")
    (reports / ".stackproof-report-leftover").mkdir()

    pytester.makepyfile(crash_plugin=CRASH_PLUGIN)
    crashed = run_static(stack_copy, "-p", "crash_plugin", report_dir=reports)
    assert crashed.ret == 3 and "INTERNALERROR" in crashed.stdout
    assert {p.name for p in reports.iterdir()} == REPORT_FILES | {HISTORY}
    assert crashed.report["run"]["status"] == "ERROR" and crashed.failed_gate
    assert "internal error: RuntimeError: plugin crash" in crashed.report["verdict"]["reason"]
    for path in (reports / name for name in REPORT_FILES):
        assert "STATIC FAIL" in path.read_text() and "STATIC PASS: every static check" not in path.read_text()

    before = {p.name: p.read_bytes() for p in reports.iterdir()}
    listed = run_static(stack_copy, "--collect-only", report_dir=reports)
    assert listed.ret == 0 and {p.name: p.read_bytes() for p in reports.iterdir()} == before

    hostile = (stack_copy / ALERTS_DIR).as_posix().encode() + b"/extra-\xff-rules.yml"
    with open(hostile, "w", encoding="utf-8") as rules:
        rules.write(f'groups:\n  - name: hostile\n    rules:\n      - alert: "{HOSTILE_NAME} Bad\\u00a0Name"\n'
                    '        expr: up == 0\n')
    broken = run_static(stack_copy, report_dir=reports)
    assert broken.ret == 1 and broken.failed_gate and "INTERNALERROR" not in broken.stdout, broken.stdout[-3000:]
    assert {p.name for p in reports.iterdir()} == REPORT_FILES | {HISTORY}
    texts = {p.suffix: p.read_bytes().decode("utf-8") for p in reports.iterdir() if p.name != HISTORY}  # valid UTF-8, all three
    assert "\\ufffd" in texts[".json"] and "\ufffd" in texts[".md"] and "\ufffd" in texts[".html"]  # the surrogate, replaced
    assert "evil.example" in texts[".md"] and "evil.example" in texts[".html"], "the hostile name is not in the report"
    outside_code = without_own_links(re.sub(r"(`+) .*? \1", "", texts[".md"]))
    for live_markup in ("](", "<http", "<img", "www.evil"):
        assert live_markup not in outside_code, live_markup
    assert "<img" not in texts[".html"] and "href=\"https://evil" not in texts[".html"]


def test_run_timeout_ends_a_hanging_run_with_an_incomplete_nogo_report(stack_copy, run_static):
    """A check that hangs (the monitor script sleeps, each step allowed 300 s) is interrupted at the run's
    deadline; the report says INCOMPLETE and NO-GO, and which checks did not finish."""
    script = stack_copy / "scripts/monitor-tls-certs.sh"
    script.write_text("#!/bin/sh\nsleep 120\n")
    started = time.monotonic()
    run = run_static(stack_copy, "--run-timeout", "8", "--stack-timeout", "300", isolated=True)
    elapsed = time.monotonic() - started
    assert run.report is not None, run.stdout[-3000:]
    assert elapsed < 60, f"the run took {elapsed:.0f}s"
    assert run.ret == 1 and run.failed_gate and run.report["run"]["status"] == "INCOMPLETE"
    assert "run time limit of 8s reached" in run.report["verdict"]["reason"]
    unfinished = [row for c in run.report["controls"] for row in c["checks"] if row["reason"].startswith("not finished")]
    assert any(row["control"] == "tls_monitoring" for row in unfinished), unfinished


def test_a_missing_tool_is_an_environment_error_and_no_go(stack_copy, run_static, tmp_path, monkeypatch):
    """Without promtool its checks cannot run (the rule unit tests, the breaker alert's evaluation): each named
    as an environment error, NO-GO, non-zero exit, and JUnit
    shows red through a synthetic `verdict` testcase although no check failed."""
    junit = tmp_path / "junit.xml"
    with tempfile.TemporaryDirectory(prefix="stackproof-path-") as bin_dir:  # readable by the scripts' unprivileged user
        os.chmod(bin_dir, 0o755)
        for directory in os.environ["PATH"].split(os.pathsep):
            for entry in Path(directory).glob("*") if Path(directory).is_dir() else ():
                target = Path(bin_dir) / entry.name
                if entry.name != "promtool" and not target.exists() and os.access(entry, os.X_OK):
                    target.symlink_to(entry)
        monkeypatch.setenv("PATH", bin_dir)
        run = run_static(stack_copy, "--junitxml", str(junit))
    assert run.report is not None, run.stdout[-3000:]
    assert run.failed_gate and run.ret == 1 and not run.failed_controls
    assert run.report["verdict"]["reason"].startswith("2 check(s) not run, environment error: promtool not installed")
    rows = [row for c in run.report["controls"] for row in c["checks"] if row["environment_error"]]
    assert [(row["control"], row["status"], row["not_run"]) for row in rows] == [
        ("alert_rules", "SKIPPED", "environment"), ("circuit_breakers", "SKIPPED", "environment")]
    suite, props, cases = junit_facts(junit)
    verdict_case = next(case for case in cases if case.get("name") == "verdict")
    assert verdict_case.find("failure") is not None and props["verdict"] == "STATIC FAIL"
