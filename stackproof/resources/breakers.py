"""Circuit breakers as a stack declares them: which services need one, what their config
says, how Prometheus scrapes their state, how the breaker alert evaluates and where
Alertmanager routes it.

Read by the circuit-breakers control (suites/test_circuit_breakers.py). Live and fault
injection mechanisms are in stackproof/engine/live.py and stackproof/resources/faults.py.
"""

from __future__ import annotations

import os

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from stackproof.resources import promql
from stackproof.io import pure
from stackproof.io.files import read_stack_file
from stackproof.resources.alerting import Alerting, Rule, flag_value, host_of
from stackproof.errors import Blocked, NotDeclared, StackError
from stackproof.resources.breaker_code import read_breaker_code
from stackproof.target.pool_libraries import library_reading
from stackproof.target.service_config import pool_config_of
from stackproof.io.yamlio import load_yaml

ALERTMANAGER_CONFIG = "/etc/alertmanager/alertmanager.yml"  # --config.file default of Alertmanager
# Alertmanager receiver keys that deliver a notification somewhere
INTEGRATIONS = ("email_configs", "pagerduty_configs", "slack_configs", "webhook_configs", "opsgenie_configs",
                "victorops_configs", "pushover_configs", "wechat_configs", "sns_configs", "telegram_configs",
                "discord_configs", "webex_configs", "msteams_configs", "msteamsv2_configs", "jira_configs",
                "rocketchat_configs", "incidentio_configs")


