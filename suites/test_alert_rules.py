"""Control 4: Prometheus alert rules.

The rule files must load and hold complete alerts for the P0 incidents; and, what the
original validation never looked at, they must be wired: Prometheus sees them through
its container's mounts, sends alerts to an Alertmanager, and scrapes every metric the
TLS alerts select. An alert on a metric nobody exports never fires.
"""

from __future__ import annotations

import posixpath
import shutil
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stackproof.resources import promql
from stackproof.resources.alerting import (ALERT_DUTIES, Alerting, Rule, flag_value, host_of, live_alerts, promtool, rule_test_reads,
                                           rule_test_files)
from stackproof.target.compose import Service
from stackproof.errors import StackError, blocked, environment_error, not_proven
from stackproof.resources.scripts import Monitor

pytestmark = pytest.mark.control("alert_rules")

TEXTFILE_FLAG = "--collector.textfile.directory"
METRICS_FILE_ENV = "TLS_METRICS_FILE"  # where the reference monitor script writes, in its container
# series Prometheus adds for every target it scrapes
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added",
                 "scrape_samples_post_metric_relabeling"}
# (what an alert must carry, how to read it from the rule)
ALERT_FIELDS = [
    ("for", lambda rule: rule.get("for")),
    ("labels.severity", lambda rule: (rule.get("labels") or {}).get("severity")),
    ("annotations.summary", lambda rule: (rule.get("annotations") or {}).get("summary")),
    ("annotations.description", lambda rule: (rule.get("annotations") or {}).get("description")),
]


def _fallback_problems(rules: list[Rule], rel) -> list[str]:
    """Without promtool: every expr parses as PromQL and every `for` as a duration."""
    problems = []
    for rule in rules:
        try:
            promql.parse(rule.spec["expr"])
            if rule.spec.get("for") is not None:
                promql.duration_seconds(str(rule.spec["for"]))
        except ValueError as exc:
            problems.append(f"{rel(rule.file)}: {rule.name}: {' '.join(str(exc).split())}")
    return problems


@pytest.fixture(scope="module")
def alerting(stack) -> Alerting:
    return Alerting(stack)


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Mount the rule files into the Prometheus container (a volume of its service) at the path "
                         "its `rule_files:` patterns name, and make each pattern match them as the container sees "
                         "them.")
def test_rule_files_visible_to_prometheus(stack, alerting, evidence):
    """Each rule_files pattern, resolved inside the Prometheus container through its mounts, matches rule files."""
    evidence.record(test=f"rule_files in {stack.rel(alerting.config_path)}, seen through the "
                         f"{alerting.service.name} service's mounts",
                    expected="at least one pattern; each matches at least one mounted file")
    problems = alerting.pattern_problems()
    if problems:  # the later checks judge the files on disk if there are any; if not, they are blocked by this one
        try:
            alerting.rule_files  # noqa: B018 -- loads the cached rule files: a StackError here is the blocking reason
        except StackError:
            pass
    evidence.record(result="; ".join(
        f"{p.container} → {', '.join(stack.rel(f) for f in p.files) or 'nothing'}" for p in alerting.patterns)
        or "no rule_files")
    evidence.locate(*([stack.locate(alerting.config_path, "rule_files")] if problems else []))
    assert not problems, "; ".join(problems)


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Run `promtool check rules <file>` on each rule file and fix what it reports (YAML syntax, "
                         "PromQL, duplicate groups) before deploying.")
def test_rule_files_valid(stack, alerting, evidence):
    """Prometheus refuses to start (or drops the group) when a rule file is invalid."""
    checker = "promtool check rules" if shutil.which("promtool") else "structure + PromQL parse (no promtool)"
    evidence.record(test=f"{checker} on the rule files", expected="every file valid")
    files = alerting.rule_files
    if shutil.which("promtool"):
        results = [(f, *promtool(stack, ["check", "rules"], f)) for f in files]
        problems = [f"{stack.rel(f)}: {detail}" for f, ok, detail in results if not ok]
        evidence.locate(*(stack.locate(f) for f, ok, _ in results if not ok))
        evidence.record(result="; ".join(f"{stack.rel(f)}: {detail if ok else 'FAILED'}"
                                         for f, ok, detail in results))
    else:
        problems = _fallback_problems(alerting.rules, stack.rel)
        evidence.record(result=f"{len(alerting.rules)} rules parsed" + (f"; {len(problems)} invalid" if problems else ""))
    assert not problems, "; ".join(problems)


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Add the missing alerts (the profile's `alerts.required`, ten alerts or more) to the rule "
                         "files, and rename an alert that shares its name with another.")
