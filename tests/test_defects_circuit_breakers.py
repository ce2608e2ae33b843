"""Each static defect of the circuit-breakers control fails that control, and only it."""

from __future__ import annotations

from pathlib import Path

import pytest
from defects import breaker_removed_from_coordinator, replace
from harness import assert_only_control_fails

CONFIG = "ai-stack/mcp-servers/config/config.yaml"
ALERTS = "ai-stack/compose/prometheus/alerts/ai-stack-alerts.yml"
ALERT_TESTS = "ai-stack/compose/prometheus/tests/ai-stack-alerts.test.yml"
ALERTMANAGER = "ai-stack/compose/alertmanager/alertmanager.yml"
RECOVERY = "    reset_timeout: 50        # seconds open (calls refused with 503 at once) before half-open\n"


def _renamed_state_metric(stack: Path) -> None:
    """The alert (and its promtool test) select aidb_breaker_state; the services export aidb_circuit_breaker_state."""
    for relative in (ALERTS, ALERT_TESTS):
        path = stack / relative
        text = path.read_text()
        assert "aidb_circuit_breaker_state" in text, f"the reference {relative} changed: update this defect"
        path.write_text(text.replace("aidb_circuit_breaker_state", "aidb_breaker_state"))


def _routed_to_blackhole(stack: Path) -> None:
    """Critical alerts go to a receiver without any integration: Alertmanager drops them."""
    replace(ALERTMANAGER, "    - receiver: ops-webhook\n      matchers:\n        - severity=\"critical\"",
            "    - receiver: blackhole\n      matchers:\n        - severity=\"critical\"")(stack)
    path = stack / ALERTMANAGER
    path.write_text(path.read_text() + "  - name: blackhole\n")


PROMETHEUS = "ai-stack/compose/prometheus/prometheus.yml"
COMPOSE = "ai-stack/compose/docker-compose.yml"
COORDINATOR_JOB = '    static_configs:\n      - targets: ["hybrid-coordinator:8001"]\n'


def coordinator_found_by_dns(name: str, kind: str = "A"):
    """hybrid-coordinator's scrape job finds its containers through Docker's DNS (every replica) instead of
    a static target."""
    return replace(PROMETHEUS, COORDINATOR_JOB, f"    dns_sd_configs:\n      - names: [{name}]\n        type: {kind}\n"
                                                "        port: 8001\n")


def node_exporter_from_a_targets_file(mounted: bool):
    """The node-exporter's scrape job reads its target from a file_sd_configs file, mounted into Prometheus
    (or left on the host only)."""
    def inject(stack: Path) -> None:
        replace(PROMETHEUS, '  - job_name: node-exporter\n    static_configs:\n      - targets: ["node-exporter:9100"]\n',
                "  - job_name: node-exporter\n    file_sd_configs:\n      - files: [targets/*.json]\n")(stack)
        (stack / "ai-stack/compose/prometheus/targets").mkdir()
        (stack / "ai-stack/compose/prometheus/targets/node.json").write_text('[{"targets": ["node-exporter:9100"]}]\n')
        if mounted:
            replace(COMPOSE, "      - ./prometheus/alerts:/etc/prometheus/alerts:ro\n",
                    "      - ./prometheus/alerts:/etc/prometheus/alerts:ro\n"
                    "      - ./prometheus/targets:/etc/prometheus/targets:ro\n")(stack)
    return inject


