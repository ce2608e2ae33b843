"""Circuit breakers on the running stack: their exported state, the breaker alert as
Prometheus and Alertmanager hold it, requests that need the dependency, a fault that takes the
dependency down for a bounded time, and the fault injection scenario that proves them all.

The fault is always undone: `DependencyFault.restore` is idempotent and is called both by
the check's `finally` and by its fixture's finalizer, so an assertion, an error or an
interrupt still leaves the dependency running and healthy.
"""

from __future__ import annotations

import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from prometheus_client.parser import text_string_to_metric_families

from stackproof.resources.alerting import Alerting, Rule, live_alerts
from stackproof.resources.breakers import DeclaredBreaker, ScrapeTarget, recovery_ok, seconds, state_metric, target_of
from stackproof.errors import StackError, blocked, not_proven
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


def read_state(live: LiveStack, metric: str, service: str, target: ScrapeTarget) -> float | None:
    """The service's breaker state for the profile's dependency (breakers.dependency, labelled breakers.breaker_label)."""
    cfg = live.stack.profile["breakers"]
    return breaker_state(live, service, target, metric, cfg["breaker_label"], cfg["dependency"])


def state_name(stack, value: float | None) -> str:
    """A breaker-state value as the profile's breakers.states names it ("half-open"), for the messages."""
    if value is None:
        return "not exported"
    names = {v: k.replace("_", "-") for k, v in stack.profile["breakers"]["states"].items()}
    return names.get(value, f"unknown state {value:g}")


def active_alerts(live: LiveStack, alert: str) -> list[dict]:
    """The alert's active instances (pending or firing) as the rule evaluator holds them now.

    Read from /api/v1/rules, not from the ALERTS series: after a Prometheus restart an old ALERTS
    sample stays visible for the lookback window (5 minutes) though the rule is inactive."""
    return [instance for rule in live_alerts(live) if rule["name"] == alert for instance in rule.get("alerts") or []]


def firing_jobs(live: LiveStack, alert: str) -> set[str]:
    """Jobs for which Prometheus has the alert firing."""
    return {a.get("labels", {}).get("job", "") for a in active_alerts(live, alert) if a.get("state") == "firing"}


def alertmanager_jobs(live: LiveStack, alert: str) -> set[str]:
    """Jobs for which Alertmanager holds the alert as active (received, not resolved, not silenced)."""
    cfg = live.stack.profile["breakers"]
    alerts = live.alertmanager.api(live.stack.roles.name("alertmanager"), cfg["alertmanager_port"], "/api/v2/alerts",
                                   {"filter": f'alertname="{alert}"', "active": "true", "silenced": "false"})
    return {a.get("labels", {}).get("job", "") for a in alerts if (a.get("status") or {}).get("state") == "active"}


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


# --- the fault injection, phase by phase ---------------------------------------------------


@dataclass
class Breaker:
    """What the fault injection needs to know about one service's breaker."""

    service: str
    target: ScrapeTarget
    route: RequestRoute
    threshold: int
    recovery: float
    opened: float | None = None
    half_open: float | None = None
    trial: float | None = None  # when the check first sent a trial request after the recovery time
    closed: float | None = None

    @property
    def opened_at(self) -> float:
        """When it opened: the phases after the first run only once every breaker has opened."""
        if self.opened is None:
            raise RuntimeError(f"{self.service}: the fault scenario's phases ran out of order (breaker not opened)")
        return self.opened


def fault_plan(stack, alerting: Alerting, declared: list[DeclaredBreaker]) -> list[Breaker]:
    """The breakers to prove: their declared threshold and recovery (sane, or the static checks fail
    and this check is blocked), and the request that needs the dependency."""
    cfg = stack.profile["breakers"]
    keys = cfg["settings"]
    plan = []
    for declaration in declared:
        threshold, recovery = declaration.value(keys["threshold"]), declaration.value(keys["recovery"])
        if not (isinstance(threshold, int) and cfg["min_threshold"] <= threshold <= cfg["max_threshold"]
                and recovery_ok(recovery, cfg)):
            blocked("test_breaker_setting", f"{declaration.service} declares no usable breaker")
        spec = cfg["requests"].get(declaration.service)
        if not isinstance(spec, dict) or not spec.get("path"):
            not_proven(f"fault injection not run: stackproof.yml breakers.requests names no request that needs "
                       f"{cfg['dependency']} for service {declaration.service} ({{path: ..., via: nginx|container}})")
        target = target_of(stack, alerting, declaration.service)
        via = spec.get("via", "container")
        baseline = stack.profile["disclosure"]["endpoints"]["health"] if via == "nginx" else target.metrics_path
        route = RequestRoute(declaration.service, spec["path"], via, target.port, baseline)
        plan.append(Breaker(declaration.service, target, route, threshold, seconds(recovery, declaration.config)))
    return plan


