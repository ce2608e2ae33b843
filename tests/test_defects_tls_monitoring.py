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
    ("monitor-not-executable", chmod(SCRIPT, 0o644), (), [f"{SCRIPT}: mode 0644, not executable", "cannot run"]),
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
    Defect("cert-10-days-left", write_certificate(10), ("{tls_cert}: 10 days left (expected more than 30)",)),
    Defect("key-does-not-match", write_certificate(365, with_key=False), ("{tls_key}: private key does not match {tls_cert}",)),
    Defect("key-mode-0644", chmod_file("tls_key", 0o644), ("{tls_key}: mode 0644 (expected 0600 or stricter)",)),
]


@pytest.mark.parametrize("layout_copy, defect", cases(BOTH), indirect=["layout_copy"])
def test_defect_fails_tls_monitoring_in_each_stack(layout_copy, run_static, defect):
    stack, layout = layout_copy
    defect.inject(stack, layout)
    assert_only_control_fails(run_static(stack, *defect.args), "tls_monitoring", *map(layout.fill, defect.fragments))
