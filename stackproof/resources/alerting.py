"""Prometheus and its alerting as the stack declares them: prometheus.yml, the rule files the
Prometheus container really loads (resolved through its mounts), and their rules.

Shared by the controls that judge alerts (alert rules, circuit breakers).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath

from stackproof.io import pure
from stackproof.target.compose import Service
from stackproof.errors import StackError
from stackproof.io.files import glob_paths, list_dir, require_regular
from stackproof.io.yamlio import load_yaml

DEFAULT_CONFIG_FILE = "/etc/prometheus/prometheus.yml"  # --config.file of the official image


def flag_value(command: list[str], flag: str) -> str | None:
    """The value of `--flag=value` or `--flag value` in a command, and of `-fvalue` for a one-letter
    flag (getopts reads `-o/textfile/x.prom` as `-o /textfile/x.prom`)."""
    short = len(flag) == 2 and flag[0] == "-" and flag[1] != "-"
    for i, arg in enumerate(command):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(command):
            return command[i + 1]
        if short and arg.startswith(flag) and len(arg) > 2:
            return arg[2:]
    return None


@dataclass
class Rule:
    file: Path
    kind: str  # alert | record
    name: str
    spec: dict = field(repr=False)
    keys: tuple[str | int, ...] = ()  # its YAML key path in the file: ("groups", 0, "rules", 3)


@dataclass
class RulePattern:
    pattern: str  # as written in rule_files
    container: str  # the pattern as the Prometheus container resolves it
    host: Path | None  # the same pattern on the host, through the bind mounts
    files: list[Path]  # what it matches inside the stack dir
    outside: list[Path] = field(default_factory=list)  # what it matches outside (a mount or a symlink): never read


class Alerting:
    """prometheus.yml, the prometheus service and the rule files it loads; each part read on first use."""

    def __init__(self, stack):
        self.stack = stack

    @cached_property
    def config_path(self) -> Path:
        return self.stack.path("prometheus_config")

    @property
    def config(self) -> dict:
        return self.stack.needs("prometheus config", self._config)

    def _config(self) -> dict:
        doc = load_yaml(self.config_path, self.stack.rel(self.config_path))
        if not isinstance(doc, dict):
            raise StackError(f"{self.stack.rel(self.config_path)}: top level is not a mapping")
        return doc

    @property
    def service(self) -> Service:
        return self.stack.roles.service("prometheus")

    @cached_property
    def patterns(self) -> list[RulePattern]:
        """rule_files, resolved as Prometheus does (relative to its config file) inside its container."""
        raw = self.config.get("rule_files") or []
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            raise StackError(f"{self.stack.rel(self.config_path)}: rule_files is not a list of patterns")
        found = []
        for pattern in raw:
            container = posixpath.normpath(posixpath.join(self.config_dir, pattern))
            host = self.service.host_path_for(container)
            files = set(glob_paths(str(host), f"{self.stack.rel(self.config_path)}: rule_files {pattern}")) if host is not None else set()
            # single rule files bind-mounted where the pattern looks
            files |= {Path(m.source) for m in self.service.volumes
                      if m.type == "bind" and PurePosixPath(m.target).match(container)}
            regular = sorted(f for f in files if f.is_file())
            found.append(RulePattern(pattern, container, host, [f for f in regular if self.stack.inside(f)],
                                     [f for f in regular if not self.stack.inside(f)]))
        return found

    def targets(self, section) -> list[tuple[dict, str]]:
        """(its entry, target `host:port`) of every target a scrape_configs or alertmanagers list names: in
        static_configs; as the names of dns_sd_configs of type A or AAAA (Docker's DNS answers a compose
        service's name with each of its containers, at the port the entry gives; an SRV name is no service
        name); in the files of file_sd_configs, read where the Prometheus container sees them."""
        found = []
        for entry in _items(section):
            if not isinstance(entry, dict):
                continue
            groups = [*_items(entry.get("static_configs")), *self._file_sd_groups(entry)]
            found += [(entry, str(target)) for group in groups if isinstance(group, dict)
                      for target in _items(group.get("targets"))]
            for dns in _items(entry.get("dns_sd_configs")):
                if isinstance(dns, dict) and str(dns.get("type", "SRV")).upper() in ("A", "AAAA") and dns.get("port"):
                    found += [(entry, f"{name}:{dns['port']}") for name in _items(dns.get("names"))]
        return found

    def _file_sd_groups(self, entry: dict) -> list:
        """The target groups of an entry's file_sd_configs files (JSON or YAML lists), their patterns resolved
        like rule_files: relative to prometheus.yml inside the container, through its mounts."""
        where = self.stack.rel(self.config_path)
        groups = []
        for sd in _items(entry.get("file_sd_configs")):
            for pattern in _items(sd.get("files")) if isinstance(sd, dict) else []:
                host = self.service.host_path_for(posixpath.normpath(posixpath.join(self.config_dir, str(pattern))))
                matches = glob_paths(str(host), f"{where}: file_sd_configs {pattern}") if host is not None else []
                for path in matches:
                    if path.is_file() and self.stack.inside(path):
                        groups += _items(load_yaml(path, self.stack.rel(path)))
        return groups

    @cached_property
    def config_dir(self) -> str:
        """prometheus.yml's directory inside the container, against which its relative paths resolve."""
        config_file = flag_value(self.service.command, "--config.file") or DEFAULT_CONFIG_FILE
        return posixpath.dirname(posixpath.join("/prometheus", config_file))  # the image's workdir

    def pattern_problems(self) -> list[str]:
        config, compose = self.stack.rel(self.config_path), self.stack.rel(self.stack.compose.files[0])
        if not self.patterns:
            return [f"{config}: no rule_files: Prometheus loads no alerting rule"]
        problems = []
        for p in self.patterns:
            if p.outside:
                problems.append(f"{config}: rule_files pattern {p.pattern} leads outside the stack dir "
                                f"({len(p.outside)} file(s), through a mount or a symlink): not read")
            elif p.host is None and not p.files:
                problems.append(f"{compose}: rule_files pattern {p.pattern} is not visible in the {self.service.name} "
                                f"container (no bind mount covers {posixpath.dirname(p.container)})")
            elif not p.files:
                problems.append(f"{config}: rule_files pattern {p.pattern} matches no file "
                                f"({self.stack.rel(p.host)} on the host)")
        return problems

    @property
    def rule_files(self) -> list[Path]:
        """The rule files Prometheus loads; when a pattern is not visible in its container (not mounted),
        the files it would name beside prometheus.yml on disk, so that they are still judged."""
        return self.stack.needs("alert rule files", self._rule_files)

    def _rule_files(self) -> list[Path]:
        files = {f for p in self.patterns for f in p.files}
        for p in self.patterns:
            if p.host is None and not p.files:
                files |= set(self._beside_config(p.pattern))
        if not files:
            raise StackError(self.pattern_problems()[0])
        return sorted(files)

    def _beside_config(self, pattern: str) -> list[Path]:
        """Files a rule_files pattern names relative to prometheus.yml's own directory on disk."""
        config_dir = self.config_dir
        container = posixpath.normpath(posixpath.join(config_dir, pattern))
        if not container.startswith(config_dir.rstrip("/") + "/"):
            return []
        relative = container[len(config_dir.rstrip("/")) + 1:]
        matches = glob_paths(str(self.config_path.parent / relative), f"{self.stack.rel(self.config_path)}: {pattern}")
        return [path for path in matches if path.is_file()]

    @property
    def rules(self) -> list[Rule]:
        return self.stack.needs("alert rules", lambda: [
            rule for path in self.rule_files for rule in read_rule_file(path, self.stack.rel(path))])

    @property
    def alerts(self) -> list[Rule]:
        return [rule for rule in self.rules if rule.kind == "alert"]

    def alert_for(self, name: str) -> Rule | None:
        """The alert of that name, else, for a required alert whose duty is known (ALERT_DUTIES), the first
        alert whose name and expression speak of that duty: a stack names its alerts its own way."""
        exact = next((rule for rule in self.alerts if rule.name == name), None)
        if exact is not None or name not in ALERT_DUTIES:
            return exact
        return next((rule for rule in self.alerts if ALERT_DUTIES[name].watched_by(rule)), None)


