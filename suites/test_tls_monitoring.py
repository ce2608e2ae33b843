"""Control 5: TLS certificate monitoring.

The stack's monitor script must tell ok / warning / critical / error apart, with the
exit codes and Prometheus metrics its header documents: it is run here against
certificates made for the purpose. The stack's own certificate must parse, match
its key, have time left, and its key must be private and out of git.
"""

from __future__ import annotations

import datetime as dt
import math
import socket
import ssl
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from stackproof import proc
from stackproof.errors import StackError

pytestmark = pytest.mark.control("tls_monitoring")

STATUS_CODES = {"ok": 0, "warning": 1, "critical": 2, "error": 3}  # the script's documented exit codes
MAX_CERT_BYTES = 1024 * 1024
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- what is checked (plain functions, reused by the live checks) -----------------


def read_file(stack, path: Path, secret: bool = False) -> bytes:
    name = stack.rel(path)
    if not path.is_file():
        raise StackError(f"{name}: file not found")
    if path.stat().st_size > MAX_CERT_BYTES:
        raise StackError(f"{name}: larger than {MAX_CERT_BYTES} bytes, not a certificate or key")
    if secret:
        return stack.read_secret(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StackError(f"{name}: cannot read ({exc.strerror})") from None


def load_certificate(stack, path: Path) -> tuple[x509.Certificate, list[str]]:
    """The certificate nginx serves: the first (leaf) PEM certificate of the file, plus notes
    on what else the file holds. DER and garbage are errors: nginx and the monitor need PEM."""
    name = stack.rel(path)
    data = read_file(stack, path)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        try:
            x509.load_der_x509_certificate(data)
        except ValueError:
            raise StackError(f"{name}: not a certificate (no PEM CERTIFICATE block, not DER either)") from None
        raise StackError(f"{name}: DER-encoded certificate; nginx and the monitor script need PEM")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise StackError(f"{name}: PEM CERTIFICATE block does not parse") from None
    notes = []
    if len(chain) > 1:
        notes.append(f"chain of {len(chain)} certificates: the first (leaf) is checked")
    trailing = data[data.rfind(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----"):]
    if trailing.strip():
        notes.append(f"{len(trailing.strip())} bytes after the last certificate are ignored")
    return chain[0], notes


def load_private_key(stack, path: Path):
    name = stack.rel(path)
    data = read_file(stack, path, secret=True)
    if b"-----BEGIN" not in data:
        raise StackError(f"{name}: not a PEM private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise StackError(f"{name}: private key is encrypted (nginx needs it unencrypted)") from None
    except (ValueError, serialization.UnsupportedAlgorithm):
        raise StackError(f"{name}: PEM private key does not parse") from None


def days_left(cert: x509.Certificate, now: float | None = None) -> int:
    """Whole days until notAfter, rounded down (negative once expired), as the monitor computes it."""
    return math.floor((cert.not_valid_after_utc.timestamp() - (time.time() if now is None else now)) / 86400)


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def fingerprint_of(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":")


def status_for(days: int, warn: int, crit: int) -> str:
    return "critical" if days < crit else "warning" if days < warn else "ok"


def parse_metrics(text: str) -> list:
    """Samples of a Prometheus text-format file; a parse error is one line."""
    try:
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    except Exception as exc:  # the parser raises ValueError, TypeError, IndexError...
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"metrics file does not parse as Prometheus text format ({first})") from None


@dataclass
class MonitorRun:
    code: int
    stdout: str
    metrics: str | None  # None: the script wrote no metrics file


class Monitor:
    """Runs the stack's monitor script in a temp dir. After one run that hangs or cannot start,
    the next ones fail at once with the same reason, so a hanging script costs one timeout."""

    def __init__(self, stack, workdir: Path):
        self.stack = stack
        self.script = stack.path("monitor_script")
        self.workdir = workdir
        self.broken: str | None = None

    def run(self, label: str, *certs: Path) -> MonitorRun:
        if self.broken:
            raise StackError(f"{self.broken} (on an earlier run)")
        cfg = self.stack.profile["tls"]
        metrics = self.workdir / f"{label}.prom"
        cmd = [str(self.script), "--warn-days", str(cfg["warn_days"]), "--crit-days", str(cfg["crit_days"]),
               "--metrics-file", str(metrics), *map(str, certs)]
        try:
            done = proc.run(cmd, timeout=self.stack.timeout, where=self.stack.rel(self.script), cwd=self.workdir)
        except StackError as exc:
            self.broken = str(exc)
            raise
        text = metrics.read_text(errors="replace") if metrics.is_file() else None
        return MonitorRun(done.returncode, done.stdout.decode(errors="replace"), text)


# --- certificates made for the scenarios ---------------------------------------------

TEST_ISSUER = x509.Name([
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stackproof"),
    x509.NameAttribute(NameOID.COMMON_NAME, "stackproof test CA"),
])
ODD_CN = 'api "edge" \\ node, Inc'  # a CN other than localhost, with characters the label escaping must handle

# (id, days left or a bad file, subject CN); the expected status follows from the profile's thresholds
SCENARIOS = [
    ("365-days-left", 365, "localhost"),
    ("20-days-left", 20, "localhost"),
    ("3-days-left", 3, "localhost"),
    ("expired", -2, "localhost"),
    ("missing-file", "missing", None),
    ("garbage-file", "garbage", None),
    ("other-cn", 365, ODD_CN),
]


@pytest.fixture(scope="session")
def scenario_certs(tmp_path_factory) -> dict[str, tuple[Path, x509.Certificate | None]]:
    """Scenario id -> (file, certificate). EC P-256, one CA, made once per run; notAfter is one hour past
    the whole day so that the monitor's days_left is exactly the scenario's."""
    where = tmp_path_factory.mktemp("tls-scenarios")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    made = {}
    for scenario, days, cn in SCENARIOS:
        path = where / f"{scenario}.pem"
        if days == "missing":
            made[scenario] = (path, None)
            continue
        if days == "garbage":
            path.write_bytes(b"-----BEGIN CERTIFICATE-----\n\x00\xff not base64 \x1b[31m\n-----END CERTIFICATE-----\n")
            made[scenario] = (path, None)
            continue
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(TEST_ISSUER)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=400))
            .not_valid_after(now + dt.timedelta(days=days, hours=1))
            .sign(ca_key, hashes.SHA256())
        )
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        made[scenario] = (path, cert)
    return made


