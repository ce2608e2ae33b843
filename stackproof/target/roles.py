"""The roles the checks need, found in the compose model by what services do, not by their names.

A check never names a service: it asks `stack.roles` for the prometheus, the postgres, the TLS
terminator... Each role is recognised by signals of the service definition (image, command,
entrypoint, ports, mounts, secrets); the best-scoring service wins, a tie or no candidate is a
one-line error that says what was looked for and how to declare the role in the profile's
`roles:` section. A role found only under an inactive compose profile is named as such.
The TLS monitor may also be a cron file of the repository that calls the monitor script.

Hand-written because no library models "which container is the Prometheus"; the signals are
the conventions of the official images and of Compose itself.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from stackproof.target.compose import ComposeModel, Service
from stackproof.target.shell import SimpleCommand, simple_commands
from stackproof.errors import NotDeclared, StackError
from stackproof.io.files import read_stack_file, walk_files

TEXTFILE_FLAG = "--collector.textfile.directory"
CRON_PREFIX = "cron:"
MAX_CRON_BYTES = 64 * 1024
SKIP_DIRS = frozenset({".git", "node_modules", ".venv", "__pycache__", ".tox"})
REPOSITORY_ENTRIES = 100_000  # entries of the stack dir searched for cron files


def _image(svc: Service) -> str:
    """The image's repository name, lower case, without registry port or tag."""
    image = (svc.image or "").lower().split("@")[0]
    last = image.rsplit("/", 1)
    return (last[0] + "/" if len(last) > 1 else "") + last[-1].split(":")[0]


def _image_has(svc: Service, *words: str) -> bool:
    parts = set(re.split(r"[/_.:-]+", _image(svc)))
    joined = _image(svc)
    return any(word in parts or joined.endswith(word) for word in words)


def _args(svc: Service) -> list[str]:
    return [*svc.entrypoint, *svc.command]


def _has_arg(svc: Service, predicate: Callable[[str], bool]) -> bool:
    return any(predicate(arg) for arg in _args(svc))


def _mounts_target(svc: Service, predicate: Callable[[str], bool]) -> bool:
    return any(predicate(m.target) for m in svc.volumes)


def _program(svc: Service) -> str:
    args = _args(svc)
    return PurePosixPath(args[0]).name if args else ""


@dataclass(frozen=True)
class Signal:
    what: str  # how the report and init describe it
    weight: int
    test: Callable[[Service], bool]


@dataclass(frozen=True)
class RoleSpec:
    role: str
    title: str
    signals: tuple[Signal, ...]
    minimum: int = 2  # a candidate needs at least this score


def _specs(stack) -> dict[str, RoleSpec]:
    try:
        tls_cert = stack.path("tls_cert")
    except NotDeclared:  # a certificate only on the host: the terminator is found by its other signals
        tls_cert = None
    return {
        "prometheus": RoleSpec("prometheus", "Prometheus", (
            Signal("a prometheus image", 2, lambda s: _image_has(s, "prometheus")),
            Signal("a prometheus program", 2, lambda s: _program(s) == "prometheus"),
            Signal("--storage.tsdb.path", 2, lambda s: _has_arg(s, lambda a: a.startswith("--storage.tsdb"))),
            Signal("a prometheus.yml config", 2, lambda s: _has_arg(s, lambda a: a.endswith("prometheus.yml"))
                   or _mounts_target(s, lambda t: t.endswith("prometheus.yml"))),
            Signal("port 9090", 1, lambda s: 9090 in s.ports),
        )),
        "alertmanager": RoleSpec("alertmanager", "Alertmanager", (
            Signal("an alertmanager image", 2, lambda s: _image_has(s, "alertmanager")),
            Signal("an alertmanager program", 2, lambda s: _program(s) == "alertmanager"),
            Signal("an alertmanager.yml config", 2, lambda s: _has_arg(s, lambda a: a.endswith("alertmanager.yml"))
                   or _mounts_target(s, lambda t: t.endswith("alertmanager.yml"))),
            Signal("--cluster.* flags", 1, lambda s: _has_arg(s, lambda a: a.startswith("--cluster."))),
            Signal("port 9093", 1, lambda s: 9093 in s.ports),
        )),
        "node_exporter": RoleSpec("node_exporter", "node-exporter with the textfile collector", (
            Signal(TEXTFILE_FLAG, 3, lambda s: _has_arg(s, lambda a: a.startswith(TEXTFILE_FLAG))),
        ), minimum=3),
        "postgres": RoleSpec("postgres", "PostgreSQL", (
            Signal("a postgres image", 2, lambda s: _image_has(s, "postgres", "postgresql", "postgis", "timescaledb")),
            Signal("a postgres program", 2, lambda s: _program(s) in ("postgres", "postmaster")),
            Signal("POSTGRES_*/PGDATA environment", 1,
                   lambda s: any(k.startswith("POSTGRES_") or k == "PGDATA" for k in s.environment)),
            Signal("port 5432", 1, lambda s: 5432 in s.ports),
            Signal("a /var/lib/postgresql mount", 1, lambda s: _mounts_target(s, lambda t: t.startswith("/var/lib/postgresql"))),
        )),
        "tls_terminator": RoleSpec("tls_terminator", "TLS terminator", (
            Signal(f"a mount of {stack.rel(tls_cert) if tls_cert else 'the certificate'}", 2,
                   lambda s: tls_cert is not None and _mounts_host_file(s, tls_cert)),
            Signal("port 443", 1, lambda s: 443 in s.ports or 8443 in s.ports),
            Signal("a proxy image (nginx, traefik, caddy, haproxy, envoy)", 1,
                   lambda s: _image_has(s, "nginx", "traefik", "caddy", "haproxy", "envoy", "openresty")),
        ), minimum=3),
    }


