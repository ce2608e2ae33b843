"""The stack's scripts, called through the interface its profile declares (`scripts:`).

A stack's monitor and rotate scripts take their own arguments, environment variables,
prompt answers and exit codes; the profile's `scripts` section says how to call them,
with placeholders for what the suite supplies (DEFAULTS holds the reference stack's
interface). The checks judge behaviour through that interface: the monitor's exit code,
status line and metrics against certificates made for the purpose, the rotation's key,
backup and audit line. Every run happens in a `sandbox.ScriptBox`, on copies.

A declared interface that cannot be right (an unknown placeholder, no way to pass the
certificate, a metric the script does not write) is an `InterfaceError` whose message
starts with the profile key, so a stack laid out differently gets one clear failure
about its profile, never "could not call the script our way".
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import shutil
import string
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from stackproof import redact
from stackproof.errors import NotDeclared, StackError
from stackproof.resources.keys import KeyMaterial, KeyStrength, canary_like, key_strength, modes_text, sha256, strength_problem
from stackproof.io.files import read_stack_file
from stackproof.io.sandbox import ScriptBox

PREFETCH_WORKERS = 4  # monitor runs at once: they wait more than they compute
STATUSES = ("ok", "warning", "critical", "error")
STATUS_METRIC_VALUES = {"ok": 0, "warning": 1, "critical": 2}  # the status gauge's values (no series on error)
MONITOR_PLACEHOLDERS = ("script", "cert", "metrics_file", "warn_days", "crit_days", "workdir")
ROTATE_PLACEHOLDERS = ("script", "secrets_dir", "key_file", "key_name", "audit_log", "workdir")
OUTPUT_FILE_CAP = 1024 * 1024  # bytes read back of a file a script wrote
STDERR_LIMIT = 200  # characters of a script's last error line shown in a failure


class InterfaceError(StackError):
    """The profile's declared interface of a script cannot work; the message starts with the profile key."""


class InterfaceRejected(NotDeclared):
    """Called as the profile declares, the script refused the call itself (an unknown option, its usage text)
    and did nothing: a fact about the profile, not the script, so its checks are NOT PROVEN, never failed
    about arguments (whatever is wrong in the script's behaviour is still unseen)."""


# what a script prints when it refuses its arguments (getopt, argparse, bash's own usage lines)
REJECTION = re.compile(r"unknown (option|argument|flag|parameter)|unrecognized (option|argument)s?|invalid option|"
                       r"illegal option|unexpected argument|no such option|requires an argument|missing argument|"
                       r"^[ \t]*usage:", re.I | re.M)  # within one line: `^\s*` spans the following blank lines


def rejected_interface(code: int, output: bytes, untouched: bool, where: str, box: ScriptBox) -> InterfaceRejected | None:
    """The call was refused: a non-zero exit, nothing written, and a refusal of the arguments in its output."""
    if code == 0 or not untouched or REJECTION.search(redact.clean(output.decode("utf-8", errors="replace"))) is None:
        return None
    first = next((line for line in output.decode("utf-8", errors="replace").splitlines() if line.strip()), "")
    line = redact.clean(box.outside(first.strip()), limit=STDERR_LIMIT)
    return InterfaceRejected(f"the profile's interface does not match the script: {where}: exit {code}: {line} "
                             "(fix scripts.* in stackproof.yml, or re-run stackproof init)")


# --- placeholders ---------------------------------------------------------------------------


def fields_of(template: str, key: str) -> list[str]:
    """The placeholders of a template; a malformed one is an InterfaceError naming `key`."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InterfaceError(f"{key}: {template!r}: {exc}") from None
    found = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion or not name:
            raise InterfaceError(f"{key}: {template!r}: placeholders are plain {{name}}")
        found.append(name)
    return found


def fill(template: str, values: dict[str, str], key: str) -> str:
    """`template` with its placeholders replaced; an unknown one is an InterfaceError naming `key`."""
    for name in fields_of(template, key):
        if name not in values:
            raise InterfaceError(f"{key}: unknown placeholder {{{name}}} (known: "
                                 + ", ".join(f"{{{known}}}" for known in values) + ")")
    return template.format_map(values)


def _strings(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(part, str) for part in value):
        raise InterfaceError(f"{key}: must be a non-empty list of strings (the command and its arguments)")
    return value


def _env(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, (str, int)) for k, v in value.items()):
        raise InterfaceError(f"{key}: must map variable names to strings")
    return {name: str(text) for name, text in value.items()}


def _command_and_env(cfg: dict, key: str, placeholders) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """A script interface's `command` and `env`, type-checked, every placeholder in them known; and the
    placeholders as blank values, for checking the interface's other templates."""
    if cfg["command"] == []:  # what stackproof init writes for a script whose usage it could not read
        raise NotDeclared(f"{key}.command: how to call the script is not declared (stackproof init could not read "
                          "it from the script's usage text: declare it in stackproof.yml)")
    command, env = _strings(cfg["command"], f"{key}.command"), _env(cfg["env"], f"{key}.env")
    values = {name: "" for name in placeholders}
    for part in command:
        fill(part, values, f"{key}.command")
    for name, value in env.items():
        fill(value, values, f"{key}.env.{name}")
    return command, env, values