class FaultScenario:
    """The dependency taken down while requests need it, with one method per phase for the check to
    run in order: each phase marks what happened on `timeline`, keeps what the evidence reports in
    `measured` (seconds since the fault, latencies) and adds what it finds wrong to `problems`.

    The check, not the scenario, decides when a phase's problems end it and restores the dependency
    whatever a phase raised (`recover_through_half_open` restores it as part of the proof)."""

    def __init__(self, stack, live: LiveStack, fault: DependencyFault, plan: list[Breaker], alert: Rule):
        """`alert`: the stack's breaker alert (breakers.alert, or its alert of another name for open breakers)."""
        self.stack, self.live, self.fault, self.plan = stack, live, fault, plan
        self.alert, self.metric = alert.name, state_metric(stack, alert)
        self.cfg = stack.profile["breakers"]
        self.states, self.marker = self.cfg["states"], self.cfg["open_body_marker"]
        self.jobs = {b.target.job for b in plan}
        self.headers = {stack.profile["live"]["api_key_header"]: live.http.api_key()}
        self.key_file = f"/run/secrets/{stack.profile['api_key']['secret']}"
        self.timeline = Timeline()  # started again by inject(): its offsets count from the fault
        self.since = 0  # set by inject(): the services' logs are read from the fault on
        self.problems: list[str] = []
        self.measured: dict[str, float] = {}

    @property
    def failure(self) -> str:
        """The problems found so far, as one failure message."""
        return "; ".join(self.problems)

    def state(self, b: Breaker) -> float | None:
        return read_state(self.live, self.metric, b.service, b.target)

    def wave(self, clients: dict[str, int], with_baseline: bool = False) -> dict[str, LoadResult]:
        """`clients[service]` concurrent requests to each service, every service's wave sent at the same time."""
        with ThreadPoolExecutor(max_workers=len(self.plan)) as pool:
            futures = {b.service: pool.submit(send_wave, self.live, b.route, clients[b.service], self.headers,
                                              self.key_file, self.marker, with_baseline) for b in self.plan}
            return {service: future.result() for service, future in futures.items()}

    def load_clients(self) -> dict[str, int]:
        """The concurrent requests of a load wave per service: fewer where each is an exec in its container."""
        return {b.service: self.cfg["fault_clients"] if b.route.via == "nginx" else self.cfg["container_clients"]
                for b in self.plan}

    def require_closed(self) -> None:
        """Before the fault every breaker reads closed, or the check is blocked: what follows would
        prove nothing (test_live_breakers_closed fails for it)."""
        before = {b.service: self.state(b) for b in self.plan}
        wrong = [f"{s}: {state_name(self.stack, v)}" for s, v in before.items() if v != self.states["closed"]]
        if wrong:
            blocked("test_live_breakers_closed", f"not closed before the fault ({', '.join(wrong)})")

    def inject(self) -> None:
        """Take the dependency down through the engine; the timeline and the log window start here."""
        self.timeline = Timeline()
        self.since = int(time.time()) - 1
        self.fault.inject()
        self.timeline.mark(f"{self.fault.service} {self.cfg['fault']}d through the engine")

    def open_at_threshold(self) -> None:
        """1. Exactly `threshold` failing requests must open each breaker; it opened when the
        threshold-th failure was answered."""
        timeline, states = self.timeline, self.states
        first = self.wave({b.service: b.threshold for b in self.plan})
        answered = {b.service: max(o.started + o.latency for o in first[b.service].outcomes) for b in self.plan}
        for b in self.plan:
            timeline.mark(f"{b.service}: {b.threshold} concurrent requests (threshold) answered: "
                          f"{first[b.service].describe()}", when=answered[b.service])
        wait_for(lambda: all(self.state(b) == states["open"] for b in self.plan), self.live.timeout)
        for b in self.plan:
            value = self.state(b)
            if value == states["open"]:
                b.opened = answered[b.service]
                self.measured[f"{b.service} open"] = timeline.at(b.opened)
                timeline.mark(f"{b.service}: /metrics reads open")
            else:
                self.problems.append(f"service {b.service}: breaker {state_name(self.stack, value)} after "
                                     f"{b.threshold} failed requests (threshold {b.threshold}): it never opens")

    def refuse_while_open(self) -> None:
        """2. While open every request is refused at once, none reaching the dependency; "at once" is
        measured against requests that need no dependency, sent in the same wave (same contention)."""
        cfg = self.cfg
        mixed = self.wave(self.load_clients(), with_baseline=True)
        for b in self.plan:
            result, baseline = split_baseline(mixed[b.service])
            p95, base = result.percentile(95), baseline.percentile(95)
            self.measured[f"{b.service} fail-fast p95"] = p95
            self.timeline.mark(f"{b.service}: {len(mixed[b.service].outcomes)} concurrent requests while open, every "
                               f"other one to {b.route.baseline} (needs no dependency): {mixed[b.service].describe()}")
            self.timeline.mark(f"{b.service}: refused p50 {result.percentile(50):.3f}s, p95 {p95:.3f}s, max "
                               f"{result.latencies[-1]:.3f}s; no-dependency p95 {base:.3f}s")
            slipped = [o for o in result.outcomes if o.kind != "503 breaker open"]
            if any(o.kind != f"{BASELINE}200" for o in baseline.outcomes):
                self.problems.append(f"service {b.service}: requests that need no dependency failed while it was "
                                     f"down ({baseline.describe()})")
            if slipped:
                self.problems.append(f"service {b.service}: {len(slipped)} of {len(result.outcomes)} requests while "
                                     f"the breaker was open were not refused ({result.describe()}; refusals must be "
                                     f"503 naming '{self.marker}')")
            if p95 > base + cfg["max_fail_fast_seconds"]:
                self.problems.append(f"service {b.service}: requests refused by the open breaker took p95 {p95:.3f}s, "
                                     f"requests needing no dependency {base:.3f}s (expected at most "
                                     f"{cfg['max_fail_fast_seconds']:g}s more)")

    def alert_while_open(self) -> None:
        """3. The alert fires in Prometheus and reaches Alertmanager while the breakers are open."""
        cfg, live, jobs, timeline = self.cfg, self.live, self.jobs, self.timeline
        alert = self.alert
        if wait_for(lambda: jobs <= firing_jobs(live, alert), cfg["alert_wait_seconds"], 1.0):
            self.measured["alert firing"] = timeline.mark(f"Prometheus: {alert} firing for job {', '.join(sorted(jobs))}")
            if wait_for(lambda: jobs <= alertmanager_jobs(live, alert), live.timeout):
                self.measured["alert in Alertmanager"] = timeline.mark(f"Alertmanager /api/v2/alerts: {alert} active "
                                                                       f"for job {', '.join(sorted(jobs))}")
            else:
                self.problems.append(f"service {self.stack.roles.name('alertmanager')}: {alert} firing in Prometheus "
                                     f"but not active in Alertmanager within {live.timeout:g}s (jobs there: "
                                     f"{', '.join(sorted(alertmanager_jobs(live, alert))) or 'none'})")
        else:
            now_states = ", ".join(f"{b.service} {state_name(self.stack, self.state(b))}" for b in self.plan)
            self.problems.append(f"service {self.stack.roles.name('prometheus')}: {alert} not firing for job "
                                 f"{', '.join(sorted(jobs - firing_jobs(live, alert)))} within "
                                 f"{cfg['alert_wait_seconds']}s of the breakers opening (breakers now: {now_states})")
        for b in self.plan:
            timeline.mark(f"{b.service}: /metrics reads {state_name(self.stack, self.state(b))}")

    def recover_through_half_open(self) -> None:
        """4. Restore the dependency; each breaker goes half-open, lets a trial through, and closes
        within its recovery time. A breaker that turns half-open only inside a call closes within that
        call, between two polls: the check's own trial request after the recovery time counts as its trial."""
        states, timeline, live = self.states, self.timeline, self.live
        self.fault.restore()
        timeline.mark(f"{self.fault.service} restored and healthy")
        deadline = max(b.opened_at + b.recovery for b in self.plan) + live.timeout
        pending = list(self.plan)
        while pending and time.monotonic() < deadline:
            for b in list(pending):
                value = self.state(b)
                if value == states["half_open"] and b.half_open is None:
                    b.half_open = time.monotonic()
                    timeline.mark(f"{b.service}: /metrics reads half-open")
                if value == states["half_open"] or (value == states["open"]
                                                     and time.monotonic() - b.opened_at >= b.recovery):
                    b.trial = b.trial or time.monotonic()
                    trial = send_wave(live, b.route, 1, self.headers, self.key_file, self.marker)
                    timeline.mark(f"{b.service}: trial request: {trial.describe()}")
                if self.state(b) == states["closed"]:
                    b.closed = time.monotonic()
                    self.measured[f"{b.service} closed"] = timeline.mark(f"{b.service}: /metrics reads closed")
                    pending.remove(b)
            time.sleep(0.5)
        for b in self.plan:
            if b.closed is None:
                self.problems.append(f"service {b.service}: breaker still {state_name(self.stack, self.state(b))} "
                                     f"{time.monotonic() - b.opened_at:.0f}s after it opened (recovery "
                                     f"{b.recovery:g}s): it never closes")
            elif b.half_open is None and b.trial is None:
                self.problems.append(f"service {b.service}: breaker went from open to closed without a half-open trial")
            elif b.closed - b.opened_at > b.recovery + live.timeout:
                self.problems.append(f"service {b.service}: breaker closed {b.closed - b.opened_at:.1f}s after it "
                                     f"opened (recovery {b.recovery:g}s)")

    def serve_after_recovery(self) -> None:
        """5. Requests succeed again, and the alert resolves in Prometheus and Alertmanager."""
        cfg, live, jobs = self.cfg, self.live, self.jobs
        after = self.wave(self.load_clients())
        for b in self.plan:
            self.timeline.mark(f"{b.service}: {len(after[b.service].outcomes)} concurrent requests: "
                               f"{after[b.service].describe()}")
            if after[b.service].statuses != {"200": len(after[b.service].outcomes)}:
                self.problems.append(f"service {b.service}: after the recovery: {after[b.service].describe()}")
        if wait_for(lambda: not jobs & (firing_jobs(live, self.alert) | alertmanager_jobs(live, self.alert)),
                    cfg["alert_wait_seconds"], 1.0):
            self.measured["alert resolved"] = self.timeline.mark(f"{cfg['alert']} resolved in Prometheus and Alertmanager")
        else:
            self.problems.append(f"{cfg['alert']} still active {cfg['alert_wait_seconds']}s after the breakers closed")

    def count_tracebacks(self) -> None:
        """6. No exception in the services while it all happened: no traceback in their logs since the fault."""
        for b in self.plan:
            logs = self.live.containers.of(b.service).logs(since=self.since, stdout=True, stderr=True)
            tracebacks = logs.count(b"Traceback (most recent call last)")
            self.timeline.mark(f"{b.service}: {tracebacks} traceback(s) in its log since the fault")
            if tracebacks:
                self.problems.append(f"service {b.service}: {tracebacks} traceback(s) in its log during the fault")

    def result(self) -> str:
        """The evidence's result line from what was measured, each the worst breaker's."""
        measured = self.measured
        opened = [v for k, v in measured.items() if k.endswith(" open")]
        closed = [measured[f"{b.service} closed"] - measured[f"{b.service} open"] for b in self.plan
                  if f"{b.service} closed" in measured and f"{b.service} open" in measured]
        fast = [v for k, v in measured.items() if k.endswith("fail-fast p95")]
        return "; ".join(filter(None, [
            f"time to open {max(opened):.1f}s (threshold requests answered, /metrics open)" if opened else "",
            f"fail-fast p95 {max(fast):.3f}s" if fast else "",
            "alert firing at +{:.1f}s".format(measured["alert firing"]) if "alert firing" in measured else "",
            "in Alertmanager at +{:.1f}s".format(measured["alert in Alertmanager"])
            if "alert in Alertmanager" in measured else "",
            f"closed {max(closed):.1f}s after opening" if closed else "",
            "alert resolved at +{:.1f}s".format(measured["alert resolved"]) if "alert resolved" in measured else "",
        ]))
