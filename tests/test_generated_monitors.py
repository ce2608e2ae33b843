"""Property: from any house style of TLS monitor (generated: flag names, inputs by flag, argument or
variable, thresholds by flag or fixed inside, metric and label names, exit codes, with or without a
status line), init reads an interface through which the correct script passes every monitor check, and
through which a behaviour defect planted in that script fails them (issue 14, item 6)."""

from __future__ import annotations

import shutil

import yaml
from generated_monitor import DEFECTS, MonitorStyle, script, styles
from harness import merge_into_profile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackproof.init import UNREAD, monitor_interface, write_profile

MONITOR = "scripts/monitor-tls-certs.sh"
TLS_CONTROL = "tls_monitoring"


def _monitor_rows(run) -> dict[str, dict]:
    return {row["nodeid"].split("::")[-1]: row for control in run.report["controls"] if control["id"] == TLS_CONTROL
            for row in control["checks"] if row["status"] != "DESELECTED"}


@settings(max_examples=6, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(style=styles(), defect=st.sampled_from(sorted(DEFECTS)))
def test_init_reads_each_house_style_and_a_planted_defect_is_found_through_it(
        style: MonitorStyle, defect: str, reference_stack, tmp_path_factory, run_static):
    stack = tmp_path_factory.mktemp("style") / "stack"
    shutil.copytree(reference_stack, stack, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    source = script(style)
    (stack / MONITOR).write_text(source)
    interface, notes = monitor_interface(source, "certcheck")
    assert notes != UNREAD, style
    merge_into_profile(stack, yaml.safe_dump({"scripts": {"monitor": interface}}))

    correct = _monitor_rows(run_static(stack, "-k", "monitor"))
    wrong = {name: row["reason"] for name, row in correct.items() if row["status"] != "PASS"}
    assert len(correct) >= 10 and not wrong, (style, interface, wrong)

    (stack / MONITOR).write_text(script(style, defect))
    broken = _monitor_rows(run_static(stack, "-k", "monitor"))
    failed = [name for name, row in broken.items() if row["status"] == "FAIL"]
    assert failed and all(name.startswith("test_monitor_scenario") for name in failed), (style, defect, broken)


FIXED_INSIDE = MonitorStyle(warn_flag=None, crit_flag=None, metrics_input=("flag", "--textfile"),
                            cert_input=("argument", "CERT"), prefix="certmon_",
                            names=("expiry_timestamp_seconds", "days_left", "status", "check_success"),
                            labels=("path", "cn"), codes=(0, 1, 2, 3), status_line=False, fixed=(14, 3))


def _init_with_monitor(reference_stack, tmp_path, style: MonitorStyle) -> tuple:
    stack = tmp_path / "stack"
    shutil.copytree(reference_stack, stack, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    (stack / MONITOR).write_text(script(style))
    _, findings = write_profile(stack, force=True)
    return stack, findings, yaml.safe_load((stack / "stackproof.yml").read_text())


def test_thresholds_fixed_inside_the_monitor_are_measured_and_shown_as_weaker(reference_stack, tmp_path, run_static):
    """A monitor that warns below 14 days and is critical below 3, with no flag for either: init measures both
    (runs on certificates at whole days left) and writes them; the scenarios then expect what the script was
    written to do and pass, and the report names both thresholds as weaker than the bar."""
    stack, findings, profile = _init_with_monitor(reference_stack, tmp_path, FIXED_INSIDE)
    assert profile["tls"] == {"warn_days": 14, "crit_days": 3}, (profile.get("tls"), findings.todos)
    run = run_static(stack, "-k", "monitor")
    wrong = {name: row["reason"] for name, row in _monitor_rows(run).items() if row["status"] != "PASS"}
    assert not wrong, wrong
    weakened = " ".join(run.report["profile"]["weakened"])
    assert "tls.warn_days" in weakened and "tls.crit_days" in weakened, run.report["profile"]


def test_thresholds_a_monitor_cannot_show_are_a_todo(reference_stack, tmp_path):
    """Fixed inside, but every status exits 0 and nothing is printed: the runs cannot tell the thresholds, so
    init writes none and says so (the scenarios then judge the script against the profile's bar)."""
    style = MonitorStyle(**{**FIXED_INSIDE.__dict__, "codes": (0, 0, 0, 3)})
    _, findings, profile = _init_with_monitor(reference_stack, tmp_path, style)
    assert "tls" not in profile, profile["tls"]
    todos = [todo for todo in findings.todos if todo.startswith("tls.")]
    assert len(todos) == 2 and all("its runs did not tell it" in todo for todo in todos), findings.todos