def _stdin(value: Any, key: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InterfaceError(f"{key}: must be null (stdin closed) or the text to feed")
    return value


def where_used(placeholder: str, command: list[str], env: dict[str, str], section: str) -> str | None:
    """The profile key that passes `placeholder` to the script, or None."""
    if any(f"{{{placeholder}}}" in part for part in command):
        return f"scripts.{section}.command"
    return next((f"scripts.{section}.env.{name}" for name, value in env.items() if f"{{{placeholder}}}" in value), None)


def _last_line(data: bytes, box: ScriptBox) -> str:
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    return redact.clean(box.outside(lines[-1]), limit=STDERR_LIMIT) if lines else "no output"


# --- the monitor ---------------------------------------------------------------------------


class ScriptRunFailed(StackError):
    """The sandboxed run itself failed (a hang past the timeout, the sandbox refused): the script is
    not run again in this session, so a hanging script costs one timeout (the interface probe's, or
    those of the runs prefetched together), not one per scenario."""


@dataclass(frozen=True)
class MonitorInterface:
    command: list[str]
    env: dict[str, str]
    stdin: str | None
    exit_codes: dict[str, int | None]
    status_line: str | None
    metrics: dict[str, str | None]
    labels: dict[str, str | None]

    @classmethod
    def from_profile(cls, cfg: dict) -> "MonitorInterface":
        key = "scripts.monitor"
        command, env, values = _command_and_env(cfg, key, MONITOR_PLACEHOLDERS)
        for needed in ("cert", "metrics_file"):
            if where_used(needed, command, env, "monitor") is None:
                raise InterfaceError(f"{key}.command: no {{{needed}}} placeholder, in it or in {key}.env: "
                                     f"the script would not get the {needed.replace('_', ' ')}")
        codes = cfg["exit_codes"]
        for status in STATUSES:
            if codes.get(status) is not None and (not isinstance(codes[status], int) or isinstance(codes[status], bool)):
                raise InterfaceError(f"{key}.exit_codes.{status}: must be an exit code (integer) or null")
        line = cfg["status_line"]
        if line is not None:
            if not isinstance(line, str):
                raise InterfaceError(f"{key}.status_line: must be a template string or null")
            used = fields_of(line, f"{key}.status_line")
            if used.count("status") != 1:
                raise InterfaceError(f"{key}.status_line: needs exactly one {{status}} placeholder")
            fill(line, {**values, "status": ""}, f"{key}.status_line")
        for section in ("metrics", "labels"):
            for role, name in cfg[section].items():
                if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name)):
                    raise InterfaceError(f"{key}.{section}.{role}: {name!r} is not a Prometheus name")
        if not (cfg["metrics"].get("expiry") or cfg["metrics"].get("days_left")):
            raise InterfaceError(f"{key}.metrics: neither expiry nor days_left is named: nothing shows the "
                                 "certificate's date")
        return cls(command, env, _stdin(cfg["stdin"], f"{key}.stdin"), dict(codes), line,
                   dict(cfg["metrics"]), dict(cfg["labels"]))

    def status_pattern(self, values: dict[str, str]) -> re.Pattern:
        """The status line as a pattern: its words in order on one line (other words may lie between),
        {status} standing for the status word."""
        assert self.status_line is not None, "no status line declared"  # callers check it first
        words = []
        for word in self.status_line.split():
            regex = ""
            for literal, name, _, _ in string.Formatter().parse(word):
                regex += re.escape(literal)
                if name == "status":
                    regex += r"(?P<status>[A-Za-z]+)"
                elif name is not None:
                    regex += re.escape(values[name])
            words.append(regex)
        return re.compile(r"(?:^|\s)" + r"(?:\s+\S+)*?\s+".join(words) + r"(?=\s|$)")


@dataclass
class MonitorRun:
    code: int
    stdout: str
    stderr: str
    metrics: str | None  # None: the script wrote no metrics file
    values: dict[str, str]  # the placeholders of this run, as the script saw them

    @property
    def cert(self) -> str:
        return self.values["cert"]


def parse_metrics(text: str) -> list:
    """Samples of a Prometheus text-format file; a parse error is one line."""
    try:
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    except Exception as exc:  # the parser raises ValueError, TypeError, IndexError...
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"metrics file does not parse as Prometheus text format ({first})") from None


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def days_left(cert: x509.Certificate, now: float | None = None) -> int:
    """Whole days until notAfter, rounded down (negative once expired), as the monitor computes it."""
    return math.floor((cert.not_valid_after_utc.timestamp() - (time.time() if now is None else now)) / 86400)


def status_for(days: int, warn: int, crit: int) -> str:
    return "critical" if days < crit else "warning" if days < warn else "ok"


TEST_ISSUER = x509.Name([
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stackproof"),
    x509.NameAttribute(NameOID.COMMON_NAME, "stackproof test CA"),
])


# Certificates made for the monitor's runs, reused within a process while their days left cannot have changed
# (notAfter is an hour past the day): with them, a monitor run on the same script and interface is the same run
# (see Monitor._run), as the self-tests make hundreds of suite runs per process.
CERTIFICATE_REUSE_SECONDS = 1800
_certificates: dict[tuple[int, str, int], tuple[float, bytes, x509.Certificate]] = {}