@pytest.fixture(scope="session")
def monitor(stack, tmp_path_factory) -> Monitor:
    return Monitor(stack, tmp_path_factory.mktemp("tls-monitor"))


def stdout_line(run: MonitorRun, path: Path) -> str | None:
    """The script's stdout line for one certificate, without the path prefix."""
    prefix = f"{path}: "
    return next((ln[len(prefix):] for ln in run.stdout.splitlines() if ln.startswith(prefix)), None)


def scenario_problems(run: MonitorRun, path: Path, cert, expected: str, days: int | None) -> list[str]:
    """Everything the run got wrong against the script's documented interface."""
    problems = []
    if run.code != STATUS_CODES[expected]:
        problems.append(f"exit {run.code}, expected {STATUS_CODES[expected]} ({expected})")
    line = stdout_line(run, path)
    if line is None or f"status={expected}" not in line.split():
        problems.append(f"stdout line {line!r}, expected status={expected}")
    if run.metrics is None:
        return problems + ["no metrics file written"]
    samples = parse_metrics(run.metrics)
    mine = {s.name: s for s in samples if s.labels.get("path") == str(path)}
    success = mine.get("tls_cert_check_success")
    if success is None or success.value != (0 if expected == "error" else 1):
        problems.append(f"tls_cert_check_success {success.value if success else 'missing'}")
    if cert is None:
        if "tls_cert_expiry_timestamp_seconds" in mine:
            problems.append("expiry metric for a file that is not a certificate")
        return problems
    wanted = {
        "tls_cert_expiry_timestamp_seconds": int(cert.not_valid_after_utc.timestamp()),
        "tls_cert_days_left": days,
        "tls_cert_status": STATUS_CODES[expected],
    }
    for name, value in wanted.items():
        sample = mine.get(name)
        if sample is None:
            problems.append(f"{name} missing")
            continue
        if sample.value != value:
            problems.append(f"{name} {sample.value:g}, expected {value}")
        labels = {"cn": common_name(cert), "issuer": cert.issuer.rfc4514_string()}
        wrong = [f"{k}={sample.labels.get(k)!r}, expected {v!r}" for k, v in labels.items() if sample.labels.get(k) != v]
        if wrong:
            problems.append(f"{name} labels {', '.join(wrong)}")
    return problems