def _mounts_host_file(svc: Service, path: Path) -> bool:
    """Whether one of the service's bind mounts brings the host file `path` into its container."""
    text = str(path)
    return any(m.type == "bind" and (text == m.source or text.startswith(m.source.rstrip("/") + "/"))
               for m in svc.volumes)


@dataclass(frozen=True)
class Found:
    """A role's service, and how it was found (for evidence and `stackproof init`)."""

    service: Service
    how: str


@dataclass(frozen=True)
class CronJob:
    """A cron line of the repository that runs the TLS monitor script."""

    path: Path
    line: str
    env: dict[str, str] = field(default_factory=dict)  # VAR=value assignments before the command
    argv: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TlsMonitor:
    """Who runs the TLS monitor: a compose service, or a cron file of the repository."""

    service: Service | None
    cron: CronJob | None
    how: str

    @property
    def label(self) -> str:
        return f"service {self.service.name}" if self.service else f"cron file {self.cron.path.name if self.cron else '?'}"

    @property
    def declaration(self) -> str:
        """The value of roles.tls_monitor that names it."""
        return self.service.name if self.service else ""

    def invocation(self, script: str) -> SimpleCommand | None:
        """How the monitor `script` is called: the words from the script's own on (an interpreter before it
        dropped) and the environment it gets (the service's or the cron file's, then the assignments in
        front of the command). A shell's `-c` string is split into its commands first; a command line
        that never names the script (an image whose entrypoint runs it) is taken whole when it is one
        command or none. None: several commands, none of them the script."""
        declared: dict[str, str | None]
        if self.service:
            argv, declared = [*self.service.entrypoint, *self.service.command], dict(self.service.environment)
        elif self.cron:
            argv, declared = list(self.cron.argv), dict(self.cron.env)
        else:
            return None
        env = {name: value for name, value in declared.items() if value is not None}  # None: not set
        commands = simple_commands(argv)
        for command in commands:
            named = [i for i, word in enumerate(command.argv) if PurePosixPath(word).name == script]
            if named:
                return SimpleCommand(command.argv[named[0]:], {**env, **command.env})
        if len(commands) <= 1:
            only = commands[0] if commands else SimpleCommand([])
            return SimpleCommand(only.argv, {**env, **only.env})
        return None