def test_alert_inventory(stack, alerting, evidence):
    """Enough alerting rules, the P0 alerts among them, and no two alerts with the same name."""
    wanted = stack.profile["alerts"]
    alerts = alerting.alerts
    per_file = Counter(stack.rel(rule.file) for rule in alerts)
    found = {name: alerting.alert_for(name) for name in wanted["required"]}
    missing = [name for name, rule in found.items() if rule is None]
    other_names = [f"{name}: {rule.name}" for name, rule in found.items() if rule is not None and rule.name != name]
    duplicates = sorted(name for name, n in Counter(rule.name for rule in alerts).items() if n > 1)
    evidence.record(
        test=f"alerting rules in {', '.join(stack.rel(f) for f in alerting.rule_files)}",
        expected=f">= {wanted['min_rules']} alerts, including {', '.join(wanted['required'])}; unique names",
        result=(f"{len(alerts)} alerting rules (" + ", ".join(f"{n} in {f}" for f, n in per_file.items()) + "); "
                f"required present: {len(wanted['required']) - len(missing)}/{len(wanted['required'])}"
                + (f" ({', '.join(other_names)})" if other_names else "") + "; "
                f"duplicate names: {', '.join(duplicates) or 'none'}"),
    )
    problems = []
    if len(alerts) < wanted["min_rules"]:
        problems.append(f"only {len(alerts)} alerting rules (expected >= {wanted['min_rules']})")
    if missing:
        problems.append("; ".join(ALERT_DUTIES[name].missing(name) if name in ALERT_DUTIES
                                  else f"required alert {name} missing" for name in missing))
    if duplicates:
        problems.append(f"duplicate alert name(s): {', '.join(duplicates)}")
        evidence.locate(*(stack.locate(rule.file, *rule.keys, "alert") for rule in alerts if rule.name in duplicates))
    assert not problems, f"{rule_files_named(stack, alerting.rule_files)}: {'; '.join(problems)}"


def rule_files_named(stack, files: list) -> str:
    """The rule files as a one-line finding names them: each of one or two, else the dir they share with their
    count (the evidence lists them all)."""
    names = [stack.rel(f) for f in files]
    parents = {str(Path(name).parent) for name in names}
    if len(names) <= 2 or len(parents) != 1:
        return ", ".join(names)
    return f"the {len(names)} rule files of {parents.pop()}/"


@pytest.mark.static
@pytest.mark.remediation("medium",
                         "Give each alert a `for:` duration, a `severity` label and `summary` and `description` "
                         "annotations.")
def test_alerts_complete(stack, alerting, evidence):
    """Alerts route on severity, tell on-call what broke (summary, description), and wait out blips (`for`)."""
    alerts = alerting.alerts
    gaps = [f"{stack.rel(rule.file)}: {rule.name} has no {what}"
            for rule in alerts for what, read in ALERT_FIELDS if read(rule.spec) in (None, "")]
    evidence.locate(*(stack.locate(rule.file, *rule.keys, *what.split("."))
                      for rule in alerts for what, read in ALERT_FIELDS if read(rule.spec) in (None, "")))
    evidence.record(test=f"{', '.join(what for what, _ in ALERT_FIELDS)} of every alert",
                    expected="present on every alert",
                    result=f"{len(alerts) * len(ALERT_FIELDS) - len(gaps)}/{len(alerts) * len(ALERT_FIELDS)} present "
                           f"on {len(alerts)} alerts")
    assert not gaps, "; ".join(gaps)


@pytest.mark.static
@pytest.mark.remediation("medium",
                         "Run `promtool test rules <tests>` and fix the alert or the test it reports; every P0 alert "
                         "needs a test that fires it.")