def make_certificate(path: Path, days: int, cn: str = "localhost", starts_in_days: int = 0) -> x509.Certificate:
    """A PEM certificate with `days` whole days left (notAfter one hour past the day), signed by a
    throwaway CA named TEST_ISSUER (EC P-256: fast); valid from 400 days ago, or, with `starts_in_days`,
    from that many days in the future (not valid yet). The same one for the same arguments for
    CERTIFICATE_REUSE_SECONDS."""
    made = _certificates.get((days, cn, starts_in_days))
    if made is not None and time.monotonic() - made[0] < CERTIFICATE_REUSE_SECONDS:
        path.write_bytes(made[1])
        return made[2]
    cert = _new_certificate(days, cn, starts_in_days)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _certificates[(days, cn, starts_in_days)] = (time.monotonic(), pem, cert)
    path.write_bytes(pem)
    return cert


def _new_certificate(days: int, cn: str, starts_in_days: int) -> x509.Certificate:
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(TEST_ISSUER)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=starts_in_days) if starts_in_days else now - dt.timedelta(days=400))
        .not_valid_after(now + dt.timedelta(days=days, hours=1))
        .sign(ca_key, hashes.SHA256())
    )
    return cert


# Monitor runs kept per content in a process, as io/pure.py keeps the tools' (see Monitor._run_key): the
# self-tests make hundreds of suite runs of the same monitor per process, each with nine runs of it (two
# thirds of a static run's CPU, `openssl x509` mostly). A run that failed (a hang) is never kept. A stack's
# run makes each run once whatever is kept: this changes nothing but the self-tests' time.
MONITOR_RUNS_KEPT = 512
_monitor_runs: OrderedDict[str, MonitorRun] = OrderedDict()
_monitor_runs_lock = threading.Lock()


