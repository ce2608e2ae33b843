"""Live self-tests: each live check's defect, injected into the running reference stack,
fails exactly its control; the stack is restored after each.

They need the reference stack up (`bin/stackproof up`). Without it they skip, except in
a full run (STACKPROOF_SELFTEST_FULL=1, set by `bin/stackproof selftest`), where they fail.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import docker
import pytest
from defects import COORDINATOR_CONFIG, breaker_removed_from_coordinator, certificate_on_disk, chmod, replace
from harness import PROJECT, REFERENCE_STACK, SuiteRun, assert_no_secret_in, assert_only_control_fails, stack_secrets
from journal import restore_file, save_file

from stackproof.io import proc

COMPOSE_DIR = REFERENCE_STACK / "ai-stack/compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
BREAKER_CODE = "ai-stack/mcp-servers/common/aistack_common.py"
pytestmark = pytest.mark.live_selftest


@dataclass(frozen=True)
class ComposeTarget:
    """Where the reference stack runs as a compose project: the project, its files, the engine's environment."""

    project: str = PROJECT
    files: tuple[Path, ...] = (COMPOSE,)
    env: tuple[tuple[str, str], ...] = ()  # e.g. DOCKER_HOST of Podman's socket


def compose(*args: str, timeout: float = 300, target: ComposeTarget = ComposeTarget()) -> None:
    files = [arg for file in target.files for arg in ("-f", str(file))]
    done = proc.run(["docker-compose", "-p", target.project, *files, *args], timeout=timeout, where="docker-compose",
                    env={**os.environ, **dict(target.env)})
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]


# target -> {service: whether its image needs a rebuild}: services whose files a defect's test restored, still
# running as the defect made them. Recreating them at once cost every live defect a second wait for health.
# They are recreated by the next defect's own `up` when it recreates them anyway, else (`settle`) before it is
# injected: a service the next defect does not recreate must run as set up, never pick its files up, nor have
# loaded files the defect counts on it not to have (a certificate renewed on disk, nginx not reloaded).
# LIVE_DEFECTS is ordered so that defects recreating the same services follow each other.
_STALE: dict[ComposeTarget, dict[str, bool]] = {}


def recreate(services: tuple[str, ...], build: bool = False, target: ComposeTarget = ComposeTarget()) -> None:
    """Recreate `services` (their images rebuilt when `build`) and, in the same `up`, those left stale."""
    todo = _STALE.pop(target, {})
    todo.update({service: build or todo.get(service, False) for service in services})
    if todo:
        compose("up", "-d", "--wait", "--wait-timeout", "180", "--force-recreate", "--no-deps",
                *(["--build"] if any(todo.values()) else []), *todo, target=target)
        _wait_nginx_serves(target)


def settle(target: ComposeTarget = ComposeTarget()) -> None:
    """The stack as set up: the services a restore left stale recreated."""
    recreate((), target=target)


def leave_stale(services: tuple[str, ...], build: bool, target: ComposeTarget) -> None:
    stale = _STALE.setdefault(target, {})
    stale.update({service: build or stale.get(service, False) for service in services})


def _wait_nginx_serves(target: ComposeTarget, in_a_row: int = 5, timeout: float = 60) -> None:
    """nginx answers /health `in_a_row` times in a row. A recreated container may get a new address
    (Podman gives one every time): until nginx's resolver cache (valid=10s) expires it still proxies
    to the old one, and a check run then would fail for the test's restart, not for the defect."""
    context = ssl._create_unverified_context()  # readiness only: the certificate may be the defect
    url = f"https://127.0.0.1:{dict(target.env).get('STACK_HTTPS_PORT', '8443')}/health"
    deadline, good = time.monotonic() + timeout, 0
    while good < in_a_row:
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                good = good + 1 if response.status == 200 else 0
        except OSError:  # refused, reset, 502/504 (HTTPError is an OSError)
            good = 0
        if good < in_a_row:
            assert time.monotonic() < deadline, f"nginx did not serve {url} {in_a_row} times in a row within {timeout:g}s"
            time.sleep(0.1 if good else 0.5)


# --- defects ----------------------------------------------------------------------


def _nginx_swaps_in_the_key(stack: Path) -> None:
    """nginx replaces any key a client sends with the real one: a wrong key gets in (no key still does not)."""
    key = (stack / "ai-stack/compose/secrets/stack_api_key").read_text().strip()
    conf = "ai-stack/compose/nginx/nginx.conf"
    replace(conf, "    # Plain HTTP is not served", f'    map $http_x_api_key $upstream_api_key {{\n        "" "";\n        default "{key}";\n    }}\n\n    # Plain HTTP is not served')(stack)
    replace(conf, "proxy_connect_timeout 5s;", "proxy_set_header X-API-Key $upstream_api_key;\n        proxy_connect_timeout 5s;")(stack)