def test_rule_unit_tests_pass(stack, evidence):
    """The promtool unit tests shipped with the stack fire each P0 alert from synthetic series."""
    tests_dir = stack.path("prometheus_rule_tests")
    files, others = rule_test_files(stack, tests_dir)
    evidence.record(test=f"promtool test rules on the unit-test files of {stack.rel(tests_dir)} (YAML with tests:)",
                    expected="every test file passes")
    if others:
        evidence.note(f"not unit tests (no tests: key), not run: {', '.join(stack.rel(f) for f in others)}")
    if not shutil.which("promtool"):
        environment_error("promtool not installed (Debian package 'prometheus'): rule unit tests not run")
    if not files:  # a declared dir of no tests proves nothing (it must not pass the check by being empty)
        not_proven(f"{stack.rel(tests_dir)}: no promtool rule test files (YAML files with tests:) in "
                   "paths.prometheus_rule_tests")
    reads = {path: rule_test_reads(stack, path) for path in files}
    escapes = [problem for _, problems in reads.values() for problem in problems]
    assert not escapes, "; ".join(escapes)
    results = [(f, *promtool(stack, ["test", "rules"], f, reads[f][0])) for f in files]
    evidence.record(result="; ".join(f"{stack.rel(f)}: {'SUCCESS' if ok else 'FAILED'}" for f, ok, _ in results))
    failed = [f"{stack.rel(f)}: {detail}" for f, ok, detail in results if not ok]
    evidence.locate(*(stack.locate(f) for f, ok, _ in results if not ok))
    assert not failed, "promtool test rules failed: " + "; ".join(failed)


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Add an Alertmanager service to the stack and list it under `alerting.alertmanagers` in "
                         "prometheus.yml.")
def test_alertmanager_configured(stack, alerting, evidence):
    """Firing alerts go nowhere unless Prometheus sends them to an Alertmanager of the stack."""
    config = stack.rel(alerting.config_path)
    section = alerting.config.get("alerting")
    section = section.get("alertmanagers") if isinstance(section, dict) else None
    targets = [host_of(target) for _, target in alerting.targets(section)]
    services = stack.compose.services
    evidence.record(test=f"alerting.alertmanagers in {config}", expected="at least one target, a compose service",
                    result=", ".join(f"{host} ({'service' if host in services else 'no such service'})"
                                     for host in targets) or "no alertmanager target")
    evidence.locate(stack.locate(alerting.config_path, "alerting", "alertmanagers"))
    assert targets, f"{config}: no alertmanager configured (alerting.alertmanagers has no static target)"
    unknown = [host for host in targets if host not in services]
    inactive = [message for host in unknown if (message := stack.roles.inactive(host, "the Alertmanager"))]
    assert not inactive, inactive[0]
    assert not unknown, f"{config}: alertmanager target(s) {', '.join(unknown)} not a service of {stack.rel(stack.compose.files[0])}"


# --- TLS metric wiring ------------------------------------------------------------------


def monitor_metrics(monitor: Monitor) -> set[str]:
    """Names of the series the TLS monitor script writes for a valid certificate: its run as the profile
    declares, in its sandbox (the TLS checks' valid scenario)."""
    run = monitor.valid_run()
    if run.metrics is None:
        err = " ".join(run.stderr.split())[:200]
        raise StackError(f"{monitor.rel}: wrote no metrics file for a valid certificate (exit {run.code}) {err}".strip())
    try:
        # sample names, not family names: a counter family `x` has samples `x_total`
        return {sample.name for family in text_string_to_metric_families(run.metrics) for sample in family.samples}
    except ValueError as exc:
        raise StackError(f"{monitor.rel}: metrics file is not Prometheus text format ({exc})") from None


def _mount_of(service: Service, path: str) -> tuple[str, str, str] | None:
    """(type, volume name or host path, sub-path) of the mount holding `path` in the service's container."""
    best = None
    for mount in service.volumes:
        if mount.type in ("bind", "volume") and (path == mount.target or path.startswith(mount.target.rstrip("/") + "/")):
            if best is None or len(mount.target) > len(best.target):
                best = mount
    return None if best is None else (best.type, best.source, path[len(best.target):].strip("/"))


