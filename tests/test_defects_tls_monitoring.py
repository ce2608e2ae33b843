"""Each defect of the TLS monitoring control fails that control, and only it."""

import os

import pytest
from cryptography.hazmat.primitives import serialization
from defects import Defect, cases, certificate_pair, chmod, chmod_file, per_stack, remove, replace, write, write_certificate
from harness import assert_only_control_fails

SCRIPT = "scripts/monitor-tls-certs.sh"
CERT = "ai-stack/compose/nginx/certs/server.crt"
KEY = "ai-stack/compose/nginx/certs/server.key"


def write_pair(days: int, with_key: bool = True, cert_format=serialization.Encoding.PEM):
    def inject(stack):
        cert, pem_key = certificate_pair(days)
        (stack / CERT).write_bytes(cert.public_bytes(cert_format))
        if with_key:
            (stack / KEY).write_bytes(pem_key)
    return inject


# (id, how to break the stack copy, extra pytest args, fragments the failure reason must name)
DEFECTS = [
    (
        "monitor-always-exits-0",
        replace(SCRIPT, '((any_error)) && exit 3\nexit "$worst"', "exit 0"),
        (), [f"{SCRIPT}: 20-days-left: exit 0, expected 1 (warning)", "3-days-left: exit 0, expected 2 (critical)"],
    ),
    (
        "monitor-unescaped-labels",
        replace(SCRIPT, 'esc() {\n', 'esc() {\n  printf \'%s\' "$1"; return\n'),
        (), [f"{SCRIPT}: other-cn: metrics file does not parse as Prometheus text format"],
    ),
    ("monitor-not-executable", chmod(SCRIPT, 0o644), (), [f"{SCRIPT}: mode 0644, not executable"]),
    ("monitor-missing", remove(SCRIPT), (), [f"{SCRIPT}: not found"]),
    (
        "monitor-hangs",
        replace(SCRIPT, "set -uo pipefail\n", "set -uo pipefail\nsleep 300\n"),
        ("--stack-timeout", "5"), [f"{SCRIPT}: did not finish within 5s"],
    ),
    ("key-missing", remove(KEY), (), [f"{KEY}: file not found"]),
    ("key-garbage", write(KEY, os.urandom(512)), (), [f"{KEY}: not a PEM private key"]),
    ("cert-garbage", write(CERT, os.urandom(512)), (), [f"{CERT}: not a certificate"]),
    (
        "cert-der",
        write_pair(365, cert_format=serialization.Encoding.DER),
        (), [f"{CERT}: DER-encoded certificate; nginx and the monitor script need PEM"],
    ),
    ("cert-empty", write(CERT, b""), (), [f"{CERT}: not a certificate"]),
]


@pytest.mark.parametrize("inject, args, fragments", [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_defect_fails_tls_monitoring(stack_copy, run_static, inject, args, fragments):
    inject(stack_copy)
    assert_only_control_fails(run_static(stack_copy, *args), "tls_monitoring", *fragments)


def test_chain_and_trailing_text_are_accepted(stack_copy, run_static):
    """A certificate file with its chain and a trailing comment still serves the first certificate."""
    cert_file = stack_copy / CERT
    leaf = cert_file.read_bytes()
    other, _ = certificate_pair(365)
    cert_file.write_bytes(leaf + other.public_bytes(serialization.Encoding.PEM) + b"# issued by setup.sh\n")
    run = run_static(stack_copy)
    assert run.statuses["tls_monitoring"] == "PASS", run.reasons("tls_monitoring")


# Defects of both test stacks (tests/defects.py layouts): each stack's monitor is called through its
# own declared interface, so its defect shows, not a difference of command line.
BOTH = [
    Defect("monitor-wrong-days-left", per_stack(
        reference=("monitor_script", "days_left=$((diff / 86400))", "days_left=$((diff / 86400 + 1))"),
        northwind=("monitor_script", "days=$((diff / 86400))", "days=$((diff / 86400 + 1))")),
        ("{monitor_script}: 365-days-left:", "366, expected 365")),
    Defect("monitor-issuer-label-wrong", per_stack(
        reference=("monitor_script", 'issuer=\\"$(esc "$issuer")\\"', 'issuer=\\"$(esc "$subject")\\"'),
        northwind=("monitor_script", 'issuer_dn=\\"$(esc "$issuer")\\"', 'issuer_dn=\\"$(esc "$subject")\\"')),
        ("{monitor_script}: 365-days-left:", "issuer")),
    Defect("cert-10-days-left", write_certificate(10), ("{tls_cert}: 10 days left, expected > 30 days",)),
    Defect("key-does-not-match", write_certificate(365, with_key=False), ("{tls_key}: private key does not match {tls_cert}",)),
    Defect("key-mode-0644", chmod_file("tls_key", 0o644), ("{tls_key}: mode 0644, expected 0600 or stricter",)),
]


@pytest.mark.parametrize("layout_copy, defect", cases(BOTH), indirect=["layout_copy"])
def test_defect_fails_tls_monitoring_in_each_stack(layout_copy, run_static, defect):
    stack, layout = layout_copy
    defect.inject(stack, layout)
    assert_only_control_fails(run_static(stack, *defect.args), "tls_monitoring", *map(layout.fill, defect.fragments))


# --- every validity condition of the certificate (stackproof/resources/certs.py) ------------------------

import datetime as dt  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

HOST = {"reference": "localhost", "northwind": "api.northwind.internal"}  # the name each stack serves


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(subject: str, key, issuer: tuple[str, object] | None = None, *, starts_in: dt.timedelta = -dt.timedelta(days=1),
                 sans: list[str] | None = None, ca: bool = False) -> x509.Certificate:
    """A certificate for `key`, signed by `issuer` (name, private key) or by itself, valid 365 days from `starts_in`."""
    now = dt.datetime.now(dt.timezone.utc)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer_name))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + starts_in).not_valid_after(now + starts_in + dt.timedelta(days=365)))
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def served(make):
    """The stack's certificate file replaced by what `make(host)` returns ([leaf, chain...], leaf key); the key too."""

    def inject(stack, layout):
        chain, key = make(HOST[layout.name])
        (stack / layout.tls_cert).write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        (stack / layout.tls_key).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))

    return inject


