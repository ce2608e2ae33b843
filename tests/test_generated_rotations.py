"""Property: from any house style of API-key rotation (generated: the key by name or by path, the secrets dir
by flag or variable, the audit log by flag, by variable or fixed beside the key, the backup's place, the
random source, the confirmation), `stackproof init` reads an interface and proves it by its trial run, the
correct script passes the rotation check through it, and a behaviour defect planted in that script fails
the check, for that defect (issue 14, item 6; 80 examples passed when it was written). The monitor's
counterpart: test_generated_monitors.py."""

from __future__ import annotations

import shutil

import yaml
from generated_rotation import DEFECTS, RotateStyle, script, styles
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackproof.init import write_profile

ROTATE = "scripts/rotate-api-key.sh"


def _rotate_row(run) -> dict:
    return next(row for control in run.report["controls"] for row in control["checks"]
                if row["nodeid"].endswith("::test_rotate_script"))


@settings(max_examples=6, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(style=styles(), defect=st.sampled_from(sorted(DEFECTS)))
def test_init_proves_each_house_style_and_a_planted_defect_is_found_through_it(
        style: RotateStyle, defect: str, reference_stack, tmp_path_factory, run_static):
    stack = tmp_path_factory.mktemp("style") / "stack"
    shutil.copytree(reference_stack, stack, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    (stack / ROTATE).write_text(script(style))
    _, findings = write_profile(stack, force=True)
    rotate_todos = [todo for todo in findings.todos if "rotate" in todo]
    assert not rotate_todos, (style, rotate_todos)
    interface = yaml.safe_load((stack / "stackproof.yml").read_text())["scripts"]["rotate"]

    correct = _rotate_row(run_static(stack, "-k", "test_rotate_script"))
    assert correct["status"] == "PASS", (style, interface, correct["reason"])

    (stack / ROTATE).write_text(script(style, defect))
    broken = _rotate_row(run_static(stack, "-k", "test_rotate_script"))
    assert broken["status"] == "FAIL" and DEFECTS[defect] in broken["reason"], (style, defect, interface, broken)