# --- static checks ------------------------------------------------------------------


@pytest.mark.static
def test_monitor_script_is_executable(stack, evidence):
    """The tls-monitor container runs the script directly: it must be an executable file."""
    script = stack.path("monitor_script")
    file = stack.host.file(str(script))
    evidence.record(
        test=f"{stack.rel(script)} file and mode",
        expected="regular file, executable",
        result=f"mode {file.mode:04o}" if file.exists else "missing",
    )
    assert file.exists and file.is_file, f"{stack.rel(script)}: not found (expected the TLS monitor script)"
    assert file.mode & 0o111, f"{stack.rel(script)}: mode {file.mode:04o}, not executable"


@pytest.mark.static
@pytest.mark.parametrize("scenario, days, cn", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_monitor_scenario(stack, evidence, monitor, scenario_certs, scenario, days, cn):
    """The monitor must tell ok / warning / critical / error apart, with the exit codes and metrics it documents."""
    cfg = stack.profile["tls"]
    path, cert = scenario_certs[scenario]
    expected = status_for(days, cfg["warn_days"], cfg["crit_days"]) if isinstance(days, int) else "error"
    script = stack.rel(stack.path("monitor_script"))
    if not isinstance(days, int):
        what = f"{days} file"
    else:
        what = (f"{days} days left" if days >= 0 else f"expired {-days} days ago") + f", CN {cn!r}"
    evidence.record(
        test=f"{script} --warn-days {cfg['warn_days']} --crit-days {cfg['crit_days']} on a certificate: {what}",
        expected=f"exit {STATUS_CODES[expected]}, status={expected}"
        + (f", days_left {days}, expiry/cn/issuer from the certificate" if cert else ", check_success 0"),
    )
    run = monitor.run(scenario, path)
    try:
        problems = scenario_problems(run, path, cert, expected, days if cert else None)
    except ValueError as exc:
        problems = [str(exc)]
    evidence.record(result=f"exit {run.code}, {stdout_line(run, path) or 'no stdout line'}"
                    + (f"; wrong: {'; '.join(problems)}" if problems else "; metrics as documented"))
    assert not problems, f"{script}: {scenario}: {'; '.join(problems)}"


@pytest.mark.static
def test_stack_certificate_parses(stack, evidence):
    """nginx and the monitor read the certificate as PEM; the first certificate is the one served."""
    path = stack.path("tls_cert")
    evidence.record(test=f"{stack.rel(path)} parses", expected="a PEM X.509 certificate")
    cert, notes = load_certificate(stack, path)
    for note in notes:
        evidence.note(note)
    evidence.record(
        result=f"CN {common_name(cert)!r}, issuer {cert.issuer.rfc4514_string()!r}, "
        f"notAfter {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, sha256 {fingerprint_of(cert)[:23]}…"
    )


@pytest.mark.static
def test_stack_key_matches_certificate(stack, evidence):
    """nginx refuses to start when its key does not belong to its certificate."""
    cert_path, key_path = stack.path("tls_cert"), stack.path("tls_key")
    cert, _ = load_certificate(stack, cert_path)
    key = load_private_key(stack, key_path)
    same = key.public_key().public_bytes(*SPKI) == cert.public_key().public_bytes(*SPKI)
    evidence.record(
        test=f"public key of {stack.rel(key_path)} vs {stack.rel(cert_path)}",
        expected="the same public key",
        result=f"{type(key).__name__.lstrip('_')}: {'same' if same else 'different'} public key",
    )
    assert same, f"{stack.rel(key_path)}: private key does not match {stack.rel(cert_path)}"


@pytest.mark.static
def test_stack_key_file_mode(stack, evidence):
    """Anyone who can read the key can impersonate the API."""
    path = stack.path("tls_key")
    file = stack.host.file(str(path))
    if not file.exists:
        raise StackError(f"{stack.rel(path)}: file not found")
    evidence.record(
        test=f"mode of {stack.rel(path)}",
        expected="0600 or stricter",
        result=f"{file.mode:04o}, owner uid {file.uid}",
    )
    assert file.mode & ~0o600 == 0, f"{stack.rel(path)}: mode {file.mode:04o} (expected 0600 or stricter)"


@pytest.mark.static
def test_stack_key_not_tracked_by_git(stack, evidence):
    """A key committed to git is a key published to everyone with the repository."""
    path = stack.path("tls_key")
    tracked = stack.git_tracked(path)
    evidence.record(
        test=f"git index entry for {stack.rel(path)}",
        expected="not tracked",
        result="stack dir is not a git checkout" if tracked is None else "tracked" if tracked else "not tracked",
    )
    assert not tracked, f"{stack.rel(path)}: tracked by git (expected generated, ignored and never committed)"


# --- live checks ----------------------------------------------------------------------

EXPIRY_METRIC = "tls_cert_expiry_timestamp_seconds"  # documented in the monitor script's header
# old protocol versions a client may still try; nginx must refuse each
OLD_VERSIONS = [("TLSv1.0", "TLSv1"), ("TLSv1.1", "TLSv1_1")]
CLIENT_CANNOT_OFFER = {"NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE"}


def handshake(live, version: str | None = None) -> tuple[bytes, str]:
    """A TLS handshake with nginx's published port, pinned to `version` (an ssl.TLSVersion name) if given.
    Returns (the served certificate, DER; the negotiated version). The certificate is compared by
    fingerprint, so chain verification is off."""
    service = live.stack.roles.name("tls_terminator")
    host, port = live.published(service, live.stack.profile["live"]["nginx_port"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if version:
        with warnings.catch_warnings():  # old versions are deprecated: that is the point of the probe
            warnings.simplefilter("ignore", DeprecationWarning)
            context.set_ciphers("ALL:@SECLEVEL=0")  # let the local OpenSSL offer what nginx must refuse
            context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    where = f"service {service} {host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=live.timeout) as sock:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                return tls.getpeercert(binary_form=True), tls.version()
    except ssl.SSLError as exc:
        if exc.reason in CLIENT_CANNOT_OFFER:
            raise StackError(f"local {ssl.OPENSSL_VERSION} cannot offer {version}: cannot probe {where}") from None
        if version:  # a pinned probe: the caller decides whether refusal is right
            raise
        raise StackError(f"{where}: TLS handshake failed ({exc.reason or exc})") from None
    except ConnectionResetError:
        if version:
            raise
        raise StackError(f"{where}: connection reset during the TLS handshake") from None
    except OSError as exc:
        raise StackError(f"{where}: no TLS handshake ({exc.strerror or exc})") from None


def served_certificate(live) -> tuple[x509.Certificate, str]:
    der, version = handshake(live)
    return x509.load_der_x509_certificate(der), version


@pytest.mark.live
def test_live_served_certificate_is_the_one_on_disk(stack, live, evidence):
    """Monitoring the file on disk only helps if nginx serves that file (not a stale or baked-in copy)."""
    path = stack.path("tls_cert")
    disk, _ = load_certificate(stack, path)
    served, version = served_certificate(live)
    service = stack.roles.name("tls_terminator")
    evidence.record(
        test=f"sha256 of the certificate {service} serves vs {stack.rel(path)}",
        expected=fingerprint_of(disk),
        result=f"{fingerprint_of(served)} (negotiated {version})",
    )
    assert served == disk, (
        f"service {service}: serves sha256 {fingerprint_of(served)[:23]}…, {stack.rel(path)} is {fingerprint_of(disk)[:23]}…"
    )


@pytest.mark.live
@pytest.mark.parametrize("label, version", OLD_VERSIONS, ids=[v[0] for v in OLD_VERSIONS])
def test_live_old_tls_version_refused(stack, live, evidence, label, version):
    """TLS 1.0 and 1.1 are broken and deprecated: only TLS 1.2 or newer may be accepted."""
    service = stack.roles.name("tls_terminator")
    evidence.record(test=f"{label}-only handshake with {service}", expected="refused")
    try:
        _, negotiated = handshake(live, version)
    except (ssl.SSLError, ConnectionResetError) as exc:
        evidence.record(result=f"refused ({getattr(exc, 'reason', None) or type(exc).__name__})")
        return
    evidence.record(result=f"accepted ({negotiated})")
    pytest.fail(f"service {service}: accepted a {label} handshake (expected TLS 1.2 or newer only)")


@pytest.mark.live
def test_live_expiry_metric_in_prometheus(stack, live, evidence):
    """Alerts fire from Prometheus: the monitor's expiry metric must reach it with the certificate's notAfter."""
    path = stack.path("tls_cert")
    disk, _ = load_certificate(stack, path)
    want = int(disk.not_valid_after_utc.timestamp())
    series = live.prometheus("/api/v1/query", {"query": EXPIRY_METRIC}).get("result", [])
    seen = [(s["metric"].get("path", "?"), s["metric"].get("cn", "?"), float(s["value"][1])) for s in series]
    evidence.record(
        test=f"Prometheus query {EXPIRY_METRIC}",
        expected=f"a series with value {want} (notAfter of {stack.rel(path)}), cn {common_name(disk)!r}",
        result="; ".join(f"path={p} cn={cn} {v:.0f}" for p, cn, v in seen) or "no series",
    )
    assert seen, f"prometheus: no {EXPIRY_METRIC} series (is the tls-monitor's textfile scraped?)"
    assert any(v == want and cn == common_name(disk) for _, cn, v in seen), (
        f"prometheus: {EXPIRY_METRIC} is {', '.join(f'{v:.0f}' for *_, v in seen)}, "
        f"expected {want} (notAfter of {stack.rel(path)})"
    )


# --- the certificate's time left, on disk (static) and as served (live) ---------------------

CERTIFICATE_SOURCES = [
    pytest.param("disk", marks=pytest.mark.static, id="on-disk"),
    pytest.param("served", marks=pytest.mark.live, id="served"),
]


@pytest.fixture
def certificate(request, stack) -> tuple[x509.Certificate, str]:
    """(certificate, where it is): the stack's file, or what nginx serves."""
    if request.param == "disk":
        path = stack.path("tls_cert")
        return load_certificate(stack, path)[0], stack.rel(path)
    served, _ = served_certificate(request.getfixturevalue("live"))
    return served, f"service {stack.roles.name('tls_terminator')}: served certificate"


@pytest.mark.parametrize("certificate", CERTIFICATE_SOURCES, indirect=True)
def test_certificate_days_left(certificate, stack, evidence):
    """An expired certificate takes the API down for every client at once: renew well before."""
    cert, where = certificate
    minimum = stack.profile["tls"]["min_days_left"]
    left = days_left(cert)
    evidence.record(
        test=f"days until notAfter of {where}",
        expected=f"> {minimum} days",
        result=f"{left} days (notAfter {cert.not_valid_after_utc:%Y-%m-%d} UTC, CN {common_name(cert)!r})",
    )
    assert left > minimum, f"{where}: {left} days left (expected more than {minimum})"
