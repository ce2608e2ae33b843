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


@pytest.mark.parametrize("documents, chosen", [
    ({"reference.md": 4000, "changelog.md": 900}, "reference.md"),  # the largest, whatever its name
    ({"notes.txt": 200}, None),  # smaller than a response: not the full docs
])
def test_init_takes_the_full_docs_by_size_beside_the_responses(tmp_path, documents, chosen):
    """The full docs are the document beside the recorded responses that is larger than all of them (what an agent
    reads without progressive disclosure), the largest, whatever its name; a larger file in another folder is not
    taken, and none larger is a TODO."""
    folder = tmp_path / "api/snapshots"
    folder.mkdir(parents=True)
    for level in ("health", "discovery", "quickstart"):
        (folder / f"{level}.json").write_text('{"level": "' + level + '", "text": "' + "x" * 400 + '"}')
    for name, size in documents.items():
        (folder / name).write_text("y" * size)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/full-docs.md").write_text("z" * 9000)
    (tmp_path / "compose.yml").write_text("services:\n  api:\n    image: example/api:1\n")
    _, findings = write_profile(tmp_path)
    entry = next((e for e in findings.entries if (e.section, e.key) == ("disclosure", "full_docs")), None)
    if chosen is None:
        assert entry is None
        assert any(t.startswith("disclosure.full_docs: no document beside the recorded responses") for t in findings.todos)
    else:
        assert entry is not None and entry.value == f"api/snapshots/{chosen}", entry
