"""Three more test stacks in house styles seen in real repositories (tests/stacks/<name>/README.md),
how each is set up, and small defects for each: functions that break one file, each meant to fail
exactly one control. tests/test_house_stacks.py runs them.

Each stack is correct by its own conventions. Where the suite still reads it through the reference
stack's conventions, `artifact` says in one line which artifact of the suite stops the test from
passing today (its strict xfail reason); when the suite is fixed, the test passes and the artifact
is deleted here. tests/stacks/ARTIFACTS.md lists every failing or NOT PROVEN row behind them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import serialization
from defects import certificate_pair

Injector = Callable[[Path], None]


class InjectionError(RuntimeError):
    """A defect no longer fits its stack's files (the stack changed): a real failure, never an expected one."""


# --- injectors ---------------------------------------------------------------------------


def edit(relative: str, old: str, new: str) -> Injector:
    """Replace the first `old` in a file; the stack's file must still hold it."""

    def inject(stack: Path) -> None:
        path = stack / relative
        text = path.read_text()
        if old not in text:
            raise InjectionError(f"{relative} no longer holds {old!r}: update this defect")
        path.write_text(text.replace(old, new, 1))

    return inject


def chmod(relative: str, mode: int) -> Injector:
    def inject(stack: Path) -> None:
        if not (stack / relative).exists():
            raise InjectionError(f"{relative} does not exist: update this defect")
        os.chmod(stack / relative, mode)

    return inject


def write(relative: str, text: str) -> Injector:
    """A file's content replaced (the file must exist)."""

    def inject(stack: Path) -> None:
        if not (stack / relative).is_file():
            raise InjectionError(f"{relative} does not exist: update this defect")
        (stack / relative).write_text(text)

    return inject


def both(*injectors: Injector) -> Injector:
    """Several edits that make one defect (e.g. a rule and its unit test changed together)."""

    def inject(stack: Path) -> None:
        for injector in injectors:
            injector(stack)

    return inject


def pem_pair(days: int, common_name: str) -> tuple[bytes, bytes]:
    cert, key = certificate_pair(days, common_name)
    return cert.public_bytes(serialization.Encoding.PEM), key


def certificate(cert: str, key: str, days: int, common_name: str) -> Injector:
    """The certificate and its key replaced in place (modes and owners kept) by a pair with `days` left."""

    def inject(stack: Path) -> None:
        if not (stack / cert).is_file() or not (stack / key).is_file():
            raise InjectionError(f"{cert} or {key} missing: run the stack's set-up first")
        pem, pem_key = pem_pair(days, common_name)
        (stack / cert).write_bytes(pem)
        (stack / key).write_bytes(pem_key)

    return inject


def certbot_renewal(domain: str, days: int) -> Injector:
    """What `certbot renew` does: generation 2 of the files in letsencrypt/archive/<domain>/, and the
    symlinks of letsencrypt/live/<domain>/ moved to it; here the new certificate has `days` left."""

    def inject(stack: Path) -> None:
        archive, live = stack / "letsencrypt/archive" / domain, stack / "letsencrypt/live" / domain
        if not (live / "fullchain.pem").is_symlink():
            raise InjectionError(f"{live} holds no certbot symlinks: run the stack's set-up first")
        pem, pem_key = pem_pair(days, domain)
        chain = (archive / "chain1.pem").read_bytes()
        for name, data, mode in (("cert", pem, 0o644), ("chain", chain, 0o644), ("fullchain", pem + chain, 0o644),
                                 ("privkey", pem_key, 0o600)):
            (archive / f"{name}2.pem").write_bytes(data)
            os.chmod(archive / f"{name}2.pem", mode)
            (live / f"{name}.pem").unlink()
            (live / f"{name}.pem").symlink_to(f"../../archive/{domain}/{name}2.pem")

    return inject


def replace_key(relative: str, value: bytes) -> Injector:
    """A key file replaced (unlinked, written, 0400: as a rotation would leave it) by `value`."""

    def inject(stack: Path) -> None:
        path = stack / relative
        if not path.is_file():
            raise InjectionError(f"{relative} missing: run the stack's set-up first")
        path.unlink()
        path.write_bytes(value)
        os.chmod(path, 0o400)

    return inject


