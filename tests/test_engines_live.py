"""Live self-tests on Docker Swarm: the reference stack deployed with `docker stack deploy` is GO;
the live defects that apply, deployed into the running services (a secret at 0440, a pool override
in the environment, Prometheus without its rules mount, nginx serving a near-expiry certificate or
one other than the stack's file), each fail only their control; tasks on a node the suite cannot
reach are reported as not proven. (Rootful Podman: test_podman_live.py.)

The module deploys the stack itself (stack/scripts/up.sh --engine swarm, stack SWARM_PROJECT, images
tagged SWARM_IMAGE_TAG, no published ports, so it runs beside the compose project) and removes it
afterwards; if it had to initialise the swarm, it leaves it again (`docker swarm leave --force`),
unless its caller leaves it (see leave_swarm). The stack's files are those of SWARM_STACK: the
reference stack, or in a full run (`bin/stackproof selftest`) a copy of its own, so that these tests
run beside the compose live self-tests, which change stack/ and rebuild its images in place. Marked
live_selftest and swarm. Without a Docker engine they skip, except in a full run, where that is a
failure (harness.unavailable).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import docker
import pytest
from cryptography.hazmat.primitives import serialization
from defects import certificate_on_disk, certificate_pair
from journal import restore_file, save_file
from harness import (REFERENCE_STACK, assert_no_secret_in, assert_only_control_fails, run_own, stack_secrets,
                     unavailable)
from test_live_defects import HTTPS_CONTROLS

from stackproof.io import proc
from stackproof.engine.live import LiveStack, NotProven
from stackproof.redact import Redactor
from stackproof.target.stack import Stack

pytestmark = [pytest.mark.live_selftest, pytest.mark.swarm]
SWARM_PROJECT = "stackproof-selftest-swarm"
SWARM_STACK = Path(os.environ.get("STACKPROOF_SWARM_STACK") or REFERENCE_STACK)
SCRIPTS = SWARM_STACK / "scripts"
# The swarm stacks' images (up.sh builds them from SWARM_STACK): never those a compose live self-test
# is rebuilding with a defect at the moment a swarm service is deployed or updated.
SWARM_IMAGE_TAG = "selftest-swarm"


def leave_swarm() -> None:
    """`docker swarm leave --force`, unless the caller leaves the swarm itself once every live self-test
    ended (STACKPROOF_SWARM_LEFT_BY_CALLER=1: `bin/stackproof selftest`). Leaving empties dockerd's
    embedded DNS for every other project's networks (the running reference stack's nginx answers 502),
    so it must not happen while the compose live self-tests run beside these."""
    if os.environ.get("STACKPROOF_SWARM_LEFT_BY_CALLER") != "1":
        proc.run(["docker", "swarm", "leave", "--force"], timeout=60, where="docker swarm leave")


def _engine_and_swarm_state():
    """(client, the engine's swarm state) of the local engine; unavailable without one."""
    try:
        client = docker.from_env(timeout=30)
        return client, client.info().get("Swarm", {}).get("LocalNodeState")
    except Exception as exc:  # no engine at all
        unavailable(f"no Docker engine ({type(exc).__name__}; bin/stackproof selftest starts dockerd)")


@pytest.fixture(scope="module")
def swarm_stack():
    """The reference stack as the swarm stack SWARM_PROJECT, healthy; removed afterwards."""
    client, state = _engine_and_swarm_state()
    started_swarm = state != "active"
    env = {"STACK_PROJECT": SWARM_PROJECT, "STACK_IMAGE_TAG": SWARM_IMAGE_TAG}
    try:
        run_own([str(SCRIPTS / "up.sh"), "--engine", "swarm", "--wait-timeout", "240"], 900, env)
        yield client
    finally:
        proc.run([str(SCRIPTS / "down.sh"), "--engine", "swarm"], timeout=300, where="down.sh",
                 env={**os.environ, **env})
        if started_swarm:
            leave_swarm()


def _suite_args(*extra: str) -> tuple[str, ...]:
    return ("--live", "--engine", "swarm", "--compose-project", SWARM_PROJECT, *extra)


def _wait_converged(client, service: str, timeout: float = 240, project: str = SWARM_PROJECT) -> None:
    """The service's update (or rollback) is complete, its task healthy, and nginx serves through it
    again (nginx re-resolves the new task's address within its resolver's 10 s)."""
    stack = Stack(SWARM_STACK, 10.0, Redactor())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = (client.services.get(service).attrs.get("UpdateStatus") or {}).get("State", "completed")
        if state in ("completed", "rollback_completed"):
            try:
                if LiveStack.connect(stack, project, "swarm").http.https("/health").status == 200:
                    return
            except NotProven:  # nginx serves, a certificate other than the stack's file (that defect)
                return
            except Exception:  # tasks still starting: not reachable yet
                pass
        time.sleep(2)
    pytest.fail(f"{service}: not serving {timeout:g}s after an update")


def test_swarm_reference_stack_is_go(swarm_stack, run_suite):
    """Static and live checks against the stack on swarm: GO; the secret-mode warning about
    non-swarm Compose is not shown, since swarm applies the mode."""
    run = run_suite(SWARM_STACK, *_suite_args())
    assert run.report is not None, run.stdout[-3000:]
    assert {c: run.reasons(c) for c in run.failed_controls} == {}
    assert set(run.statuses.values()) == {"PASS"}, run.statuses
    assert all(c["validated"] == "both" for c in run.report["controls"]), [c["validated"] for c in run.report["controls"]]
    assert run.report["run"]["engine"] == "swarm"
    assert [c["warning"] for c in run.report["controls"] if c["id"] == "docker_secrets_mode"] == [""]
    assert run.passed and run.ret == 0


def _stack_ids() -> tuple[int, int]:
    """(uid, gid) the reference stack's services run as (setup.sh writes them into .env)."""
    env = dict(line.split("=", 1) for line in (SWARM_STACK / "ai-stack/compose/.env").read_text().splitlines()
               if "=" in line)
    return int(env["STACK_UID"]), int(env["STACK_GID"])


def _secret_deployed_0440(scratch: Path) -> list[str]:
    """The compose file declares 0400; the service is redeployed with the key at 0440 (swarm applies it)."""
    secret = f"{SWARM_PROJECT}_stack_api_key"
    uid, gid = _stack_ids()
    return ["--secret-rm", secret, "--secret-add", f"source={secret},target=stack_api_key,uid={uid},gid={gid},mode=0440"]


def _certificate_mounted_in_nginx(scratch: Path) -> list[str]:
    """nginx's certificate dir is swapped (`--mount-add` on the same target replaces the mount) for one
    holding another valid localhost certificate; the stack's files, and the monitor's view of them,
    stay as they are. The files are owned by the user nginx runs as, the key 0600, as setup.sh writes
    the real ones."""
    cert, key = certificate_pair(365)
    uid, gid = _stack_ids()
    for name, data, mode in (("server.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644),
                             ("server.key", key, 0o600)):
        (scratch / name).write_bytes(data)
        (scratch / name).chmod(mode)
        os.chown(scratch / name, uid, gid)
    return ["--mount-add", f"type=bind,source={scratch},target=/etc/nginx/certs,readonly"]


@dataclass(frozen=True)
class SwarmDefect:
    """A defect deployed with `docker service update` into the running services, seen by the live
    checks only. Either the update itself is the defect (the files stay as they are; the services are
    rolled back afterwards), or it is in the stack's files (`touches`, rewritten by `inject`), which
    the services bind-mount: the update then only restarts the tasks, and again once the files are
    restored."""

    id: str
    services: tuple[str, ...]
    update: Callable[[Path], list[str]]  # the update's arguments, given a scratch dir
    control: str
    fragments: tuple[str, ...]
    also: tuple[str, ...] = ()  # controls that check the same fact by design
    touches: tuple[str, ...] = ()  # stack-relative files the defect rewrites; restored afterwards
    inject: Callable[[Path], None] | None = None
    not_proven: tuple[str, ...] = ()  # controls the defect keeps from being checked (NOT PROVEN)


SWARM_DEFECTS = [
    SwarmDefect("secret-deployed-0440", ("aidb",), _secret_deployed_0440, "docker_secrets_mode",
                ("/run/secrets/stack_api_key mode 0440, expected 0400",), also=("api_key_permissions",)),
    SwarmDefect("pool-size-5-in-the-service-environment", ("aidb",), lambda scratch: ["--env-add", "DB_POOL_SIZE=5"],
                "connection_pool", ("service aidb: /metrics reports pool size / max_overflow 5 / 30",)),
    SwarmDefect("prometheus-without-rules-mount", ("prometheus",), lambda scratch: ["--mount-rm", "/etc/prometheus/alerts"],
                "alert_rules", ("DatabasePoolExhausted",)),
    SwarmDefect("nginx-serves-near-expiry-certificate", ("nginx", "tls-monitor"), lambda scratch: ["--force"],
                "tls_monitoring", ("days",),
                touches=("ai-stack/compose/nginx/certs/server.crt", "ai-stack/compose/nginx/certs/server.key"),
                inject=certificate_on_disk(10)),
    SwarmDefect("nginx-serves-a-certificate-not-on-disk", ("nginx",), _certificate_mounted_in_nginx,
                "tls_monitoring", ("service nginx: serves sha256",), not_proven=HTTPS_CONTROLS),
]


def _update_together(services: list[str], action: Callable[[str], list[str]]) -> None:
    """`docker service <action>` on each service, each waiting for its own rollout, side by side: one
    service's rollout does not wait for the other's (nginx and the monitor: about 15 s each)."""
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        for done in [pool.submit(run_own, ["docker", "service", *action(service), "--detach=false", "--quiet", service], 180)
                     for service in services]:
            done.result()


@pytest.mark.parametrize("defect", SWARM_DEFECTS, ids=[d.id for d in SWARM_DEFECTS])
def test_swarm_defect_deployed_fails_only_its_control(swarm_stack, run_suite, defect: SwarmDefect):
    """The live self-tests that apply on swarm: each defect, deployed into the running services, fails
    its control and only it; the services are restored afterwards."""
    services = [f"{SWARM_PROJECT}_{name}" for name in defect.services]
    # the scratch dir may be bind-mounted into a task that runs as the stack's user: it must be able to
    # enter it (pytest's tmp_path sits under a root-only 0700 dir)
    scratch = Path(tempfile.mkdtemp(prefix="stackproof-swarm-defect-"))
    scratch.chmod(0o755)
    saved = [save_file(SWARM_STACK / relative) for relative in defect.touches]
    try:
        if defect.inject:
            defect.inject(SWARM_STACK)  # rewrites the files in place: owner and mode stay
        _update_together(services, lambda service: ["update", *defect.update(scratch)])
        for service in services:
            _wait_converged(swarm_stack, service)
        run = run_suite(SWARM_STACK, *_suite_args(), "-m", "live")
    finally:
        for item in saved:
            restore_file(item)
        _update_together(services, lambda service: ["update", "--force"] if saved else ["rollback"])
        for service in services:
            _wait_converged(swarm_stack, service)
        shutil.rmtree(scratch)
    assert_only_control_fails(run, defect.control, *defect.fragments, also=defect.also, not_proven=defect.not_proven)
    assert_no_secret_in(run, stack_secrets(SWARM_STACK))


def test_swarm_task_on_unreachable_node_is_not_proven(swarm_stack, run_suite, stack_copy: Path):
    """The profile maps the node the tasks run on to an engine that does not answer: every live check
    that needs those tasks is reported not proven, naming the node; nothing passes or fails silently."""
    node = swarm_stack.info()["Name"]
    with (stack_copy / "stackproof.yml").open("a") as profile:
        profile.write(f"engine:\n  nodes:\n    {node}: tcp://127.0.0.1:{_free_port()}\n")
    run = run_suite(stack_copy, *_suite_args(), "-m", "live")
    assert run.report is not None, run.stdout[-3000:]
    assert run.failed_controls == set(), {c: run.reasons(c) for c in run.failed_controls}
    live_rows = [row for c in run.report["controls"] for row in c["checks"] if row["mode"] == "live"]
    assert live_rows and all(row["status"] == "SKIPPED" for row in live_rows), [row["status"] for row in live_rows]
    assert all("not proven" in row["reason"] and node in row["reason"] for row in live_rows), \
        [row["reason"] for row in live_rows]
    assert run.failed_gate and "not proven" in run.report["verdict"]["reason"]


def _free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