def seconds(value, where: str) -> float:
    """A duration setting: a number of seconds or a Prometheus duration ("30s", "1m")."""
    if isinstance(value, bool) or value is None:
        raise StackError(f"{where}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return promql.duration_seconds(str(value))
    except (ValueError, TypeError):
        raise StackError(f"{where}: {value!r} is not a duration") from None


def recovery_ok(value, cfg: dict) -> bool:
    """Whether a declared recovery time is usable: a duration above 0 and within the profile's
    breakers.max_recovery_seconds (the static setting check and the fault plan judge it alike)."""
    try:
        return 0 < seconds(value, "") <= cfg["max_recovery_seconds"]
    except StackError:
        return False


# --- what each service declares -------------------------------------------------------


class UnreadableConfig(StackError):
    """A service's config file is missing or not YAML: the connection-pool control, which reads
    the same file, reports it."""


@dataclass
class DeclaredBreaker:
    """The breaker a service's own config (or, without one, its code) declares for the dependency (None:
    it declares none)."""

    service: str
    config: str  # the config file it mounts (or the code file that builds the breaker), relative to the stack
    settings: dict | None
    in_code: bool = False  # read from the service's code (config: the code file that builds the breaker)
    line: int | None = None  # the line of the breaker's call in code
    none_possible: str = ""  # the application reading the config has no breaker for the database: why
    call: str = ""  # in code: the call that builds it, as a reason names it (`CircuitBreaker('postgres')`)
    code_keys: dict[str, str] | None = None  # in code: the profile's setting key -> the library's name for it

    def value(self, key: str):
        return (self.settings or {}).get(key)

    @property
    def where(self) -> str:
        return f"{self.config}:{self.line}" if self.line else self.config

    def setting_path(self, cfg: dict, key: str) -> str:
        """How the stack names a setting: its key path in the config file, or the breaker call in code."""
        if self.in_code:
            return f"{self.call or 'CircuitBreaker(' + repr(cfg['dependency']) + ')'} {(self.code_keys or {}).get(key, key)}"
        return f"{config_entry(cfg)}.{key}"


def config_entry(cfg: dict) -> str:
    """The key path of the dependency's breaker in a config file: breakers.config_key, then its entry
    (breakers.config_entry, else the dependency's name)."""
    return f"{cfg['config_key']}.{cfg['config_entry'] or cfg['dependency']}"


def code_dir(stack, service) -> Path | None:
    """Where a service's code is: breakers.code names it (an image built by another compose file), else
    the service's build context inside the stack dir."""
    declared = stack.profile["breakers"]["code"].get(service.name)
    if declared:
        return stack.profile.stack_path(declared, f"breakers.code.{service.name}")
    context = service.build_context
    return context if context is not None and stack.inside(context) and context.is_dir() else None


def code_declaration(stack, service) -> DeclaredBreaker:
    """The breaker a service without a config file builds in its code (read with ast, never run), named
    for the dependency (breakers.dependency); its settings keyed as breakers.settings names them."""
    cfg = stack.profile["breakers"]
    directory = code_dir(stack, service)
    if directory is None:
        config = stack.profile["paths"]["pool_config"]
        mounts = f"it mounts no config file ({config} is another service's)" if config else "no config file"
        context = service.build_context
        elsewhere = (f"its code, the build context {os.path.relpath(context, stack.root)}, is outside the stack dir"
                     if context is not None and not stack.inside(context) else
                     f"its image {service.image} is pulled, not built from the stack dir" if service.image
                     else "no code of it")
        raise NotDeclared(f"no breaker declaration for service {service.name}: {mounts} and {elsewhere} "
                          f"(looked for paths.pool_config, its build context, breakers.code.{service.name})")
    code = read_breaker_code(stack, directory)
    breaker = next((b for b in code.breakers if b.name == cfg["dependency"]), None)
    if breaker is None:  # it may be built another way the suite does not read: not proven, never a failure
        built = ", ".join(f"{b.name or 'unnamed'} ({b.file}:{b.line})" for b in code.breakers) or "none"
        raise NotDeclared(f"no breaker declaration for service {service.name}: no config file (paths.pool_config), "
                          f"and its code ({stack.rel(directory)}) builds no breaker named {cfg['dependency']!r} "
                          f"(breakers it builds: {built})")
    settings = {cfg["settings"][role]: value for role, value in breaker.settings.items()}
    call = breaker.call or f"CircuitBreaker({breaker.name!r})"
    keys = {cfg["settings"][role]: name for role, name in breaker.keys.items()} if breaker.keys else None
    return DeclaredBreaker(service.name, breaker.file, settings, in_code=True, line=breaker.line, call=call,
                           code_keys=keys)


def breaker_services(stack) -> list[str]:
    """The API services that talk to the dependency: the profile's breakers.services, else the
    API services (roles.api_services)."""
    listed = stack.profile["breakers"]["services"]
    if listed:
        return list(listed)
    try:
        return [svc.name for svc in stack.roles.api_services()]
    except Blocked:
        raise
    except StackError as exc:  # found through the API key: the API-key control fails for it
        raise Blocked("API key permissions (the API services are those that mount the key)", str(exc)) from None


def declared_breakers(stack) -> list[DeclaredBreaker]:
    """Each breaker service's declaration, read from the config file that service really reads (the one with
    its database settings, see service_config), else from its code. A service that mounts no config file reads
    paths.pool_config only when no service mounts it (a file baked into an image): one bind-mounted into others
    is theirs. A service whose declaration cannot be read makes the whole list not proven, unless another
    service is seen to declare no breaker at all: that failure is certain whatever the unread one declares."""
    cfg = stack.profile["breakers"]
    compose = stack.compose
    found, unread = [], []
    for name in breaker_services(stack):
        service = compose.services.get(name)
        if service is None:
            raise StackError(f"{stack.rel(compose.files[0])}: no service {name!r} (profile breakers.services)")
        mounted, _ = pool_config_of(stack, service)
        if mounted is None and (not stack.profile["paths"]["pool_config"] or pool_config_mounted(stack)):
            try:
                found.append(code_declaration(stack, service))
            except NotDeclared as exc:
                unread.append(exc)
            continue
        path = Path(mounted) if mounted is not None else stack.path("pool_config")
        try:
            doc = load_yaml(path, stack.rel(path))
        except StackError as exc:
            raise UnreadableConfig(str(exc)) from None
        section = (doc or {}).get(cfg["config_key"]) if isinstance(doc, dict) else None
        settings = section.get(cfg["config_entry"] or cfg["dependency"]) if isinstance(section, dict) else None
        if settings is not None and not isinstance(settings, dict):
            raise StackError(f"{stack.rel(path)}: {config_entry(cfg)} is not a mapping")
        library = library_reading(stack, path)
        found.append(DeclaredBreaker(name, stack.rel(path), settings,
                                     none_possible=library.no_breaker if library is not None and settings is None else ""))
    if unread and not any(d.settings is None for d in found):
        raise unread[0]
    return found


def pool_config_mounted(stack) -> bool:
    """Whether paths.pool_config is bind-mounted into some service (it is then the config of those only)."""
    configured = stack.path("pool_config")
    return any(pool_config_of(stack, svc)[0] == configured for svc in stack.compose.services.values())


# --- how Prometheus sees them -----------------------------------------------------------


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    host: str
    port: int
    metrics_path: str
    interval: float  # seconds between scrapes


def scrape_targets(alerting: Alerting) -> list[ScrapeTarget]:
    """Every target of prometheus.yml's scrape_configs (static, DNS or file discovered: Alerting.targets), with
    its job's path and interval."""
    config = alerting.config
    where = alerting.stack.rel(alerting.config_path)
    default = seconds((config.get("global") or {}).get("scrape_interval", "1m"), f"{where}: global.scrape_interval")
    found = []
    for entry, target in alerting.targets(config.get("scrape_configs")):
        job = str(entry.get("job_name", ""))
        interval = seconds(entry["scrape_interval"], f"{where}: {job}.scrape_interval") \
            if "scrape_interval" in entry else default
        host, _, port = target.rpartition(":")
        if port.isdigit():
            found.append(ScrapeTarget(job, host_of(target), int(port), str(entry.get("metrics_path", "/metrics")), interval))
    return found


def target_of(stack, alerting: Alerting, service: str) -> ScrapeTarget:
    """The scrape target of a service: Prometheus must scrape it for its breaker state to exist."""
    for target in scrape_targets(alerting):
        if target.host == service:
            return target
    raise StackError(f"{stack.rel(alerting.config_path)}: no scrape job targets service {service} "
                     "(its breaker state never reaches Prometheus)")


def breaker_targets(stack, alerting: Alerting) -> dict[str, ScrapeTarget]:
    """Each breaker service and the scrape target Prometheus reads its state from."""
    return {service: target_of(stack, alerting, service) for service in breaker_services(stack)}


def evaluation_interval(alerting: Alerting) -> float:
    where = alerting.stack.rel(alerting.config_path)
    return seconds((alerting.config.get("global") or {}).get("evaluation_interval", "1m"),
                   f"{where}: global.evaluation_interval")


def breaker_alert(stack, alerting: Alerting) -> Rule:
    """The breaker alert: the profile's breakers.alert, or the stack's alert of another name for open breakers."""
    name = stack.profile["breakers"]["alert"]
    rule = alerting.alert_for(name)
    if rule is not None:
        return rule
    raise StackError(f"{', '.join(stack.rel(f) for f in alerting.rule_files)}: no alert {name} "
                     "(profile breakers.alert)")


def state_metric(stack, rule: Rule) -> str:
    """The breaker-state gauge: the profile's breakers.state_metric, else the one metric the breaker
    alert selects (whether the services really export it is what the live checks prove)."""
    declared = stack.profile["breakers"]["state_metric"]
    if declared:
        return declared
    names = sorted({s.metric for s in promql.selectors(rule.spec["expr"]) if s.metric})
    if len(names) != 1:
        raise StackError(f"{stack.rel(rule.file)}: {rule.name} selects {', '.join(names) or 'no metric by name'}: "
                         "name the breaker-state metric in stackproof.yml breakers.state_metric")
    return names[0]


def state_series(stack, metric: str, target: ScrapeTarget, state: str) -> str:
    """The breaker-state series Prometheus would store for this target, in promtool's notation."""
    cfg = stack.profile["breakers"]
    labels = {"job": target.job, "instance": f"{target.host}:{target.port}", cfg["breaker_label"]: cfg["dependency"]}
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inner}}}"