class Roles:
    """The role lookups of one stack; each result (or error) is an input of the checks (stack.needs)."""

    def __init__(self, stack):
        self.stack = stack

    @property
    def compose(self) -> ComposeModel:
        return self.stack.compose

    def _where(self) -> str:
        return self.stack.rel(self.compose.files[0])

    # --- single-service roles ------------------------------------------------------

    def find(self, role: str) -> Found:
        return self.stack.needs(f"role {role}", lambda: self._find(role))

    def service(self, role: str) -> Service:
        return self.find(role).service

    def name(self, role: str) -> str:
        return self.find(role).service.name

    def _find(self, role: str) -> Found:
        declared = self.stack.profile["roles"][role]
        spec = _specs(self.stack)[role]
        if declared:
            return Found(self._declared(role, declared), f"declared in the profile (roles.{role})")
        scored = self._score(spec, self.compose.services.values())
        if not scored:
            raise StackError(self._not_found(spec))
        best = max(score for score, _, _ in scored)
        top = [(svc, why) for score, svc, why in scored if score == best]
        if len(top) > 1:
            names = ", ".join(svc.name for svc, _ in top)
            raise StackError(f"{self._where()}: {spec.title}: several services fit ({names}); "
                             f"declare the right one in stackproof.yml roles.{role}")
        svc, why = top[0]
        return Found(svc, f"discovered: {', '.join(why)}")

    @staticmethod
    def _score(spec: RoleSpec, services) -> list[tuple[int, Service, list[str]]]:
        scored = []
        for svc in services:
            hits = [signal for signal in spec.signals if signal.test(svc)]
            score = sum(signal.weight for signal in hits)
            if score >= spec.minimum:
                scored.append((score, svc, [signal.what for signal in hits]))
        return scored

    def _declared(self, role: str, name: str) -> Service:
        if name in self.compose.services:
            return self.compose.services[name]
        inactive = self.inactive(name)
        if inactive:
            raise StackError(inactive)
        raise StackError(f"{self._where()}: no service {name!r} (stackproof.yml roles.{role})")

    def inactive(self, name: str, role_title: str | None = None) -> str | None:
        """The message for a service that exists only under an inactive compose profile, else None."""
        everything = self.stack.compose_all_profiles()
        svc = everything.services.get(name) if everything else None
        if svc is None or not svc.profiles:
            return None
        profiles = ", ".join(f"'{p}'" for p in svc.profiles)
        active = ", ".join(self.compose.profiles) or "none"
        who = f"{role_title} ({name})" if role_title else name
        return (f"{self._where()}: {who} is in compose profile {profiles}, which is not active (active: {active}): "
                f"set COMPOSE_PROFILES={svc.profiles[0]} or compose.profiles: [{svc.profiles[0]}] in stackproof.yml")

    def _not_found(self, spec: RoleSpec) -> str:
        everything = self.stack.compose_all_profiles()
        if everything is not None:
            hidden = [svc for _, svc, _ in self._score(spec, everything.services.values())
                      if svc.name not in self.compose.services and svc.profiles]
            message = self.inactive(hidden[0].name, spec.title) if hidden else None
            if message:  # always, for a hidden service (it has a profile)
                return message
        looked = ", ".join(signal.what for signal in spec.signals)
        return (f"{self._where()}: no {spec.title} service found (looked for {looked}); "
                f"declare it in stackproof.yml roles.{spec.role}")

    # --- the API services ------------------------------------------------------------

    def api_services(self) -> list[Service]:
        return self.stack.needs("role api_services", self._api_services)

    def _api_services(self) -> list[Service]:
        declared = self.stack.profile["roles"]["api_services"]
        if declared:
            return [self._declared("api_services", name) for name in declared]
        secret = self.stack.api_key_secret()
        key_file = self.compose.secrets.get(secret)
        found = [svc for svc in self.compose.services.values()
                 if any(ref.source == secret for ref in svc.secrets)
                 or (key_file is not None and _mounts_host_file(svc, key_file))]
        if not found:
            raise StackError(f"{self._where()}: no service mounts the API key secret {secret!r} (profile api_key.secret); "
                             "declare the API services in stackproof.yml roles.api_services")
        return found

    def metrics_candidates(self) -> list[Service]:
        """The services that may export the pool gauges: the declared metrics_service, else every API service."""
        declared = self.stack.profile["roles"]["metrics_service"]
        if declared:
            return [self._declared("metrics_service", declared)]
        return self.api_services()

    # --- the TLS monitor -----------------------------------------------------------

    def tls_monitor(self) -> TlsMonitor:
        return self.stack.needs("role tls_monitor", self._tls_monitor)

    def _tls_monitor(self) -> TlsMonitor:
        declared = self.stack.profile["roles"]["tls_monitor"]
        script = self.stack.path("monitor_script").name
        if declared.startswith(CRON_PREFIX):
            path = self.stack.profile.stack_path(declared[len(CRON_PREFIX):].strip(), "roles.tls_monitor")
            job = cron_job(path, script, self.stack.rel(path))
            if job is None:
                raise StackError(f"{self.stack.rel(path)}: no cron line runs {script} (stackproof.yml roles.tls_monitor)")
            return TlsMonitor(None, job, "declared in the profile (roles.tls_monitor)")
        if declared:
            return TlsMonitor(self._declared("tls_monitor", declared), None, "declared in the profile (roles.tls_monitor)")
        services = [(svc, why) for svc in self.compose.services.values() if (why := self._runs_monitor(svc, script))]
        if len(services) == 1:
            return TlsMonitor(services[0][0], None, f"discovered: {services[0][1]}")
        if len(services) > 1:
            names = ", ".join(svc.name for svc, _ in services)
            raise StackError(f"{self._where()}: several services run {script} ({names}); "
                             "declare the right one in stackproof.yml roles.tls_monitor")
        jobs = [job for path in cron_files(self.stack.root) if (job := cron_job(path, script, self.stack.rel(path)))]
        if len(jobs) == 1:
            return TlsMonitor(None, jobs[0], f"discovered: cron line of {self.stack.rel(jobs[0].path)} runs {script}")
        if len(jobs) > 1:
            raise StackError(f"several cron files run {script} ({', '.join(self.stack.rel(j.path) for j in jobs)}); "
                             "declare one in stackproof.yml roles.tls_monitor: cron:<path>")
        return self._no_monitor(script)

    def _no_monitor(self, script: str):
        everything = self.stack.compose_all_profiles()
        if everything is not None:
            for svc in everything.services.values():
                if svc.name not in self.compose.services and svc.profiles and self._runs_monitor(svc, script):
                    raise StackError(self.inactive(svc.name, "the TLS monitor"))
        raise StackError(f"{self._where()}: no service or cron file runs the TLS monitor {script} (looked for it in "
                         "services' command, entrypoint and Dockerfile, and in cron files of the repository); "
                         "declare it in stackproof.yml roles.tls_monitor (a service, or cron:<path>)")

    def _runs_monitor(self, svc: Service, script: str) -> str:
        """Why `svc` runs the monitor script, or ''."""
        if any(script in arg for arg in _args(svc)):
            return f"its command runs {script}"
        dockerfile = self._dockerfile(svc)
        if dockerfile is not None and script in dockerfile:
            return f"its image copies {script} (Dockerfile)"
        return ""

    def _dockerfile(self, svc: Service) -> str | None:
        """The start of the service's Dockerfile (its first MAX_CRON_BYTES: a `COPY` of the monitor is
        near the top), or None: no build, or not a regular file inside the stack dir (a Dockerfile linked
        to /dev/zero, a FIFO, a build context outside is never read)."""
        if svc.build_context is None:
            return None
        path = svc.build_context / (svc.dockerfile or "Dockerfile")
        if not self.stack.inside(path):
            return None
        try:
            return read_stack_file(path, self.stack.rel(path), MAX_CRON_BYTES, truncate=True).decode(errors="replace")
        except StackError:
            return None


