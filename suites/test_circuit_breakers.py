"""Control 7: circuit breakers.

Every API service that talks to the database must wrap those calls in a breaker that
opens after a bounded number of failures, refuses calls at once while open, and
recovers through half-open trials; its state must be exported, the CircuitBreakerOpen
alert must fire on it soon enough and be routed to a receiver. The static checks read
the declarations; the live ones read the running state; the opt-in fault injection
(--allow-changes) takes the database down and proves the whole chain: breaker, fail
fast, metric, rule, Prometheus, Alertmanager, recovery.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from stackproof.resources import promql
from stackproof.resources.alerting import Alerting, live_alerts
from stackproof.resources.breakers import (
    ScrapeTarget,
    alert_fires,
    alertmanager_config,
    breaker_alert,
    breaker_services,
    UnreadableConfig,
    config_entry,
    declared_breakers,
    evaluation_interval,
    has_amtool,
    has_promtool,
    routed_receivers,
    seconds,
    state_metric,
    target_of,
)
from stackproof.errors import Blocked, NotDeclared, StackError, blocked, environment_error, not_proven
from stackproof.evidence import Location
from stackproof.resources.faults import (
    BASELINE,
    DependencyFault,
    RequestRoute,
    Timeline,
    breaker_state,
    send_wave,
    split_baseline,
    wait_for,
)
from stackproof.resources.load import LoadResult

pytestmark = pytest.mark.control("circuit_breakers")


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _duration_ok(value, c) -> bool:
    try:
        return 0 < seconds(value, "") <= c["max_recovery_seconds"]
    except StackError:
        return False


# (setting, expected, predicate on the declared value); setting names the profile's breakers.settings key
SETTING_RULES = [
    ("threshold", "an integer from {min_threshold} to {max_threshold}",
     lambda v, c: _integer(v) and c["min_threshold"] <= v <= c["max_threshold"]),
    ("recovery", "a duration > 0 and <= {max_recovery_seconds}s", _duration_ok),
    ("half_open", "an integer from 1 to {max_half_open_calls}",
     lambda v, c: _integer(v) and 1 <= v <= c["max_half_open_calls"]),
]


@pytest.fixture(scope="module")
def alerting(stack) -> Alerting:
    return Alerting(stack)


def alert_rule(stack, alerting):
    """The breaker alert, or a skip when the alert-rules control already fails for it: rule files
    unusable, the alert (a required one) missing, or its expression not PromQL."""
    try:
        alerting.rules  # noqa: B018 -- loads the cached rules: a StackError here blocks the check
    except (NotDeclared, Blocked):  # the stack lacks the input, or the compose model is unreadable: said as such
        raise
    except StackError as exc:
        blocked("Prometheus alert rules", str(exc))
    name = stack.profile["breakers"]["alert"]
    if name in stack.profile["alerts"]["required"] and name not in {rule.name for rule in alerting.alerts}:
        blocked("Prometheus alert rules", f"required alert {name} missing")
    rule = breaker_alert(stack, alerting)
    try:
        promql.parse(rule.spec["expr"])
    except ValueError as exc:
        blocked("Prometheus alert rules", f"{rule.name}: invalid PromQL: {' '.join(str(exc).split())}")
    return rule


def declared_or_blocked(stack) -> list:
    """Each breaker service's declaration, or a skip when its config file is unreadable (the
    connection-pool control reads the same file and fails for it)."""
    try:
        return declared_breakers(stack)
    except UnreadableConfig as exc:
        blocked("Connection pool", str(exc))


@pytest.mark.static
@pytest.mark.parametrize("setting, expected, ok", SETTING_RULES, ids=[rule[0] for rule in SETTING_RULES])
@pytest.mark.remediation("high",
                         "Set `circuit_breaker.<dependency>` in each API service's config: `failure_threshold` 1-50, "
                         "`reset_timeout` at most 300 s, `half_open_max_calls` 1-10.")
def test_breaker_setting(stack, evidence, setting, expected, ok):
    """Each API service declares a sane breaker.

    It must open after a bounded number of failures, recover after a bounded time and let
    half-open trial calls through: a threshold of 0 or 10,000, or no recovery, is no breaker."""
    cfg = stack.profile["breakers"]
    key = cfg["settings"][setting]
    expected = expected.format(**cfg)
    declared = declared_or_blocked(stack)
    path = f"{config_entry(cfg)}.{key}"
    in_code = all(d.in_code for d in declared)
    evidence.record(
        test=f"{key} of the CircuitBreaker({cfg['dependency']!r}) each breaker service's code builds" if in_code
        else f"{path} in the config each breaker service mounts",
        expected=f"{expected} for {', '.join(d.service for d in declared)}",
        result="; ".join(f"{d.service} ({d.where}): "
                         + ("no breaker" if d.settings is None else "not set" if key not in d.settings
                            else repr(d.value(key))) for d in declared),
    )
    wrong = []
    for d in declared:
        named = d.setting_path(cfg, key)
        if d.settings is None:
            wrong.append(f"{d.where}: {d.service} declares no breaker ({config_entry(cfg)} missing)")
        elif key not in d.settings:
            wrong.append(f"{d.where}: {named} is not set for {d.service} (expected {expected})")
        elif not ok(d.value(key), cfg):
            wrong.append(f"{d.where}: {named} is {d.value(key)!r} for {d.service} (expected {expected})")
        else:
            continue
        evidence.locate(Location(d.config, d.line) if d.line else stack.locate(stack.root / d.config, *path.split(".")))
    assert not wrong, "; ".join(wrong)


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Make the breaker alert's expression select every service's breaker-state series and fire "
                         "for the open state only (e.g. `max by (service) (circuit_breaker_state) == 1`).")
def test_alert_fires_on_open_breakers(stack, alerting, evidence):
    """The breaker alert fires for an open breaker of any service.

    It must select the state metric the services export, with the value for "open": evaluated by
    promtool against each service's series (one open at a time), and quiet for closed and half-open."""
    cfg = stack.profile["breakers"]
    rule = alert_rule(stack, alerting)
    metric = state_metric(stack, rule)
    targets = {d.service: target_of(stack, alerting, d.service) for d in declared_or_blocked(stack)}
    evidence.record(
        test=f"{rule.name} ({' '.join(rule.spec['expr'].split())}) on {metric} series of "
             + ", ".join(f"job {t.job}" for t in targets.values()),
        expected="fires when any one breaker is open; not when all are closed or half-open",
    )
    if not has_promtool():
        environment_error("promtool not installed (Debian package 'prometheus'): the alert expression was not evaluated")
    cases = {f"{service} open": {t: ("open" if s == service else "closed") for s, t in targets.items()}
             for service in targets}
    quiet = {"all closed": {t: "closed" for t in targets.values()}, "all half-open": {t: "half_open" for t in targets.values()}}
    fired = alert_fires(stack, alerting, rule, metric, {**cases, **quiet})
    evidence.record(result="; ".join(f"{name}: {'fires' if on else 'quiet'}" for name, on in fired.items()))
    silent = [name for name in cases if not fired[name]]
    noisy = [name for name in quiet if fired[name]]
    where = stack.rel(rule.file)
    assert not silent, (f"{where}: {rule.name} does not fire for an open breaker ({', '.join(silent)}: "
                        f"{metric} == {cfg['states']['open']})")
    assert not noisy, f"{where}: {rule.name} fires with no breaker open ({', '.join(noisy)})"


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Shorten the breaker alert's `for:` (plus scrape and evaluation intervals) below the "
                         "breaker's recovery time, and to 1m at most.")