@dataclass(frozen=True)
class AlertDuty:
    """What a required alert watches, told by words of an alert's name and expression (every pattern found)."""

    what: str
    patterns: tuple[re.Pattern, ...]

    def watched_by(self, rule: Rule) -> bool:
        text = f"{rule.name} {rule.spec.get('expr', '')}"
        return all(pattern.search(text) for pattern in self.patterns)

    def missing(self, name: str) -> str:
        return f"no alert for {self.what} (none named {name}, none whose name and expression speak of it)"


# The reference profile's required alerts by what they watch: another stack's alert of another name that watches
# the same thing is that alert (an SSLCertExpiresSoon over probe_ssl_earliest_cert_expiry, a PostgresDown on `up`).
ALERT_DUTIES = {
    "DatabasePoolExhausted": AlertDuty("connection-pool exhaustion", (
        re.compile(r"pool", re.I), re.compile(r"connection|database|postgres|\bdb|db_|pg_|sql", re.I))),
    "TLSCertificateExpiringSoon": AlertDuty("certificate expiry", (
        re.compile(r"cert|ssl|tls", re.I), re.compile(r"expir|days_?left|remaining|not_?after", re.I))),
    "CircuitBreakerOpen": AlertDuty("an open circuit breaker", (re.compile(r"breaker|circuit", re.I),)),
    "ServiceHealthCheckFailing": AlertDuty("a service that is down", (
        re.compile(r"\bup\s*(?:==|<|!=)\s*[01]\b|\bprobe_success\b|health|down", re.I),)),
}


def _items(value) -> list:
    return value if isinstance(value, list) else []


def host_of(target: str) -> str:
    """The host of a `host:port` target (`[::1]:9090` → `::1`)."""
    return target.rsplit(":", 1)[0].strip("[]")