def _rotation_without_restart(stack: Path) -> None:
    """The rotate script drops --restart: the key file changes, the running services keep the old key."""
    script = stack / "scripts/rotate-api-key.sh"
    original = stack / "scripts/rotate-api-key.orig.sh"
    original.write_bytes(script.read_bytes())
    original.chmod(0o755)
    script.write_text('#!/usr/bin/env bash\nargs=(); for a in "$@"; do [[ $a == --restart ]] || args+=("$a"); done\n'
                      'exec "$(dirname "$0")/rotate-api-key.orig.sh" "${args[@]}"\n')


def _bloated_discovery(stack: Path) -> None:
    path = stack / "ai-stack/mcp-servers/aidb/disclosure/discovery.json"
    doc = json.loads(path.read_text())
    doc["changelog"] = [f"release {n}: improved retrieval quality, new ranking features and fixes" for n in range(150)]
    path.write_text(json.dumps(doc, indent=2))


@dataclass(frozen=True)
class LiveDefect:
    id: str
    control: str
    touches: tuple[str, ...]  # stack-relative files the defect changes; restored afterwards
    inject: Callable[[Path], None]
    recreate: tuple[str, ...]  # services recreated after injecting and after restoring
    fragments: tuple[str, ...]  # what the failure reason must name
    args: tuple[str, ...] = ()  # extra options for the suite run
    also: tuple[str, ...] = ()  # controls that check the same fact by design and fail too
    not_proven: tuple[str, ...] = ()  # controls the defect keeps from being checked (NOT PROVEN)
    build: bool = False  # the defect is in an image: rebuild the recreated services' images


# the controls with live checks through nginx's HTTPS: not proven while nginx serves a certificate
# other than the stack's file
HTTPS_CONTROLS = ("api_key_permissions", "connection_pool", "progressive_disclosure")