def test_alert_for_short_enough(stack, alerting, evidence):
    """The breaker alert's `for` fires while the breaker is still open.

    An open breaker goes half-open after its recovery time; if the alert's `for` (plus a scrape and an
    evaluation) is longer, a breaker that keeps failing its trials re-opens again and again and never alerts."""
    cfg = stack.profile["breakers"]
    rule = alert_rule(stack, alerting)
    wait = seconds(rule.spec.get("for", 0), f"{stack.rel(rule.file)}: {rule.name} for")
    bound = seconds(cfg["max_alert_for"], "profile breakers.max_alert_for")
    recovery_key = cfg["settings"]["recovery"]
    declared = [d for d in declared_or_blocked(stack) if d.value(recovery_key) is not None]
    evaluation = evaluation_interval(alerting)
    windows = []
    for d in declared:
        try:
            windows.append((d.service, seconds(d.value(recovery_key), d.config),
                            target_of(stack, alerting, d.service).interval))
        except StackError:  # an unusable recovery time fails test_breaker_setting
            continue
    evidence.record(
        test=f"{rule.name} for, vs the profile bound and each breaker's {recovery_key} "
             f"(minus its scrape interval and the evaluation interval {evaluation:g}s)",
        expected=f"<= {cfg['max_alert_for']} and < " + ", ".join(f"{s}: {r:g}s - {i:g}s - {evaluation:g}s"
                                                                   for s, r, i in windows),
        result=f"for: {rule.spec.get('for', 'not set')} ({wait:g}s)",
    )
    assert wait <= bound, f"{stack.rel(rule.file)}: {rule.name} for {wait:g}s exceeds the profile bound {cfg['max_alert_for']}"
    late = [f"{s} ({recovery_key} {r:g}s)" for s, r, i in windows if wait + i + evaluation >= r]
    assert not late, (f"{stack.rel(rule.file)}: {rule.name} for {wait:g}s + scrape + evaluation outlasts the open "
                      f"phase of {', '.join(late)}: it never fires while the breaker is open")


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Route the breaker alert in alertmanager.yml to a receiver with a notification integration "
                         "(e-mail, webhook, Slack, PagerDuty, ...).")
