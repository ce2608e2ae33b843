"""Engines: where the stack's containers run, and what each engine says a secret should be.

The checks ask `LiveStack` for containers, secrets and ports; `LiveStack` asks one `Engine`:

* `ComposeEngine` (`--engine compose`): a Docker Compose project, containers found by the
  `com.docker.compose.project` label. Compose bind-mounts file secrets as they are on the host,
  so the mode and owner a secret should have are the ones compose declares.
* `PodmanEngine` (`--engine podman`): the same compose project run by Podman through its
  Docker-compatible socket (`podman system service`). Rootless, user namespaces change who owns a
  file inside the container: the checks compare what the container sees, so that is what they report.
* `SwarmEngine` (`--engine swarm`): a stack deployed with `docker stack deploy`, services found by
  the `com.docker.stack.namespace` label and their running tasks by service. Swarm applies a secret's
  `mode`, `uid` and `gid`, so the expected values come from the deployed service spec, not from the
  compose file. A task runs on some node: the manager's own node is reached through the manager's
  engine, another node through the `DOCKER_HOST` the profile maps it to (`engine.nodes`); a task
  whose node cannot be reached is *unproven* and the checks that need it say so.

Without `--engine`, the engine is detected: Podman when the engine says it is Podman, else compose
or swarm by which one runs the project (both: the run asks for `--engine`).
"""

from __future__ import annotations

import os
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stackproof.target.compose import SECRETS_ROOT
from stackproof.errors import StackError

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

    from stackproof.target.stack import Stack

ENGINES = ("compose", "swarm", "podman")
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
STACK_NAMESPACE = "com.docker.stack.namespace"
SWARM_SERVICE = "com.docker.swarm.service.name"
PODMAN_SOCKETS = ("/run/podman/podman.sock",)


class LiveUnavailable(Exception):
    """No engine, or nothing of the project runs on it: live checks cannot run."""


@dataclass(frozen=True)
class SecretMount:
    """A secret as a container has it: where, and the mode and owner it should have, by `declared_by`."""

    target: str
    source: str | None
    mode: int | None
    uid: str | None
    gid: str | None
    declared_by: str  # "compose" or "the swarm service spec"


@dataclass(frozen=True)
class Unreached:
    """A task the suite could not look into: its service, task, node and why."""

    service: str
    task: str
    node: str
    reason: str

    def __str__(self) -> str:
        return f"task {self.task} of {self.service} on node {self.node} ({self.reason})"


@dataclass
class Placed:
    """A running container and the engine (DOCKER_HOST, None for the default) it is reached through."""

    container: Container
    service: str
    node: str | None = None
    docker_host: str | None = None


@dataclass
class Engine:
    """The interface `LiveStack` uses; subclasses differ in how they find containers and secrets."""

    name = "compose"
    honours_secret_mode = False  # whether the engine applies a secret's declared mode/uid/gid
    client: docker.DockerClient
    project: str
    stack: Stack
    docker_host: str | None = None
    placed: list[Placed] = field(default_factory=list)
    unreached: list[Unreached] = field(default_factory=list)
    specs: dict[str, dict] = field(default_factory=dict)  # swarm: each service's deployed spec
    local_node: str | None = None  # swarm: the manager's own node (hostname)

    def discover(self) -> None:
        raise NotImplementedError

    def service_of(self, container) -> str:
        return container.labels.get(COMPOSE_SERVICE, container.name)

    def secret_mounts(self, container) -> list[SecretMount]:
        """The container's /run/secrets mounts (from the engine), with compose's declaration for each."""
        service = self.stack.compose.services.get(self.service_of(container))
        declared = {ref.target: ref for ref in (service.secrets if service else [])}
        mounts = []
        for mount in container.attrs.get("Mounts", []):
            target = str(mount.get("Destination", ""))
            if not target.startswith(SECRETS_ROOT):
                continue
            ref = declared.get(target)
            uid, gid = _declared_owner(service, ref) if ref else (None, None)
            mounts.append(SecretMount(target, ref.source if ref else None, ref.mode if ref else None, uid, gid, "compose"))
        return mounts

    def restart(self, container, timeout: float) -> Container:
        """Restart one container; returns the container to wait on."""
        container.restart(timeout=10)
        return container

    def published(self, container, port: int) -> tuple[str, int]:
        """Where the suite reaches a container's port: the published host port (on the engine's host)."""
        bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp") or []
        if not bindings:
            raise StackError(f"service {self.service_of(container)}: port {port} is not published")
        return _engine_host(self.docker_host, bindings[0].get("HostIp")), int(bindings[0]["HostPort"])


class ComposeEngine(Engine):
    name = "compose"

    def discover(self) -> None:
        containers = self.client.containers.list(filters={"label": f"{COMPOSE_PROJECT}={self.project}"})
        self.placed = [Placed(c, self.service_of(c), None, self.docker_host) for c in containers]
        if not self.placed:
            raise LiveUnavailable(f"compose project {self.project!r} has no running containers")


