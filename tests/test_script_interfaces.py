"""The stack's scripts are judged through the interface its profile declares (scripts:).

A correct script with another CLI (paths in environment variables, a prompt answered on
stdin, its own exit codes, no machine-readable line) passes once declared; a declared
interface that cannot be right fails one check, naming the profile key."""

from __future__ import annotations

import pytest
from defects import replace
from harness import REPO, assert_only_control_fails, merge_into_profile
from stackproof.init import MONITOR_HINTS, UNREAD, Inspector, monitor_interface, rotate_interface, write_profile

MONITOR = "scripts/monitor-tls-certs.sh"
ROTATE = "scripts/rotate-api-key.sh"


def edit(relative: str, *pairs: tuple[str, str]):
    """Several replacements in one file of the copy (each must still be in the reference file)."""
    steps = [replace(relative, old, new) for old, new in pairs]

    def inject(stack):
        for step in steps:
            step(stack)
    return inject


def profile(text: str):
    """Merge YAML `text` into the copy's stackproof.yml (which already declares the reference interface)."""
    def inject(stack):
        merge_into_profile(stack, text)
    return inject


# The reference monitor rewritten to another house style: paths and thresholds from the environment,
# a confirmation read from stdin, exit 0/10/20 and 5 on error, one human-readable line per certificate.
OTHER_MONITOR = edit(
    MONITOR,
    ("warn_days=30\ncrit_days=7\n", 'read -r answer; [[ "$answer" == "yes" ]] || { echo "not confirmed" >&2; exit 99; }\n'
                                    'set -- --warn-days "$WARN" --crit-days "$CRIT" --metrics-file "$OUT" "$CERT"\n'
                                    "warn_days=30\ncrit_days=7\n"),
    ('echo "$cert: cn=$cn expires=$expires days_left=$days_left status=$status"',
     'echo "Certificate for $cn expires in $days_left days"'),
    ('echo "$cert: status=error reason=$reason"', 'echo "Could not check the certificate: $reason"'),
    ('((any_error)) && exit 3\nexit "$worst"', '((any_error)) && exit 5\ncase $worst in 0) exit 0;; 1) exit 10;; *) exit 20;; esac'),
)
OTHER_MONITOR_PROFILE = """
  monitor:
    command: ["{script}"]
    env: {CERT: "{cert}", OUT: "{metrics_file}", WARN: "{warn_days}", CRIT: "{crit_days}"}
    stdin: "yes\\n"
    exit_codes: {ok: 0, warning: 10, critical: 20, error: null}
    status_line: null
"""

# The reference rotate script rewritten: secrets dir, audit log and backup dir from the environment,
# the confirmation answered on stdin instead of --yes.
OTHER_ROTATE = edit(
    ROTATE,
    ('secrets_dir="$STACK_DIR/ai-stack/compose/secrets"', 'secrets_dir="${SECRETS_DIR:?}"'),
    ('audit_log="$STACK_DIR/ai-stack/compose/logs/key-rotation.log"', 'audit_log="${AUDIT_FILE:?}"'),
    ('if [[ ! -t 0 ]]; then', 'if false; then'),
    ('backups="$secrets_dir/backups"', 'backups="${BACKUP_DIR:?}"'),
)
OTHER_ROTATE_PROFILE = """
  rotate:
    command: ["{script}", "{key_name}"]
    env: {SECRETS_DIR: "{secrets_dir}", AUDIT_FILE: "{audit_log}", BACKUP_DIR: "{workdir}/key-archive"}
    stdin: "y\\n"
    audit_log: "{workdir}/audit/rotation.log"
    backup_dir: "{workdir}/key-archive"
"""


def test_scripts_with_another_cli_pass_once_declared(stack_copy, run_static):
    for inject in (OTHER_MONITOR, OTHER_ROTATE, profile("scripts:" + OTHER_MONITOR_PROFILE + OTHER_ROTATE_PROFILE)):
        inject(stack_copy)
    run = run_static(stack_copy)
    assert run.report is not None, run.stdout[-3000:]
    assert run.passed, {c: run.reasons(c) for c in run.failed_controls}


def test_undeclared_other_cli_fails_on_the_interface(stack_copy, run_static):
    """The same scripts without their profile: one failure each, naming the profile key."""
    OTHER_MONITOR(stack_copy)
    run = run_static(stack_copy)
    assert_only_control_fails(run, "tls_monitoring", "scripts.monitor.command: called as declared", "not confirmed")
    assert len(run.reasons("tls_monitoring")) == 1, run.reasons("tls_monitoring")


