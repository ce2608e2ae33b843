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
from stackproof.profile import PROFILE_FILE


def not_proven(run) -> set[str]:
    return {cid for cid, status in run.statuses.items() if status not in ("PASS", "FAIL")}


def test_init_rewrites_the_reference_profile_and_it_stays_go(reference_stack, tmp_path, run_static):
    stack = set_up_copy(reference_stack, tmp_path / "stack", None)
    with pytest.raises(Exception, match="already exists"):
        write_profile(stack)
    before = (stack / PROFILE_FILE).read_text()
    assert (stack / PROFILE_FILE).read_text() == before  # not overwritten without --force
    write_profile(stack, force=True)
    assert yaml.safe_load((stack / PROFILE_FILE).read_text())["roles"]["tls_terminator"] == "nginx"
    run = run_static(stack)
    assert run.verdict == "GO", {c: run.reasons(c) for c in run.failed_controls}