class PodmanEngine(ComposeEngine):
    name = "podman"


class SwarmEngine(Engine):
    name = "swarm"
    honours_secret_mode = True

    def discover(self) -> None:
        info = self.client.info().get("Swarm") or {}
        if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
            raise LiveUnavailable("the engine is not a swarm manager (docker swarm init, or point DOCKER_HOST at one)")
        services = self.client.services.list(filters={"label": f"{STACK_NAMESPACE}={self.project}"})
        if not services:
            raise LiveUnavailable(f"swarm stack {self.project!r} has no services")
        local_node = info.get("NodeID")
        self.local_node = self._node_name(local_node or "")
        node_hosts = self.stack.profile["engine"]["nodes"]
        clients: dict[str, docker.DockerClient | Exception] = {}
        for service in services:
            name = self._short(service.name)
            self.specs[name] = service.attrs["Spec"]
            for task in service.tasks(filters={"desired-state": "running"}):
                status = task.get("Status", {})
                task_id = task["ID"][:12]
                node = self._node_name(task.get("NodeID", ""))
                container_id = (status.get("ContainerStatus") or {}).get("ContainerID")
                if status.get("State") != "running" or not container_id:
                    self.unreached.append(Unreached(name, task_id, node, f"task {status.get('State', 'unknown')}"))
                    continue
                if node in node_hosts:  # declared: also for the manager's own node
                    host = node_hosts[node]
                    if host not in clients:
                        clients[host] = _connect(host, self.stack.timeout)
                    client = clients[host]
                elif task.get("NodeID") == local_node:
                    host, client = self.docker_host, self.client
                else:
                    self.unreached.append(Unreached(name, task_id, node,
                                                    "no DOCKER_HOST for this node in stackproof.yml engine.nodes"))
                    continue
                if isinstance(client, Exception):
                    self.unreached.append(Unreached(name, task_id, node, f"{host} unreachable: {client}"))
                    continue
                try:
                    container = client.containers.get(container_id)
                except Exception as exc:  # the SDK raises many kinds: all mean "not reached"
                    self.unreached.append(Unreached(name, task_id, node, f"container not found: {type(exc).__name__}"))
                    continue
                self.placed.append(Placed(container, name, node, host))
        if not self.placed and not self.unreached:
            raise LiveUnavailable(f"swarm stack {self.project!r} has no running tasks")

    def _short(self, service_name: str) -> str:
        prefix = f"{self.project}_"
        return service_name[len(prefix):] if service_name.startswith(prefix) else service_name

    def _node_name(self, node_id: str) -> str:
        try:
            return self.client.nodes.get(node_id).attrs["Description"]["Hostname"]
        except Exception:  # a node that left: its id is all there is
            return node_id[:12] or "unknown"

    def service_of(self, container) -> str:
        return self._short(container.labels.get(SWARM_SERVICE, container.name))

    def secret_mounts(self, container) -> list[SecretMount]:
        """The secrets of the task's service spec, with the File mode/uid/gid swarm applies."""
        spec = self.specs.get(self.service_of(container), {})
        mounts = []
        for secret in spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Secrets") or []:
            file = secret.get("File") or {}
            name = file.get("Name", "")
            target = name if name.startswith("/") else f"{SECRETS_ROOT}/{name}"
            mode = file.get("Mode")
            mounts.append(SecretMount(target, _unprefixed(secret.get("SecretName"), self.project),
                                      None if mode is None else int(mode),
                                      file.get("UID"), file.get("GID"), "the swarm service spec"))
        return mounts

    def restart(self, container, timeout: float) -> Container:
        """Redeploy the service's tasks (`docker service update --force`) and return the new task's container."""
        name = self.service_of(container)
        service = self.client.services.get(f"{self.project}_{name}")
        old = container.id
        service.force_update()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for task in service.tasks(filters={"desired-state": "running"}):
                cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
                if cid and cid != old and task["Status"].get("State") == "running":
                    return self.client.containers.get(cid)
            time.sleep(1)
        raise StackError(f"service {name}: no new task running {timeout:g}s after a forced update")

    def published(self, container, port: int) -> tuple[str, int]:
        """Swarm's ingress publishes on every interface, so the reference stack does not publish on
        swarm: the suite reaches a task on its address on the node's docker_gwbridge, which the
        node's host routes to (a published ingress port is used when there is one)."""
        name = self.service_of(container)
        for published in (self.specs.get(name, {}).get("EndpointSpec", {}).get("Ports") or []):
            if published.get("TargetPort") == port and published.get("PublishedPort"):
                return _engine_host(self.docker_host, None), int(published["PublishedPort"])
        placed = next((p for p in self.placed if p.container.id == container.id), None)
        if _is_remote(self.docker_host) or (placed is not None and placed.node != self.local_node):
            raise StackError(f"service {name}: port {port} is not published, and its task runs on another host")
        try:
            bridge = self.client.networks.get("docker_gwbridge").attrs.get("Containers") or {}
        except Exception as exc:  # the SDK raises many kinds
            raise StackError(f"service {name}: port {port} is not published and docker_gwbridge is unreadable "
                             f"({type(exc).__name__})") from None
        address = (bridge.get(container.id) or {}).get("IPv4Address", "")
        if not address:
            raise StackError(f"service {name}: port {port} is not published and the task has no docker_gwbridge address")
        return address.split("/")[0], port