def test_alert_routes_to_receiver(stack, alerting, evidence):
    """The breaker alert is routed to a receiver that notifies someone.

    A firing alert reaches nobody unless Alertmanager's routing tree sends its labels to a receiver
    that has a notification integration (a receiver with none drops the alert)."""
    rule = alert_rule(stack, alerting)
    labels = {"alertname": rule.name, **{k: str(v) for k, v in (rule.spec.get("labels") or {}).items()}}
    config = alertmanager_config(stack)
    where = stack.rel(config.path)
    evidence.record(test=f"routing of {', '.join(f'{k}={v}' for k, v in labels.items())} in {where}",
                    expected="at least one receiver, each with a notification integration")
    if not has_amtool():
        environment_error("amtool not installed (Debian package 'prometheus-alertmanager'): the routing was not evaluated")
    receivers = routed_receivers(stack, config, labels)
    integrations = {name: sorted(k for k, v in (config.receiver(name) or {}).items() if k.endswith("_configs") and v)
                    for name in receivers}
    evidence.record(result="; ".join(f"{name}: {', '.join(kinds) or 'no integration'}"
                                     for name, kinds in integrations.items()) or "no receiver")
    assert receivers, f"{where}: no route takes {rule.name}"
    empty = [name for name, kinds in integrations.items() if not kinds]
    assert not empty, f"{where}: {rule.name} is routed to receiver(s) {', '.join(empty)} with no integration: it is dropped"


# --- live: the running breakers ------------------------------------------------------------


def live_targets(stack, alerting) -> dict[str, ScrapeTarget]:
    """Each breaker service and the scrape target Prometheus reads its state from."""
    return {service: target_of(stack, alerting, service) for service in breaker_services(stack)}


def read_state(live, metric: str, service: str, target: ScrapeTarget) -> float | None:
    cfg = live.stack.profile["breakers"]
    return breaker_state(live, service, target, metric, cfg["breaker_label"], cfg["dependency"])


def state_name(stack, value: float | None) -> str:
    if value is None:
        return "not exported"
    names = {v: k.replace("_", "-") for k, v in stack.profile["breakers"]["states"].items()}
    return names.get(value, f"unknown state {value:g}")


def active_alerts(live, alert: str) -> list[dict]:
    """The alert's active instances (pending or firing) as the rule evaluator holds them now.

    Read from /api/v1/rules, not from the ALERTS series: after a Prometheus restart an old ALERTS
    sample stays visible for the lookback window (5 minutes) though the rule is inactive."""
    return [instance for rule in live_alerts(live) if rule["name"] == alert for instance in rule.get("alerts") or []]


def firing_jobs(live, alert: str) -> set[str]:
    """Jobs for which Prometheus has the alert firing."""
    return {a.get("labels", {}).get("job", "") for a in active_alerts(live, alert) if a.get("state") == "firing"}


def alertmanager_jobs(live, alert: str) -> set[str]:
    """Jobs for which Alertmanager holds the alert as active (received, not resolved, not silenced)."""
    cfg = live.stack.profile["breakers"]
    alerts = live.alertmanager.api(live.stack.roles.name("alertmanager"), cfg["alertmanager_port"], "/api/v2/alerts",
                               {"filter": f'alertname="{alert}"', "active": "true", "silenced": "false"})
    return {a.get("labels", {}).get("job", "") for a in alerts if (a.get("status") or {}).get("state") == "active"}