LIVE_DEFECTS = [
    LiveDefect(
        "secret-file-0644-on-host", "docker_secrets_mode",
        ("ai-stack/compose/secrets/postgres_password",),
        chmod("ai-stack/compose/secrets/postgres_password", 0o644), (),
        ("postgres_password mode 0644, declared 0400",),
    ),
    LiveDefect(
        # the key's mode inside the containers is checked by both controls, as the report asks
        "api-key-0440-on-host", "api_key_permissions",
        ("ai-stack/compose/secrets/stack_api_key",), chmod("ai-stack/compose/secrets/stack_api_key", 0o440), (),
        ("/run/secrets/stack_api_key mode 0440, expected 0400",), also=("docker_secrets_mode",),
    ),
    LiveDefect(
        "rotation-leaves-services-on-the-old-key", "api_key_permissions",
        ("scripts/rotate-api-key.sh", "scripts/rotate-api-key.orig.sh"), _rotation_without_restart, (),
        # --allow-changes for the rotation only: the breakers' fault injection is proven on its own
        ("the old key still works",), ("--allow-changes", "--trust-stack-code", "-k", "not test_live_fault_injection"),
    ),
    LiveDefect(
        "certificate-renewed-on-disk-nginx-not-reloaded", "tls_monitoring",
        ("ai-stack/compose/nginx/certs/server.crt", "ai-stack/compose/nginx/certs/server.key"),
        certificate_on_disk(365), (),  # nothing recreated: nginx keeps what it loaded at start
        ("service nginx: serves sha256",), not_proven=HTTPS_CONTROLS,
    ),
    LiveDefect(
        "nginx-accepts-any-key", "api_key_permissions",
        ("ai-stack/compose/nginx/nginx.conf",), _nginx_swaps_in_the_key, ("nginx",),
        ("wrong key",),
    ),
    LiveDefect(
        "nginx-serves-near-expiry-certificate", "tls_monitoring",
        ("ai-stack/compose/nginx/certs/server.crt", "ai-stack/compose/nginx/certs/server.key"),
        certificate_on_disk(10), ("nginx",),
        ("days",),
    ),
    LiveDefect(
        "dead-alert-metric", "alert_rules",
        ("ai-stack/compose/prometheus/alerts/ai-stack-alerts.yml",),
        replace("ai-stack/compose/prometheus/alerts/ai-stack-alerts.yml", "expr: tls_cert_days_left < 7",
                "expr: tls_cert_days_remaining < 7"),
        ("prometheus",),
        ("TLSCertificateExpiringSoon", "tls_cert_days_remaining"),
    ),
    LiveDefect(
        "prometheus-without-rules-mount", "alert_rules",
        ("ai-stack/compose/docker-compose.yml",),
        replace("ai-stack/compose/docker-compose.yml", "      - ./prometheus/alerts:/etc/prometheus/alerts:ro\n", ""),
        ("prometheus",),
        ("DatabasePoolExhausted",),
    ),
    LiveDefect(
        "postgres-max-connections-60", "connection_pool",
        ("ai-stack/compose/docker-compose.yml",),
        replace("ai-stack/compose/docker-compose.yml", "      - max_connections=200\n", "      - max_connections=60\n"),
        ("postgres",),
        ("the pools need up to 100 connections", "Postgres allows 57"),
    ),
    LiveDefect(
        "pool-size-5-through-environment", "connection_pool",
        ("ai-stack/compose/docker-compose.yml",),
        replace("ai-stack/compose/docker-compose.yml", "      SERVICE_NAME: aidb\n",
                 "      SERVICE_NAME: aidb\n      DB_POOL_SIZE: \"5\"\n"),
        ("aidb",),
        ("service aidb: /metrics reports pool size / max_overflow 5 / 30",),
    ),
    LiveDefect(
        "bloated-discovery-response", "progressive_disclosure",
        ("ai-stack/mcp-servers/aidb/disclosure/discovery.json",), _bloated_discovery, ("aidb",),
        ("tokens",),
    ),
    LiveDefect(
        # the declared breaker is fine; the code never lets a call through to close it (static checks pass)
        "breaker-never-closes-in-code", "circuit_breakers", (BREAKER_CODE,),
        replace(BREAKER_CODE, "                if elapsed < self.reset_timeout:\n", "                if True:\n"),
        ("aidb",), ("service aidb: breaker", "it never closes"), ("--allow-changes",), build=True,
    ),
    LiveDefect(
        # the code ignores failure_threshold (effectively infinite): the breaker never opens
        "breaker-never-opens-in-code", "circuit_breakers", (BREAKER_CODE,),
        replace(BREAKER_CODE, "self._failures >= self.failure_threshold)", "self._failures >= 10**9)"),
        ("aidb", "hybrid-coordinator"), ("after 5 failed requests (threshold 5): it never opens",), ("--allow-changes",),
        build=True,
    ),
    LiveDefect(
        "breaker-removed-from-coordinator", "circuit_breakers",
        ("ai-stack/compose/docker-compose.yml", COORDINATOR_CONFIG), breaker_removed_from_coordinator,
        ("hybrid-coordinator",), ("service hybrid-coordinator: exports no aidb_circuit_breaker_state",),
    ),
]


def run_with_defect(defect: LiveDefect, stack: Path, run_suite, suite_args: tuple[str, ...] = (),
                    target: ComposeTarget = ComposeTarget()):
    """Inject the defect into the stack's files, recreate what it touches, run the live checks; the
    files and the services are restored whatever happens."""
    if set(_STALE.get(target, {})) - set(defect.recreate):
        settle(target)
    saved = [save_file(stack / relative) for relative in defect.touches]
    try:
        defect.inject(stack)
        for item in saved:  # keep the owner the stack's services need
            if item.owner and item.path.exists():
                os.chown(item.path, *item.owner)
        recreate(defect.recreate, defect.build, target)
        return run_suite(stack, "-m", "live", "--live", *suite_args, *defect.args)
    finally:
        for item in saved:
            restore_file(item)
        leave_stale(defect.recreate, defect.build, target)


@pytest.fixture(autouse=True, scope="module")
def settled_afterwards():
    """The module leaves the stack as set up, whatever its last defect left stale."""
    yield
    settle()


@pytest.fixture
def settled(running_reference_stack: Path) -> None:
    """The running reference stack with every service as set up (none left stale by a defect's test)."""
    settle()


@pytest.mark.parametrize("defect", LIVE_DEFECTS, ids=[d.id for d in LIVE_DEFECTS])
def test_live_defect_fails_only_its_control(defect: LiveDefect, running_reference_stack: Path, run_suite):
    known = stack_secrets(running_reference_stack)
    run = run_with_defect(defect, running_reference_stack, run_suite)
    assert_only_control_fails(run, defect.control, *defect.fragments, also=defect.also, not_proven=defect.not_proven)
    assert_no_secret_in(run, known)


