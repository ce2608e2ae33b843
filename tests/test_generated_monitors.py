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

from stackproof.init import UNREAD, monitor_interface

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
