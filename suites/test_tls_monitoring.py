"""Control 5: TLS certificate monitoring.

The stack's monitor script must tell ok / warning / critical / error apart, with the
exit codes and Prometheus metrics its header documents: it is run here against
certificates made for the purpose. The stack's own certificate must parse, match
its key, have time left, and its key must be private and out of git.
"""

from __future__ import annotations

import socket
import ssl
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from stackproof.compare import mode_within, more_than
from stackproof.errors import StackError, blocked, not_applicable
from stackproof.io.files import read_stack_file, walk_files
from stackproof.resources.certs import (chain_problem, key_description, names_not_covered, not_yet_valid,
                                        san_names, tls_server_names, weaknesses)
from stackproof.resources.scripts import Monitor, common_name, days_left, make_certificate, status_for

pytestmark = pytest.mark.control("tls_monitoring")

MAX_CERT_BYTES = 1024 * 1024
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- what is checked (plain functions, reused by the live checks) -----------------


def read_file(stack, path: Path, secret: bool = False) -> bytes:
    if secret:
        return stack.read_secret(path)
    return read_stack_file(path, stack.rel(path), MAX_CERT_BYTES)


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
    """The key as nginx loads it: OpenSSL checks only that it matches the certificate, not an RSA key's
    internal consistency (a check that costs 30 ms a run here), so neither does this."""
    name = stack.rel(path)
    data = read_file(stack, path, secret=True)
    if b"-----BEGIN" not in data:
        raise StackError(f"{name}: not a PEM private key")
    try:
        return serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=True)
    except TypeError:
        raise StackError(f"{name}: private key is encrypted (nginx needs it unencrypted)") from None
    except (ValueError, serialization.UnsupportedAlgorithm):
        raise StackError(f"{name}: PEM private key does not parse") from None


def fingerprint_of(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":")


# --- certificates made for the scenarios ---------------------------------------------

ODD_CN = 'api "edge" \\ node, Inc'  # a CN other than localhost, with characters the label escaping must handle

# (id, days left or a bad file, subject CN); the expected status follows from the profile's thresholds
SCENARIOS = [
    (Monitor.VALID, Monitor.VALID_DAYS, Monitor.VALID_CN),  # the run that also proves the interface
    ("20-days-left", 20, "localhost"),
    ("3-days-left", 3, "localhost"),
    ("expired", -2, "localhost"),
    ("missing-file", "missing", None),
    ("garbage-file", "garbage", None),
    ("other-cn", 365, ODD_CN),
    ("not-yet-valid", "future", "localhost"),  # valid from 2 days from now: refused by clients, an error
]
NOT_VALID_YET_IN_DAYS = 2
INTERFACE_CHECK = "test_monitor_interface"


@pytest.fixture(scope="session")
def scenario_certs(tmp_path_factory, monitor) -> dict[str, tuple[Path, x509.Certificate | None]]:
    """Scenario id -> (file, certificate), made once per run (the valid one by the monitor's runner)."""
    where = tmp_path_factory.mktemp("tls-scenarios")
    made: dict[str, tuple[Path, x509.Certificate | None]] = {Monitor.VALID: monitor.valid_certificate()}
    for scenario, days, cn in SCENARIOS[1:]:
        path = where / f"{scenario}.pem"
        if days == "garbage":
            path.write_bytes(b"-----BEGIN CERTIFICATE-----\n\x00\xff not base64 \x1b[31m\n-----END CERTIFICATE-----\n")
        if days == "future":  # the certificate exists, but the monitor must judge it an error (no metrics of it)
            make_certificate(path, 365, cn, starts_in_days=NOT_VALID_YET_IN_DAYS)
        made[scenario] = (path, make_certificate(path, days, cn) if isinstance(days, int) else None)
    return made


# --- static checks ------------------------------------------------------------------


@pytest.mark.static
@pytest.mark.remediation("high",
                         "`chmod +x` the TLS monitor script (and give it a `#!` line) where the monitor service or "
                         "cron line runs it.")