CASE_LABEL = "stackproof_case"  # the label that tells the cases of one promtool run apart in its output


def alert_fires(stack, alerting: Alerting, rule: Rule, metric: str,
                cases: dict[str, dict[ScrapeTarget, str]]) -> dict[str, bool]:
    """For each case (each target's breaker in a given state), whether the alert's expression selects
    anything: evaluated by promtool with the rule files loaded, so recording rules it uses are there too.

    One promtool run for every case, one test group each (a promtool start costs more than the
    evaluation). promtool 2.42 does not name a failing group, so each group's expression carries its
    case number as a label, which the failure output prints."""
    cfg = stack.profile["breakers"]
    names = list(cases)
    groups = [{
        "interval": "1m",
        "input_series": [{"series": state_series(stack, metric, target, state), "values": f"{cfg['states'][state]}x10"}
                         for target, state in cases[name].items()],
        "promql_expr_test": [{
            "expr": f'label_replace(clamp_max(count({rule.spec["expr"]}), 1) or vector(0), "{CASE_LABEL}", "{number}", "", "")',
            "eval_time": "5m", "exp_samples": [{"labels": f'{{{CASE_LABEL}="{number}"}}', "value": 1}]}],
    } for number, name in enumerate(names)]
    with tempfile.TemporaryDirectory(prefix="stackproof-breaker-") as tmp:
        # the rule files as copies under names of their own, so that the run's inputs, and with them
        # its result kept by io.pure, are the same for every copy of a stack wherever it lies
        copies = {Path(tmp) / f"rules-{number}.yml": source for number, source in enumerate(alerting.rule_files)}
        for copy, source in copies.items():
            copy.write_bytes(read_stack_file(source, stack.rel(source)))
        doc = {"rule_files": [copy.name for copy in copies], "evaluation_interval": "1m", "tests": groups}
        path = Path(tmp) / "breaker-alert.test.yml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        done = pure.run(["promtool", "test", "rules", path.name], reads=[path, *copies], cwd=Path(tmp),
                        timeout=stack.timeout, where=f"promtool test rules ({rule.name})")
    out = (done.stdout + done.stderr).decode(errors="replace")
    for copy, source in copies.items():
        out = out.replace(copy.name, stack.rel(source))
    if done.returncode == 0:
        return dict.fromkeys(names, True)
    if "got:" not in out and "exp:" not in out:
        raise StackError(f"promtool could not evaluate {rule.name}: {' '.join(out.split())[:200]}")
    quiet = {int(n) for n in re.findall(rf'{CASE_LABEL}="(\d+)"', out)}
    return {name: number not in quiet for number, name in enumerate(names)}


