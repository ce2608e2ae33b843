"""The suite can be trusted: it never leaks a secret, never changes the stack it checks."""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path

import docker
import pytest
from harness import assert_no_secret_in, stack_secrets
from test_live_defects import full_live_run

KEY_FILE = "ai-stack/compose/secrets/stack_api_key"
ENV_FILE = "ai-stack/compose/.env"

LEAKY_ROTATE_SCRIPT = """#!/usr/bin/env bash
# a hostile rotation script: shouts the key everywhere it can
key="$(cat "$2/stack_api_key" 2>/dev/null || true)"
echo "rotating $key"; echo "old key: $key" >&2
exit 1
"""


def _plant_known_secrets(stack: Path, weak: bool) -> list[bytes]:
    """Give the copy a known API key and a secret .env value; with `weak`, break what uses them."""
    key = secrets.token_hex(32)
    key_path = stack / KEY_FILE
    key_path.chmod(0o600)
    key_path.write_text(key)
    key_path.chmod(0o644 if weak else 0o400)
    token = "tok-" + secrets.token_urlsafe(24)
    with (stack / ENV_FILE).open("a") as env:
        env.write(f"STACK_ADMIN_TOKEN={token}\n")
    if weak:
        script = stack / "scripts/rotate-api-key.sh"
        script.write_text(LEAKY_ROTATE_SCRIPT)
        script.chmod(0o755)
    return [key.encode(), token.encode()]


@pytest.mark.parametrize("weak", [False, True], ids=["passing", "failing"])
def test_no_secret_reaches_any_output(stack_copy, run_suite, tmp_path, weak):
    known = _plant_known_secrets(stack_copy, weak)
    junit, html = tmp_path / "junit.xml", tmp_path / "pytest-html.html"
    run = run_suite(stack_copy, "-m", "static", "-rA", "-l", "--junitxml", str(junit), "--html", str(html),
                    "--self-contained-html", "-o", "log_cli=true", "--log-level=DEBUG")
    assert run.report is not None, run.stdout[-2000:]
    assert ("FAIL" in run.statuses.values()) is weak, run.statuses
    assert f"stackproof: {run.report['verdict']['line']}".encode() in html.read_bytes(), "no summary in pytest-html"
    assert b"<testsuite" in junit.read_bytes()
    assert_no_secret_in(run, known, (junit, html))


@pytest.mark.live_selftest
def test_no_secret_reaches_any_output_of_a_live_run(running_reference_stack, run_suite, tmp_path):
    """Static and live checks, the opt-in rotation included, on the running stack: its real key and
    password appear nowhere."""
    shared = full_live_run(running_reference_stack, run_suite, tmp_path)  # the GO test's run, when it ran first
    run = shared.run
    assert run.report is not None and run.passed, run.stdout[-2000:]
    assert_no_secret_in(run, shared.secrets_before, (shared.junit, shared.html))
    assert stack_secrets(running_reference_stack) == shared.secrets_before, "the rotation check did not restore the key"


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        st = path.lstat()
        digest.update(f"{path.relative_to(root)}|{stat.S_IMODE(st.st_mode):o}|{st.st_uid}|{st.st_gid}".encode())
        if stat.S_ISREG(st.st_mode):
            digest.update(path.read_bytes())
        elif stat.S_ISLNK(st.st_mode):
            digest.update(os.readlink(path).encode())
    return digest.hexdigest()


def _containers_state() -> dict[str, tuple]:
    try:
        client = docker.from_env(timeout=10)
        containers = client.containers.list(all=True, filters={"label": "com.docker.compose.project=ai-stack"})
    except Exception:
        return {}
    return {c.id: (c.attrs["State"]["StartedAt"], c.attrs["RestartCount"], c.status) for c in containers}


@pytest.mark.live_selftest
def test_a_run_changes_neither_the_stack_dir_nor_the_containers(running_reference_stack, run_suite):
    """The full suite, static and live, on the running reference stack itself. (A live self-test: beside the
    others breaking that stack, its containers would change under it.)"""
    before_tree, before_containers = _tree_digest(running_reference_stack), _containers_state()
    run = run_suite(running_reference_stack)
    assert run.report is not None, run.stdout[-2000:]
    assert _tree_digest(running_reference_stack) == before_tree, "the run changed the stack dir"
    assert _containers_state() == before_containers, "the run changed, restarted or replaced containers"


@pytest.mark.live_selftest
def test_live_rotation_needs_trust_in_the_stack_code(running_reference_stack, run_suite):
    """--allow-changes alone does not run the stack's rotate script on the host (it needs the engine's
    rights, so no sandbox holds it): the rotation is skipped saying why, and its control is not proven."""
    known = stack_secrets(running_reference_stack)
    run = run_suite(running_reference_stack, "-m", "live", "-k", "test_live_key_rotation", "--live", "--allow-changes")
    assert run.report is not None, run.stdout[-2000:]
    rotation = [row for c in run.report["controls"] for row in c["checks"] if "rotat" in row["name"].lower()]
    assert [row["status"] for row in rotation] == ["SKIPPED"], rotation
    assert "--trust-stack-code" in rotation[0]["reason"], rotation[0]["reason"]
    assert run.failed_gate and run.ret != 0
    assert stack_secrets(running_reference_stack) == known