def json_field(relative: str, key: str, value) -> Injector:
    """A recorded JSON response given one more (large) field."""

    def inject(stack: Path) -> None:
        path = stack / relative
        doc = json.loads(path.read_text())
        doc[key] = value(stack) if callable(value) else value
        path.write_text(json.dumps(doc, indent=2))

    return inject


def text_of(relative: str) -> Callable[[Path], str]:
    return lambda stack: (stack / relative).read_text()


# --- the stacks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HouseStack:
    name: str  # tests/stacks/<name>
    setup: str  # its own set-up command, relative to its root (as its README says)
    secrets: tuple[str, ...]  # what the set-up generates that is secret: 0400/0600, never tracked by git
    secrets_dir: str
    rule_tests: str  # its own promtool unit tests (a file)
    monitor: tuple[str, ...]  # its TLS monitor called its own way: {cert} and {out} (metrics file) filled in
    artifact: str | None  # why the correct stack has failing checks today (None: it has none)
    # real defects of the stack as written (not artifacts of the suite): (control, what its one failing check must
    # name); the suite must report each, and nothing else may fail on the correct stack
    real_defects: tuple[tuple[str, str], ...] = ()


# each stack's monitor judges a certificate by its notAfter alone: one valid only from two days on passes as OK
# (exit 0, its days-left metrics written), though clients refuse it; the suite expects an error (tests/stacks/ARTIFACTS.md)
def not_yet_valid_passes(script: str) -> tuple[str, str]:
    return "tls_monitoring", f"{script}: not-yet-valid: exit 0, expected 3 (error)"

HOUSE_STACKS = {stack.name: stack for stack in (
    HouseStack(
        name="harbor",
        setup="scripts/setup.sh",
        secrets=("secrets/master_key", "secrets/postgres_password", "secrets/slack_webhook_url", "nginx/certs/harbor.key"),
        secrets_dir="secrets",
        rule_tests="monitoring/tests/harbor_test.yml",
        monitor=("scripts/cert-expiry.sh", "-o", "{out}", "{cert}"),
        artifact=None,
        real_defects=(not_yet_valid_passes("scripts/cert-expiry.sh"),),
    ),
    HouseStack(
        name="lighthouse",
        setup="bin/init-letsencrypt",
        secrets=("secrets/api_key", "secrets/db_password", "letsencrypt/archive/api.lighthouse.example/privkey1.pem"),
        secrets_dir="secrets",
        rule_tests="monitoring/alert.rules.test.yml",
        monitor=("ops/certcheck.py", "--textfile", "{out}", "{cert}"),
        artifact=None,
        real_defects=(not_yet_valid_passes("ops/certcheck.py"),),
    ),
    HouseStack(
        name="meridian",
        setup="tools/bootstrap",
        secrets=("secrets/api_key", "secrets/db_password"),
        secrets_dir="secrets",
        rule_tests="monitoring/rules/tests/meridian.test.yml",
        monitor=("tools/certmon", "--output", "{out}", "{cert}"),
        artifact=None,
        real_defects=(not_yet_valid_passes("tools/certmon"),),
    ),
)}


# --- the defects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HouseDefect:
    stack: str
    id: str
    control: str  # the one control it must fail
    inject: Injector
    fragments: tuple[str, ...]  # what the failure reasons of that control must name
    also: str = ""  # an artifact that hides this defect besides the stack's own (HouseStack.artifact)
    hidden_by_stack: bool = True  # whether the stack's own artifact hides it (False: the defect is found despite it)

    @property
    def expected_failure(self) -> str | None:
        """The strict xfail reason (one line), None when the test passes today."""
        parts = [part for part in (HOUSE_STACKS[self.stack].artifact if self.hidden_by_stack else "", self.also) if part]
        return "; ".join(parts) or None


HARBOR_DOCS = "gateway/disclosure/api-reference.md"
LIGHTHOUSE_DISCLOSURE = "api/app/static/disclosure"

