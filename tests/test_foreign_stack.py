"""A stack the suite was not written with: `stackproof init` writes its profile, and the
suite judges it by what it does, not by the reference stack's names and conventions."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import set_up_copy
from harness import STACKS

from stackproof.init import write_profile
from stackproof.target.profile import PROFILE_FILE


def live_only(run) -> set[str]:
    return {cid for cid, status in run.statuses.items() if status == "LIVE ONLY"}


def test_init_then_static_run_on_the_second_stack(tmp_path, run_static):
    """init + pytest suites -m static on northwind: every control PASS but progressive disclosure, which has
    nothing to judge statically (no recorded responses), and Docker secrets mode, which only a live run proves:
    both LIVE ONLY, and the static gate passes (a correct stack is not red in every pull request)."""
    stack = set_up_copy(STACKS / "northwind", tmp_path / "northwind", "bin/setup")
    done = subprocess.run([sys.executable, "-m", "stackproof.init", "--stack-dir", str(stack)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    profile = (stack / PROFILE_FILE).read_text()
    assert "TODO: nothing left undecided" in profile, profile
    data = yaml.safe_load(profile)
    assert data["roles"]["tls_monitor"] == "cron:ops/cron.d/certwatch"
    assert data["compose"] == {"env_files": ["deploy/northwind.env"], "profiles": ["observability"]}
    assert data["paths"]["pool_config"] == "config/app.yml"
    assert "NORTHWIND_SETTINGS" in profile and "# discovered:" in profile
    run = run_static(stack)
    assert run.failed_controls == set(), {c: run.reasons(c) for c in run.failed_controls}
    assert live_only(run) == {"progressive_disclosure", "docker_secrets_mode"}, run.statuses
    assert set(run.statuses.values()) == {"PASS", "LIVE ONLY"} and run.verdict == "STATIC PASS" and run.ret == 0
    skipped = [row["reason"] for c in run.report["controls"] if c["id"] == "progressive_disclosure"
               for row in c["checks"]]
    assert all("no recorded disclosure responses" in reason and "a live run measures the running endpoints" in reason
               for reason in skipped), skipped


def test_init_rewrites_the_reference_profile_and_it_stays_go(reference_stack, tmp_path, run_static):
    stack = set_up_copy(reference_stack, tmp_path / "stack", None)
    with pytest.raises(Exception, match="already exists"):
        write_profile(stack)
    before = (stack / PROFILE_FILE).read_text()
    assert (stack / PROFILE_FILE).read_text() == before  # not overwritten without --force
    write_profile(stack, force=True)
    assert yaml.safe_load((stack / PROFILE_FILE).read_text())["roles"]["tls_terminator"] == "nginx"
    run = run_static(stack)
    assert run.passed, {c: run.reasons(c) for c in run.failed_controls}
