"""Each defect of the alert rules control fails that control, and only it."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from defects import Defect, cases, per_stack, remove, replace, write
from harness import assert_only_control_fails

COMPOSE = "ai-stack/compose/docker-compose.yml"
PROMETHEUS = "ai-stack/compose/prometheus/prometheus.yml"
RULES = "ai-stack/compose/prometheus/alerts/ai-stack-alerts.yml"
RULE_TEST = "ai-stack/compose/prometheus/tests/ai-stack-alerts.test.yml"


def edit_alerts(change, rules: str = RULES):
    """Apply `change(alerts_by_name, rules_of_group)` to a rule file's parsed YAML and write it back."""
    def inject(stack):
        file = stack / rules
        doc = yaml.safe_load(file.read_text())
        for group in doc["groups"]:
            group["rules"] = change({rule["alert"]: rule for rule in group["rules"]}, group["rules"])
        file.write_text(yaml.safe_dump(doc, sort_keys=False))
    return inject


def drop_alerts(*names):
    return edit_alerts(lambda by_name, rules: [rule for rule in rules if rule["alert"] not in names])


def drop_field(alert: str, section: str | None, key: str, rules: str = RULES):
    def change(by_name, rules):
        if alert in by_name:
            (by_name[alert][section] if section else by_name[alert]).pop(key)
        return rules
    return edit_alerts(change, rules)


def monitor_in_shell_loop(metrics_file: str):
    """The reference TLS monitor run by a `sh -c` loop of its service, its metrics file given with the
    declared --metrics-file flag inside the string."""
    return replace(COMPOSE, "    environment:\n      TLS_METRICS_FILE:",
                   '    command: ["sh", "-c", "while :; do monitor-tls-certs.sh --metrics-file '
                   f'{metrics_file} /certs/server.crt; sleep 21600; done"]\n'
                   "    environment:\n      TLS_METRICS_FILE:")


def copy_into_rule_tests(*relative: str):
    def inject(stack):
        for path in relative:
            shutil.copy(stack / path, stack / RULE_TEST.rsplit("/", 1)[0] / Path(path).name)
    return inject


# (id, how to break the stack copy, fragments the failure reason must name)
DEFECTS = [
    ("no-rule-files", replace(PROMETHEUS, "rule_files:\n  - /etc/prometheus/alerts/*.yml\n", ""),
     ["prometheus.yml: no rule_files"]),
    ("pattern-matches-nothing", replace(PROMETHEUS, "/etc/prometheus/alerts/*.yml", "/etc/prometheus/alerts/*.yaml"),
     ["rule_files pattern /etc/prometheus/alerts/*.yaml matches no file (ai-stack/compose/prometheus/alerts/*.yaml"]),
    ("rules-not-yaml", write(RULES, b"groups:\n  - name: broken\n    rules: [\n"), [f"{RULES}:", "invalid YAML"]),
    ("rules-binary-garbage", write(RULES, b"\x00\xff\xfe" + os.urandom(256)), [f"{RULES}: not UTF-8 text"]),
    ("rules-not-a-rule-file", write(RULES, b"alerts:\n  - alert: X\n"), [f"{RULES}: not a Prometheus rule file"]),
    # Prometheus' Go glob matches a leading dot: `alerts/*.yml` loads a `.old.yml` kept beside the rules
    ("dotfile-rules-broken", write(RULES.replace("ai-stack-alerts.yml", ".old-alerts.yml"), b"groups:\n  - name: old\n    rules: [\n"),
     [f"{RULES.replace('ai-stack-alerts.yml', '.old-alerts.yml')}:", "invalid YAML"]),
    ("invalid-promql", replace(RULES, "expr: aidb_circuit_breaker_state == 1", "expr: aidb_circuit_breaker_state == == 1"),
     [f"{RULES}:", '"CircuitBreakerOpen": could not parse expression']),
    ("only-9-alerts", drop_alerts("AuthFailureSpike", "MonitoringTargetDown", "HighRequestLatency"),
     ["only 9 alerting rules (expected >= 10)"]),
    ("missing-for", drop_field("ServiceHealthCheckFailing", None, "for"), [f"{RULES}: ServiceHealthCheckFailing has no for"]),
    ("missing-description", drop_field("TLSCertificateExpiringSoon", "annotations", "description"),
     [f"{RULES}: TLSCertificateExpiringSoon has no annotations.description"]),
    ("duplicate-alert-name", replace(RULES, "- alert: HighErrorRate", "- alert: AuthFailureSpike"),
     ["duplicate alert name(s): AuthFailureSpike"]),
    ("alertmanager-not-a-service", replace(PROMETHEUS, '"alertmanager:9093"', '"alertmgr:9093"'),
     ["prometheus.yml: alertmanager target(s) alertmgr not a service of ai-stack/compose/docker-compose.yml"]),
    ("exporter-not-scraped", replace(PROMETHEUS, '  - job_name: node-exporter\n    static_configs:\n      - targets: ["node-exporter:9100"]\n', ""),
     ["prometheus.yml: no scrape job targets node-exporter"]),
    ("failing-rule-unit-test", replace(RULE_TEST, "values: '48x10'", "values: '30x10'"),
     ["promtool test rules failed", "name: DatabasePoolExhausted fires at 48/50 connections"]),
    ("rule-unit-test-not-yaml", write(RULE_TEST, b"tests: [\n"), [f"{RULE_TEST}: yaml:"]),
    ("prometheus-config-not-yaml", write(PROMETHEUS, b"rule_files: [\n"), [f"{PROMETHEUS}:", "invalid YAML"]),
    ("prometheus-config-missing", remove(PROMETHEUS), [f"{PROMETHEUS}: file not found"]),
    # the monitor run from a shell loop whose --metrics-file (over TLS_METRICS_FILE) is off the shared volume
    ("textfile-path-in-shell-loop", monitor_in_shell_loop("/tmp/tls_certs.prom"),
     [f"{COMPOSE}: service tls-monitor writes /tmp/tls_certs.prom (on no shared mount)"]),
]


