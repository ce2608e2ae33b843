"""Every file the suite reads in the stack's name is inside the stack dir: a rule file, a promtool
test's rule file or a profile path that leads out (absolute, `..`, a symlink) is a one-line
failure naming the stack file, and no line of the outside file reaches any output."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import assert_only_control_fails, merge_into_profile

SHADOW_LINE = "root:$6$stackproofOutsideMarker$Qx9:19700:0:99999:7:::"
ALERTS = "ai-stack/compose/prometheus/alerts"
RULE_TEST = "ai-stack/compose/prometheus/tests/ai-stack-alerts.test.yml"
RULE_TEST_ENTRY = "  - ../alerts/ai-stack-alerts.yml\n"


def _rule_file_symlink(stack: Path, shadow: Path) -> None:
    (stack / ALERTS / "extra.yml").symlink_to(shadow)


def _rule_test_entry(entry: str):
    def inject(stack: Path, shadow: Path) -> None:
        path = stack / RULE_TEST
        text = path.read_text()
        assert RULE_TEST_ENTRY in text, f"the reference {RULE_TEST} changed: update this test"
        path.write_text(text.replace(RULE_TEST_ENTRY, RULE_TEST_ENTRY + f"  - {entry.format(shadow=shadow)}\n"))
    return inject


def _rule_test_symlink(stack: Path, shadow: Path) -> None:
    (stack / "ai-stack/compose/prometheus/tests/outside.test.yml").symlink_to(shadow)


def _profile_path(value: str):
    def inject(stack: Path, shadow: Path) -> None:
        merge_into_profile(stack, f"paths:\n  pool_config: {value.format(shadow=shadow, up='../' * len(stack.parts))}\n")
    return inject


# (id, injector, control that fails, fragment of its reason)
CASES = [
    ("rule-file-symlink", _rule_file_symlink, "alert_rules",
     "prometheus.yml: rule_files pattern /etc/prometheus/alerts/*.yml leads outside the stack dir"),
    ("rule-test-absolute", _rule_test_entry("{shadow}"), "alert_rules",
     f"{RULE_TEST}: rule_files entry "),
    ("rule-test-dotdot", _rule_test_entry("../../../../../../../../../../../..{shadow}"), "alert_rules",
     f"{RULE_TEST}: rule_files entry ../../"),
    ("rule-test-file-symlink", _rule_test_symlink, "alert_rules",
     "ai-stack/compose/prometheus/tests/outside.test.yml: leads outside the stack dir (a symlink): not run"),
    ("profile-path-absolute", _profile_path("{shadow}"), "connection_pool", "stackproof.yml: paths.pool_config ("),
    ("profile-path-dotdot", _profile_path("{up}{shadow}"), "connection_pool", "stackproof.yml: paths.pool_config (../"),
]


@pytest.mark.parametrize("inject, control, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_outside_file_is_refused_unread(stack_copy, run_static, tmp_path, inject, control, fragment):
    shadow = tmp_path / "outside" / "shadow"
    shadow.parent.mkdir()
    shadow.write_text(f"{SHADOW_LINE}\ndaemon:*:19700:0:99999:7:::\n")
    inject(stack_copy, shadow)
    run = run_static(stack_copy)
    assert_only_control_fails(run, control, fragment)
    outputs = [run.stdout, run.stderr, *(p.read_text(errors="replace") for p in run.report_dir.glob("*"))]
    assert not any("stackproofOutsideMarker" in text for text in outputs), "a line of the outside file was shown"