# (id, profile text, control that fails, fragments of its one failure)
WRONG_INTERFACES = [
    ("unknown-placeholder", 'scripts:\n  monitor:\n    command: ["{script}", "{certificate}"]\n', "tls_monitoring",
     ["scripts.monitor.command: unknown placeholder {certificate}"]),
    ("wrong-metric-name", "scripts:\n  monitor:\n    metrics: {expiry: tls_cert_expiry}\n", "tls_monitoring",
     ["scripts.monitor.metrics.expiry: no series 'tls_cert_expiry'"]),
    ("wrong-label-name", "scripts:\n  monitor:\n    labels: {cn: common_name}\n", "tls_monitoring",
     ["scripts.monitor.labels.cn: no label 'common_name'"]),
    ("wrong-status-line", 'scripts:\n  monitor:\n    status_line: "{cert} -> {status}"\n', "tls_monitoring",
     ["scripts.monitor.status_line: no stdout line matches"]),
    ("rotate-backup-elsewhere", 'scripts:\n  rotate:\n    backup_dir: "{workdir}/nowhere"\n', "api_key_permissions",
     ["no backup of the old key under (copy)/nowhere (scripts.rotate.backup_dir)"]),
    ("rotate-audit-outside", 'scripts:\n  rotate:\n    audit_log: "/var/log/rotation.log"\n', "api_key_permissions",
     ["scripts.rotate.audit_log: '/var/log/rotation.log' is not inside the copy"]),
]


@pytest.mark.parametrize("text, control, fragments", [w[1:] for w in WRONG_INTERFACES], ids=[w[0] for w in WRONG_INTERFACES])
def test_wrong_declared_interface_is_one_failure_naming_the_key(stack_copy, run_static, text, control, fragments):
    profile(text)(stack_copy)
    run = run_static(stack_copy)
    assert_only_control_fails(run, control, *fragments)
    assert len(run.reasons(control)) == 1, run.reasons(control)


# (id, profile text, the control its checks leave NOT PROVEN): the script refuses the call itself
REJECTED_INTERFACES = [
    ("monitor-wrong-flag", 'scripts:\n  monitor:\n    command: ["{script}", "--metrics", "{metrics_file}", "{cert}"]\n',
     "tls_monitoring"),
    ("monitor-value-for-a-switch", 'scripts:\n  monitor:\n    command: ["{script}", "--warn-days", "{cert}", '
     '"--metrics-file", "{metrics_file}", "{cert}"]\n', "tls_monitoring"),
    ("rotate-wrong-flag", 'scripts:\n  rotate:\n    command: ["{script}", "--secrets", "{secrets_dir}", "--yes"]\n',
     "api_key_permissions"),
]


@pytest.mark.parametrize("text, control", [w[1:] for w in REJECTED_INTERFACES], ids=[w[0] for w in REJECTED_INTERFACES])
def test_a_script_refusing_the_declared_interface_is_not_proven_not_failed(stack_copy, run_static, text, control):
    """Called with arguments it does not take, the script exits with its usage error and does nothing: that says
    the profile is wrong, not the script, so the checks are NOT PROVEN with the reason, and no control fails."""
    profile(text)(stack_copy)
    run = run_static(stack_copy)
    assert run.failed_controls == set(), {c: run.reasons(c) for c in run.failed_controls}
    assert run.statuses[control] == "NOT PROVEN" and run.failed_gate, run.statuses
    reasons = [row["reason"] for c in run.report["controls"] if c["id"] == control for row in c["checks"]
               if row["status"] == "SKIPPED"]
    assert any(r.startswith("not proven: the profile's interface does not match the script: ") and "exit 64" in r
               for r in reasons), reasons


@pytest.mark.parametrize("role, control", [("monitor", "tls_monitoring"), ("rotate", "api_key_permissions")])
def test_a_script_init_could_not_read_is_never_called_our_way(stack_copy, run_static, role, control):
    """What init writes for a script whose usage it could not read (`command: []`): its checks are NOT PROVEN,
    saying the call is not declared; the script is never run with the reference stack's flags."""
    profile(f"scripts:\n  {role}:\n    command: []\n")(stack_copy)
    run = run_static(stack_copy)
    assert run.statuses[control] == "NOT PROVEN", run.statuses
    assert run.failed_controls <= {"alert_rules"} if role == "monitor" else not run.failed_controls, run.failed_controls
    reasons = [row["reason"] for c in run.report["controls"] if c["id"] == control for row in c["checks"]
               if row["status"] == "SKIPPED"]
    assert any(f"scripts.{role}.command: how to call the script is not declared" in r for r in reasons), reasons


def test_root_is_never_the_scripts_uid(stack_copy, run_static):
    """api_key.rotation_uid: 0 is refused with one line; no script of the stack runs as root."""
    profile("api_key:\n  rotation_uid: 0\n")(stack_copy)
    run = run_static(stack_copy)
    assert_only_control_fails(run, "api_key_permissions", "api_key.rotation_uid: 0 is root", also=("tls_monitoring",))