@dataclass
class FullLiveRun:
    """One run of every check on the running reference stack, the opt-in ones that change it (the key
    rotation, the fault injection) included, with every output pytest can write; read by the GO test
    and the trust test (test_trust.py), which would otherwise each make it (about 100 s together)."""

    run: SuiteRun
    junit: Path
    html: Path
    secrets_before: list[bytes]  # the stack's secrets before the run (the rotation restores the key)


_FULL_LIVE_RUN: list[FullLiveRun] = []


def full_live_run(stack: Path, run_suite, tmp_path: Path) -> FullLiveRun:
    """The run, made by the first test that asks for it, from the stack as set up."""
    if not _FULL_LIVE_RUN:
        settle()
        known = stack_secrets(stack)
        junit, html = tmp_path / "junit.xml", tmp_path / "pytest-html.html"
        run = run_suite(stack, "--live", "--allow-changes", "--trust-stack-code", "-rA", "-l", "--junitxml", str(junit),
                        "--html", str(html), "--self-contained-html")
        _FULL_LIVE_RUN.append(FullLiveRun(run, junit, html, known))
    return _FULL_LIVE_RUN[0]


def test_running_reference_stack_is_go(running_reference_stack: Path, run_suite, tmp_path: Path):
    """Static and live checks on the running reference stack, the opt-in ones included: every control
    passes, GO."""
    run = full_live_run(running_reference_stack, run_suite, tmp_path).run
    assert run.report is not None, run.stdout[-3000:]
    assert {c: run.reasons(c) for c in run.failed_controls} == {}
    assert set(run.statuses.values()) == {"PASS"}, run.statuses
    assert all(c["validated"] == "both" for c in run.report["controls"]), [c["validated"] for c in run.report["controls"]]
    assert run.passed and run.ret == 0


def _wait_healthy(container, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(1)
    pytest.fail(f"{container.name} not healthy {timeout:g}s after unpause")


@pytest.mark.usefixtures("settled")
def test_hung_container_fails_its_checks_within_the_timeout(running_reference_stack: Path, run_suite):
    """A paused Prometheus (connections accepted by the engine's proxy, never answered) fails the
    alert checks that query it, each within --stack-timeout, and the run still ends with a report."""
    container = docker.from_env(timeout=10).containers.list(
        filters={"label": [f"com.docker.compose.project={PROJECT}", "com.docker.compose.service=prometheus"]})[0]
    container.pause()
    started = time.monotonic()
    try:
        run = run_suite(running_reference_stack, "-m", "live", "-k", "alert_rules", "--live", "--stack-timeout", "3",
                        timeout=120)
    finally:
        elapsed = time.monotonic() - started
        container.unpause()
        _wait_healthy(container, 90)
    assert run.report is not None, run.stdout[-2000:]
    reasons = run.reasons("alert_rules")
    assert len(reasons) == 3 and all("\n" not in r for r in reasons), reasons
    assert all("prometheus" in r.lower() for r in reasons), reasons
    assert elapsed < 3 * (3 + 2) + 15, f"{elapsed:.0f}s for three checks bounded at 3s each"


SCALE = 20  # containers per API service in the scale self-test (issue 10 §4)


@pytest.mark.usefixtures("settled")
def test_scaled_api_services_every_container_checked_and_pool_budget_counts_them(running_reference_stack: Path, run_suite):
    """The API services scaled to SCALE containers each (`--scale`): every container's secrets are
    probed, and the pool budget counts every container's pool: 2 × SCALE × 50 connections do not fit
    Postgres's 197, so the connection pool control fails, and only it. Scaled back to one afterwards."""
    services = ("aidb", "hybrid-coordinator")
    scale = [arg for service in services for arg in ("--scale", f"{service}={SCALE}")]
    try:
        compose("up", "-d", "--wait", "--wait-timeout", "420", "--no-recreate", *scale, *services, timeout=600)
        run = run_suite(running_reference_stack, "-m", "live", "--live", timeout=600)
    finally:
        compose("up", "-d", "--wait", "--wait-timeout", "180", "--no-recreate",
                *[arg for service in services for arg in ("--scale", f"{service}=1")], *services)
        _wait_nginx_serves(ComposeTarget())  # nginx's resolver still holds the removed containers' addresses
    demand = " + ".join(f"{service} {SCALE} × 50" for service in services)
    assert_only_control_fails(run, "connection_pool", f"the pools need up to {2 * SCALE * 50} connections ({demand})")
    probed = next(check["result"] for control in run.report["controls"] if control["id"] == "docker_secrets_mode"
                  for check in control["checks"] if check["mode"] == "live")
    for service in services:  # each container probed: the evidence counts them per service
        assert f"{service} ({SCALE} containers): /run/secrets/" in probed, probed