@pytest.mark.live
@pytest.mark.remediation("high",
                         "Export each service's breaker state on `/metrics` and have Prometheus scrape it; a breaker "
                         "that is open now means its dependency is failing: fix that first.")
def test_live_breakers_closed(stack, alerting, live, evidence):
    """Every breaker service exports its breaker state, and it reads closed.

    A service that exports no state cannot be alerted on; one that is open or half-open on a
    healthy stack is refusing calls right now."""
    cfg = stack.profile["breakers"]
    targets = live_targets(stack, alerting)
    metric = state_metric(stack, alert_rule(stack, alerting))
    selector = f'{metric}{{{cfg["breaker_label"]}="{cfg["dependency"]}"}}'
    evidence.record(test=f"{selector} on the /metrics each service is scraped on",
                    expected=f"exported by {', '.join(targets)}; {cfg['states']['closed']} (closed)")
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:  # one exec each: read them together
        read = {service: pool.submit(read_state, live, metric, service, target) for service, target in targets.items()}
    states = {service: future.result() for service, future in read.items()}
    evidence.record(result="; ".join(f"{s} :{targets[s].port}{targets[s].metrics_path}: {state_name(stack, v)}"
                                     + ("" if v is None else f" ({v:g})") for s, v in states.items()))
    missing = [f"service {s}: exports no {selector} on :{targets[s].port}{targets[s].metrics_path}"
               for s, v in states.items() if v is None]
    assert not missing, "; ".join(missing)
    wrong = [f"service {s}: breaker {cfg['dependency']} is {state_name(stack, v)} on a healthy stack"
             for s, v in states.items() if v != cfg["states"]["closed"]]
    assert not wrong, "; ".join(wrong)


@pytest.mark.live
@pytest.mark.remediation("high",
                         "Make the breaker alert's selector match the labels of every service's breaker-state series "
                         "as Prometheus stores them, and resolve a firing alert before deploying.")
def test_live_alert_selects_breakers(stack, alerting, live, evidence):
    """Prometheus evaluates the breaker alert against every service's state series, and it is quiet.

    The alert Prometheus runs must select the series each breaker service really exports (right
    metric, labels, job), and on a healthy stack neither fire nor be pending."""
    cfg = stack.profile["breakers"]
    prometheus = stack.roles.name("prometheus")
    targets = live_targets(stack, alerting)
    jobs = {target.job for target in targets.values()}
    evidence.record(test=f"{cfg['alert']} as {prometheus} runs it: its selectors' series per job; its active instances",
                    expected=f"selects series of job {', '.join(sorted(jobs))}; not pending or firing")
    rule = next((r for r in live_alerts(live) if r["name"] == cfg["alert"]), None)
    if rule is None and cfg["alert"] in stack.profile["alerts"]["required"]:
        blocked("test_live_prometheus_loaded_every_alert", f"{prometheus} does not run {cfg['alert']}")
    assert rule is not None, f"service {prometheus}: does not run alert {cfg['alert']}"
    selected: set[str] = set()
    for selector in promql.selectors(rule.get("query", "")):
        result = live.prometheus.query(f"count by (job) ({selector.promql()})")
        selected |= {r["metric"].get("job", "") for r in result}
    value = live.prometheus.query(rule.get("query", ""))
    active = rule.get("alerts") or []
    evidence.record(result=f"{' '.join(str(rule.get('query')).split())}: selects series of job "
                           f"{', '.join(sorted(selected)) or 'none'}; evaluates to {len(value)} series; "
                           f"state {rule.get('state', '?')}, {len(active)} active")
    missing = sorted(jobs - selected)
    assert not missing, (f"service {prometheus}: {cfg['alert']} ({rule.get('query')}) selects no series of job "
                         f"{', '.join(missing)}: it cannot fire for their breakers")
    assert not active, (f"service {prometheus}: {cfg['alert']} is {active[0].get('state')} for job "
                        f"{active[0].get('labels', {}).get('job')} on a healthy stack")


# --- live, opt-in: fault injection ------------------------------------------------------------


