"""The TLS monitor's runs are kept per content in a process (resources/scripts.py `_monitor_runs`): the same
script, called the same way on the same certificate, from another copy of the stack, is not run again; any
change to the script's bytes or exec bit, the call or the certificate runs it again; a run that failed (a
hang) is never kept. The scenario certificates are the same for CERTIFICATE_REUSE_SECONDS, then made anew."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from harness import merge_into_profile

from stackproof.redact import Redactor
from stackproof.resources import scripts
from stackproof.resources.scripts import Monitor, ScriptRunFailed, make_certificate
from stackproof.target.stack import Stack

MONITOR = "scripts/monitor-tls-certs.sh"


@pytest.fixture
def box_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The monitor runs really started in a box (an empty store first)."""
    started: list[list[str]] = []
    real = scripts.ScriptBox.run

    def counting(self, cmd, **options):
        started.append(list(cmd))
        return real(self, cmd, **options)

    monkeypatch.setattr(scripts.ScriptBox, "run", counting)
    monkeypatch.setattr(scripts, "_monitor_runs", type(scripts._monitor_runs)())
    return started


def copy_of(reference_stack: Path, where: Path) -> Path:
    shutil.copytree(reference_stack, where, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    return where


def valid_run(stack_dir: Path, timeout: float = 20) -> scripts.MonitorRun:
    monitor = Monitor(Stack(stack_dir, timeout, Redactor()))
    try:
        return monitor.valid_run()
    finally:
        monitor.close()


def test_the_same_run_elsewhere_is_kept_and_any_change_runs_again(reference_stack, tmp_path, box_runs):
    first = copy_of(reference_stack, tmp_path / "a")
    made = valid_run(first)
    assert len(box_runs) == 1 and made.code == 0
    assert valid_run(copy_of(reference_stack, tmp_path / "b")) is made and len(box_runs) == 1

    changed = copy_of(reference_stack, tmp_path / "script")
    with (changed / MONITOR).open("a") as script:
        script.write("# one more line\n")
    valid_run(changed)
    assert len(box_runs) == 2

    called = copy_of(reference_stack, tmp_path / "call")
    merge_into_profile(called, "tls: {warn_days: 45}")
    valid_run(called)
    assert len(box_runs) == 3

    mode = copy_of(reference_stack, tmp_path / "mode")
    (mode / MONITOR).chmod(0o700)
    valid_run(mode)
    assert len(box_runs) == 4


def test_a_run_that_failed_is_never_kept(reference_stack, tmp_path, box_runs):
    hangs = copy_of(reference_stack, tmp_path / "hangs")
    (hangs / MONITOR).write_text("#!/usr/bin/env bash\n# Usage: monitor-tls-certs.sh CERT\nsleep 30\n")
    for _ in range(2):
        with pytest.raises(ScriptRunFailed):
            valid_run(hangs, timeout=1)
    assert len(box_runs) == 2


def test_certificates_are_made_anew_once_their_reuse_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(scripts, "_certificates", {})
    first = make_certificate(tmp_path / "a.pem", 20)
    assert make_certificate(tmp_path / "b.pem", 20) is first
    assert (tmp_path / "a.pem").read_bytes() == (tmp_path / "b.pem").read_bytes()
    assert make_certificate(tmp_path / "c.pem", 21) is not first
    monkeypatch.setattr(scripts, "CERTIFICATE_REUSE_SECONDS", 0)
    assert make_certificate(tmp_path / "d.pem", 20) is not first
