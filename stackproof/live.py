"""The running stack: its compose project's containers, reached through the Docker API.

Checks get a `LiveStack` from the `live` fixture. Everything here is bounded by the
run's timeout: Docker API calls (client timeout), commands in containers (wrapped in
`timeout`), and HTTP requests. Nothing here changes a container, except `restart`,
which only checks marked `changes_stack` use (opt-in: --allow-changes).
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import docker

from .backends import container_host
from .errors import StackError
from .target import Stack

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


class LiveUnavailable(Exception):
    """No engine, or no running compose project: live checks cannot run."""


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class LiveStack:
    """The compose project `project` as it runs on the engine DOCKER_HOST points at."""

    def __init__(self, stack: Stack, project: str, client: docker.DockerClient, containers: list):
        self.stack = stack
        self.project = project
        self.client = client
        self.timeout = stack.timeout
        self._containers = containers

    @classmethod
    def connect(cls, stack: Stack, project: str) -> "LiveStack":
        try:
            # ssh:// engines go through the system's ssh client (no paramiko needed)
            ssh = os.environ.get("DOCKER_HOST", "").startswith("ssh://")
            client = docker.from_env(timeout=int(max(stack.timeout, 1)), use_ssh_client=ssh)
            client.ping()
        except Exception as exc:  # docker raises many kinds: all mean "no engine"
            raise LiveUnavailable(f"Docker engine unreachable ({type(exc).__name__}: {_first_line(exc)})") from None
        containers = client.containers.list(filters={"label": f"{PROJECT_LABEL}={project}"})
        if not containers:
            raise LiveUnavailable(f"compose project {project!r} has no running containers")
        return cls(stack, project, client, containers)

    # --- containers ------------------------------------------------------------

    @property
    def containers(self) -> list:
        """Every running container of the project."""
        return list(self._containers)

    def service_of(self, container) -> str:
        return container.labels.get(SERVICE_LABEL, container.name)

    def container(self, service: str):
        for container in self._containers:
            if self.service_of(container) == service:
                return container
        raise StackError(f"service {service}: no running container in compose project {self.project!r}")

    def host(self, service: str):
        """testinfra host inside the service's container (runs as the container's user)."""
        return container_host(self.container(service).name, self.timeout)

    def exec(self, service: str, cmd: list[str], user: str | None = None) -> tuple[int, bytes]:
        """Run a command in the service's container: (exit code, stdout).

        Goes through the docker CLI (testinfra's docker backend), which reaches unix, tcp and ssh
        engines alike; bounded by `timeout` inside the container and by the backend outside."""
        container = self.container(service)
        spec = f"{user}@{container.name}" if user else container.name
        bounded = ["timeout", f"{self.timeout:g}", *cmd]
        result = container_host(spec, self.timeout + 5).run(" ".join(["%s"] * len(bounded)), *bounded)
        if result.rc == 124:
            raise StackError(f"container {container.name}: {cmd[0]} did not finish within {self.timeout:g}s")
        return result.rc, result.stdout_bytes

    def restart(self, service: str, timeout: float) -> None:
        """Restart the service's container and wait (bounded) until it is healthy again."""
        container = self.container(service)
        container.restart(timeout=10)
        deadline = time.monotonic() + timeout
        while True:
            container.reload()
            health = container.attrs["State"].get("Health", {}).get("Status", "healthy")
            if container.status == "running" and health == "healthy":
                return
            if time.monotonic() > deadline:
                raise StackError(f"container {container.name}: not healthy {timeout:g}s after a restart ({health})")
            time.sleep(1)

    def secret_mounts(self, container) -> list[dict]:
        """The container's effective mounts under /run/secrets (from the engine, not from compose)."""
        return [m for m in container.attrs.get("Mounts", []) if str(m.get("Destination", "")).startswith("/run/secrets")]

    # --- HTTP ------------------------------------------------------------------

    def http_in(self, service: str, url: str, headers: dict[str, str] | None = None) -> HttpResponse:
        """HTTP GET from inside a service's container, for endpoints that are not published (e.g. /metrics)."""
        script = (
            "import json,sys,urllib.request,urllib.error\n"
            "req=urllib.request.Request(sys.argv[1],headers=json.loads(sys.argv[2]))\n"
            "try:\n r=urllib.request.urlopen(req,timeout=float(sys.argv[3]));code=r.status;body=r.read()\n"
            "except urllib.error.HTTPError as e:\n code=e.code;body=e.read()\n"
            "sys.stdout.write(str(code)+'\\n');sys.stdout.flush();sys.stdout.buffer.write(body)\n"
        )
        code, out = self.exec(service, ["python3", "-c", script, url, json.dumps(headers or {}), f"{self.timeout:g}"])
        status, _, body = out.partition(b"\n")
        if code != 0 or not status.strip().isdigit():
            raise StackError(f"service {service}: GET {url} failed inside the container: {_first_line(out)}")
        return HttpResponse(int(status), {}, body)

    def published(self, service: str, container_port: int) -> tuple[str, int]:
        """Host address of a published port (127.0.0.1, or the remote engine's host for tcp:// and ssh://)."""
        container = self.container(service)
        bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{container_port}/tcp") or []
        if not bindings:
            raise StackError(f"service {service}: port {container_port} is not published")
        host_ip = bindings[0].get("HostIp") or "127.0.0.1"
        engine = urllib.parse.urlparse(os.environ.get("DOCKER_HOST", ""))
        if engine.scheme in ("tcp", "ssh", "http", "https") and engine.hostname not in (None, "localhost"):
            host_ip = engine.hostname  # ports published on a remote engine are on its host
        elif host_ip in ("0.0.0.0", "::"):
            host_ip = "127.0.0.1"
        return host_ip, int(bindings[0]["HostPort"])

    @cached_property
    def tls_context(self) -> ssl.SSLContext:
        """TLS context that trusts the stack's own certificate (self-signed or issued by a private CA)."""
        context = ssl.create_default_context(cafile=str(self.stack.path("tls_cert")))
        context.check_hostname = False  # the certificate is checked by fingerprint in the TLS control
        return context

    def https(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> HttpResponse:
        """A request through the TLS terminator's published port."""
        service = self.stack.roles.name("tls_terminator")
        host, port = self.published(service, self.stack.profile["live"]["nginx_port"])
        return self._request(f"https://{host}:{port}{path}", headers, method, self.tls_context, f"service {service}")

    def prometheus(self, api_path: str, params: dict[str, str] | None = None) -> dict:
        """A Prometheus HTTP API call; returns its `data`."""
        service = self.stack.roles.name("prometheus")
        host, port = self.published(service, self.stack.profile["live"]["prometheus_port"])
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        response = self._request(f"http://{host}:{port}{api_path}{query}", None, "GET", None, f"service {service}")
        try:
            payload = response.json()
        except ValueError:
            raise StackError(f"service {service}: {api_path}: HTTP {response.status}, not JSON") from None
        if payload.get("status") != "success":
            error = payload.get("error", f"status {payload.get('status')}")
            raise StackError(f"service {service}: {api_path}: {error}")
        return payload["data"]

    def metrics_page(self, service: str) -> HttpResponse:
        """The service's own /metrics (live.metrics_url), fetched inside its container."""
        return self.http_in(service, self.stack.profile["live"]["metrics_url"])

    @cached_property
    def metrics_service(self) -> str:
        """The API service whose /metrics exports the pool gauges: roles.metrics_service, else the first
        API service whose page carries pool.size_metric (found by asking, not by name)."""
        candidates = self.stack.roles.metrics_candidates()
        if len(candidates) == 1:
            return candidates[0].name
        metric = self.stack.profile["pool"]["size_metric"]
        for svc in candidates:
            try:
                page = self.metrics_page(svc.name)
            except StackError:
                continue
            if page.status == 200 and metric.encode() in page.body:
                return svc.name
        names = ", ".join(svc.name for svc in candidates)
        raise StackError(f"no API service ({names}) exports {metric} on {self.stack.profile['live']['metrics_url']}; "
                         "declare it in stackproof.yml roles.metrics_service")

    def _request(self, url: str, headers, method: str, context, where: str) -> HttpResponse:
        request = urllib.request.Request(url, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:
                return HttpResponse(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            return HttpResponse(exc.code, dict(exc.headers or {}), exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = _first_line(getattr(exc, "reason", exc))
            if "timed out" in reason:
                reason = f"no answer within {self.timeout:g}s"
            raise StackError(f"{where}: {method} {url}: {reason}") from None

    # --- the API key -------------------------------------------------------------

    def api_key(self) -> str:
        """The API key as the services see it (read inside the container that serves it, so it works on
        a remote engine too). Registered for redaction; never print it."""
        cfg = self.stack.profile
        running = {self.service_of(c) for c in self._containers}
        services = [svc.name for svc in self.stack.roles.api_services()]
        service = next((name for name in services if name in running), services[0])
        secret = cfg["api_key"]["secret"]
        refs = [ref.target for ref in self.stack.compose.services[service].secrets if ref.source == secret]
        target = refs[0] if refs else f"/run/secrets/{secret}"
        code, out = self.exec(service, ["cat", target])
        if code != 0:
            raise StackError(f"service {service}: cannot read {target} (exit {code})")
        self.stack.redactor.add(out)
        return out.decode("utf-8", errors="replace").strip()


def _first_line(value: object) -> str:
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def project_name(stack: Stack, option: str | None) -> str:
    """The compose project to check: --compose-project, else the compose file's name, else the dir name."""
    if option:
        return option
    try:
        return stack.compose.name
    except StackError:
        return Path(stack.path("compose")).parent.name