def test_monitor_script_is_executable(stack, evidence):
    """The TLS monitor (a service or a cron line) runs the script directly: it must be an executable file."""
    script = stack.path("monitor_script")
    file = stack.host.file(str(script))
    evidence.record(
        test=f"{stack.rel(script)} file and mode",
        expected="regular file, executable",
        result=f"mode {file.mode:04o}" if file.exists else "missing",
    )
    evidence.locate(stack.locate(script))
    assert file.exists and file.is_file, f"{stack.rel(script)}: not found (expected the TLS monitor script)"
    assert file.mode & 0o111, f"{stack.rel(script)}: mode {file.mode:04o}, not executable"


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Make the profile's `scripts.monitor` describe how the script is really called (arguments, "
                         "environment, exit codes, metric names), or change the script to match it.")
def test_monitor_interface(stack, evidence, monitor, scenario_certs):
    """The monitor, called as the profile declares (scripts.monitor), runs on a valid certificate: it exits
    with a declared code, writes the declared metrics file with the declared metric and label names, and
    prints the declared status line. Without this, no scenario below can be judged."""
    iface = stack.profile["scripts"]["monitor"]
    evidence.record(
        test=f"{monitor.rel} called as scripts.monitor.command on a valid certificate",
        expected="a declared exit code; metrics file with " + ", ".join(n for n in iface["metrics"].values() if n)
        + (f"; a stdout line like {iface['status_line']!r}" if iface["status_line"] else ""),
    )
    problem = monitor.interface_problem()
    evidence.record(result=problem or "works as declared")
    assert problem is None, problem


@pytest.mark.static
@pytest.mark.parametrize("scenario, days, cn", SCENARIOS, ids=[s[0] for s in SCENARIOS])
@pytest.mark.remediation("high",
                         "Make the monitor report ok, warning, critical and error as the profile declares: exit "
                         "code, status line and metrics matching the certificate (days left rounded down, an error "
                         "for a missing, unreadable or not yet valid certificate).")
def test_monitor_scenario(stack, evidence, monitor, scenario_certs, scenario, days, cn):
    """The monitor must tell ok / warning / critical / error apart, with the exit codes, status line and metrics
    its profile declares (scripts.monitor), the values matching the certificate."""
    cfg = stack.profile["tls"]
    path, cert = scenario_certs[scenario]
    expected = status_for(days, cfg["warn_days"], cfg["crit_days"]) if isinstance(days, int) else "error"
    code = stack.profile["scripts"]["monitor"]["exit_codes"][expected]
    if days == "future":
        what = f"a certificate valid only from {NOT_VALID_YET_IN_DAYS} days from now"
    elif not isinstance(days, int):
        what = f"{days} file"
    else:
        what = (f"{days} days left" if days >= 0 else f"expired {-days} days ago") + f", CN {cn!r}"
    evidence.record(
        test=f"{monitor.rel} (warning below {cfg['warn_days']} days, critical below {cfg['crit_days']}) on a "
             f"certificate: {what}",
        expected=(f"exit {code}, " if code is not None else "") + f"status {expected}"
        + (f", days_left {days}, expiry/cn/issuer from the certificate" if cert else ", check failed"),
    )
    problem = monitor.interface_problem()
    if problem:
        blocked(INTERFACE_CHECK, problem)
    monitor.prefetch({label: None if kind == "missing" else scenario_certs[label][0] for label, kind, _ in SCENARIOS})
    run = monitor.run(scenario, path if days != "missing" else None)
    try:
        problems = monitor.problems(run, cert, expected, days if cert else None)
    except ValueError as exc:
        problems = [str(exc)]
    printed = f", status {monitor.status_word(run) or 'not printed'}" if monitor.interface.status_line else ""
    evidence.record(result=f"exit {run.code}{printed}"
                    + (f"; wrong: {'; '.join(problems)}" if problems else "; metrics as declared"))
    assert not problems, f"{monitor.rel}: {scenario}: {'; '.join(problems)}"