def _location(mount: tuple[str, str, str] | None) -> tuple[str, str] | None:
    """A mount as a comparable place: (volume, name/sub-path) or (bind, host path)."""
    if mount is None:
        return None
    kind, source, sub = mount
    return (kind, str(Path(source) / sub) if kind == "bind" else posixpath.join(source, sub).rstrip("/"))


def metrics_file_inputs(stack) -> tuple[list[str], list[str]]:
    """(variables, flags) that carry the TLS monitor's metrics file: those the declared interface
    (scripts.monitor) gives {metrics_file}, then the reference monitor's TLS_METRICS_FILE and
    --metrics-file. A flag is the word before `{metrics_file}`, or the part before it in one word
    (`--textfile={metrics_file}`, `-o{metrics_file}`)."""
    declared = stack.profile["scripts"]["monitor"]
    variables = [name for name, value in declared["env"].items() if "{metrics_file}" in str(value)]
    flags = []
    command = declared["command"]
    for index, word in enumerate(command):
        before = word.partition("{metrics_file}")[0] if "{metrics_file}" in word else None
        if before == "" and index and command[index - 1].startswith("-"):
            flags.append(command[index - 1])
        elif before and before.startswith("-"):
            flags.append(before.removesuffix("="))
    return list(dict.fromkeys([*variables, METRICS_FILE_ENV])), list(dict.fromkeys([*flags, "--metrics-file"]))


def monitor_metrics_file(stack, monitor) -> str:
    """Where the TLS monitor writes its metrics: the variable or flag that carries {metrics_file}, read
    from the command that runs the monitor script (inside a shell's `-c` string too), else from the
    environment it gets (the service's, the cron file's, assignments in front of the command): a flag on
    the command line overrides the environment, as scripts read them. Not proven when the
    call carries none: where a script writes by default is its own word, not guessed."""
    script = stack.path("monitor_script").name
    variables, flags = metrics_file_inputs(stack)
    call = monitor.invocation(script)
    if call is not None:
        found = next((value for flag in flags if (value := flag_value(call.argv, flag))), None)
        found = found or next((call.env[name] for name in variables if call.env.get(name)), None)
        if found:
            return found
    where = stack.rel(monitor.cron.path) if monitor.cron else stack.rel(stack.compose.files[0])
    called = f"its call of {script}" if call else f"no command of it names {script}, and"
    not_proven(f"{where}: where {monitor.label} writes its metrics is not known: {called} passes none of "
               f"{', '.join(flags + variables)} (declare the monitor's interface: scripts.monitor with "
               "{metrics_file})")


def textfile_wiring(stack, alerting) -> tuple[str, list[str]]:
    """(how the monitor's metrics reach Prometheus, problems): the metrics file must sit in a textfile
    dir that an exporter reads (same volume or host dir), and a scrape job must target that exporter."""
    services = stack.compose.services
    compose = stack.rel(stack.compose.files[0])
    monitor = stack.roles.tls_monitor()
    metrics_file = monitor_metrics_file(stack, monitor)
    if monitor.service:
        written = _location(_mount_of(monitor.service, posixpath.dirname(metrics_file)))
    else:  # a cron job of the host writes a host path
        written = ("bind", str(Path(posixpath.dirname(metrics_file))))
    exporters = {svc.name: flag_value([*svc.entrypoint, *svc.command], TEXTFILE_FLAG) for svc in services.values()}
    exporters = {name: directory for name, directory in exporters.items() if directory}
    readers = [name for name, directory in exporters.items()
               if written is not None and _location(_mount_of(services[name], directory)) == written]
    jobs = {host_of(target): str(entry.get("job_name", "")) for entry, target in
            alerting.targets(alerting.config.get("scrape_configs"))}
    scraped = [name for name in readers if name in jobs]
    problems = []
    label = monitor.label
    if monitor.cron:  # the file that says where the metrics go
        compose, label = stack.rel(monitor.cron.path), "its cron line"
    described = monitor.label if monitor.service else f"cron file {stack.rel(monitor.cron.path)}"
    if not metrics_file.endswith(".prom"):
        problems.append(f"{compose}: {label} writes {metrics_file}; the textfile collector reads only *.prom")
    if not readers:
        where = f"{written[0]} {written[1]}" if written else "on no shared mount"
        seen = ", ".join(f"{name} reads {d}" for name, d in exporters.items()) or f"no service has {TEXTFILE_FLAG}"
        problems.append(f"{compose}: {label} writes {metrics_file} ({where}), which no textfile exporter reads ({seen})")
    elif not scraped:
        problems.append(f"{stack.rel(alerting.config_path)}: no scrape job targets {', '.join(readers)} (the TLS textfile exporter)")
    route = f"{described} writes {metrics_file}"
    if readers:
        route += f" → {written[0]} {written[1]} → {readers[0]}"
    route += f", scraped by job {jobs[scraped[0]]}" if scraped else ", not scraped"
    return route, problems