def read_rule_file(path: Path, rel: str) -> list[Rule]:
    """The rules of one file, checked for the structure Prometheus needs (groups → rules → alert|record + expr)."""
    doc = load_yaml(path, rel)
    if doc is None:
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise StackError(f"{rel}: not a Prometheus rule file (no 'groups' list)")
    rules = []
    for g, group in enumerate(doc["groups"], 1):
        if not isinstance(group, dict) or not isinstance(group.get("rules"), list):
            raise StackError(f"{rel}: group {g} has no 'rules' list")
        for r, spec in enumerate(group["rules"], 1):
            kinds = [k for k in ("alert", "record") if isinstance(spec, dict) and k in spec]
            if len(kinds) != 1 or not isinstance(spec[kinds[0]], str):
                raise StackError(f"{rel}: group {group.get('name')!r} rule {r} needs exactly one of alert/record")
            if not isinstance(spec.get("expr"), str) or not spec["expr"].strip():
                raise StackError(f"{rel}: {spec[kinds[0]]}: no expr")
            for key in ("labels", "annotations"):
                if not isinstance(spec.get(key) or {}, dict):
                    raise StackError(f"{rel}: {spec[kinds[0]]}: {key} is not a mapping")
            rules.append(Rule(path, kinds[0], spec[kinds[0]], spec, ("groups", g - 1, "rules", r - 1)))
    return rules


def promtool(stack, args: list[str], path: Path, reads: list[Path] | None = None) -> tuple[bool, str]:
    """Run promtool on one file (from its directory); (passed, one-line output). `reads`: every file it
    reads (the file itself by default), which make the run's identity (io.pure: once per content)."""
    require_regular(path, stack.rel(path))  # promtool would block on a FIFO
    done = pure.run(["promtool", *args, path.name], reads=reads or [path], cwd=path.parent, timeout=stack.timeout,
                    where=f"promtool {args[-1]} {stack.rel(path)}")
    out = (done.stdout + done.stderr).decode(errors="replace")
    if done.returncode == 0:
        return True, " ".join(line.strip() for line in out.splitlines() if "SUCCESS" in line)
    failed = out.split("FAILED:", 1)[-1]
    lines = dict.fromkeys(line.strip().removeprefix(f"{path.name}: ") for line in failed.splitlines() if line.strip())
    detail = " ".join(" ".join(lines).split()) or f"exit {done.returncode}"
    if " exp:[" in detail:  # a unit test's alert dump: keep which test, alert and time
        detail = detail.split(" exp:[", 1)[0].rstrip(", ") + ": fired alerts differ from the expected ones"
    return False, detail if len(detail) <= 300 else detail[:300] + "…"


def rule_test_reads(stack, test_file: Path) -> tuple[list[Path], list[str]]:
    """(the files promtool reads to run a unit-test file: it and what its rule_files match, relative to
    its dir; why it would read outside the stack dir: the file or a rule_files entry leads out, absolute,
    `..` or a symlink). promtool quotes the lines of a file it cannot parse, so an outside file (a shadow
    file) would reach the report."""
    where = stack.rel(test_file)
    if not stack.inside(test_file):
        return [test_file], [f"{where}: leads outside the stack dir (a symlink): not run"]
    try:
        doc = load_yaml(test_file, where)
    except StackError:  # promtool reads no rule file from a test file it cannot parse: let it say why
        return [test_file], []
    patterns = doc.get("rule_files") if isinstance(doc, dict) else None
    reads, problems = [test_file], []
    for pattern in patterns if isinstance(patterns, list) else []:
        target = test_file.parent / str(pattern)
        matches = glob_paths(str(target), f"{where}: rule_files {pattern}")
        if not all(stack.inside(match) for match in matches or [target]):
            problems.append(f"{where}: rule_files entry {pattern} leads outside the stack dir: not run")
        reads += matches
    return reads, problems


def rule_test_files(stack, directory: Path) -> tuple[list[Path], list[Path]]:
    """(unit-test files, other YAML files) of a rule tests dir, told apart by content as init finds the
    dir: a YAML file (*.yml, *.yaml) that parses as a mapping without a `tests:` key is something else
    kept beside the tests (a rule file, prometheus.yml, alertmanager.yml), which promtool would refuse
    as a test; a file that does not parse stays a test file, for promtool to say what is wrong with it.
    A file leading outside the stack dir is not read to be told apart: it stays a test file, for the check
    to refuse."""
    tests: list[Path] = []
    others: list[Path] = []
    for path in list_dir(directory, stack.rel(directory)):
        if path.suffix not in (".yml", ".yaml") or not path.is_file():
            continue
        if not stack.inside(path):
            tests.append(path)
            continue
        try:
            doc = load_yaml(path, stack.rel(path))
        except StackError:
            doc = None
        (others if isinstance(doc, dict) and "tests" not in doc else tests).append(path)
    return tests, others


def live_alerts(live) -> list[dict]:
    """The alerting rules the running Prometheus evaluates (each with its group's `file`)."""
    groups = live.prometheus.api("/api/v1/rules", {"type": "alert"}).get("groups") or []
    return [{**rule, "file": group.get("file", "?")} for group in groups for rule in group.get("rules") or []
            if rule.get("type") == "alerting"]
