"""Live self-test on a real two-node swarm (issue 10 §2): the local engine is the manager, and a
docker-in-docker container (Debian's docker.io, rootfs from mmdebstrap) joins it as a
worker. The reference stack is deployed with aidb pinned to the worker. With the worker's engine
declared in the profile (`engine.nodes`) every live check reaches aidb there and the stack is GO;
without it, aidb's task is NOT PROVEN, naming the worker, and the verdict is NO-GO.

The worker's engine listens on plain TCP on the Docker bridge only (not published: only this host
reaches it). The module initialises its own swarm, advertised on the bridge's gateway (the worker
cannot reach the manager's 127.0.0.1), so it skips when a swarm is already active, and at the end
removes the stack and the worker and leaves the swarm (or keeps it for test_engines_live.py, when
its caller leaves it: test_engines_live.leave_swarm). The stack's files and images are those of
test_engines_live.py (SWARM_STACK, SWARM_IMAGE_TAG). Marked live_selftest and swarm; it runs before
test_engines_live.py (tests/conftest.py: OTHER_ENGINES).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import docker
import pytest
from harness import run_own
from test_engines_live import SWARM_IMAGE_TAG, SWARM_STACK, _engine_and_swarm_state, _wait_converged, leave_swarm

from stackproof.io import proc

pytestmark = [pytest.mark.live_selftest, pytest.mark.swarm]
PROJECT = "stackproof-selftest-2node"
WORKER = "stackproof-swarm-worker"  # container name and node hostname
WORKER_IMAGE = "stackproof-swarm-worker:bookworm"
PINNED = "aidb"  # the service whose task runs on the worker
SCRIPTS = SWARM_STACK / "scripts"


def _worker_image(client) -> None:
    """Debian bookworm with docker.io, made by mmdebstrap and imported (no registry here); reused when present."""
    try:
        client.images.get(WORKER_IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory() as work:
        rootfs = Path(work) / "rootfs.tar"
        run_own(["mmdebstrap", "--variant=apt", "--include=docker.io,iptables,ca-certificates,procps,iproute2",
              "bookworm", str(rootfs)], 900)
        run_own(["docker", "import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              str(rootfs), WORKER_IMAGE], 300)


def _wait_engine(host: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.run(["docker", "-H", host, "info"], timeout=10, where="worker engine").returncode == 0:
            return
        time.sleep(1)
    pytest.fail(f"the worker's engine {host} did not answer within {timeout:g}s")


def _wait_on_worker(client, host: str, timeout: float = 240) -> None:
    """The pinned service's task runs, healthy, on the worker."""
    worker = docker.DockerClient(base_url=host, timeout=20)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = worker.containers.list(filters={"label": f"com.docker.swarm.service.name={PROJECT}_{PINNED}"})
        if running and all(c.attrs["State"].get("Health", {}).get("Status") == "healthy" for c in running):
            return
        time.sleep(2)
    tasks = proc.run(["docker", "service", "ps", "--no-trunc", f"{PROJECT}_{PINNED}"], timeout=20, where="docker service ps")
    pytest.fail(f"{PINNED} not healthy on {WORKER} within {timeout:g}s: {tasks.stdout.decode(errors='replace')[-1500:]}")


def _nested_engine_rights() -> dict:
    """What a dockerd inside a container needs, short of --privileged: every capability this host's
    bounding set holds (here it lacks CAP_SYS_RESOURCE, so --privileged fails with "unable to apply
    caps"), no AppArmor/seccomp profile, and the host's cgroup tree writable (mounted by the caller;
    the worker's containers go under their own cgroup parent)."""
    with open("/proc/self/status") as status:
        bounding = int(next(line for line in status if line.startswith("CapBnd:")).split()[1], 16)
    names = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
             "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
             "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
             "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
             "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ"]  # capability bits 0-37
    return {"cap_add": [name for bit, name in enumerate(names) if bounding >> bit & 1],
            "security_opt": ["apparmor=unconfined", "seccomp=unconfined"]}


