"""The running stack: its containers, reached through the engine that runs them.

Checks get a `LiveStack` from the `live` fixture and ask its facets (as testinfra binds modules to a
host): `live.containers` (which run, a command in one, the file probe, health), `live.http`
(through the TLS terminator, or from inside a container with the programs in programs/, real files
run by the container's python3), `live.prometheus` and `live.alertmanager` (their APIs), `live.faults`.
Which engine runs the stack (compose, swarm, podman: engine/engines.py) is hidden here. Everything is
bounded by the run's timeout: Docker API calls (client timeout), commands in containers (wrapped in
`timeout`), and HTTP requests. Nothing here changes a container, except `containers.restart` and
`faults`, which only checks marked `changes_stack` use (opt-in: --allow-changes).
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from importlib import resources
from pathlib import Path

from stackproof.engine import engines
from stackproof.engine import probe
from stackproof.engine.probe import ContainerProbe  # the name `probe` is also LiveContainers.probe
from stackproof.io import proc
from stackproof.engine.engines import Engine, LiveUnavailable, SecretMount
from stackproof.errors import StackError
from stackproof.report.outcome import NotProven
from stackproof.target.stack import Stack

__all__ = ["LiveStack", "LiveUnavailable", "NotProven", "project_name"]
SCRAPE_GRACE = 5.0  # seconds after a container starts in which it writes what its first scrape should see
PROBE_WORKERS = 8  # concurrent container probes: enough to hide exec latency, few enough for a small engine


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class LiveStack:
    """The stack `project` as it runs on one engine (compose project, swarm stack, podman), and what
    checks ask of it through its facets (as testinfra binds modules to a host): `containers` (which
    run, exec, the file probe, health), `http` (requests through the TLS terminator or from inside a
    container), `prometheus` and `alertmanager` (their APIs), `faults` (a dependency taken down and
    brought back: checks marked `changes_stack` only)."""

    def __init__(self, stack: Stack, engine: Engine):
        self.stack = stack
        self.engine = engine
        self.project = engine.project
        self.timeout = stack.timeout
        self.containers = Containers(self)
        self.http = Http(self)
        self.prometheus = Prometheus(self)
        self.alertmanager = Alertmanager(self)
        self.faults = Faults(self)

    @classmethod
    def connect(cls, stack: Stack, project: str, engine: str = "") -> "LiveStack":
        """Connect to the engine `engine` names (or the one found running `project`)."""
        return cls(stack, engines.connect(stack, project, engine))

    def engine_version(self) -> str | None:
        """The engine's product and version for the report ("Docker Engine 26.1.5", "Podman Engine 4.3.1"),
        None when it does not say (the client's timeout bounds the call)."""
        try:
            info = self.engine.client.version()
        except Exception:  # the report names what is known; the checks report an engine that broke
            return None
        names = [str(c.get("Name", "")) for c in info.get("Components") or [] if c.get("Name")]
        return " ".join(part for part in (names[0] if names else "", str(info.get("Version") or "")) if part) or None


class Containers:
    """The project's containers: which run where, a command in one, the file probe of each, health.
    Iterating it gives every running container the suite can reach."""

    def __init__(self, live: LiveStack):
        self.live = live
        self.engine = live.engine
        self.timeout = live.timeout
        self._placed = {p.container.id: p for p in live.engine.placed}

    def __iter__(self):
        return iter([p.container for p in self._placed.values()])

    def __len__(self) -> int:
        return len(self._placed)

    @property
    def unreached(self) -> list[engines.Unreached]:
        """Tasks the suite could not reach (swarm tasks on unreachable nodes)."""
        return list(self.engine.unreached)

    def require_every(self, what: str) -> None:
        """Raise NotProven when some of the project's tasks could not be looked at."""
        if self.engine.unreached:
            raise NotProven(f"not proven: {what} unchecked in {len(self.engine.unreached)} task(s): "
                            + "; ".join(map(str, self.engine.unreached)))

    def replicas(self, service: str) -> int:
        """How many containers of the service run, reachable or not (each holds its own pool, its own
        breaker, its own copy of the key)."""
        return (sum(1 for placed in self._placed.values() if placed.service == service)
                + sum(1 for task in self.engine.unreached if task.service == service))

    def service_of(self, container) -> str:
        return self.engine.service_of(container)

    def services(self) -> set[str]:
        """The services with a reachable running container."""
        return {placed.service for placed in self._placed.values()}

    def of(self, service: str):
        """The service's (first reachable) container."""
        for placed in self._placed.values():
            if placed.service == service:
                return placed.container
        missing = [u for u in self.engine.unreached if u.service == service]
        if missing:
            raise NotProven(f"not proven: service {service} runs only in unreached tasks: " + "; ".join(map(str, missing)))
        raise StackError(f"service {service}: no running container in {self.engine.name} project {self.live.project!r}")

    def exec(self, service: str, cmd: list[str], user: str | None = None) -> tuple[int, bytes]:
        """Run a command in the service's container: (exit code, stdout)."""
        return self.exec_in(self.of(service), cmd, user)

    def exec_in(self, container, cmd: list[str], user: str | None = None) -> tuple[int, bytes]:
        """`docker exec` through the docker CLI, which reaches unix, tcp and ssh engines alike (the SDK's
        pooled ssh connections broke pipes); bounded by `timeout` inside the container and outside."""
        host = self._placed[container.id].docker_host if container.id in self._placed else self.engine.docker_host
        argv = ["docker", *(["-H", host] if host else []), "exec", *(["-u", user] if user else []),
                container.id, "timeout", f"{self.timeout:g}", *cmd]
        done = proc.run(argv, timeout=self.timeout + 5, where=f"container {container.name}")
        if done.returncode == 124:
            raise StackError(f"container {container.name}: {cmd[0]} did not finish within {self.timeout:g}s")
        return done.returncode, done.stdout

    def run_program(self, service: str, program: str, *args: str) -> tuple[int, bytes]:
        """Run one of stackproof/engine/programs/ with the container's python3 (its own interpreter: the
        program uses the standard library only)."""
        return self.exec(service, ["python3", "-c", program_source(program), *args])

    def wait_healthy(self, container, timeout: float, after: str = "") -> None:
        """Wait (bounded) until the container runs and, if it has a healthcheck, is healthy."""
        deadline = time.monotonic() + timeout
        while True:
            container.reload()
            health = container.attrs["State"].get("Health", {}).get("Status", "healthy")
            if container.status == "running" and health == "healthy":
                return
            if time.monotonic() > deadline:
                when = f"{timeout:g}s after {after}" if after else f"within {timeout:g}s"
                raise StackError(f"container {container.name}: not healthy {when} ({health})")
            time.sleep(1)

    def restart(self, service: str, timeout: float) -> None:
        """Restart the service's container (swarm: redeploy its task) and wait, bounded, until it is healthy."""
        old = self.of(service)
        container = self.engine.restart(old, timeout)
        self.wait_healthy(container, timeout, after="a restart")
        placed = self._placed.pop(old.id)
        placed.container = container  # shared with the engine's list
        self._placed[container.id] = placed
        self.__dict__.pop("probes", None)  # the new container has not been probed

    def secret_mounts(self, container) -> list[SecretMount]:
        """The container's secrets under /run/secrets and what the engine (swarm) or compose says they should be."""
        return self.engine.secret_mounts(container)

    # --- the file probe ----------------------------------------------------------

    def probe_paths(self, container) -> list[str]:
        """Every path a run asks about in a container: its secrets' targets, as the engine mounts them
        and as compose declares them."""
        service = self.live.stack.compose.services.get(self.service_of(container))
        paths = [mount.target for mount in self.secret_mounts(container)]
        paths += [ref.target for ref in (service.secrets if service else [])]
        return list(dict.fromkeys(paths))

    @cached_property
    def probes(self) -> dict[str, ContainerProbe | StackError]:
        """One probe per reachable container (container id -> facts), run once per run, concurrently."""
        containers = list(self)
        with ThreadPoolExecutor(max_workers=max(1, min(PROBE_WORKERS, len(containers)))) as pool:
            results = list(pool.map(self._probe, containers))
        return {c.id: r for c, r in zip(containers, results, strict=True)}

    def probe(self, container) -> ContainerProbe:
        """The file facts of one container (see stackproof/engine/probe.py); raises the probe's own error."""
        result = self.probes[container.id]
        if isinstance(result, Exception):
            raise result
        return result

    def _probe(self, container) -> ContainerProbe | StackError:
        paths = self.probe_paths(container)
        try:
            result = self._run_probe(container, paths, None)
            if result.process_ids and result.process_ids != result.exec_ids:  # ask again as the service's process
                view = self._run_probe(container, paths, "{}:{}".format(*result.process_ids))
                result.process_view = view.files
            return result
        except StackError as exc:
            return exc

    def _run_probe(self, container, paths: list[str], user: str | None) -> ContainerProbe:
        code, out = self.exec_in(container, ["sh", "-c", probe.PROBE_SCRIPT, "probe", *paths], user)
        if code != 0:
            raise StackError(f"container {container.name}: the file probe failed (exit {code}): {_first_line(out)}")
        return probe.parse(container.name, paths, out)


class Http:
    """HTTP to the stack: through the TLS terminator's published port, or from inside a container for
    what is not published; every request bounded by the run's timeout."""

    def __init__(self, live: LiveStack):
        self.live = live
        self.stack = live.stack
        self.timeout = live.timeout

    def published(self, service: str, container_port: int) -> tuple[str, int]:
        """Where the suite reaches a service's port: a published host port (on the engine's host for
        tcp:// and ssh:// engines), or, on swarm, the task's own address (see engines.SwarmEngine)."""
        return self.live.engine.published(self.live.containers.of(service), container_port)

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
        return self.request(f"https://{host}:{port}{path}", headers, method, self.tls_context, f"service {service}")

    def get(self, service: str, port: int, path: str, params: dict[str, str] | None = None) -> HttpResponse:
        """A plain HTTP GET of a service's published port (Prometheus, Alertmanager)."""
        host, published = self.published(service, port)
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return self.request(f"http://{host}:{published}{path}{query}", None, "GET", None, f"service {service}")

    def in_container(self, service: str, url: str, headers: dict[str, str] | None = None) -> HttpResponse:
        """HTTP GET from inside a service's container, for endpoints that are not published (e.g. /metrics)."""
        code, out = self.live.containers.run_program(service, "http_get.py", url, json.dumps(headers or {}),
                                                     f"{self.timeout:g}")
        status, _, body = out.partition(b"\n")
        if code != 0 or not status.strip().isdigit():
            raise StackError(f"service {service}: GET {url} failed inside the container: {_first_line(out)}")
        return HttpResponse(int(status), {}, body)

    def many_in_container(self, service: str, urls: list[str], count: int, header: str | None = None,
                          header_file: str | None = None) -> list[tuple[int, float, float, int, bytes]]:
        """`count` concurrent GETs from inside a service's container (for services nginx does not
        publish), released together, request i to urls[i % len(urls)]: [(i, start offset, latency,
        HTTP status or 0, first 200 bytes)]. A header's value is read from a file inside the
        container (the API key never leaves it)."""
        code, out = self.live.containers.run_program(service, "concurrent_gets.py", json.dumps(urls), str(count),
                                                     header or "", header_file or "", f"{max(self.timeout - 2, 1):g}")
        try:
            rows = json.loads(out)
        except ValueError:
            rows = None
        if code != 0 or not isinstance(rows, list):
            raise StackError(f"service {service}: {count} requests to {urls[0]} from inside the container failed: "
                             f"{_first_line(out)}")
        return [(int(r[0]), float(r[1]), float(r[2]), int(r[3]), str(r[4]).encode()) for r in rows]

    def metrics_page(self, service: str) -> HttpResponse:
        """The service's own /metrics (live.metrics_url), fetched inside its container."""
        return self.in_container(service, self.stack.profile["live"]["metrics_url"])

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

    def api_key(self) -> str:
        """The API key the requests authenticate with, as the services see it (read inside the container
        that serves it, so it works on a remote engine too). Registered for redaction; never print it."""
        running = self.live.containers.services()
        services = [svc.name for svc in self.stack.roles.api_services()]
        service = next((name for name in services if name in running), services[0])
        secret = self.stack.api_key_secret()
        refs = [ref.target for ref in self.stack.compose.services[service].secrets if ref.source == secret]
        target = refs[0] if refs else f"/run/secrets/{secret}"
        code, out = self.live.containers.exec(service, ["cat", target])
        if code != 0:
            raise StackError(f"service {service}: cannot read {target} (exit {code})")
        self.stack.redactor.add(out)
        return out.decode("utf-8", errors="replace").strip()

    def request(self, url: str, headers, method: str, context, where: str) -> HttpResponse:
        request = urllib.request.Request(url, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:
                return HttpResponse(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            return HttpResponse(exc.code, dict(exc.headers or {}), exc.read())
        except (urllib.error.URLError, OSError) as exc:
            if context is not None and isinstance(getattr(exc, "reason", exc), ssl.SSLCertVerificationError):
                raise self._unverified(where) from None
            reason = _first_line(getattr(exc, "reason", exc))
            if "timed out" in reason:
                reason = f"no answer within {self.timeout:g}s"
            raise StackError(f"{where}: {method} {url}: {reason}") from None

    def _unverified(self, where: str) -> NotProven:
        """The TLS terminator serves a certificate the stack's own file does not verify (renewed on
        disk but not reloaded, or another file mounted). That defect is the TLS control's to report
        (the served certificate against the file); a check of another control that goes through
        HTTPS cannot trust what it talks to, so it is not proven rather than failed for it."""
        cert = self.stack.rel(self.stack.path("tls_cert"))
        return NotProven(f"not proven: {where} serves a certificate {cert} does not verify, its answers cannot be "
                         "trusted (TLS monitoring compares the two)")


class Prometheus:
    """Prometheus's HTTP API on its published port (the `prometheus` role)."""

    def __init__(self, live: LiveStack):
        self.live = live

    def api(self, api_path: str, params: dict[str, str] | None = None) -> dict:
        """An API call; returns its `data`. A query first waits, once per run, until every target was
        scraped after the project's containers started (`settled`)."""
        if api_path == "/api/v1/query":
            self.settled  # noqa: B018 - the cached wait, run once
        return self._api(api_path, params)

    def query(self, promql: str) -> list:
        """An instant query's result (after the wait for the first scrapes, see `settled`)."""
        return self.api("/api/v1/query", {"query": promql}).get("result", [])

    @cached_property
    def settled(self) -> None:
        """A stack validated right after its deploy has not been scraped yet: the TLS monitor wrote its
        textfile after Prometheus's last scrape of the exporter, and a query finds no series for a
        reason that is not a defect. So wait (bounded by twice the longest scrape interval, at most
        60 s) until every active target's last scrape is later than the moment the newest container
        was ready (`_ready_at`). On a stack that has run for a while this returns at once; if the
        targets never catch up, the checks go on and fail on what Prometheus then holds."""
        newest = max((_ready_at(c) for c in self.live.containers), default=0.0)
        if not newest:
            return None
        settle_at = min(newest, time.time())
        deadline = None
        while True:
            targets = self._api("/api/v1/targets", {"state": "active"}).get("activeTargets", [])
            behind = [t for t in targets if _rfc3339(t.get("lastScrape", "")) < settle_at]  # never scraped: 0
            if not behind:
                return None
            if deadline is None:
                longest = max((_duration(t.get("scrapeInterval", "")) for t in targets), default=15.0)
                deadline = time.monotonic() + min(2 * longest + 1, 60.0)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)

    def _api(self, api_path: str, params: dict[str, str] | None = None) -> dict:
        stack = self.live.stack
        service = stack.roles.name("prometheus")
        response = self.live.http.get(service, stack.profile["live"]["prometheus_port"], api_path, params)
        try:
            payload = response.json()
        except ValueError:
            raise StackError(f"service {service}: {api_path}: HTTP {response.status}, not JSON") from None
        if payload.get("status") != "success":
            error = payload.get("error", f"status {payload.get('status')}")
            raise StackError(f"service {service}: {api_path}: {error}")
        return payload["data"]


class Alertmanager:
    """Alertmanager's API v2 on its published port."""

    def __init__(self, live: LiveStack):
        self.live = live

    def api(self, service: str, port: int, api_path: str, params: dict[str, str] | None = None):
        """An API call; returns the decoded JSON."""
        response = self.live.http.get(service, port, api_path, params)
        if response.status != 200:
            raise StackError(f"service {service}: {api_path}: HTTP {response.status}")
        try:
            return response.json()
        except ValueError:
            raise StackError(f"service {service}: {api_path}: not JSON") from None


class Faults:
    """A dependency made to fail through the engine and brought back (checks marked changes_stack only)."""

    def __init__(self, live: LiveStack):
        self.live = live

    def take_down(self, service: str, how: str) -> None:
        """`pause` (processes frozen: calls hang) or `stop` the service's container."""
        container = self.live.containers.of(service)
        if how == "pause":
            container.pause()
        elif how == "stop":
            container.stop(timeout=10)
        else:
            raise StackError(f"unknown fault {how!r} (pause or stop)")

    def bring_back(self, service: str) -> None:
        """Undo take_down, whatever state the container is in."""
        container = self.live.containers.of(service)
        container.reload()
        if container.status == "paused":
            container.unpause()
        elif container.status != "running":
            container.start()

    def wait_healthy(self, service: str, timeout: float) -> None:
        """Wait (bounded) until the service's container runs and, if it has a healthcheck, is healthy."""
        self.live.containers.wait_healthy(self.live.containers.of(service), timeout)


def program_source(name: str) -> str:
    """The source of a program run inside containers (stackproof/engine/programs/, packaged as data)."""
    return resources.files("stackproof.engine").joinpath("programs", name).read_text(encoding="utf-8")


def _ready_at(container) -> float:
    """When the container was ready to be scraped (epoch seconds; 0 when the engine does not say):
    SCRAPE_GRACE after its start, or, if later, the end of its first passing healthcheck since that
    start (the TLS monitor is healthy once its textfile is written, which takes longer than the
    grace on a loaded machine). The engine keeps the last few healthchecks only; an older first pass
    is then read as the oldest one kept, which errs towards waiting, bounded by the caller."""
    state = (getattr(container, "attrs", None) or {}).get("State") or {}
    started = _rfc3339(state.get("StartedAt", ""))
    if not started:
        return 0.0
    passes = [_rfc3339(check.get("End", "")) for check in ((state.get("Health") or {}).get("Log") or [])
              if isinstance(check, dict) and check.get("ExitCode") == 0]
    first_pass = min((end for end in passes if end >= started), default=0.0)
    return max(started + SCRAPE_GRACE, first_pass)


def _rfc3339(stamp: str) -> float:
    """Epoch seconds of an RFC 3339 time as Docker and Prometheus write it (nanoseconds, Z or an
    offset); 0 for anything else, e.g. Prometheus's zero time for a target never scraped."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp or "")
    if not match:
        return 0.0
    whole, fraction, zone = match.groups()
    try:
        moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return 0.0
    return max(moment.timestamp() + float(f"0.{fraction or 0}"), 0.0)


def _duration(text: str) -> float:
    """Seconds in a Prometheus duration like '15s', '1m', '1m30s' (15 when unreadable)."""
    parts = re.findall(r"(\d+)(ms|s|m|h)", text or "")
    seconds = sum(int(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit] for n, unit in parts)
    return float(seconds) or 15.0


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
        try:
            return Path(stack.path("compose")).parent.name
        except StackError:
            return stack.root.name