class Monitor:
    """The stack's TLS monitor script, run in one box for the session, through the declared interface.

    Each run (a label) is made once, whoever asks for it: the valid certificate's run (`valid_run()`)
    proves the interface, is the TLS checks' first scenario and tells the alert checks which metrics
    the script writes. After one run that hangs or cannot start, the next ones fail at once with the
    same reason, so a hanging script costs one timeout. `interface_problem()` says whether the declared
    interface works at all."""

    VALID = "365-days-left"  # the label of the run on the valid certificate
    VALID_DAYS, VALID_CN = 365, "localhost"

    def __init__(self, stack, force_executable: bool = False):
        self.stack = stack
        self.force_executable = force_executable  # run the copy whatever the script's exec bit
        self.script = stack.path("monitor_script")
        self.rel = stack.rel(self.script)
        self.box: ScriptBox | None = None
        self.broken: str | None = None
        self._probe: str | None | Literal[False] | InterfaceRejected = False  # False: not probed yet
        self._prefetched: dict[str, MonitorRun | StackError] = {}  # label -> a run made ahead by prefetch()
        self._made: dict[str, MonitorRun | StackError] = {}  # label -> the run run() handed out: made once
        self._valid: tuple[Path, x509.Certificate] | None = None
        self._sources: Path | None = None  # the certificates made for the runs (a temporary dir)

    def close(self) -> None:
        if self.box is not None:
            self.box.close()
        if self._sources is not None:
            shutil.rmtree(self._sources, ignore_errors=True)

    def valid_certificate(self) -> tuple[Path, x509.Certificate]:
        """(file, certificate) of a certificate with VALID_DAYS left for VALID_CN, made once."""
        if self._valid is None:
            self._sources = Path(tempfile.mkdtemp(prefix="stackproof-tls-certs-"))
            path = self._sources / f"{self.VALID}.pem"
            self._valid = path, make_certificate(path, self.VALID_DAYS, self.VALID_CN)
        return self._valid

    def valid_run(self) -> MonitorRun:
        """The run on the valid certificate (made once)."""
        return self.run(self.VALID, self.valid_certificate()[0])

    @property
    def interface(self) -> MonitorInterface:
        return MonitorInterface.from_profile(self.stack.profile["scripts"]["monitor"])

    def _open(self) -> ScriptBox:
        if self.box is None:
            box = self.stack.sandbox.box(script_uid(self.stack), "tls-monitor")
            try:
                copy = box.copy_in(self.script, self.stack.rel(self.script), self.rel)
                if self.force_executable:
                    copy.chmod(copy.stat().st_mode | 0o555)
                box.mkdir("certs", 0o755)
                box.mkdir("out", 0o755)
            except StackError:
                box.close()
                raise
            self.box = box
        return self.box

    def prefetch(self, runs: dict[str, Path | None]) -> None:
        """Make the runs `run()` will be asked for, concurrently (PREFETCH_WORKERS at a time): each has its
        own certificate and metrics file in the box, and a run is mostly waiting on bubblewrap and
        openssl, which is most of a static run's wall time. A run that fails is kept as its error."""
        if self.broken:
            return
        todo = {label: cert for label, cert in runs.items() if label not in self._prefetched and label not in self._made}
        if not todo:
            return
        self._open()
        with ThreadPoolExecutor(max_workers=min(PREFETCH_WORKERS, len(todo))) as pool:
            futures = {label: pool.submit(self._run, label, cert) for label, cert in todo.items()}
        for label, future in futures.items():
            try:
                self._prefetched[label] = future.result()
            except StackError as exc:
                self._prefetched[label] = exc

    def run(self, label: str, cert: Path | None) -> MonitorRun:
        """Run the script on a copy of `cert` (None: a path where no file is), or hand out the run
        prefetch() made, or the one made for the label before (the interface probe is a scenario's run).
        After a run that failed (a hang, a crash of the sandbox) no other is made."""
        made = self._made.get(label)
        if made is None:
            if self.broken:
                raise StackError(f"{self.broken} (on an earlier run)")
            made = self._prefetched.pop(label, None)
            if made is None:
                try:
                    made = self._run(label, cert)
                except StackError as exc:
                    made = exc
            self._made[label] = made
        if isinstance(made, ScriptRunFailed):
            self.broken = self.broken or str(made)
        if isinstance(made, StackError):
            raise made
        return made

    def _run(self, label: str, cert: Path | None) -> MonitorRun:
        interface = self.interface
        cfg = self.stack.profile["tls"]
        box = self._open()
        cert_copy = box.root / "certs" / f"{label}.pem"
        if cert is not None and cert.exists():
            box.copy_in(cert, cert_copy.relative_to(box.root), cert.name)
        metrics_file = box.root / "out" / f"{label}.prom"
        values = {"script": box.inside(box.root / self.rel), "cert": box.inside(cert_copy),
                  "metrics_file": box.inside(metrics_file), "warn_days": str(cfg["warn_days"]),
                  "crit_days": str(cfg["crit_days"]), "workdir": box.inside(box.root)}
        command = [fill(part, values, "scripts.monitor.command") for part in interface.command]
        env = {name: fill(value, values, f"scripts.monitor.env.{name}") for name, value in interface.env.items()}
        key = self._run_key(command, env, interface.stdin, cert_copy)
        with _monitor_runs_lock:
            kept = _monitor_runs.get(key)
        if kept is not None:
            return kept
        try:
            done = box.run(command, env=env, stdin=interface.stdin, where=self.rel, timeout=self.stack.timeout)
        except StackError as exc:
            raise ScriptRunFailed(str(exc)) from None
        metrics = None
        if os.path.lexists(metrics_file):
            metrics = read_stack_file(metrics_file, f"{self.rel}: metrics file", OUTPUT_FILE_CAP).decode(errors="replace")
        made = MonitorRun(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"),
                          metrics, values)
        with _monitor_runs_lock:
            _monitor_runs[key] = made
            while len(_monitor_runs) > MONITOR_RUNS_KEPT:
                _monitor_runs.popitem(last=False)
        return made

    def _run_key(self, command: list[str], env: dict[str, str], stdin: str | None, cert_copy: Path) -> str:
        """What a run's result follows from: the script's bytes, place and exec bit, the call as filled in
        (paths inside the box are the same in every box), the certificate's bytes, the uid it runs as."""
        assert self.box is not None
        script = self.box.root / self.rel
        cert = read_stack_file(cert_copy, "certificate", OUTPUT_FILE_CAP) if os.path.lexists(cert_copy) else None
        return sha256(repr((read_stack_file(script, self.rel, OUTPUT_FILE_CAP), self.rel, script.stat().st_mode, command,
                            sorted(env.items()), stdin, cert, script_uid(self.stack))).encode())

    def status_of(self, run: MonitorRun) -> str | None:
        """The status a run reported: its status line, else its exit code when the declared codes tell the
        statuses apart; None when neither does."""
        word = self.status_word(run)
        if word in STATUSES:
            return word
        declared = {status: code for status, code in self.interface.exit_codes.items() if code is not None}
        if len(set(declared.values())) != len(declared):
            return None
        return next((status for status, code in declared.items() if code == run.code), None)

    def status_word(self, run: MonitorRun) -> str | None:
        """The status the script printed for the run's certificate, per the declared status line (None: none)."""
        if self.interface.status_line is None:
            return None
        match = self.interface.status_pattern(run.values).search(run.stdout)
        return match.group("status").lower() if match else None

    def interface_problem(self) -> str | None:
        """Why the declared interface does not work on a valid certificate (`valid_run()`), or None.
        Raises InterfaceRejected when the script refused the call itself."""
        if self._probe is False:
            try:
                self._probe = self._check_interface()
            except InterfaceRejected as exc:
                self._probe = exc
        if isinstance(self._probe, InterfaceRejected):
            raise self._probe
        return self._probe

    def _check_interface(self) -> str | None:
        try:
            interface = self.interface
            run = self.valid_run()
        except NotDeclared:  # how to call it is not known: nothing about the script (not proven)
            raise
        except StackError as exc:
            return str(exc)
        declared = {status: code for status, code in interface.exit_codes.items() if code is not None}
        box = self._open()  # opened by the run above
        if run.metrics is None:
            refused = rejected_interface(run.code, (run.stderr + "\n" + run.stdout).encode(), True, self.rel, box)
            if refused is not None:
                raise refused
            key = where_used("metrics_file", interface.command, interface.env, "monitor")
            return (f"{key}: called as declared, the script wrote no metrics file at {box.outside(run.values['metrics_file'])} "
                    f"for a valid certificate (exit {run.code}: {_last_line(run.stderr.encode() or run.stdout.encode(), box)})")
        if declared and run.code not in declared.values():
            return (f"scripts.monitor.exit_codes: exit {run.code} for a valid certificate is none of the declared codes "
                    f"({', '.join(f'{s} {c}' for s, c in declared.items())}): {_last_line(run.stderr.encode(), box)}")
        try:
            samples = parse_metrics(run.metrics)
        except ValueError as exc:
            return f"{self.rel}: {exc}"
        names = sorted({sample.name for sample in samples})
        problems = [f"scripts.monitor.metrics.{role}: no series {name!r} in the metrics file (it has: {', '.join(names) or 'none'})"
                    for role, name in interface.metrics.items() if name and name not in names]
        dated = [s for s in samples if s.name in (interface.metrics.get("expiry"), interface.metrics.get("days_left"))]
        for role, label_name in interface.labels.items():
            if label_name and dated and not any(label_name in s.labels for s in dated):
                problems.append(f"scripts.monitor.labels.{role}: no label {label_name!r} on {dated[0].name} "
                                f"(labels: {', '.join(sorted(dated[0].labels)) or 'none'})")
        if interface.status_line is not None and self.status_word(run) is None:
            first = redact.clean(box.outside((run.stdout.splitlines() or [""])[0]), limit=STDERR_LIMIT)
            problems.append(f"scripts.monitor.status_line: no stdout line matches {interface.status_line!r} "
                            f"(first line: {first!r})")
        return "; ".join(problems) or None

    def problems(self, run: MonitorRun, cert: x509.Certificate | None, expected: str, days: int | None) -> list[str]:
        """Everything the run got wrong against the declared interface, for a certificate with `days` left
        (`cert` None: a missing or unparsable file, status error)."""
        interface = self.interface
        problems = []
        code = interface.exit_codes.get(expected)
        if code is not None and run.code != code:
            problems.append(f"exit {run.code}, expected {code} ({expected})")
        if interface.status_line is not None:
            word = self.status_word(run)
            if word != expected:
                problems.append(f"status line says {word or 'nothing'}, expected status={expected}")
        if run.metrics is None:
            return problems + ["no metrics file written"]
        metrics, labels = interface.metrics, interface.labels
        samples = parse_metrics(run.metrics)
        mine = {s.name: s for s in samples if not labels.get("cert") or s.labels.get(labels["cert"]) == run.cert}
        if metrics.get("success"):
            success = mine.get(metrics["success"])
            if success is None or success.value != (0 if expected == "error" else 1):
                problems.append(f"{metrics['success']} {success.value if success else 'missing'}")
        if cert is None:
            if metrics.get("expiry") and metrics["expiry"] in mine:
                problems.append("expiry metric although the certificate could not be judged (status error)")
            return problems
        wanted = {"expiry": int(cert.not_valid_after_utc.timestamp()), "days_left": days,
                  "status": STATUS_METRIC_VALUES[expected]}
        label_values = {"cn": common_name(cert), "issuer": cert.issuer.rfc4514_string()}
        for role, value in wanted.items():
            name = metrics.get(role)
            if not name:
                continue
            sample = mine.get(name)
            if sample is None:
                problems.append(f"{name} missing")
                continue
            if sample.value != value:
                problems.append(f"{name} {sample.value:g}, expected {value}")
            wrong = [f"{labels[k]}={sample.labels.get(labels[k])!r}, expected {v!r}" for k, v in label_values.items()
                     if labels.get(k) and sample.labels.get(labels[k]) != v]
            if wrong:
                problems.append(f"{name} labels {', '.join(wrong)}")
        return problems