def leaf(host: str, **options):
    key = ec.generate_private_key(ec.SECP256R1())
    return [_certificate(host, key, sans=options.pop("sans", [host]), **options)], key


def rsa_leaf(host: str, bits: int):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return [_certificate(host, key, sans=[host])], key


def sha1_leaf(host: str):
    """A leaf signed with SHA-1: cryptography's OpenSSL refuses to sign one, the openssl command still does."""
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch:
        cert, key = Path(scratch, "c.pem"), Path(scratch, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-sha1", "-days", "365", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
        return [x509.load_pem_x509_certificate(cert.read_bytes())], serialization.load_pem_private_key(key.read_bytes(), None)


def issued_leaf(host: str, served_after: str):
    """A leaf issued by an intermediate of a root; the file serves after it: 'root' (the intermediate
    missing) or 'unrelated' (another CA's certificate instead)."""
    root_key, mid_key, key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate("stackproof root", root_key, ca=True)
    _certificate("stackproof intermediate", mid_key, ("stackproof root", root_key), ca=True)
    cert = _certificate(host, key, ("stackproof intermediate", mid_key), sans=[host])
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _certificate("another CA", other_key, ca=True)
    return [cert, root if served_after == "root" else other], key


VALIDITY = [
    Defect("not-valid-for-a-day", served(lambda host: leaf(host, starts_in=dt.timedelta(days=1))),
           ("{tls_cert}: not valid before",)),
    Defect("not-valid-for-90-days", served(lambda host: leaf(host, starts_in=dt.timedelta(days=90))),
           ("{tls_cert}: not valid before", "days from now")),
    Defect("rsa-1024", served(lambda host: rsa_leaf(host, 1024)),
           ("{tls_cert}: weak certificate: RSA key of 1024 bits",)),
    Defect("sha1-signature", served(sha1_leaf),
           ("{tls_cert}: weak certificate: signed with SHA1",)),
    Defect("intermediate-missing", served(lambda host: issued_leaf(host, "root")),
           ("{tls_cert}: incomplete chain:", "is issued by 'CN=stackproof intermediate', which the file does not serve")),
    Defect("wrong-intermediate", served(lambda host: issued_leaf(host, "unrelated")),
           ("{tls_cert}: incomplete chain:", "which the file does not serve (it serves 1 other")),
    Defect("monitor-ignores-not-before", per_stack(
        reference=("monitor_script", "    elif ((not_before > now)); then\n", "    elif false; then\n"),
        northwind=("monitor_script", '(( not_before <= $(date -u +%s) )) || fail "not valid yet"\n', "")),
        ("{monitor_script}: not-yet-valid:",)),
]


@pytest.mark.parametrize("layout_copy, defect", cases(VALIDITY), indirect=["layout_copy"])
def test_certificate_validity_defect_fails_tls_monitoring(layout_copy, run_static, defect):
    stack, layout = layout_copy
    defect.inject(stack, layout)
    assert_only_control_fails(run_static(stack), "tls_monitoring", *map(layout.fill, defect.fragments))


NAMES = [
    Defect("san-other-name", served(lambda host: leaf(host, sans=["api.example.org"])),
           ("{tls_cert}: served name(s) localhost not in the certificate's SAN",), stacks=("reference",)),
    Defect("no-san", served(lambda host: leaf(host, sans=None)),
           ("{tls_cert}: served name(s) localhost not in", "(it has no SAN extension)"), stacks=("reference",)),
    Defect("second-server-name", lambda stack, layout: replace(
        "gateway/nginx.conf", "    listen 8443 ssl;\n",
        "    listen 8443 ssl;\n    server_name api.northwind.internal status.northwind.internal;\n")(stack),
           ("{tls_cert}: served name(s) status.northwind.internal not in the certificate's SAN",), stacks=("northwind",)),
]


@pytest.mark.parametrize("layout_copy, defect", cases(NAMES), indirect=["layout_copy"])
def test_served_name_not_in_san_fails_tls_monitoring(layout_copy, run_static, defect):
    stack, layout = layout_copy
    defect.inject(stack, layout)
    assert_only_control_fails(run_static(stack), "tls_monitoring", *map(layout.fill, defect.fragments))