# (id, injector, fragments the failure reason must name)
DEFECTS = [
    ("never-opens-threshold-10000",
     replace(CONFIG, "    failure_threshold: 5 ", "    failure_threshold: 10000 "),
     ["config.yaml: circuit_breaker.postgres.failure_threshold is 10000 for aidb"]),
    ("threshold-0", replace(CONFIG, "    failure_threshold: 5 ", "    failure_threshold: 0 "),
     ["circuit_breaker.postgres.failure_threshold is 0 for hybrid-coordinator"]),
    ("never-closes-no-recovery", replace(CONFIG, RECOVERY, ""),
     ["circuit_breaker.postgres.reset_timeout is not set for aidb"]),
    ("never-closes-recovery-0", replace(CONFIG, "    reset_timeout: 50 ", "    reset_timeout: 0 "),
     ["circuit_breaker.postgres.reset_timeout is 0 for aidb"]),
    ("no-half-open-probe", replace(CONFIG, "    half_open_max_calls: 1 ", "    half_open_max_calls: 0 "),
     ["circuit_breaker.postgres.half_open_max_calls is 0"]),
    ("state-metric-renamed", _renamed_state_metric,
     ["ai-stack-alerts.yml: CircuitBreakerOpen does not fire for an open breaker (aidb open, hybrid-coordinator open"]),
    ("alert-only-for-one-service",
     replace(ALERTS, "aidb_circuit_breaker_state == 1", 'aidb_circuit_breaker_state{job="aidb"} == 1'),
     ["ai-stack-alerts.yml: CircuitBreakerOpen does not fire for an open breaker (hybrid-coordinator open: "]),
    ("alert-for-outlasts-the-open-phase", replace(ALERTS, "        for: 20s\n", "        for: 1m\n"),
     ["CircuitBreakerOpen for 60s + scrape + evaluation outlasts the open phase of aidb"]),
    ("alert-routed-to-no-receiver", _routed_to_blackhole,
     ["alertmanager.yml: CircuitBreakerOpen is routed to receiver(s) blackhole with no integration"]),
    ("breaker-removed-from-one-service", breaker_removed_from_coordinator,
     ["coordinator.yaml: hybrid-coordinator declares no breaker"]),
    ("dns-name-of-no-service", coordinator_found_by_dns("coordinator"),
     ["prometheus.yml: no scrape job targets service hybrid-coordinator"]),
    ("dns-srv-name", coordinator_found_by_dns("_metrics._tcp.hybrid-coordinator", "SRV"),
     ["prometheus.yml: no scrape job targets service hybrid-coordinator"]),
]


@pytest.mark.parametrize("inject, fragments", [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_defect_fails_circuit_breakers(stack_copy, run_static, inject, fragments):
    inject(stack_copy)
    assert_only_control_fails(run_static(stack_copy), "circuit_breakers", *fragments)


def test_alert_firing_for_half_open_fails_circuit_breakers(stack_copy, run_static):
    """An alert that also fires for half-open breakers is noisy: circuit breakers fails, naming the case; the
    stack's own promtool test of that case fails alert rules too (two controls check that fact by design)."""
    replace(ALERTS, "aidb_circuit_breaker_state == 1", "aidb_circuit_breaker_state >= 1")(stack_copy)
    assert_only_control_fails(run_static(stack_copy), "circuit_breakers",
                              "ai-stack-alerts.yml: CircuitBreakerOpen fires with no breaker open (all half-open)",
                              also=("alert_rules",))


@pytest.mark.parametrize("inject", [
    pytest.param(coordinator_found_by_dns("hybrid-coordinator"), id="dns-sd-a-records"),
    pytest.param(node_exporter_from_a_targets_file(mounted=True), id="file-sd-mounted"),
])
def test_discovered_scrape_targets_count(stack_copy, run_static, inject):
    """A service scraped through dns_sd_configs (A records of its compose name) or file_sd_configs (a targets
    file Prometheus sees through its mounts) is scraped as well as a static target: no control fails."""
    inject(stack_copy)
    run = run_static(stack_copy)
    assert not run.failed_controls, {c: run.reasons(c) for c in run.failed_controls}


def test_targets_file_not_mounted_fails_alert_rules(stack_copy, run_static):
    """A file_sd_configs file that exists only on the host gives Prometheus no target: the TLS textfile exporter
    is not scraped."""
    node_exporter_from_a_targets_file(mounted=False)(stack_copy)
    assert_only_control_fails(run_static(stack_copy), "alert_rules", "prometheus.yml: no scrape job targets node-exporter")