@pytest.fixture(scope="module")
def two_node_swarm():
    """(worker node name, its DOCKER_HOST) with the reference stack deployed and PINNED on the worker."""
    client, state = _engine_and_swarm_state()
    if state == "active":
        pytest.skip("a swarm is already active here: the two-node test initialises its own")
    _worker_image(client)
    volume = client.volumes.create(f"{WORKER}-data")  # the worker's /var/lib/docker: overlay2 needs a real fs
    worker = None
    env = {"STACK_PROJECT": PROJECT, "STACK_IMAGE_TAG": SWARM_IMAGE_TAG}
    try:
        worker = client.containers.run(
            WORKER_IMAGE, ["dockerd", "-H", "unix:///var/run/docker.sock", "-H", "tcp://0.0.0.0:2375", "--tls=false",
                           f"--cgroup-parent=/{WORKER}"],
            name=WORKER, hostname=WORKER, detach=True, **_nested_engine_rights(),
            volumes={volume.name: {"bind": "/var/lib/docker", "mode": "rw"},
                     "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                     # the services' bind mounts name host paths: the worker sees the checkout where the
                     # manager does (a real cluster ships the files to every node, or uses swarm configs)
                     str(SWARM_STACK): {"bind": str(SWARM_STACK), "mode": "ro"}})
        worker.reload()
        address, gateway = worker.attrs["NetworkSettings"]["IPAddress"], worker.attrs["NetworkSettings"]["Gateway"]
        host = f"tcp://{address}:2375"
        _wait_engine(host)
        run_own(["docker", "swarm", "init", "--advertise-addr", gateway], 60)
        token = run_own(["docker", "swarm", "join-token", "-q", "worker"], 30).strip()
        run_own(["docker", "-H", host, "swarm", "join", "--token", token, f"{gateway}:2377"], 60)
        run_own([str(SCRIPTS / "up.sh"), "--engine", "swarm", "--wait-timeout", "240"], 900, env)
        image = f"ai-stack/{PINNED}:{SWARM_IMAGE_TAG}"  # built by up.sh
        run_own(["bash", "-c", 'docker save "$0" | docker -H "$1" load -q', image, host], 600)
        run_own(["docker", "service", "update", "--detach", "--quiet", "--constraint-add", f"node.hostname=={WORKER}",
              f"{PROJECT}_{PINNED}"], 60)
        _wait_on_worker(client, host)
        _wait_converged(client, f"{PROJECT}_{PINNED}", project=PROJECT)  # nginx resolves the moved task again
        yield WORKER, host
    finally:
        proc.run([str(SCRIPTS / "down.sh"), "--engine", "swarm"], timeout=300, where="down.sh", env={**os.environ, **env})
        if worker is not None:
            worker.remove(force=True)
            proc.run(["docker", "node", "rm", "--force", WORKER], timeout=60, where="docker node rm")
        leave_swarm()
        volume.remove(force=True)


def _suite_args(*extra: str) -> tuple[str, ...]:
    return ("--live", "--engine", "swarm", "--compose-project", PROJECT, *extra)


def test_two_node_swarm_worker_declared_is_go_undeclared_is_not_proven(two_node_swarm, run_suite, stack_copy: Path):
    """aidb's task on the worker: reached through the declared node engine, every control passes (GO);
    with no DOCKER_HOST for the worker, the checks that need aidb's container are not proven, naming
    the worker, and the verdict is NO-GO; nothing passes or fails silently."""
    node, host = two_node_swarm
    profile = stack_copy / "stackproof.yml"
    original = profile.read_text()
    profile.write_text(original + f"engine:\n  nodes:\n    {node}: {host}\n")
    run = run_suite(stack_copy, *_suite_args())
    assert run.report is not None, run.stdout[-3000:]
    assert {c: run.reasons(c) for c in run.failed_controls} == {}
    assert run.passed and run.ret == 0, run.report["verdict"]
    probed = next(check["result"] for control in run.report["controls"] if control["id"] == "docker_secrets_mode"
                  for check in control["checks"] if check["mode"] == "live")
    assert f"{PROJECT}_{PINNED}." in probed, probed  # aidb's task, probed on the worker

    profile.write_text(original)
    undeclared = run_suite(stack_copy, *_suite_args("-m", "live"))
    assert undeclared.report is not None, undeclared.stdout[-3000:]
    assert undeclared.failed_controls == set(), {c: undeclared.reasons(c) for c in undeclared.failed_controls}
    not_proven = [row["reason"] for c in undeclared.report["controls"] for row in c["checks"]
                  if row["mode"] == "live" and row["status"] == "SKIPPED"]
    assert not_proven and all(node in reason and "not proven" in reason for reason in not_proven), not_proven
    assert undeclared.failed_gate and undeclared.ret != 0