def _declared_owner(service, ref) -> tuple[str | None, str | None]:
    """The numeric uid, gid compose asks a secret to have: the reference's, else the service's user
    (a user given by name cannot be compared with a stat and is left out)."""
    user = (service.user or "").split(":")
    uid = ref.uid or (user[0] if user and user[0] else None)
    gid = ref.gid or (user[1] if len(user) > 1 else None)
    return (uid if uid and uid.isdigit() else None), (gid if gid and gid.isdigit() else None)


def _unprefixed(name: str | None, project: str) -> str | None:
    prefix = f"{project}_"
    return name[len(prefix):] if name and name.startswith(prefix) else name


def _is_remote(docker_host: str | None) -> bool:
    engine = urllib.parse.urlparse(docker_host or "")
    return engine.scheme in ("tcp", "ssh", "http", "https") and engine.hostname not in (None, "localhost", "127.0.0.1")


def _engine_host(docker_host: str | None, host_ip: str | None) -> str:
    """The address of a port published by an engine: its host for tcp:// and ssh:// engines,
    the bound address (0.0.0.0 meaning loopback) for a local one."""
    if _is_remote(docker_host):
        return urllib.parse.urlparse(docker_host or "").hostname or ""  # remote: it has a hostname
    return "127.0.0.1" if host_ip in (None, "", "0.0.0.0", "::") else host_ip


def _connect(docker_host: str | None, timeout: float) -> docker.DockerClient | Exception:
    """A client for one engine, pinged; the exception (one line) when it does not answer.
    The Docker SDK is imported here: a static run (and the command's up/down) never loads it."""
    import docker

    try:
        ssh = (docker_host or os.environ.get("DOCKER_HOST", "")).startswith("ssh://")
        if docker_host:
            client = docker.DockerClient(base_url=docker_host, timeout=int(max(timeout, 1)), use_ssh_client=ssh)
        else:
            client = docker.from_env(timeout=int(max(timeout, 1)), use_ssh_client=ssh)
        client.ping()
        return client
    except Exception as exc:  # docker raises many kinds: all mean "no engine"
        return StackError(f"{type(exc).__name__}: {_first_line(exc)}")


def _first_line(value: object) -> str:
    lines = [line.strip() for line in str(value).splitlines() if line.strip()]
    return lines[0][:200] if lines else ""


def _is_podman(client: docker.DockerClient) -> bool:
    try:
        components = client.version().get("Components") or []
    except Exception:
        return False
    return any(str(c.get("Name", "")).lower().startswith("podman") for c in components)


def podman_socket() -> str | None:
    """The Podman API socket on this host: rootful, else the user's rootless one."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    for path in (*PODMAN_SOCKETS, f"{runtime}/podman/podman.sock"):
        if os.path.exists(path):
            return f"unix://{path}"
    return None


def connect(stack, project: str, choice: str) -> Engine:
    """The engine running `project`: the one `choice` names (compose, swarm, podman), or, with no
    choice, the one that runs it. Raises LiveUnavailable with the reason in one line."""
    if choice and choice not in ENGINES:
        raise StackError(f"--engine {choice!r}: one of {', '.join(ENGINES)}")
    docker_host = os.environ.get("DOCKER_HOST") or None
    if choice == "podman" and not docker_host:
        docker_host = podman_socket()
        if docker_host is None:
            raise LiveUnavailable("--engine podman: no Podman socket (podman system service) and no DOCKER_HOST")
    client = _connect(docker_host, stack.timeout)
    if isinstance(client, Exception):
        raise LiveUnavailable(f"{'Podman' if choice == 'podman' else 'Docker'} engine unreachable ({client})")
    podman = _is_podman(client)
    if choice == "podman" and not podman:
        raise LiveUnavailable(f"--engine podman: the engine at {docker_host or 'DOCKER_HOST'} is not Podman")
    kinds = {"compose": PodmanEngine if podman else ComposeEngine, "podman": PodmanEngine, "swarm": SwarmEngine}
    if choice:
        engine = kinds[choice](client, project, stack, docker_host)
        engine.discover()
        return engine
    found = []
    for kind in ([PodmanEngine] if podman else [ComposeEngine, SwarmEngine]):
        engine = kind(client, project, stack, docker_host)
        try:
            engine.discover()
        except LiveUnavailable as exc:
            reason = str(exc)
            continue
        found.append(engine)
    if len(found) > 1:
        raise LiveUnavailable(f"{project!r} runs both as a compose project and as a swarm stack: choose with --engine")
    if not found:
        raise LiveUnavailable(reason if podman else
                              f"compose project {project!r} has no running containers, nor has a swarm stack of that name")
    return found[0]