def tls_alert_selectors(stack, alerting) -> list[tuple[Rule, promql.Selector]]:
    prefix = stack.profile["alerts"]["tls_alert_prefix"]
    found = []
    for rule in alerting.alerts:
        if rule.name.startswith(prefix):
            try:
                found += [(rule, s) for s in promql.selectors(rule.spec["expr"])]
            except promql.PromQLError as exc:
                raise StackError(f"{stack.rel(rule.file)}: {rule.name}: invalid PromQL: {exc}") from None
    if not found:
        raise StackError(f"{', '.join(stack.rel(f) for f in alerting.rule_files)}: no alert named {prefix}* selects a metric")
    return found


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Write the TLS monitor's metrics file into the directory the node-exporter's textfile "
                         "collector reads (a shared volume), and have Prometheus scrape that exporter.")
def test_tls_textfile_is_scraped(stack, alerting, evidence):
    """The TLS monitor's metrics file lands where a textfile exporter reads it, and Prometheus scrapes that exporter."""
    evidence.record(test=f"{TEXTFILE_FLAG} services, their mounts and scrape jobs in {stack.rel(alerting.config_path)}",
                    expected="the TLS monitor's metrics file (*.prom) is in a scraped exporter's textfile dir")
    route, problems = textfile_wiring(stack, alerting)
    evidence.record(result=route)
    assert not problems, "; ".join(problems)


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Make each TLS alert select a metric the TLS monitor writes (see the profile's "
                         "`scripts.monitor.metrics`), or have the monitor write the metric the alert selects.")
def test_tls_alert_metrics_are_produced(stack, alerting, evidence, monitor):
    """Every metric a TLS alert selects is one the TLS monitor script writes (or a scrape series such as `up`)."""
    script = stack.rel(stack.path("monitor_script"))
    selected = tls_alert_selectors(stack, alerting)
    names = sorted({s.metric or s.promql() for _, s in selected})
    evidence.record(test=f"metrics selected by the {stack.profile['alerts']['tls_alert_prefix']}* alerts: {', '.join(names)}",
                    expected=f"each written by {script} for a valid certificate")
    try:
        produced = monitor_metrics(monitor)
    except StackError as exc:  # a broken script fails tls_monitoring, which owns it
        blocked("TLS certificate monitoring", f"{exc}: TLS alert metrics not verified")
    evidence.record(result=f"{script} writes {', '.join(sorted(produced))}")
    dead = [f"{stack.rel(rule.file)}: {rule.name} selects {s.metric or s.promql()}" for rule, s in selected
            if not any(s.selects(m) for m in produced | SCRAPE_SERIES)]
    assert not dead, f"{'; '.join(dead)}: no scraped target produces it ({script} writes {', '.join(sorted(produced))})"


# --- live: what the running Prometheus loaded and sees ------------------------------------------


@pytest.mark.live
@pytest.mark.remediation("high",
                         "Restart (or reload) Prometheus so that it runs the rule files as they are, and fix the "
                         "rules it reports as unhealthy (`/api/v1/rules`, `lastError`).")
