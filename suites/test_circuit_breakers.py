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

import pytest

from stackproof.alerting import Alerting
from stackproof.breakers import (
    alert_fires,
    alertmanager_config,
    breaker_alert,
    declared_breakers,
    evaluation_interval,
    has_amtool,
    has_promtool,
    routed_receivers,
    seconds,
    target_of,
)
from stackproof.errors import StackError

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
    """The breaker alert, or a skip when the rule files are unusable (the alert-rules control fails for that)."""
    try:
        alerting.rule_files
    except StackError as exc:
        pytest.skip(f"blocked by Prometheus alert rules: {exc}")
    return breaker_alert(stack, alerting)


@pytest.mark.static
@pytest.mark.parametrize("setting, expected, ok", SETTING_RULES, ids=[rule[0] for rule in SETTING_RULES])
def test_breaker_setting(stack, evidence, setting, expected, ok):
    """Each API service declares a sane breaker.

    It must open after a bounded number of failures, recover after a bounded time and let
    half-open trial calls through: a threshold of 0 or 10,000, or no recovery, is no breaker."""
    cfg = stack.profile["breakers"]
    key = cfg["settings"][setting]
    expected = expected.format(**cfg)
    declared = declared_breakers(stack)
    path = f"{cfg['config_key']}.{cfg['dependency']}.{key}"
    evidence.record(
        test=f"{path} in the config each breaker service mounts",
        expected=f"{expected} for {', '.join(d.service for d in declared)}",
        result="; ".join(f"{d.service} ({d.config}): "
                         + ("no breaker" if d.settings is None else "not set" if key not in d.settings
                            else repr(d.value(key))) for d in declared),
    )
    wrong = []
    for d in declared:
        if d.settings is None:
            wrong.append(f"{d.config}: {d.service} declares no breaker ({cfg['config_key']}.{cfg['dependency']} missing)")
        elif key not in d.settings:
            wrong.append(f"{d.config}: {path} is not set for {d.service} (expected {expected})")
        elif not ok(d.value(key), cfg):
            wrong.append(f"{d.config}: {path} is {d.value(key)!r} for {d.service} (expected {expected})")
    assert not wrong, "; ".join(wrong)


@pytest.mark.static
def test_alert_fires_on_open_breakers(stack, alerting, evidence):
    """The breaker alert fires for an open breaker of any service.

    It must select the state metric the services export, with the value for "open": evaluated by
    promtool against each service's series (one open at a time), and quiet for closed and half-open."""
    cfg = stack.profile["breakers"]
    rule = alert_rule(stack, alerting)
    targets = {d.service: target_of(stack, alerting, d.service) for d in declared_breakers(stack)}
    evidence.record(
        test=f"{rule.name} ({' '.join(rule.spec['expr'].split())}) on {cfg['state_metric']} series of "
             + ", ".join(f"job {t.job}" for t in targets.values()),
        expected="fires when any one breaker is open; not when all are closed or half-open",
    )
    if not has_promtool():
        pytest.skip("promtool not installed (Debian package 'prometheus'): the alert expression was not evaluated")
    cases = {f"{service} open": {t: ("open" if s == service else "closed") for s, t in targets.items()}
             for service in targets}
    quiet = {"all closed": {t: "closed" for t in targets.values()}, "all half-open": {t: "half_open" for t in targets.values()}}
    fired = {name: alert_fires(stack, alerting, rule, states) for name, states in {**cases, **quiet}.items()}
    evidence.record(result="; ".join(f"{name}: {'fires' if on else 'quiet'}" for name, on in fired.items()))
    silent = [name for name in cases if not fired[name]]
    noisy = [name for name in quiet if fired[name]]
    where = stack.rel(rule.file)
    assert not silent, (f"{where}: {rule.name} does not fire for an open breaker ({', '.join(silent)}: "
                        f"{cfg['state_metric']} == {cfg['states']['open']})")
    assert not noisy, f"{where}: {rule.name} fires with no breaker open ({', '.join(noisy)})"


@pytest.mark.static
def test_alert_for_short_enough(stack, alerting, evidence):
    """The breaker alert's `for` fires while the breaker is still open.

    An open breaker goes half-open after its recovery time; if the alert's `for` (plus a scrape and an
    evaluation) is longer, a breaker that keeps failing its trials re-opens again and again and never alerts."""
    cfg = stack.profile["breakers"]
    rule = alert_rule(stack, alerting)
    wait = seconds(rule.spec.get("for", 0), f"{stack.rel(rule.file)}: {rule.name} for")
    bound = seconds(cfg["max_alert_for"], "profile breakers.max_alert_for")
    recovery_key = cfg["settings"]["recovery"]
    declared = [d for d in declared_breakers(stack) if d.value(recovery_key) is not None]
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
        pytest.skip("amtool not installed (Debian package 'prometheus-alertmanager'): the routing was not evaluated")
    receivers = routed_receivers(stack, config, labels)
    integrations = {name: sorted(k for k, v in (config.receiver(name) or {}).items() if k.endswith("_configs") and v)
                    for name in receivers}
    evidence.record(result="; ".join(f"{name}: {', '.join(kinds) or 'no integration'}"
                                     for name, kinds in integrations.items()) or "no receiver")
    assert receivers, f"{where}: no route takes {rule.name}"
    empty = [name for name, kinds in integrations.items() if not kinds]
    assert not empty, f"{where}: {rule.name} is routed to receiver(s) {', '.join(empty)} with no integration: it is dropped"