@pytest.mark.static
@pytest.mark.remediation("critical",
                         "Put a PEM certificate (leaf first, then intermediates) at the path the TLS terminator "
                         "serves (`paths.tls_cert`).")
def test_stack_certificate_parses(stack, evidence):
    """The TLS terminator and the monitor read the certificate as PEM; the first certificate is the one served."""
    path = stack.path("tls_cert")
    evidence.record(test=f"{stack.rel(path)} parses", expected="a PEM X.509 certificate")
    evidence.locate(stack.locate(path))
    cert, notes = load_certificate(stack, path)
    for note in notes:
        evidence.note(note)
    evidence.record(
        result=f"CN {common_name(cert)!r}, issuer {cert.issuer.rfc4514_string()!r}, "
        f"notAfter {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, sha256 {fingerprint_of(cert)[:23]}…"
    )


@pytest.mark.static
@pytest.mark.remediation("critical",
                         "Install the key that belongs to the certificate (compare `openssl x509 -noout -pubkey` "
                         "with `openssl pkey -pubout`), or reissue the certificate for the key.")
def test_stack_key_matches_certificate(stack, evidence):
    """A TLS terminator refuses to start when its key does not belong to its certificate."""
    cert_path, key_path = stack.path("tls_cert"), stack.path("tls_key")
    cert, _ = load_certificate(stack, cert_path)
    key = load_private_key(stack, key_path)
    same = key.public_key().public_bytes(*SPKI) == cert.public_key().public_bytes(*SPKI)
    evidence.record(
        test=f"public key of {stack.rel(key_path)} vs {stack.rel(cert_path)}",
        expected="the same public key",
        result=f"{type(key).__name__.lstrip('_')}: {'same' if same else 'different'} public key",
    )
    evidence.locate(stack.locate(key_path), stack.locate(cert_path))
    assert same, f"{stack.rel(key_path)}: private key does not match {stack.rel(cert_path)}"


@pytest.mark.static
@pytest.mark.remediation("critical",
                         "`chmod 0600` (or 0400) the TLS key file.")
def test_stack_key_file_mode(stack, evidence):
    """Anyone who can read the key can impersonate the API."""
    path = stack.path("tls_key")
    file = stack.host.file(str(path))
    if not file.exists:
        raise StackError(f"{stack.rel(path)}: file not found")
    evidence.locate(stack.locate(path))
    evidence.expect(f"mode of {stack.rel(path)}", f"{stack.rel(path)}: mode", file.mode, mode_within(0o600),
                    result=f"{file.mode:04o}, owner uid {file.uid}")


@pytest.mark.static
@pytest.mark.remediation("critical",
                         "`git rm --cached` the key, list it in `.gitignore`, and replace the key and its "
                         "certificate: the committed key is public.")
def test_stack_key_not_tracked_by_git(stack, evidence):
    """A key committed to git is a key published to everyone with the repository."""
    path = stack.path("tls_key")
    if not stack.host.file(str(path)).exists:  # a key that is not there proves nothing about git: never a pass
        raise StackError(f"{stack.rel(path)}: file not found")
    tracked = stack.git_tracked(path)
    evidence.record(
        test=f"git index entry for {stack.rel(path)}",
        expected="not tracked",
        result="stack dir is not a git checkout" if tracked is None else "tracked" if tracked else "not tracked",
    )
    evidence.locate(stack.locate(path))
    assert not tracked, f"{stack.rel(path)}: tracked by git (expected generated, ignored and never committed)"


# --- live checks ----------------------------------------------------------------------

# old protocol versions a client may still try; nginx must refuse each
OLD_VERSIONS = [("TLSv1.0", "TLSv1"), ("TLSv1.1", "TLSv1_1")]
CLIENT_CANNOT_OFFER = {"NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE"}


