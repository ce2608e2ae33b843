"""promtool's runs are made once per content in a process (io.pure), and never across a change to
any file they read: the tool, the command, the file tested, a rule file it names (a dotfile a glob
matches too), or an input that cannot be read."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stackproof.io import proc, pure
from stackproof.resources.alerting import promtool, rule_test_reads
from stackproof.redact import Redactor
from stackproof.target.stack import Stack

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package 'prometheus')")

RULES = """groups:
- name: g
  rules:
  - alert: Up
    expr: up == 0
    for: 1m
"""
TEST = """rule_files: [{pattern}]
evaluation_interval: 1m
tests:
- interval: 1m
  input_series: [{{series: 'up{{job="a"}}', values: '0x5'}}]
  alert_rule_test: [{{eval_time: 5m, alertname: Up, exp_alerts: [{{exp_labels: {{job: a}}}}]}}]
"""


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The commands that really started a process (an empty memo first)."""
    started: list[list[str]] = []
    real = proc.run

    def counting(cmd, **options):
        started.append(list(cmd))
        return real(cmd, **options)

    monkeypatch.setattr(proc, "run", counting)
    monkeypatch.setattr(pure, "_results", type(pure._results)())
    return started


def _stack(root: Path, pattern: str = "../alerts/*.yml", rules: str = RULES) -> tuple[Stack, Path]:
    (root / "alerts").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "alerts/up.yml").write_text(rules)
    test = root / "tests/up.test.yml"
    test.write_text(TEST.format(pattern=pattern))
    return Stack(root, 30, Redactor()), test


def _test_rules(stack: Stack, test: Path) -> tuple[bool, str]:
    reads, escapes = rule_test_reads(stack, test)
    assert not escapes
    return promtool(stack, ["test", "rules"], test, reads)


def test_the_same_bytes_in_another_copy_are_not_run_again(tmp_path: Path, runs):
    first = _test_rules(*_stack(tmp_path / "one"))
    second = _test_rules(*_stack(tmp_path / "two"))
    assert first == second and first[0] is True
    assert len(runs) == 1


@pytest.mark.parametrize("change", ["rule-file", "test-file", "new-dotfile-rule-file", "rule-file-unreadable"])
def test_a_change_to_any_file_it_reads_runs_it_again(tmp_path: Path, runs, change: str):
    stack, test = _stack(tmp_path / "stack")
    assert _test_rules(stack, test)[0] is True
    if change == "rule-file":
        (tmp_path / "stack/alerts/up.yml").write_text(RULES.replace("up == 0", "up == 1"))
    elif change == "test-file":
        test.write_text(TEST.format(pattern="../alerts/*.yml").replace("0x5", "1x5"))
    elif change == "new-dotfile-rule-file":  # Go's glob matches dotfiles: promtool loads it too
        (tmp_path / "stack/alerts/.more.yml").write_text(RULES.replace("alert: Up", "alert: Up2"))
    else:
        (tmp_path / "stack/alerts/up.yml").unlink()
        (tmp_path / "stack/alerts/up.yml").symlink_to("nowhere.yml")
    again = _test_rules(stack, test)
    assert len(runs) == 2
    assert again[0] is (change == "new-dotfile-rule-file"), again  # one more rule file: the test still passes


def test_a_run_with_an_unreadable_input_is_never_kept(tmp_path: Path, runs):
    stack, test = _stack(tmp_path / "stack")
    (tmp_path / "stack/alerts/up.yml").unlink()
    (tmp_path / "stack/alerts/up.yml").symlink_to("gone.yml")
    for _ in range(2):
        assert _test_rules(stack, test)[0] is False
    assert len(runs) == 2


def test_check_rules_is_kept_by_the_rule_files_content(tmp_path: Path, runs):
    stack, _ = _stack(tmp_path / "one")
    other, _ = _stack(tmp_path / "two", rules=RULES.replace("for: 1m", "for: 2m"))
    results = [promtool(s, ["check", "rules"], s.root / "alerts/up.yml") for s in (stack, other, stack)]
    assert all(ok for ok, _ in results)
    assert len(runs) == 2