@pytest.fixture
def dependency_fault(stack, live):
    """The dependency's fault; its finalizer restores the dependency whatever happened in the check."""
    cfg = stack.profile["breakers"]
    fault = DependencyFault(live, stack.roles.name("postgres"), cfg["fault"], timeout=3 * live.timeout)
    yield fault
    fault.restore()


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


def fault_plan(stack, alerting) -> list[Breaker]:
    """The breakers to prove: their declared threshold and recovery (sane, or the static checks fail
    and this check is blocked), and the request that needs the dependency."""
    cfg = stack.profile["breakers"]
    keys = cfg["settings"]
    plan = []
    for declared in declared_or_blocked(stack):
        threshold, recovery = declared.value(keys["threshold"]), declared.value(keys["recovery"])
        if not (isinstance(threshold, int) and cfg["min_threshold"] <= threshold <= cfg["max_threshold"]
                and _duration_ok(recovery, cfg)):
            blocked("test_breaker_setting", f"{declared.service} declares no usable breaker")
        spec = cfg["requests"].get(declared.service)
        if not isinstance(spec, dict) or not spec.get("path"):
            not_proven(f"fault injection not run: stackproof.yml breakers.requests names no request that needs "
                        f"{cfg['dependency']} for service {declared.service} ({{path: ..., via: nginx|container}})")
        target = target_of(stack, alerting, declared.service)
        via = spec.get("via", "container")
        baseline = stack.profile["disclosure"]["endpoints"]["health"] if via == "nginx" else target.metrics_path
        route = RequestRoute(declared.service, spec["path"], via, target.port, baseline)
        plan.append(Breaker(declared.service, target, route, threshold, seconds(recovery, declared.config)))
    return plan


@pytest.mark.live
@pytest.mark.changes_stack
@pytest.mark.remediation("high",
                         "Make the breaker count the dependency's failures, open within its threshold, answer 503 at "
                         "once while open, export its state, and close through a half-open trial after its reset "
                         "timeout.")