def test_a_rotation_never_told_where_to_log_is_not_proven(stack_copy, run_static):
    """scripts.rotate.audit_log left as the suite's own {audit_log}, which the command never passes: the script
    logs where it always does, not there. That says the profile does not know where it logs: NOT PROVEN, naming
    scripts.rotate.audit_log, never a failed rotation control."""
    profile('scripts:\n  rotate:\n    command: ["{script}", "--secrets-dir", "{secrets_dir}", "--yes", "{key_name}"]\n')(
        stack_copy)
    run = run_static(stack_copy)
    assert run.failed_controls == set(), {c: run.reasons(c) for c in run.failed_controls}
    assert run.statuses["api_key_permissions"] == "NOT PROVEN", run.statuses
    reasons = [row["reason"] for c in run.report["controls"] if c["id"] == "api_key_permissions" for row in c["checks"]
               if row["status"] == "SKIPPED"]
    assert any(r.startswith("not proven: the profile's interface does not match the script: ")
               and "scripts.rotate.audit_log is the suite's own {audit_log}" in r for r in reasons), reasons


# --- init reads an interface from the usage text and proves it by a trial run in the sandbox -------------


def test_init_reads_short_flags_argparse_usage_and_metrics_lines():
    """getopts-style short flags (`-w DAYS -c DAYS -o FILE`), `-o, --output FILE` lines, a Python script's argparse
    usage in its docstring, `Metrics:` lines, Nagios' UNKNOWN for the error code, a label the script does not write."""
    stacks = REPO / "tests/stacks"
    harbor, _ = monitor_interface((stacks / "harbor/scripts/cert-expiry.sh").read_text(), "cert-expiry.sh")
    assert harbor["command"] == ["{script}", "-w", "{warn_days}", "-c", "{crit_days}", "-o", "{metrics_file}", "{cert}"]
    assert harbor["exit_codes"] == {"ok": 0, "warning": 1, "critical": 2, "error": 3}
    assert harbor["labels"] == {"cert": "cert", "cn": "cn", "issuer": "issuer"}
    lighthouse, notes = monitor_interface((stacks / "lighthouse/ops/certcheck.py").read_text(), "certcheck.py")
    assert lighthouse["command"] == ["{script}", "--warning", "{warn_days}", "--critical", "{crit_days}",
                                     "--textfile", "{metrics_file}", "{cert}"]
    assert lighthouse["labels"] == {"cert": "path", "cn": "domain", "issuer": None} and "no label for issuer" in notes
    meridian, _ = monitor_interface((stacks / "meridian/tools/certmon").read_text(), "certmon")
    assert meridian["command"] == ["{script}", "--output", "{metrics_file}", "--threshold", "{crit_days}", "{cert}"]
    assert meridian["metrics"] == {"expiry": "cert_expiry_timestamp", "days_left": "cert_days_remaining",
                                   "status": "cert_check_status", "success": "cert_check_ok"}


def test_init_writes_a_todo_for_an_interface_a_trial_run_refutes(stack_copy):
    """The usage text promises `--metrics FILE`, the script takes `--metrics-file`: init's trial run in the sandbox
    is refused, and init says so in a TODO instead of trusting the text."""
    replace(MONITOR, "#   --metrics-file FILE Prometheus textfile to write", "#   --metrics FILE Prometheus textfile to write")(
        stack_copy)
    replace(MONITOR, "[--metrics-file FILE]", "[--metrics FILE]")(stack_copy)
    _, findings = write_profile(stack_copy, force=True)
    todo = next((t for t in findings.todos if t.startswith("scripts.monitor: not proven by a trial run")), None)
    assert todo is not None and "--metrics" in todo, findings.todos
    assert not any(t.startswith("scripts.rotate") for t in findings.todos), findings.todos
    rotate = next(e for e in findings.entries if (e.section, e.key) == ("scripts", "rotate"))
    assert "proven by a trial run in the sandbox" in rotate.how, rotate.how


# --- init finds a script's role by what it does --------------------------------------------------------------

CERT_MAKER = """#!/bin/sh
# make-certs.sh - a self-signed certificate for nginx, with its metrics dir made ready for the exporter
# Usage: make-certs.sh DAYS
openssl req -x509 -newkey rsa:2048 -nodes -days "$1" -keyout key.pem -out cert.pem -subj /CN=localhost
mkdir -p /var/lib/node-exporter/textfile  # the textfile dir (# TYPE lines are the monitor's job)
"""
ROTATES_SERVICE_PASSWORDS = """#!/bin/bash

# rotate-db.sh - new passwords for the databases, by service name
# Usage: rotate-db.sh [--dry-run] [--service SERVICE]
backup=/var/backups/secrets
NEW=$(openssl rand -base64 32)
echo "Usage: $0 [--dry-run] [--service SERVICE]"
"""