@pytest.mark.parametrize("inject, fragments", [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_defect_fails_alert_rules(stack_copy, run_static, inject, fragments):
    inject(stack_copy)
    assert_only_control_fails(run_static(stack_copy), "alert_rules", *fragments)


# Wirings other than the reference stack's that Prometheus loads just as well.
VARIANTS = [
    ("relative-pattern", replace(PROMETHEUS, "/etc/prometheus/alerts/*.yml", "alerts/*.yml")),
    ("rule-file-mounted-alone", replace(
        COMPOSE, "./prometheus/alerts:/etc/prometheus/alerts:ro",
        "./prometheus/alerts/ai-stack-alerts.yml:/etc/prometheus/alerts/ai-stack-alerts.yml:ro")),
    ("monitor-in-shell-loop", monitor_in_shell_loop("/var/lib/node-exporter/textfile/tls_certs.prom")),
    # the rule file and prometheus.yml kept beside the unit tests: not tests, so not run as tests
    ("configs-beside-the-rule-tests", copy_into_rule_tests(RULES, PROMETHEUS)),
]


@pytest.mark.parametrize("inject", [v[1] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_equivalent_wiring_passes(stack_copy, run_static, inject):
    inject(stack_copy)
    run = run_static(stack_copy)
    assert run.statuses["alert_rules"] == "PASS", run.reasons("alert_rules")


def test_a_required_alert_of_another_name_that_watches_the_same_thing_is_that_alert(stack_copy, run_static):
    """The stack calls its breaker alert CircuitBreakerTripped (in its rule tests too): it watches an open breaker,
    so it is the required CircuitBreakerOpen, and the breaker checks judge it. Nothing fails."""
    for path in (RULES, RULE_TEST):
        (stack_copy / path).write_text((stack_copy / path).read_text().replace("CircuitBreakerOpen", "CircuitBreakerTripped"))
    run = run_static(stack_copy)
    assert run.failed_controls == set(), {c: run.reasons(c) for c in run.failed_controls}
    inventory = next(row for c in run.report["controls"] for row in c["checks"]
                     if row["nodeid"].endswith("::test_alert_inventory"))
    assert "CircuitBreakerOpen: CircuitBreakerTripped" in inventory["result"], inventory["result"]
    breaker_rows = [row for c in run.report["controls"] if c["id"] == "circuit_breakers" for row in c["checks"]]
    assert {row["status"] for row in breaker_rows if row["mode"] == "static"} == {"PASS"}, breaker_rows


@pytest.fixture
def path_without_promtool():
    """A PATH dir with every command but promtool; world-readable, as other controls run scripts as nobody."""
    bin_dir = Path(tempfile.mkdtemp(prefix="stackproof-bin-"))
    bin_dir.chmod(0o755)
    for directory in reversed(os.environ["PATH"].split(":")):
        for entry in os.scandir(directory) if os.path.isdir(directory) else []:
            if entry.name != "promtool":
                (bin_dir / entry.name).unlink(missing_ok=True)
                (bin_dir / entry.name).symlink_to(entry.path)
    yield str(bin_dir)
    shutil.rmtree(bin_dir)


def test_without_promtool_invalid_promql_still_fails(stack_copy, run_static, monkeypatch, path_without_promtool):
    """The structural fallback names the file and the alert, as promtool does."""
    replace(RULES, "expr: aidb_circuit_breaker_state == 1", "expr: aidb_circuit_breaker_state == == 1")(stack_copy)
    monkeypatch.setenv("PATH", path_without_promtool)
    run = run_static(stack_copy)
    assert_only_control_fails(run, "alert_rules", f"{RULES}: CircuitBreakerOpen:")
    skipped = [row["reason"] for c in run.report["controls"] if c["id"] == "alert_rules"
               for row in c["checks"] if row["status"] == "SKIPPED"]
    assert any("promtool not installed" in reason for reason in skipped), skipped


# Defects of both test stacks (tests/defects.py layouts)
BOTH = [
    Defect("breaker-alert-removed",
           lambda stack, layout: edit_alerts(lambda by_name, rules: [r for r in rules if r["alert"] != "CircuitBreakerOpen"],
                                             layout.rules)(stack),
           ("no alert for an open circuit breaker (none named CircuitBreakerOpen, none whose name and expression "
            "speak of it)",)),
    Defect("missing-severity", lambda stack, layout: drop_field("DatabasePoolExhausted", "labels", "severity",
                                                                layout.rules)(stack),
           ("{rules}: DatabasePoolExhausted has no labels.severity",)),
    Defect("alerts-not-mounted", per_stack(
        reference=("compose", "      - ./prometheus/alerts:/etc/prometheus/alerts:ro\n", ""),
        northwind=("compose", "      - ../observability/rules:/etc/prom/rules:ro\n", "")),
        ("{compose}: rule_files pattern", "is not visible in the {prometheus} container")),
    Defect("no-alertmanagers", per_stack(
        reference=("prometheus_config", 'alerting:\n  alertmanagers:\n    - static_configs:\n'
                                        '        - targets: ["alertmanager:9093"]\n', ""),
        northwind=("prometheus_config", 'alerting:\n  alertmanagers:\n    - static_configs:\n'
                                        '        - targets: ["paging:9093"]\n', "")),
        ("{prometheus_config}: no alertmanager configured",)),
    Defect("tls-alert-metric-not-produced", per_stack(
        reference=("rules", "expr: tls_cert_days_left < 7", "expr: tls_cert_days_remaining < 7"),
        northwind=("rules", "expr: northwind_tls_probe_ok == 0", "expr: northwind_tls_probe_success == 0")),
        ("{rules}: TLSCertificate", "no scraped target produces it")),
    Defect("textfile-dir-not-shared", per_stack(
        reference=("compose", "--collector.textfile.directory=/var/lib/node-exporter/textfile",
                   "--collector.textfile.directory=/srv/textfile"),
        northwind=("compose", "--collector.textfile.directory=/textfile", "--collector.textfile.directory=/srv/textfile")),
        ("which no textfile exporter reads ({exporter} reads /srv/textfile)",)),
]


@pytest.mark.parametrize("layout_copy, defect", cases(BOTH), indirect=["layout_copy"])
def test_defect_fails_alert_rules_in_each_stack(layout_copy, run_static, defect):
    stack, layout = layout_copy
    defect.inject(stack, layout)
    assert_only_control_fails(run_static(stack, *defect.args), "alert_rules", *map(layout.fill, defect.fragments))


def test_a_missing_alert_among_many_rule_files_names_their_dir_once(stack_copy, run_static):
    """Rules split over several files of one dir (a house style: 00-recording.yml, 10-infra.yml, ...): the one-line
    finding names the dir and the count, not every file; the evidence still lists them all."""
    rules = stack_copy / RULES
    doc = yaml.safe_load(rules.read_text())
    alerts = [rule for group in doc["groups"] for rule in group["rules"] if rule["alert"] != "CircuitBreakerOpen"]
    rules.unlink()
    for number, part in enumerate((alerts[::3], alerts[1::3], alerts[2::3])):
        (rules.parent / f"{number}0-part.yml").write_text(yaml.safe_dump({"groups": [{"name": f"part{number}",
                                                                                      "rules": part}]}))
    run = run_static(stack_copy, "-k", "alert_inventory")
    inventory = next(row for control in run.report["controls"] for row in control["checks"]
                     if row["nodeid"].endswith("::test_alert_inventory"))
    assert inventory["reason"].startswith(
        "the 3 rule files of ai-stack/compose/prometheus/alerts/: no alert for an open circuit breaker"), inventory["reason"]
    assert all(f"alerts/{n}0-part.yml" in inventory["test"] for n in range(3)), inventory["test"]