def handshake(live, version: str | None = None) -> tuple[bytes, str]:
    """A TLS handshake with nginx's published port, pinned to `version` (an ssl.TLSVersion name) if given.
    Returns (the served certificate, DER; the negotiated version). The certificate is compared by
    fingerprint, so chain verification is off."""
    service = live.stack.roles.name("tls_terminator")
    host, port = live.http.published(service, live.stack.profile["live"]["nginx_port"])
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
@pytest.mark.remediation("critical",
                         "Reload the TLS terminator (nginx: `nginx -s reload`) or recreate it so that it serves the "
                         "certificate file on disk, and check that its volume mounts that file.")
def test_live_served_certificate_is_the_one_on_disk(stack, live, evidence):
    """Monitoring the file on disk only helps if the TLS terminator serves that file (not a stale or baked-in copy)."""
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
@pytest.mark.remediation("high",
                         "Allow TLS 1.2 and 1.3 only in the TLS terminator (nginx: `ssl_protocols TLSv1.2 TLSv1.3;` in its "
                         "server blocks) and reload it.")
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
@pytest.mark.remediation("high",
                         "Check that the monitor runs on schedule against the served certificate and that its "
                         "metrics file is scraped; a stale or wrong expiry means the alert fires late or never.")
def test_live_expiry_metric_in_prometheus(stack, live, evidence):
    """Alerts fire from Prometheus: the monitor's expiry metric must reach it with the certificate's notAfter."""
    path = stack.path("tls_cert")
    disk, _ = load_certificate(stack, path)
    want = int(disk.not_valid_after_utc.timestamp())
    declared = stack.profile["scripts"]["monitor"]
    metric, path_label, cn_label = declared["metrics"]["expiry"], declared["labels"]["cert"], declared["labels"]["cn"]
    if not metric:
        not_applicable("scripts.monitor.metrics.expiry is null: the monitor exports no expiry metric to query")
    series = live.prometheus.query(metric)
    seen = [(s["metric"].get(path_label or "", "?"), s["metric"].get(cn_label or "", "?"), float(s["value"][1]))
            for s in series]
    evidence.record(
        test=f"Prometheus query {metric}",
        expected=f"a series with value {want} (notAfter of {stack.rel(path)}), cn {common_name(disk)!r}",
        result="; ".join(f"path={p} cn={cn} {v:.0f}" for p, cn, v in seen) or "no series",
    )
    assert seen, f"prometheus: no {metric} series (is the tls-monitor's textfile scraped?)"
    assert any(v == want and (not cn_label or cn == common_name(disk)) for _, cn, v in seen), (
        f"prometheus: {metric} is {', '.join(f'{v:.0f}' for *_, v in seen)}, "
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
        request.getfixturevalue("evidence").locate(stack.locate(path))  # a finding about it is in that file
        return load_certificate(stack, path)[0], stack.rel(path)
    served, _ = served_certificate(request.getfixturevalue("live"))
    return served, f"service {stack.roles.name('tls_terminator')}: served certificate"


@pytest.mark.parametrize("certificate", CERTIFICATE_SOURCES, indirect=True)
@pytest.mark.remediation("critical",
                         "Renew the certificate (and automate renewal, e.g. certbot with a reload hook) so that it "
                         "has more than the profile's `tls.min_days_left` days left.")
def test_certificate_days_left(certificate, stack, evidence):
    """An expired certificate takes the API down for every client at once: renew well before."""
    cert, where = certificate
    minimum = stack.profile["tls"]["min_days_left"]
    left = days_left(cert)
    evidence.expect(f"days until notAfter of {where}", f"{where}:", left,
                    more_than(minimum, show=lambda days: f"{days} days left", bound_text=f"{minimum} days"),
                    result=f"{left} days (notAfter {cert.not_valid_after_utc:%Y-%m-%d} UTC, CN {common_name(cert)!r})")


@pytest.mark.parametrize("certificate", CERTIFICATE_SOURCES, indirect=True)
@pytest.mark.remediation("critical",
                         "Serve a certificate whose notBefore has passed: check the issuing host's clock, or wait "
                         "for it before deploying.")
def test_certificate_valid_now(certificate, evidence):
    """A certificate whose notBefore is still ahead is refused by every client, however long it has left."""
    cert, where = certificate
    problem = not_yet_valid(cert)
    evidence.record(test=f"notBefore of {where}", expected="in the past",
                    result=f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    assert problem is None, f"{where}: {problem}"


@pytest.mark.parametrize("certificate", CERTIFICATE_SOURCES, indirect=True)
@pytest.mark.remediation("high",
                         "Reissue the certificate with an RSA key of 2048 bits or more (or EC P-256 or more) and a "
                         "SHA-256 (or stronger) signature.")
def test_certificate_key_and_signature_strength(certificate, evidence):
    """Clients at current security levels refuse RSA keys under 2048 bits and SHA-1 signatures."""
    cert, where = certificate
    weak = weaknesses(cert)
    evidence.record(test=f"key and signature algorithm of {where}",
                    expected="RSA/DSA >= 2048 bits or EC >= 256 bits; signature hash not SHA-1/MD5",
                    result=key_description(cert))
    assert not weak, f"{where}: weak certificate: {'; '.join(weak)}"


def nginx_config_files(stack) -> list[tuple[Path, str]]:
    """The nginx configuration files the TLS terminator mounts from the stack (files and *.conf of directories
    under /etc/nginx), as (path, name for messages)."""
    svc = stack.roles.service("tls_terminator")
    found = []
    for mount in svc.volumes:
        if mount.type != "bind" or not mount.target.startswith("/etc/nginx"):
            continue
        source = Path(mount.source)
        if not stack.inside(source):
            continue
        paths = [path for path in walk_files(source, stack.rel(source)) if path.suffix == ".conf"] \
            if source.is_dir() else [source] if source.is_file() else []
        found += [(path, stack.rel(path)) for path in paths if path.is_file() and stack.inside(path)]
    return found


@pytest.mark.parametrize("certificate", CERTIFICATE_SOURCES, indirect=True)
@pytest.mark.remediation("critical",
                         "Reissue the certificate with every name the TLS terminator serves (nginx's `server_name`) "
                         "in its subjectAltName (DNS names, IP addresses).")
def test_certificate_covers_served_names(certificate, stack, evidence):
    """Clients match the host they asked for against the SAN only (not the CN): every name the TLS server
    blocks answer to (server_name) must be in it."""
    cert, where = certificate
    files = nginx_config_files(stack)
    names = tls_server_names(files)
    listed = san_names(cert)
    evidence.record(
        test=f"server_name of the TLS server blocks in {', '.join(name for _, name in files) or 'no mounted nginx config'}"
             f" vs the SAN of {where}",
        expected="each name in the SAN (DNS, wildcard or IP)",
        result=f"names {', '.join(names) or 'none'}; SAN "
        + ("missing" if listed is None else ", ".join([*listed[0], *listed[1]]) or "empty"),
    )
    missing = names_not_covered(cert, names)
    assert not missing, (f"{where}: served name(s) {', '.join(missing)} not in the certificate's SAN"
                         + (" (it has no SAN extension)" if listed is None else ""))


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Append the intermediate certificates (the issuer's chain file, e.g. fullchain.pem) after "
                         "the leaf in the served file.")
def test_certificate_chain_complete(stack, evidence):
    """A file that serves a chain must serve every intermediate between the leaf and a root: a client missing
    one cannot build a path to its trust anchor (extra certificates and their order are tolerated, as clients do)."""
    path = stack.path("tls_cert")
    load_certificate(stack, path)  # the leaf must parse (its own check says why not)
    chain = x509.load_pem_x509_certificates(read_file(stack, path))
    problem = chain_problem(chain)
    evidence.record(test=f"path from the leaf through the certificates served in {stack.rel(path)}",
                    expected="reaches a self-issued certificate, or only the leaf is served",
                    result=f"{len(chain)} certificate(s)" + (f"; {problem}" if problem else ", complete"))
    evidence.locate(stack.locate(path))
    assert problem is None, f"{stack.rel(path)}: incomplete chain: {problem}"
