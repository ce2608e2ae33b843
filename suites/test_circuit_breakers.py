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

from concurrent.futures import ThreadPoolExecutor

import pytest

from stackproof.resources import promql
from stackproof.resources.alerting import ALERT_DUTIES, Alerting, live_alerts
from stackproof.resources.breakers import (
    alert_fires,
    alertmanager_config,
    breaker_alert,
    breaker_targets,
    UnreadableConfig,
    config_entry,
    declared_breakers,
    evaluation_interval,
    has_amtool,
    has_promtool,
    recovery_ok,
    routed_receivers,
    seconds,
    state_metric,
    target_of,
)
from stackproof.errors import Blocked, NotDeclared, StackError, blocked, environment_error
from stackproof.evidence import Location
from stackproof.resources.faults import DependencyFault, FaultScenario, fault_plan, read_state, state_name

pytestmark = pytest.mark.control("circuit_breakers")


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# (setting, expected, predicate on the declared value); setting names the profile's breakers.settings key
SETTING_RULES = [
    ("threshold", "an integer from {min_threshold} to {max_threshold}",
     lambda v, c: _integer(v) and c["min_threshold"] <= v <= c["max_threshold"]),
    ("recovery", "a duration > 0 and <= {max_recovery_seconds}s", recovery_ok),
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
    if name in stack.profile["alerts"]["required"] and alerting.alert_for(name) is None:
        blocked("Prometheus alert rules", ALERT_DUTIES[name].missing(name) if name in ALERT_DUTIES
                else f"required alert {name} missing")
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
                         "Declare a breaker for the database in each API service, in its config or its code: a failure "
                         "threshold of 1-50, at most 300 s open before a trial, 1-10 half-open trial calls.")
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
    none_possible = all(d.settings is None and d.none_possible for d in declared)
    evidence.record(
        test=f"{key} of the breaker named {cfg['dependency']!r} each breaker service's code builds" if in_code
        else f"a breaker for {cfg['dependency']} in {', '.join(sorted({d.config for d in declared}))}" if none_possible
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
            wrong.append(f"{d.where}: {d.service} declares no breaker: {d.none_possible}" if d.none_possible
                         else f"{d.where}: {d.service} declares no breaker ({config_entry(cfg)} missing)")
        elif key not in d.settings:
            wrong.append(f"{d.where}: {named} is not set for {d.service} (expected {expected})")
        elif not ok(d.value(key), cfg):
            wrong.append(f"{d.where}: {named} is {d.value(key)!r} for {d.service} (expected {expected})")
        else:
            continue
        keys = path.split(".") if d.settings is not None else []  # no breaker: the file, not a key it lacks
        evidence.locate(Location(d.config, d.line) if d.line else stack.locate(stack.root / d.config, *keys))
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


@pytest.mark.live
@pytest.mark.remediation("high",
                         "Export each service's breaker state on `/metrics` and have Prometheus scrape it; a breaker "
                         "that is open now means its dependency is failing: fix that first.")
def test_live_breakers_closed(stack, alerting, live, evidence):
    """Every breaker service exports its breaker state, and it reads closed.

    A service that exports no state cannot be alerted on; one that is open or half-open on a
    healthy stack is refusing calls right now."""
    cfg = stack.profile["breakers"]
    targets = breaker_targets(stack, alerting)
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
    prometheus = stack.roles.name("prometheus")
    targets = breaker_targets(stack, alerting)
    jobs = {target.job for target in targets.values()}
    name = alert_rule(stack, alerting).name  # breakers.alert, or the stack's alert of another name for it
    evidence.record(test=f"{name} as {prometheus} runs it: its selectors' series per job; its active instances",
                    expected=f"selects series of job {', '.join(sorted(jobs))}; not pending or firing")
    rule = next((r for r in live_alerts(live) if r["name"] == name), None)
    if rule is None:  # the rule files have it: the alert-rules check of what Prometheus loaded fails for it
        blocked("test_live_prometheus_loaded_every_alert", f"{prometheus} does not run {name}")
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
    assert not missing, (f"service {prometheus}: {name} ({rule.get('query')}) selects no series of job "
                         f"{', '.join(missing)}: it cannot fire for their breakers")
    assert not active, (f"service {prometheus}: {name} is {active[0].get('state')} for job "
                        f"{active[0].get('labels', {}).get('job')} on a healthy stack")


# --- live, opt-in: fault injection ------------------------------------------------------------


@pytest.fixture
def dependency_fault(stack, live):
    """The dependency's fault; its finalizer restores the dependency whatever happened in the check."""
    cfg = stack.profile["breakers"]
    fault = DependencyFault(live, stack.roles.name("postgres"), cfg["fault"], timeout=3 * live.timeout)
    yield fault
    fault.restore()


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
    cfg = stack.profile["breakers"]
    plan = fault_plan(stack, alerting, declared_or_blocked(stack))
    scenario = FaultScenario(stack, live, dependency_fault, plan, alert_rule(stack, alerting))
    evidence.record(
        test=f"{cfg['fault']} {dependency_fault.service} while " + "; ".join(f"{b.service}: {b.route.describe()}" for b in plan),
        expected="each breaker opens within its threshold; requests refused fast (503, p95 at most "
                 f"{cfg['max_fail_fast_seconds']:g}s above that of requests needing no dependency, none reaching "
                 f"{cfg['dependency']}); {cfg['alert']} firing in "
                 "Prometheus and Alertmanager; closed through a half-open trial within the recovery time; requests succeed; "
                 "alert resolved; no traceback in the services' logs",
    )
    scenario.require_closed()
    try:
        scenario.inject()
        scenario.open_at_threshold()
        assert not scenario.problems, scenario.failure  # the later phases need open breakers
        scenario.refuse_while_open()
        scenario.alert_while_open()
        scenario.recover_through_half_open()
        assert not scenario.problems, scenario.failure  # serving and resolving mean nothing without the recovery
        scenario.serve_after_recovery()
        scenario.count_tracebacks()
    finally:
        dependency_fault.restore()
        for event in scenario.timeline.events:
            evidence.note(event)
        if scenario.measured:
            evidence.record(result=scenario.result())
    assert not scenario.problems, scenario.failure