def test_live_prometheus_loaded_every_alert(stack, alerting, live, evidence):
    """Prometheus runs the alerts of the rule files (not a stale or partial set), and evaluates each without error."""
    service = stack.roles.name("prometheus")
    try:
        wanted = {rule.name for rule in alerting.alerts}
        source = ", ".join(stack.rel(f) for f in alerting.rule_files)
    except StackError as exc:  # the static checks report it; the live one still needs the P0 alerts running
        wanted, source = set(stack.profile["alerts"]["required"]), "the profile (rule files unusable)"
        evidence.note(str(exc))
    evidence.record(test=f"GET /api/v1/rules on {service}", expected=f"the {len(wanted)} alerts of {source}, health ok")
    loaded = live_alerts(live)
    # health is "unknown" until the group's first evaluation (just after a start or reload): not an error
    unhealthy = [f"{rule['name']} ({' '.join(str(rule.get('lastError') or rule.get('health')).split())})"
                 for rule in loaded if rule.get("health") not in ("ok", "unknown")]
    pending = sum(rule.get("health") == "unknown" for rule in loaded)
    missing = sorted(wanted - {rule["name"] for rule in loaded})
    evidence.record(result=f"{len(loaded)} alerting rules loaded from {', '.join(sorted({r['file'] for r in loaded})) or 'no file'}; "
                           f"{len(loaded) - len(unhealthy) - pending} healthy" + (f", {pending} not evaluated yet" if pending else ""))
    assert not missing, f"service {service}: does not run alert(s) {', '.join(missing)} of the rule files (reload Prometheus?)"
    assert not unhealthy, f"service {service}: unhealthy alert(s): {'; '.join(unhealthy)}"


@pytest.mark.live
@pytest.mark.remediation("high",
                         "Start the Alertmanager service and check that Prometheus reaches it (Status > Runtime & "
                         "Build Information lists it as active).")
def test_live_alertmanager_active(stack, live, evidence):
    """Prometheus has discovered an Alertmanager, and it is a running service of the stack."""
    service = stack.roles.name("prometheus")
    evidence.record(test=f"GET /api/v1/alertmanagers on {service}",
                    expected="at least one active Alertmanager, a running container")
    data = live.prometheus.api("/api/v1/alertmanagers")
    urls = [am.get("url", "") for am in data.get("activeAlertmanagers") or []]
    evidence.record(result=", ".join(urls) or f"none active ({len(data.get('droppedAlertmanagers') or [])} dropped)")
    assert urls, f"service {service}: no active Alertmanager"
    for url in urls:
        live.containers.of(str(urllib.parse.urlparse(url).hostname))  # raises naming the service not running


@pytest.mark.live
@pytest.mark.remediation("high",
                         "Make the exporter that should produce each named metric run and be scraped (Status > "
                         "Targets), or fix the metric name in the alert.")
def test_live_alert_metrics_have_series(stack, live, evidence):
    """An alert whose metric has no series can never fire: every metric an alert selects must exist in Prometheus."""
    service = stack.roles.name("prometheus")
    evidence.record(test=f"series in {service} of every metric the running alerts select", expected="at least one series each")
    loaded = live_alerts(live)
    selected: dict[promql.Selector, set[str]] = {}
    for rule in loaded:
        try:
            for selector in promql.selectors(rule.get("query", "")):
                selected.setdefault(selector, set()).add(rule["name"])
        except promql.PromQLError as exc:
            raise StackError(f"service {service}: alert {rule['name']}: query does not parse: {exc}") from None
    # one query for every metric name; selectors that fix no name are asked as written
    names = sorted({s.metric for s in selected if s.metric})
    query = f'count by (__name__) ({{__name__=~"{"|".join(names)}"}})'
    have = {sample["metric"].get("__name__") for sample in live.prometheus.query(query)} \
        if names else set()
    missing = {s.metric for s in selected if s.metric and s.metric not in have}
    missing |= {s.promql() for s in selected if not s.metric
                and not live.prometheus.query(f"count({s.promql()})")}
    dead = sorted({alert for s, alerts in selected.items() if (s.metric or s.promql()) in missing for alert in alerts})
    total = len({s.metric or s.promql() for s in selected})
    evidence.record(result=f"{total - len(missing)}/{total} metrics selected by {len(loaded)} alerts have series"
                           + (f"; none for {', '.join(sorted(missing))}" if missing else ""))
    assert not dead, f"service {service}: dead alert(s) {', '.join(dead)}: no series of {', '.join(sorted(missing))}"