def test_a_certificate_maker_is_never_taken_for_the_monitor(stack_copy):
    """A script that makes certificates and never reads an expiry date (a self-signed generator, a Let's Encrypt
    bootstrap) is not a TLS monitor, whatever words of metrics it holds; the reference monitor is still found."""
    maker = stack_copy / "scripts/make-certs.sh"
    maker.write_text(CERT_MAKER)
    maker.chmod(0o755)
    candidates = Inspector(stack_copy)._candidates(MONITOR_HINTS, "the TLS monitor")
    assert maker not in candidates and stack_copy / MONITOR in candidates, candidates


def test_an_expiry_check_that_writes_no_metrics_is_named_in_the_todo_not_taken(stack_copy):
    """With no monitor in the repository, a script that reads certificates' expiry but only logs it is not taken
    for the monitor: the TODO names it, and what it lacks, so the operator sees where the role is half done."""
    (stack_copy / MONITOR).unlink()
    logger = stack_copy / "scripts/check-cert-expiry.sh"
    logger.write_text("#!/bin/sh\nopenssl x509 -noout -enddate -in \"$1\" | logger -t certs\n")
    logger.chmod(0o755)
    _, findings = write_profile(stack_copy, force=True)
    todo = next(t for t in findings.todos if t.startswith("paths.monitor_script"))
    assert "close, but not it: scripts/check-cert-expiry.sh writes no Prometheus text" in todo, todo
    assert not any(e.key == "monitor_script" for e in findings.entries if e.section == "paths"), findings.entries


def test_a_monitor_that_fails_its_trial_is_passed_over_for_one_that_works(stack_copy):
    """Two scripts read like the monitor; the one that sorts first writes no metrics file when called as its usage
    says. init tries the next, keeps the one whose trial run works, and names the one it passed over."""
    broken = stack_copy / "scripts/a-cert-report.sh"
    broken.write_text("#!/bin/sh\n# Usage: a-cert-report.sh [--metrics-file FILE] CERT\n"
                      "# reads the enddate of CERT and prints days left (# TYPE lines: see the real monitor)\n"
                      "openssl x509 -noout -enddate -in \"$3\"\n")
    broken.chmod(0o755)
    _, findings = write_profile(stack_copy, force=True)
    chosen = next(e for e in findings.entries if (e.section, e.key) == ("paths", "monitor_script"))
    assert chosen.value == MONITOR and "passed over: scripts/a-cert-report.sh" in chosen.how, chosen
    assert not any(t.startswith("scripts.monitor") for t in findings.todos), findings.todos


def test_a_rotation_its_usage_cannot_point_at_the_key_is_a_todo_not_a_guessed_call(tmp_path):
    """A synopsis with no operand, flag or variable for the key (it rotates services' passwords by name; its usage
    is echoed, after a blank line below the shebang) is not called with the key's name as an argument."""
    interface, notes = rotate_interface(ROTATES_SERVICE_PASSWORDS, "rotate-db.sh")
    assert notes == UNREAD, (interface, notes)
    interface, notes = rotate_interface(ROTATES_SERVICE_PASSWORDS.replace("[--service SERVICE]",
                                                                           "[--service SERVICE] NAME"), "rotate-db.sh")
    assert interface["command"][-1] == "{key_name}", interface


ARGPARSE_MONITOR = """#!/usr/bin/env python3
import argparse
import sys

parser = argparse.ArgumentParser(prog="certcheck")
parser.add_argument("--warning", type=int, default=30, help="warning threshold in days")
parser.add_argument("--critical", type=int, default=7, help="critical threshold in days")
parser.add_argument("--textfile", required=True, help="Prometheus textfile to write (metrics)")
parser.add_argument("cert", help="the certificate file to check")
args = parser.parse_args()
open("/tmp/escaped", "w").write("ran")  # in the sandbox: its own /tmp
sys.exit(3)
"""


def test_a_usage_only_its_help_prints_is_read_from_a_sandboxed_help_run(stack_copy):
    """A script whose source holds no usage text (argparse builds it at run time): init runs `--help` once in the
    sandbox and reads the flags from what it prints."""
    script = stack_copy / "scripts/certcheck"
    script.write_text(ARGPARSE_MONITOR)
    script.chmod(0o755)
    assert monitor_interface(ARGPARSE_MONITOR, "certcheck")[1] == UNREAD
    interface, notes = Inspector(stack_copy)._read_help(script, monitor_interface)
    assert interface["command"] == ["{script}", "--warning", "{warn_days}", "--critical", "{crit_days}",
                                    "--textfile", "{metrics_file}", "{cert}"], (interface, notes)
    assert notes.endswith("(from its --help, run in the sandbox)")
