"""Live self-tests on rootful Podman: the reference stack as the Podman project PODMAN_PROJECT (its
own ports, beside the compose project) is GO; a host secret file at 0644 is caught in the container;
the live defects that apply (a pool override in the environment, Prometheus without its rules mount,
nginx serving a near-expiry certificate, a certificate renewed on disk that nginx never loaded) each
fail only their control.

The stack's files are those of PODMAN_STACK: by default the reference stack, and in a full run
(`bin/stackproof selftest`) a copy of it of its own (STACKPROOF_PODMAN_STACK), so that these tests
run beside the compose live self-tests, which change stack/ in place. Marked `podman` besides
live_selftest; without Podman they skip, except in a full run, which installs it, where that is a
failure (harness.unavailable).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest
from harness import REFERENCE_STACK, assert_no_secret_in, assert_only_control_fails, require_tool, run_own, stack_secrets
from test_live_defects import LIVE_DEFECTS, ComposeTarget, LiveDefect, run_with_defect

from stackproof.io import proc

pytestmark = [pytest.mark.live_selftest, pytest.mark.podman]
PODMAN_STACK = Path(os.environ.get("STACKPROOF_PODMAN_STACK") or REFERENCE_STACK)
SCRIPTS = PODMAN_STACK / "scripts"
COMPOSE = PODMAN_STACK / "ai-stack/compose/docker-compose.yml"
PODMAN_PROJECT = "stackproof-selftest-podman"
PODMAN_PORTS = {"STACK_HTTPS_PORT": "28443", "STACK_PROMETHEUS_PORT": "29090", "STACK_ALERTMANAGER_PORT": "29093"}


@pytest.fixture(scope="module")
def podman_stack():
    """The reference stack as the rootful Podman project PODMAN_PROJECT, healthy; removed afterwards.
    Without Podman: `unavailable` (skipped, a failure in a full run)."""
    require_tool("podman", "Debian packages podman netavark aardvark-dns uidmap slirp4netns: bin/stackproof selftest "
                           "and bin/stackproof up --engine podman install them")
    env = {"STACK_PROJECT": PODMAN_PROJECT, **PODMAN_PORTS}
    try:
        run_own([str(SCRIPTS / "up.sh"), "--engine", "podman", "--wait-timeout", "240"], 900, env)
        _wait_prometheus_settled(f"http://127.0.0.1:{PODMAN_PORTS['STACK_PROMETHEUS_PORT']}")
        yield
    finally:
        proc.run([str(SCRIPTS / "down.sh"), "--engine", "podman"], timeout=300, where="down.sh",
                 env={**os.environ, **env})


def _wait_prometheus_settled(url: str, timeout: float = 180) -> None:
    """Prometheus has found its Alertmanager and scraped a target. Healthy under Podman, it was seen
    reporting neither for a while after `up` (a full run's Podman GO then failed three controls, and passed
    alone): the project's checks judge the stack, not how long Podman's networking took to settle."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/alertmanagers", timeout=5) as response:
                managers = json.load(response)["data"]["activeAlertmanagers"]
            with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as response:
                targets = json.load(response)["data"]["activeTargets"]
            if managers and any(target.get("health") == "up" for target in targets):
                return
        except (OSError, ValueError, KeyError):
            pass
        assert time.monotonic() < deadline, f"Prometheus at {url} found no Alertmanager or scraped nothing within " \
                                            f"{timeout:g}s of up"
        time.sleep(2)


def test_podman_reference_stack_is_go_and_a_0644_secret_fails(podman_stack, run_suite):
    """On rootful Podman (auto-detected from its socket): GO; then the host's postgres_password at 0644,
    which Podman bind-mounts as it is, fails the secret-mode control naming the container's view."""
    args = ("--live", "--engine", "podman", "--compose-project", PODMAN_PROJECT)
    run = run_suite(PODMAN_STACK, *args)
    assert run.report is not None, run.stdout[-3000:]
    assert {c: run.reasons(c) for c in run.failed_controls} == {}
    assert run.report["run"]["engine"] == "podman" and run.passed and run.ret == 0
    secret = PODMAN_STACK / "ai-stack/compose/secrets/postgres_password"
    mode = secret.stat().st_mode & 0o7777
    try:
        secret.chmod(0o644)
        broken = run_suite(PODMAN_STACK, *args, "-m", "live")
    finally:
        secret.chmod(mode)
    assert_only_control_fails(broken, "docker_secrets_mode", "postgres_password mode 0644, declared 0400")
    assert_no_secret_in(broken, stack_secrets(PODMAN_STACK))


PODMAN_TARGET = ComposeTarget(PODMAN_PROJECT, (COMPOSE, COMPOSE.with_name("docker-compose.podman.yml")),
                              (("DOCKER_HOST", "unix:///run/podman/podman.sock"), *PODMAN_PORTS.items()))
# the live defects that apply under Podman (those that rebuild an image would need it copied over too)
PODMAN_DEFECTS = [d for d in LIVE_DEFECTS if d.id in (
    "pool-size-5-through-environment", "prometheus-without-rules-mount", "nginx-serves-near-expiry-certificate",
    "certificate-renewed-on-disk-nginx-not-reloaded")]


@pytest.mark.parametrize("defect", PODMAN_DEFECTS, ids=[d.id for d in PODMAN_DEFECTS])
def test_podman_defect_fails_only_its_control(podman_stack, run_suite, defect: LiveDefect):
    """The live self-tests that apply, under rootful Podman: each defect fails its control and only it."""
    args = ("--engine", "podman", "--compose-project", PODMAN_PROJECT)
    run = run_with_defect(defect, PODMAN_STACK, run_suite, args, PODMAN_TARGET)
    assert_only_control_fails(run, defect.control, *defect.fragments, also=defect.also, not_proven=defect.not_proven)
    assert_no_secret_in(run, stack_secrets(PODMAN_STACK))