DEFECTS = [
    # harbor: production = compose/base.yml + compose/prod.yml
    HouseDefect("harbor", "master-key-0644", "api_key_permissions", chmod("secrets/master_key", 0o644),
                ("secrets/master_key 0644",), hidden_by_stack=False),  # the stack's artifact fails this control only
    HouseDefect("harbor", "secret-mode-0444", "docker_secrets_mode",
                edit("compose/prod.yml", "{source: master_key, target: master_key, mode: 0400}",
                     "{source: master_key, target: master_key, mode: 0444}"),
                ("compose/prod.yml: secret mode is not 0400: gateway → master_key mode 0444",)),
    HouseDefect("harbor", "three-replicas", "connection_pool",  # 3 x 60 > 160 - 3
                edit("compose/prod.yml", "replicas: 2 ", "replicas: 3 "), ("180 connections (gateway 3 × 60)", "157")),
    HouseDefect("harbor", "pool-cap-below-min-connections", "connection_pool",  # a cap of 30 leaves an overflow of 10
                edit("config/litellm.yaml", "max_connections: 60 ", "max_connections: 30 "),
                ("general_settings.database.max_connections - min_connections is 10",)),
    HouseDefect("harbor", "tls-alert-dead-metric", "alert_rules",
                edit("monitoring/rules/harbor.yml", "expr: ssl_cert_days_left < 30", "expr: ssl_cert_days_remaining < 30"),
                ("TLSCertificateRenewalDue",)),
    HouseDefect("harbor", "cert-10-days", "tls_monitoring",
                certificate("nginx/certs/harbor.crt", "nginx/certs/harbor.key", 10, "gateway.harbor.internal"),
                ("nginx/certs/harbor.crt: 10 days left",)),
    HouseDefect("harbor", "quickstart-with-the-docs", "progressive_disclosure",
                json_field("gateway/disclosure/quickstart.json", "details", text_of(HARBOR_DOCS)), ("quickstart",)),
    HouseDefect("harbor", "cooldown-20s", "circuit_breakers",  # shorter than the alert's for (30s) + scrape + evaluation
                edit("config/litellm.yaml", "cooldown_time: 60 ", "cooldown_time: 20 "), ("CircuitBreakerOpen",)),

    # lighthouse: production = docker-compose.prod.yml
    HouseDefect("lighthouse", "secrets-dir-0755", "api_key_permissions", chmod("secrets", 0o755),
                ("secrets dir mode 0755",)),
    HouseDefect("lighthouse", "api-key-short-syntax", "docker_secrets_mode",
                edit("docker-compose.prod.yml", "    - {source: api_key, target: api_key, mode: 0400}\n", "    - api_key\n"),
                ("api_key mode not declared",)),
    HouseDefect("lighthouse", "overflow-5", "connection_pool",
                edit("docker-compose.prod.yml", 'DB_POOL_OVERFLOW: "30"', 'DB_POOL_OVERFLOW: "5"'), ("api: DB_POOL_OVERFLOW=5",)),
    HouseDefect("lighthouse", "pre-ping-off", "connection_pool",  # the api's pool hands out dead connections after a failover
                edit("docker-compose.prod.yml", 'DB_POOL_PRE_PING: "true"', 'DB_POOL_PRE_PING: "false"'),
                ("api: DB_POOL_PRE_PING=false",)),
    # the worker's own pool (no minimum: it serves no agent) still counts in Postgres' budget: api 50 + worker 70 > 120 - 3
    HouseDefect("lighthouse", "worker-pool-over-budget", "connection_pool",
                both(edit("docker-compose.prod.yml", 'DB_POOL_SIZE: "5"', 'DB_POOL_SIZE: "40"'),
                     edit("docker-compose.prod.yml", 'DB_POOL_OVERFLOW: "5"', 'DB_POOL_OVERFLOW: "30"')),
                ("the pools need up to 120 connections (api 50 + worker 70)", "120 - 3 reserved = 117")),
    HouseDefect("lighthouse", "rule-file-typo", "alert_rules",
                edit("monitoring/prometheus.yml", "rule_files: [alert.rules.yml]", "rule_files: [alerts.rules.yml]"),
                ("alerts.rules.yml",), hidden_by_stack=False),
    # the pool alert needs more connections than the pool has: it never fires; its unit test, kept beside the rule
    # file, Prometheus' and Alertmanager's configs in monitoring/, says so (the other files are no tests to run)
    HouseDefect("lighthouse", "pool-alert-never-fires", "alert_rules",
                edit("monitoring/alert.rules.yml", "lighthouse_db_pool_checked_out >= lighthouse_db_pool_size",
                     "lighthouse_db_pool_checked_out > lighthouse_db_pool_size"),
                ("promtool test rules failed: monitoring/alert.rules.test.yml", "DatabasePoolExhausted")),
    HouseDefect("lighthouse", "renewed-with-10-days", "tls_monitoring", certbot_renewal("api.lighthouse.example", 10),
                ("letsencrypt/live/api.lighthouse.example/fullchain.pem: 10 days left",)),
    HouseDefect("lighthouse", "full-docs-stub", "progressive_disclosure",
                write(f"{LIGHTHOUSE_DISCLOSURE}/full-docs.md", "# lighthouse API\n\nMoved to the wiki: "
                      "https://wiki.lighthouse.example/api\n"),
                ("full-docs.md",)),
    # the alert rewritten for the reference stack's encoding (1 = open), its unit test "fixed" to match:
    # promtool passes, and the alert fires for half-open breakers, never for open ones
    HouseDefect("lighthouse", "alert-on-reference-encoding", "circuit_breakers", both(
        edit("monitoring/alert.rules.yml", "expr: lighthouse_circuit_state == 2", "expr: lighthouse_circuit_state == 1"),
        edit("monitoring/alert.rules.test.yml", "breaker=\"postgres\"}'\n        values: '0 2x20'",
             "breaker=\"postgres\"}'\n        values: '0 1x20'"),
        edit("monitoring/alert.rules.test.yml", "breaker=\"postgres\"}'\n        values: '0 1x20'\n      - series: 'up",
             "breaker=\"postgres\"}'\n        values: '0 2x20'\n      - series: 'up")),
        ("CircuitBreakerOpen",)),
    # a breaker that never opens: 10,000 failures before it refuses calls (read from the code, never run)
    HouseDefect("lighthouse", "breaker-never-opens", "circuit_breakers",
                edit("api/app/db.py", 'CircuitBreaker("postgres", fail_max=5,', 'CircuitBreaker("postgres", fail_max=10000,'),
                ("api/app/db.py:17: CircuitBreaker('postgres') failure_threshold is 10000 for api",)),

    # meridian: compose.yaml, profile monitoring
    HouseDefect("meridian", "api-key-16-bytes", "api_key_permissions",
                replace_key("secrets/api_key", os.urandom(16).hex().encode()), ("secrets/api_key",)),
    HouseDefect("meridian", "secret-mode-0440", "docker_secrets_mode",
                edit("compose.yaml", "{source: api_key, target: api_key, mode: 0400}",
                     "{source: api_key, target: api_key, mode: 0440}"),
                ("api_key mode 0440",)),
    HouseDefect("meridian", "max-connections-80", "connection_pool",  # api 50 + ingest 50 > 80 - 3
                edit("postgres/postgresql.conf", "max_connections = 120", "max_connections = 80"), ("max_connections 80",)),
    HouseDefect("meridian", "rules-not-mounted", "alert_rules",
                edit("compose.yaml", "      - ./monitoring/rules:/etc/prometheus/rules:ro\n", ""), ("rule_files",),
                hidden_by_stack=False),
    # the floor of a negative day count lost: an expired certificate reads one day less expired
    HouseDefect("meridian", "expired-days-rounded-up", "tls_monitoring",
                edit("tools/certmon", '[ "$not_after" -lt "$now" ] && [ $(( (not_after - now) % 86400 )) -ne 0 ] '
                                      "&& days=$((days - 1))\n", ""),
                ("tools/certmon: expired",)),
    HouseDefect("meridian", "discovery-recorded-with-the-docs", "progressive_disclosure",
                json_field("contracts/snapshots/discovery.json", "reference", text_of("contracts/snapshots/docs.md")),
                ("discovery",)),
    HouseDefect("meridian", "reset-timeout-20s", "circuit_breakers",  # shorter than for 15s + scrape 10s + evaluation 10s
                edit("config/settings.yaml", "reset_timeout: 45s ", "reset_timeout: 20s "), ("CircuitBreakerOpen",)),
]