# --- the rotation ----------------------------------------------------------------------------


def script_uid(stack) -> int | None:
    """The unprivileged uid the stack's scripts run as (when we are root; else our own uid): never 0."""
    uid = stack.profile["api_key"]["rotation_uid"]
    if uid == 0:
        raise StackError("stackproof.yml: api_key.rotation_uid: 0 is root; the stack's scripts never run as root")
    return uid if os.geteuid() == 0 else None


@dataclass(frozen=True)
class RotateInterface:
    command: list[str]
    env: dict[str, str]
    stdin: str | None
    audit_log: str
    backup_dir: str

    @classmethod
    def from_profile(cls, cfg: dict) -> "RotateInterface":
        key = "scripts.rotate"
        command, env, values = _command_and_env(cfg, key, ROTATE_PLACEHOLDERS)
        for name in ("audit_log", "backup_dir"):
            if not isinstance(cfg[name], str) or not cfg[name]:
                raise InterfaceError(f"{key}.{name}: must be a path template")
            fill(cfg[name], {"secrets_dir": "", "workdir": "", "audit_log": ""}, f"{key}.{name}")
        return cls(command, env, _stdin(cfg["stdin"], f"{key}.stdin"), cfg["audit_log"], cfg["backup_dir"])


class KeyWatcher(threading.Thread):
    """Reads the key file in a loop while the rotate script runs and keeps the sha256 of
    every content it saw (never the content): an atomic rename shows only old and new."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path = path
        self.seen: set[str] = set()
        self.reads = 0
        self.failed = 0  # missing, unreadable or not a regular file
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                self.seen.add(sha256(read_stack_file(self.path, "key", OUTPUT_FILE_CAP)))
            except StackError:
                self.failed += 1
            self.reads += 1
            self._done.wait(0.001)

    def __enter__(self) -> "KeyWatcher":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self.join()


@dataclass
class Rotation:
    """What one run of the rotate script did, as facts about hashes, modes and counts (no key)."""

    error: str = ""  # did not run to exit 0
    old: str = ""  # fingerprints
    new: str = ""
    changed: bool = False
    new_strength: KeyStrength | None = None
    backups: dict[str, int] = field(default_factory=dict)  # backup file of the old key -> mode
    key_mode: int = 0
    audit_lines: int = 0
    leaks: list[str] = field(default_factory=list)  # where (and in which form) the script wrote key material
    torn_reads: int = 0  # reads that were neither the old nor the new key
    failed_reads: int = 0
    reads: int = 0
    backup_dir: str = ""
    audit_log: str = ""

    def summary(self) -> str:
        if self.error:
            return self.error
        backups = ", ".join(f"{name} {mode:04o}" for name, mode in self.backups.items()) or "none"
        return (f"exit 0, {self.old} → {self.new}, backup {backups}, key {self.key_mode:04o}, "
                f"audit +{self.audit_lines} line(s), {self.reads} reads of the key during the run")

    def problems(self, cfg: dict) -> list[str]:
        """What is wrong with this run, against the api_key section of the profile."""
        if self.error:
            return [self.error]
        assert self.new_strength is not None  # a run that reached exit 0 measured the new key
        weak = strength_problem(self.new_strength, cfg)
        checks = [
            (not self.changed, "the new key equals the old one"),
            (weak is not None, f"new key: {weak}"),
            (not self.backups, f"no backup of the old key under {self.backup_dir} (scripts.rotate.backup_dir)"),
            (self.backups and 0o400 not in self.backups.values(),
             "backup of the old key is not 0400: " + ", ".join(f"{n} {m:04o}" for n, m in self.backups.items())),
            (self.key_mode not in cfg["file_modes"],
             f"key left with mode {self.key_mode:04o}, expected {modes_text(cfg['file_modes'])}"),
            (self.audit_lines < 1, f"no line appended to the audit log {self.audit_log} (scripts.rotate.audit_log)"),
            *((True, leak) for leak in self.leaks),
            (self.torn_reads or self.failed_reads,
             f"the key file was seen empty or partial (not replaced atomically): {self.torn_reads} other content(s), "
             f"{self.failed_reads} failed read(s), in {self.reads} reads"),
        ]
        return [message for failed, message in checks if failed]


def _files_by_hash(box: ScriptBox, under: Path | None = None) -> dict[Path, str]:
    """sha256 of every regular file of the box (under `under`), symlinks not followed; bounded reads,
    what cannot be read is left out."""
    found = {}
    for path in box.files(under):
        try:
            found[path] = sha256(read_stack_file(path, str(path), OUTPUT_FILE_CAP, follow=False))
        except StackError:
            continue
    return found


class Rotator:
    """The stack's rotate script in a box holding a copy of the script and a canary in place of the key
    under rotation (never the key itself, nor the other secrets), laid out as in the stack; run through
    the declared interface. Every output of each run (stdout, stderr, the audit log, the name and content
    of every file it writes) is searched for the key it was given, in any form (KeyMaterial)."""

    def __init__(self, stack, key: Path):
        self.stack = stack
        self.key = key
        self.script = stack.path("rotate_script")
        self.rel = stack.rel(self.script)
        self.interface = RotateInterface.from_profile(stack.profile["scripts"]["rotate"])
        self.uid = script_uid(stack)
        self.box = stack.sandbox.box(self.uid, "rotate")
        try:
            self._lay_out()
        except BaseException:
            self.box.close()
            raise

    def _lay_out(self) -> None:
        stack, key, box = self.stack, self.key, self.box
        self.secrets = box.mkdir(_relative_inside(stack, key.parent, "secrets"), 0o700)
        canary = canary_like(stack.read_secret(key))
        stack.redactor.add(canary)  # a script may echo it: shown as a fingerprint, like the key it stands for
        self.box_key = box.write((self.secrets / key.name).relative_to(box.root), canary, os.stat(key).st_mode)
        script_copy = box.root / _relative_inside(stack, self.script, "scripts/rotate")
        box.copy_in(self.script, script_copy.relative_to(box.root), self.rel)
        inside = box.inside
        self.values = {"script": inside(script_copy), "secrets_dir": inside(self.secrets),
                       "key_file": inside(self.box_key), "key_name": key.name, "workdir": inside(box.root)}
        # the suite's own audit log, in a dir that exists: a script that only appends to the path it is given
        # must not fail for a dir the suite named and never made
        paths = {"secrets_dir": self.values["secrets_dir"], "workdir": self.values["workdir"],
                 "audit_log": inside(box.mkdir(Path("logs"), 0o700) / "key-rotation.log")}
        self.values["audit_log"] = fill(self.interface.audit_log, paths, "scripts.rotate.audit_log")
        self.audit_log = self._in_box(self.values["audit_log"], "audit_log")
        self.backup_dir = self._in_box(fill(self.interface.backup_dir, paths, "scripts.rotate.backup_dir"), "backup_dir")

    def __enter__(self) -> "Rotator":
        return self

    def __exit__(self, *exc) -> None:
        self.box.close()

    def _in_box(self, inside_path: str, key: str) -> Path:
        """The host path of a path the script sees; it must lie in the copy."""
        root = self.box.inside(self.box.root)
        if not (inside_path == root or inside_path.startswith(root.rstrip("/") + "/")):
            raise InterfaceError(f"scripts.rotate.{key}: {inside_path!r} is not inside the copy "
                                 "(use {secrets_dir} or {workdir})")
        return self.box.root / os.path.relpath(inside_path, root)

    def rotate(self, where: str, learning: bool = False) -> Rotation:
        """Run the script once while a watcher reads the key; collect what it did. (`learning`: a trial run of
        init, which looks for the audit log wherever the script wrote it.)"""
        box, stack = self.box, self.stack
        old = stack.read_secret(self.box_key)
        before = _files_by_hash(box)
        audit_before = self._read_or_empty(self.audit_log)
        command = [fill(part, self.values, "scripts.rotate.command") for part in self.interface.command]
        env = {name: fill(value, self.values, f"scripts.rotate.env.{name}") for name, value in self.interface.env.items()}
        shown = {"backup_dir": box.outside(box.inside(self.backup_dir)), "audit_log": box.outside(self.values["audit_log"])}
        with KeyWatcher(self.box_key) as watcher:
            try:
                done = box.run(command, env=env, stdin=self.interface.stdin, where=where, timeout=stack.timeout)
            except StackError as exc:
                return Rotation(error=str(exc).removeprefix(f"{where}: "))
        old_hash = sha256(old)
        leaked = self._leaks(old, done, before, old_hash)
        if done.returncode != 0:
            if leaked:  # the error line may be the key itself: the finding, never the line
                return Rotation(error=f"exited {done.returncode}; " + "; ".join(leaked))
            last = _last_line(done.stderr or done.stdout, box)
            untouched = _files_by_hash(box) == before
            refused = rejected_interface(done.returncode, done.stderr + b"\n" + done.stdout, untouched,
                                         where.split(":")[0], box)
            if refused is not None:
                raise refused
            hint = " (nothing changed: called as declared in scripts.rotate.command, env, stdin)" if untouched else ""
            return Rotation(error=f"exited {done.returncode}: {last}{hint}")
        try:
            new = stack.read_secret(self.box_key)
        except StackError:
            return Rotation(error="the key file is gone (or not a regular file) after the run")
        new_hash = sha256(new)
        audit = self._read_or_empty(self.audit_log)
        if not learning and audit == audit_before and self.interface.audit_log == "{audit_log}" and \
                where_used("audit_log", self.interface.command, self.interface.env, "rotate") is None:
            raise InterfaceRejected(
                f"the profile's interface does not match the script: {where.split(':')[0]}: scripts.rotate.audit_log "
                f"is the suite's own {{audit_log}} ({shown['audit_log']}), which neither scripts.rotate.command nor "
                "env passes to the script, and the run logged nothing there: where it writes its audit log is not "
                "declared (re-run stackproof init, or declare scripts.rotate.audit_log)")
        return Rotation(
            old=stack.redactor.fingerprint(old),
            new=stack.redactor.fingerprint(new),
            changed=new_hash != old_hash,
            new_strength=key_strength(new, stack.redactor),
            backups={str(path.relative_to(box.root)): path.stat().st_mode & 0o7777
                     for path, digest in _files_by_hash(box, self.backup_dir).items()
                     if digest == old_hash and path not in before and path != self.box_key},
            key_mode=self.box_key.stat().st_mode & 0o7777,
            audit_lines=audit.count(b"\n") - audit_before.count(b"\n") if audit.startswith(audit_before) else 0,
            leaks=leaked + [f"the script printed key material ({form}) after the run" for form in
                            filter(None, [KeyMaterial(new).form_in(done.stdout + done.stderr)])],
            torn_reads=len(watcher.seen - {old_hash, new_hash}),
            failed_reads=watcher.failed,
            reads=watcher.reads,
            **shown,
        )

    def template(self, path: Path) -> str:
        """How the profile names a path of the box: under {secrets_dir} when it lies there, else {workdir}."""
        base, name = (self.secrets, "{secrets_dir}") if path.is_relative_to(self.secrets) else (self.box.root, "{workdir}")
        return name if path == base else f"{name}/{path.relative_to(base)}"

    def trial(self, where: str) -> tuple[Rotation, list[str], list[str]]:
        """One run to learn the script's interface (stackproof init): the run, the files it appended lines
        to (its audit log: neither the key nor a copy of the old key) and the dirs it left a copy of the old
        key in (its backups), as profile templates. Raises InterfaceRejected when it refused the call."""
        old_hash = sha256(self.stack.read_secret(self.box_key))
        before = _files_by_hash(self.box)
        lines = {path: self._read_or_empty(path).count(b"\n") for path in before}
        run = self.rotate(where, learning=True)
        after = _files_by_hash(self.box)
        logs, backups = [], []
        for path, digest in sorted(after.items()):
            if path == self.box_key or before.get(path) == digest:
                continue
            if digest == old_hash:
                backups.append(self.template(path.parent))
            elif self._read_or_empty(path).count(b"\n") > lines.get(path, 0):
                logs.append(self.template(path))
        return run, logs, sorted(set(backups))

    def _leaks(self, old: bytes, done, before: dict[Path, str], old_hash: str) -> list[str]:
        """Where the run wrote the key it was given (any form): its stdout and stderr, the audit log, and
        the name and content of every file it created or changed (a backup holding the old key is the
        one place the key belongs, and the key file holds the new one)."""
        material, box, found = KeyMaterial(old), self.box, []
        for stream in ("stdout", "stderr"):
            form = material.form_in(getattr(done, stream))
            if form:
                found.append(f"the script printed key material ({form}) to its {stream}")
        for path, digest in _files_by_hash(box).items():
            shown = box.outside(box.inside(path))
            form = material.form_in(str(path.relative_to(box.root)))
            if form:
                found.append(f"the script put key material ({form}) into a file name: {_name_shape(path, box)}")
                continue
            if before.get(path) == digest or digest == old_hash or path == self.box_key:
                continue
            form = material.form_in(read_stack_file(path, shown, OUTPUT_FILE_CAP, follow=False))
            if form:
                what = "the audit log holds" if path == self.audit_log else f"{shown} holds"
                found.append(f"{what} key material ({form})")
        return found

    def _read_or_empty(self, path: Path) -> bytes:
        if not os.path.lexists(path):
            return b""
        try:
            return read_stack_file(path, "audit log", OUTPUT_FILE_CAP)
        except StackError:
            return b""


HELP_TIMEOUT = 10.0  # seconds for `--help`: a usage text prints at once
HELP_CAP = 64 * 1024  # bytes of it read


def help_text(stack, script: Path) -> str:
    """What `script --help` prints (stdout and stderr), run once in the sandbox on a copy, as the script's
    uid, with nothing of the stack beside it: for a script whose usage is not in its source's comments
    (argparse builds it at run time). Empty when it prints nothing or does not finish in time."""
    with stack.sandbox.box(script_uid(stack), "help") as box:
        copy = box.copy_in(script, stack.rel(script), stack.rel(script))
        copy.chmod(copy.stat().st_mode | 0o555)
        try:
            done = box.run([box.inside(copy), "--help"], env={}, stdin=None, where=f"{stack.rel(script)} --help",
                           timeout=HELP_TIMEOUT)
        except StackError:
            return ""
    return (done.stdout + b"\n" + done.stderr)[:HELP_CAP].decode("utf-8", errors="replace")


def monitor_trial(stack) -> str | None:
    """Whether the monitor, called as the profile declares, works on a valid certificate (stackproof init
    proves the interface it read): None, or why not. Raises InterfaceRejected when the script refused the call."""
    monitor = Monitor(stack)
    try:
        return monitor.interface_problem()
    finally:
        monitor.close()


# A threshold the monitor fixes inside (no flag or variable passes it), told by the statuses it reports at
# whole days left: the fewest days it no longer reports as these statuses.
THRESHOLD_STATUSES = {"warn_days": ("warning", "critical"), "crit_days": ("critical",)}
MEASURED_MAX_DAYS = 400  # days left at which any monitor must say ok


def measured_thresholds(stack, fixed: list[str]) -> dict[str, int]:
    """The monitor's own thresholds, for each key of `fixed` (warn_days, crit_days) that its runs can tell:
    certificates made at whole days left, run through the declared interface in the sandbox, bisected between
    0 days (the status must hold) and MEASURED_MAX_DAYS (it must not). stackproof init measures them where the
    script takes none from its caller, so that the scenarios expect what the script was written to do, and the
    report shows a threshold weaker than the profile's bar as such. About ten runs per threshold."""
    monitor = Monitor(stack)
    sources = Path(tempfile.mkdtemp(prefix="stackproof-thresholds-"))
    seen: dict[int, str | None] = {}

    def status(days: int) -> str | None:
        if days not in seen:
            path = sources / f"days-{days}.pem"
            make_certificate(path, days)
            seen[days] = monitor.status_of(monitor.run(f"days-{days}", path))
        return seen[days]

    found = {}
    try:
        for key in fixed:
            held = THRESHOLD_STATUSES[key]
            low, high = 0, MEASURED_MAX_DAYS  # status(low) is one of `held`, status(high) is not
            if status(low) not in held or status(high) in held or status(high) is None:
                continue
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if status(middle) in held else (low, middle)
            found[key] = high
    finally:
        monitor.close()
        shutil.rmtree(sources, ignore_errors=True)
    return found


def _name_shape(path: Path, box: ScriptBox) -> str:
    """Where a file whose name holds key material lies, without the name: its dir and the name's length."""
    return f"{box.outside(box.inside(path.parent))}/({len(path.name)}-character name)"


def _relative_inside(stack, path: Path, fallback: str) -> Path:
    """`path` relative to the stack dir, or `fallback` when it lies outside (never an absolute path)."""
    try:
        return path.relative_to(stack.root)
    except ValueError:
        return Path(fallback)