def test_live_fault_injection(stack, alerting, live, evidence, dependency_fault):
    """Taking the database down opens every breaker, fails fast, alerts, and recovers.

    The dependency is paused (or stopped) through the engine while concurrent requests need it:
    each breaker must open within its threshold, refuse every request at once while open (503,
    no request reaching the database, no pool timeouts), show "open" on /metrics, fire the alert
    in Prometheus and reach Alertmanager; after the restore close through a half-open trial (seen on /metrics, or the check's own trial request: a breaker
    that turns half-open only inside a call closes within that call, between two polls), serve
    requests again and resolve the alert. The dependency is always restored."""
    cfg, live_cfg = stack.profile["breakers"], stack.profile["live"]
    states, marker = cfg["states"], cfg["open_body_marker"]
    plan = fault_plan(stack, alerting)
    metric = state_metric(stack, alert_rule(stack, alerting))
    jobs = {b.target.job for b in plan}
    headers = {live_cfg["api_key_header"]: live.http.api_key()}
    key_file = f"/run/secrets/{stack.profile['api_key']['secret']}"
    evidence.record(
        test=f"{cfg['fault']} {dependency_fault.service} while " + "; ".join(f"{b.service}: {b.route.describe()}" for b in plan),
        expected="each breaker opens within its threshold; requests refused fast (503, p95 at most "
                 f"{cfg['max_fail_fast_seconds']:g}s above that of requests needing no dependency, none reaching "
                 f"{cfg['dependency']}); {cfg['alert']} firing in "
                 "Prometheus and Alertmanager; closed through a half-open trial within the recovery time; requests succeed; "
                 "alert resolved; no traceback in the services' logs",
    )

    def wave(clients: dict[str, int], with_baseline: bool = False) -> dict[str, LoadResult]:
        with ThreadPoolExecutor(max_workers=len(plan)) as pool:
            futures = {b.service: pool.submit(send_wave, live, b.route, clients[b.service], headers, key_file, marker,
                                              with_baseline) for b in plan}
            return {service: future.result() for service, future in futures.items()}

    def state(b: Breaker) -> float | None:
        return read_state(live, metric, b.service, b.target)

    before = {b.service: state(b) for b in plan}
    wrong = [f"{s}: {state_name(stack, v)}" for s, v in before.items() if v != states["closed"]]
    if wrong:
        blocked("test_live_breakers_closed", f"not closed before the fault ({', '.join(wrong)})")
    timeline, problems, measured = Timeline(), [], {}
    since = int(time.time()) - 1
    try:
        dependency_fault.inject()
        timeline.mark(f"{dependency_fault.service} {cfg['fault']}d through the engine")

        # 1. exactly `threshold` failing requests must open each breaker
        first = wave({b.service: b.threshold for b in plan})
        answered = {b.service: max(o.started + o.latency for o in first[b.service].outcomes) for b in plan}
        for b in plan:
            timeline.mark(f"{b.service}: {b.threshold} concurrent requests (threshold) answered: "
                          f"{first[b.service].describe()}", when=answered[b.service])
        wait_for(lambda: all(state(b) == states["open"] for b in plan), live.timeout)
        for b in plan:
            value = state(b)
            if value == states["open"]:  # it opened when the threshold-th failure was answered
                b.opened = answered[b.service]
                measured[f"{b.service} open"] = timeline.at(b.opened)
                timeline.mark(f"{b.service}: /metrics reads open")
            else:
                problems.append(f"service {b.service}: breaker {state_name(stack, value)} after {b.threshold} failed "
                                f"requests (threshold {b.threshold}): it never opens")
        assert not problems, "; ".join(problems)

        # 2. while open: every request refused at once, none reaching the dependency; "at once" is
        # measured against requests that need no dependency, sent in the same wave (same contention)
        clients = {b.service: cfg["fault_clients"] if b.route.via == "nginx" else cfg["container_clients"] for b in plan}
        mixed = wave(clients, with_baseline=True)
        for b in plan:
            result, baseline = split_baseline(mixed[b.service])
            p95, base = result.percentile(95), baseline.percentile(95)
            measured[f"{b.service} fail-fast p95"] = p95
            timeline.mark(f"{b.service}: {len(mixed[b.service].outcomes)} concurrent requests while open, every other "
                          f"one to {b.route.baseline} (needs no dependency): {mixed[b.service].describe()}")
            timeline.mark(f"{b.service}: refused p50 {result.percentile(50):.3f}s, p95 {p95:.3f}s, max "
                          f"{result.latencies[-1]:.3f}s; no-dependency p95 {base:.3f}s")
            slipped = [o for o in result.outcomes if o.kind != "503 breaker open"]
            if any(o.kind != f"{BASELINE}200" for o in baseline.outcomes):
                problems.append(f"service {b.service}: requests that need no dependency failed while it was down "
                                f"({baseline.describe()})")
            if slipped:
                problems.append(f"service {b.service}: {len(slipped)} of {len(result.outcomes)} requests while the "
                                f"breaker was open were not refused ({result.describe()}; refusals must be 503 naming "
                                f"'{marker}')")
            if p95 > base + cfg["max_fail_fast_seconds"]:
                problems.append(f"service {b.service}: requests refused by the open breaker took p95 {p95:.3f}s, "
                                f"requests needing no dependency {base:.3f}s (expected at most "
                                f"{cfg['max_fail_fast_seconds']:g}s more)")

        # 3. the alert fires in Prometheus and reaches Alertmanager while the breakers are open
        if wait_for(lambda: jobs <= firing_jobs(live, cfg["alert"]), cfg["alert_wait_seconds"], 1.0):
            measured["alert firing"] = timeline.mark(f"Prometheus: {cfg['alert']} firing for job {', '.join(sorted(jobs))}")
            if wait_for(lambda: jobs <= alertmanager_jobs(live, cfg["alert"]), live.timeout):
                measured["alert in Alertmanager"] = timeline.mark(f"Alertmanager /api/v2/alerts: {cfg['alert']} active "
                                                                  f"for job {', '.join(sorted(jobs))}")
            else:
                problems.append(f"service {stack.roles.name('alertmanager')}: {cfg['alert']} firing in Prometheus but not "
                                f"active in Alertmanager within {live.timeout:g}s (jobs there: "
                                f"{', '.join(sorted(alertmanager_jobs(live, cfg['alert']))) or 'none'})")
        else:
            now_states = ", ".join(f"{b.service} {state_name(stack, state(b))}" for b in plan)
            problems.append(f"service {stack.roles.name('prometheus')}: {cfg['alert']} not firing for job "
                            f"{', '.join(sorted(jobs - firing_jobs(live, cfg['alert'])))} within "
                            f"{cfg['alert_wait_seconds']}s of the breakers opening (breakers now: {now_states})")
        for b in plan:
            timeline.mark(f"{b.service}: /metrics reads {state_name(stack, state(b))}")

        # 4. restore; each breaker goes half-open, lets a trial through, and closes
        dependency_fault.restore()
        timeline.mark(f"{dependency_fault.service} restored and healthy")
        deadline = max(b.opened + b.recovery for b in plan) + live.timeout
        pending = list(plan)
        while pending and time.monotonic() < deadline:
            for b in list(pending):
                value = state(b)
                if value == states["half_open"] and b.half_open is None:
                    b.half_open = time.monotonic()
                    timeline.mark(f"{b.service}: /metrics reads half-open")
                if value == states["half_open"] or (value == states["open"]
                                                     and time.monotonic() - b.opened >= b.recovery):
                    b.trial = b.trial or time.monotonic()
                    trial = send_wave(live, b.route, 1, headers, key_file, marker)
                    timeline.mark(f"{b.service}: trial request: {trial.describe()}")
                if state(b) == states["closed"]:
                    b.closed = time.monotonic()
                    measured[f"{b.service} closed"] = timeline.mark(f"{b.service}: /metrics reads closed")
                    pending.remove(b)
            time.sleep(0.5)
        for b in plan:
            if b.closed is None:
                problems.append(f"service {b.service}: breaker still {state_name(stack, state(b))} "
                                f"{time.monotonic() - b.opened:.0f}s after it opened (recovery {b.recovery:g}s): "
                                "it never closes")
            elif b.half_open is None and b.trial is None:
                problems.append(f"service {b.service}: breaker went from open to closed without a half-open trial")
            elif b.closed - b.opened > b.recovery + live.timeout:
                problems.append(f"service {b.service}: breaker closed {b.closed - b.opened:.1f}s after it opened "
                                f"(recovery {b.recovery:g}s)")
        assert not problems, "; ".join(problems)

        # 5. requests succeed again, the alert resolves
        after = wave({b.service: cfg["fault_clients"] if b.route.via == "nginx" else cfg["container_clients"]
                      for b in plan})
        for b in plan:
            timeline.mark(f"{b.service}: {len(after[b.service].outcomes)} concurrent requests: "
                          f"{after[b.service].describe()}")
            if after[b.service].statuses != {"200": len(after[b.service].outcomes)}:
                problems.append(f"service {b.service}: after the recovery: {after[b.service].describe()}")
        if wait_for(lambda: not jobs & (firing_jobs(live, cfg["alert"]) | alertmanager_jobs(live, cfg["alert"])),
                    cfg["alert_wait_seconds"], 1.0):
            measured["alert resolved"] = timeline.mark(f"{cfg['alert']} resolved in Prometheus and Alertmanager")
        else:
            problems.append(f"{cfg['alert']} still active {cfg['alert_wait_seconds']}s after the breakers closed")

        # 6. no exception in the services while it all happened
        for b in plan:
            logs = live.containers.of(b.service).logs(since=since, stdout=True, stderr=True)
            tracebacks = logs.count(b"Traceback (most recent call last)")
            timeline.mark(f"{b.service}: {tracebacks} traceback(s) in its log since the fault")
            if tracebacks:
                problems.append(f"service {b.service}: {tracebacks} traceback(s) in its log during the fault")
    finally:
        dependency_fault.restore()
        for event in timeline.events:
            evidence.note(event)
        if measured:
            opened = [v for k, v in measured.items() if k.endswith(" open")]
            closed = [measured[f"{b.service} closed"] - measured[f"{b.service} open"] for b in plan
                      if f"{b.service} closed" in measured and f"{b.service} open" in measured]
            fast = [v for k, v in measured.items() if k.endswith("fail-fast p95")]
            evidence.record(result="; ".join(filter(None, [
                opened and f"time to open {max(opened):.1f}s (threshold requests answered, /metrics open)",
                fast and f"fail-fast p95 {max(fast):.3f}s",
                "alert firing at +{:.1f}s".format(measured["alert firing"]) if "alert firing" in measured else "",
                "in Alertmanager at +{:.1f}s".format(measured["alert in Alertmanager"])
                if "alert in Alertmanager" in measured else "",
                closed and f"closed {max(closed):.1f}s after opening",
                "alert resolved at +{:.1f}s".format(measured["alert resolved"]) if "alert resolved" in measured else "",
            ])))
    assert not problems, "; ".join(problems)