def has_promtool() -> bool:
    return shutil.which("promtool") is not None


# --- where Alertmanager sends it ------------------------------------------------------------


@dataclass
class AlertmanagerConfig:
    service: str
    path: Path
    doc: dict

    def receiver(self, name: str) -> dict | None:
        return next((r for r in self.doc.get("receivers") or [] if isinstance(r, dict) and r.get("name") == name), None)


def alertmanager_config(stack) -> AlertmanagerConfig:
    """The config file the Alertmanager service runs with (its --config.file, through its mounts)."""
    service = stack.roles.service("alertmanager")
    inside = flag_value([*service.entrypoint, *service.command], "--config.file") or ALERTMANAGER_CONFIG
    host = service.host_path_for(inside)
    if host is None:
        raise StackError(f"{stack.rel(stack.compose.files[0])}: {service.name} reads {inside}, which no bind mount provides")
    if not stack.inside(host):  # a bind mount of an outside dir: never read (nor handed to amtool)
        raise StackError(f"{stack.rel(stack.compose.files[0])}: {service.name} reads {inside} from {host}, "
                         "outside the stack dir: not read")
    doc = load_yaml(Path(host), stack.rel(host))
    if not isinstance(doc, dict):
        raise StackError(f"{stack.rel(host)}: not an Alertmanager configuration")
    return AlertmanagerConfig(service.name, Path(host), doc)


def routed_receivers(stack, config: AlertmanagerConfig, labels: dict[str, str]) -> list[str]:
    """The receivers Alertmanager's routing tree picks for an alert with these labels, as amtool
    (Alertmanager's own routing code) computes it: matchers, match_re, continue, defaults."""
    args = ["amtool", "config", "routes", "test", f"--config.file={config.path.name}",
            *[f"{k}={v}" for k, v in sorted(labels.items())]]
    # amtool reads the config file alone here (templates and *_file settings are read by the server)
    done = pure.run(args, reads=[config.path], cwd=config.path.parent, timeout=stack.timeout,
                    where=f"amtool ({stack.rel(config.path)})")
    out = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0:
        err = " ".join(done.stderr.decode(errors="replace").split())[:200]
        raise StackError(f"{stack.rel(config.path)}: amtool cannot route alerts: {err}")
    return [name.strip() for name in out.split(",") if name.strip()]


def has_amtool() -> bool:
    return shutil.which("amtool") is not None