def cron_files(root: Path) -> list[Path]:
    """Cron files of the repository: crontab*, *.cron, or any file under a cron* directory (the repository
    walked without recursion, SKIP_DIRS not entered, at most REPOSITORY_ENTRIES entries)."""
    found = []
    for path in walk_files(root, "the stack dir", REPOSITORY_ENTRIES, SKIP_DIRS):
        if not path.is_file() or path.is_symlink():
            continue
        name, parent = path.name.lower(), path.parent.name.lower()
        if name.startswith("crontab") or name.endswith(".cron") or parent.startswith("cron"):
            found.append(path)
    return found


ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
CRON_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")


def cron_job(path: Path, script: str, rel: str) -> CronJob | None:
    """The first line of a cron file (crontab or /etc/cron.d format) whose command runs `script`."""
    try:
        text = read_stack_file(path, rel, MAX_CRON_BYTES).decode(errors="replace")
    except StackError:  # larger than a cron file, or swapped for a special file since it was listed
        return None
    variables: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if CRON_VARIABLE.match(line):  # NAME=value lines set the environment of the lines below
            name, _, value = line.partition("=")
            variables[name.strip()] = value.strip().strip("'\"")
            continue
        if script not in line:
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            raise StackError(f"{rel}: cron line does not parse: {line[:120]}") from None
        words = words[1:] if words[0].startswith("@") else words[5:]
        if words and not ENV_ASSIGNMENT.match(words[0]) and script not in words[0] and "/" not in words[0]:
            words = words[1:]  # the user field of /etc/cron.d files
        env = dict(variables)
        while words and ENV_ASSIGNMENT.match(words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        return CronJob(path, line, env, words)
    return None
