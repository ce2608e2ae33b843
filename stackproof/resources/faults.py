"""Circuit breakers on the running stack: their exported state, requests that need the
dependency, and a fault that takes the dependency down for a bounded time.

The fault is always undone: `DependencyFault.restore` is idempotent and is called both by
the check's `finally` and by its fixture's finalizer, so an assertion, an error or an
interrupt still leaves the dependency running and healthy.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from prometheus_client.parser import text_string_to_metric_families

from stackproof.resources.breakers import ScrapeTarget
from stackproof.errors import StackError
from stackproof.resources.load import LoadResult, Outcome, run_load

if TYPE_CHECKING:  # a static run must not load the Docker SDK (see stackproof/live.py)
    from stackproof.engine.live import LiveStack


@dataclass
class Timeline:
    """What happened when, in seconds since the fault was injected (time.monotonic())."""

    start: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)

    def at(self, when: float | None = None) -> float:
        return (time.monotonic() if when is None else when) - self.start

    def mark(self, text: str, when: float | None = None) -> float:
        offset = self.at(when)
        self.events.append(f"+{offset:6.1f}s {text}")
        return offset


class DependencyFault:
    """The dependency service taken down through the engine (pause or stop), and brought back."""

    def __init__(self, live: LiveStack, service: str, how: str, timeout: float):
        self.live, self.service, self.how, self.timeout = live, service, how, timeout
        self.active = False

    def inject(self) -> None:
        self.active = True  # before the call: a half-done pause is undone too
        self.live.faults.take_down(self.service, self.how)

    def restore(self) -> None:
        """Bring the dependency back and wait (bounded) until it is healthy; a no-op when not injected."""
        if not self.active:
            return
        self.live.faults.bring_back(self.service)
        self.active = False
        self.live.faults.wait_healthy(self.service, self.timeout)


def breaker_state(live: LiveStack, service: str, target: ScrapeTarget, metric: str, label: str,
                  dependency: str) -> float | None:
    """The breaker-state gauge the service exports for the dependency (None: not exported), read
    where Prometheus scrapes it, from inside the service's container."""
    url = f"http://127.0.0.1:{target.port}{target.metrics_path}"
    response = live.http.in_container(service, url)
    if response.status != 200:
        raise StackError(f"service {service}: {url}: HTTP {response.status}")
    try:
        families = list(text_string_to_metric_families(response.body.decode(errors="replace")))
    except Exception as exc:  # the parser raises ValueError and friends
        raise StackError(f"service {service}: {url}: not Prometheus text format ({type(exc).__name__})") from None
    for family in families:
        for sample in family.samples:
            if sample.name == metric and sample.labels.get(label) == dependency:
                return sample.value
    return None


def classify(status: int, body: bytes, marker: str) -> str:
    """A response's class: '200', '503 breaker open' (the body names the open breaker), '503 pool timeout', ..."""
    text = body.decode(errors="replace").lower()
    if status == 0:
        return f"error: {text[:60]}"
    if marker.lower() in text:
        return f"{status} breaker open"
    if "pool timeout" in text:
        return f"{status} pool timeout"
    if status >= 500:  # name what failed: "503 database call timed out"
        try:
            detail = json.loads(body).get("detail")
        except (ValueError, AttributeError):
            detail = None
        if isinstance(detail, str) and detail:
            return f"{status} {' '.join(detail.split())[:40]}"
    return str(status)


@dataclass
class RequestRoute:
    """How to send a request that needs the dependency to one service."""

    service: str
    path: str
    via: str  # nginx | container
    port: int
    baseline: str  # a path the same way that needs no dependency: what any request costs right now

    def describe(self) -> str:
        return f"GET {self.path} " + ("through nginx" if self.via == "nginx" else f"in {self.service}'s container")


BASELINE = "baseline "  # prefix of the kind of a request that needs no dependency


def send_wave(live: LiveStack, route: RequestRoute, clients: int, headers: dict[str, str], key_file: str,
              marker: str, with_baseline: bool = False) -> LoadResult:
    """`clients` concurrent requests to one service, released together; each timed and classified.
    `with_baseline`: every other request goes to the route's baseline path (kind 'baseline 200'),
    so both kinds run under the same contention and their latencies compare fairly."""
    paths = [route.path, route.baseline] if with_baseline else [route.path]
    if route.via == "nginx":
        turn = itertools.count()

        def one() -> tuple[str, float]:
            i = next(turn)
            response = live.http.https(paths[i % len(paths)], headers)
            return (BASELINE if i % len(paths) else "") + classify(response.status, response.body, marker), 0.0

        return run_load(clients, one, live.timeout)
    if route.via != "container":
        raise StackError(f"profile breakers.requests.{route.service}.via: {route.via!r} (nginx or container)")
    header = next(iter(headers), None)
    began = time.monotonic()
    rows = live.http.many_in_container(route.service, [f"http://127.0.0.1:{route.port}{path}" for path in paths], clients,
                            header, key_file)
    outcomes = [Outcome(began + start, latency, (BASELINE if i % len(paths) else "") + classify(status, body, marker))
                for i, start, latency, status, body in rows]
    return LoadResult(sorted(outcomes, key=lambda o: o.started), 0.0)


def split_baseline(result: LoadResult) -> tuple[LoadResult, LoadResult]:
    """(the requests that need the dependency, the baseline ones) of a wave sent with_baseline."""
    return (LoadResult([o for o in result.outcomes if not o.kind.startswith(BASELINE)], result.peak),
            LoadResult([o for o in result.outcomes if o.kind.startswith(BASELINE)], result.peak))


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Poll `condition` until it holds or `timeout` seconds have passed; whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
