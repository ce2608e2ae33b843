"""Defect primitives: small functions that break one file of a stack dir.

Each returns an injector `inject(stack_dir)`; the defect tables of tests/ are built from them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
import os
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Injector = Callable[[Path], None]


def replace(relative: str, old: str, new: str) -> Injector:
    """Replace the first `old` in a file; the reference file must still hold it."""

    def inject(stack: Path) -> None:
        path = stack / relative
        text = path.read_text()
        assert old in text, f"the reference {relative} changed: update this defect"
        path.write_text(text.replace(old, new, 1))

    return inject


COORDINATOR_CONFIG = "ai-stack/mcp-servers/config/coordinator.yaml"


def breaker_removed_from_coordinator(stack: Path) -> None:
    """hybrid-coordinator mounts its own config (coordinator.yaml): the same, without the circuit_breaker section."""
    config = (stack / "ai-stack/mcp-servers/config/config.yaml").read_text()
    start, end = config.index("circuit_breaker:\n"), config.index("security:\n")
    (stack / COORDINATOR_CONFIG).write_text(config[:start] + config[end:])
    compose = stack / "ai-stack/compose/docker-compose.yml"
    text = compose.read_text()
    mount = "      - ../mcp-servers/config/config.yaml:/etc/ai-stack/config.yaml:ro\n"
    at = text.index(mount, text.index("  hybrid-coordinator:\n"))
    compose.write_text(text[:at] + mount.replace("config.yaml:/", "coordinator.yaml:/") + text[at + len(mount):])


def chmod(relative: str, mode: int) -> Injector:
    return lambda stack: os.chmod(stack / relative, mode)


def write(relative: str, data: bytes) -> Injector:
    return lambda stack: (stack / relative).write_bytes(data)


def remove(relative: str) -> Injector:
    return lambda stack: (stack / relative).unlink()


def certificate_pair(days: int, common_name: str = "localhost") -> tuple[x509.Certificate, bytes]:
    """A self-signed certificate with `days` left (and an hour), and its PEM key (EC P-256: fast)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days, hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert, pem_key


# --- the stacks a defect can be injected into -------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where a test stack keeps each file a defect breaks (relative to its root), and the names
    the failure messages use. Fragments of expected reasons are format strings over these fields."""

    name: str
    compose: str
    pool_config: str
    prometheus_config: str
    rules: str
    secrets_dir: str
    api_key: str
    db_password: str
    tls_cert: str
    tls_key: str
    monitor_script: str
    rotate_script: str
    api_key_secret: str  # the compose secret of the API key
    api_service: str  # one service that mounts the API key
    exporter: str  # the textfile exporter service
    prometheus: str  # the Prometheus service

    def fill(self, fragment: str) -> str:
        return fragment.format(**self.__dict__)


REFERENCE = Layout(
    name="reference",
    compose="ai-stack/compose/docker-compose.yml",
    pool_config="ai-stack/mcp-servers/config/config.yaml",
    prometheus_config="ai-stack/compose/prometheus/prometheus.yml",
    rules="ai-stack/compose/prometheus/alerts/ai-stack-alerts.yml",
    secrets_dir="ai-stack/compose/secrets",
    api_key="ai-stack/compose/secrets/stack_api_key",
    db_password="ai-stack/compose/secrets/postgres_password",
    tls_cert="ai-stack/compose/nginx/certs/server.crt",
    tls_key="ai-stack/compose/nginx/certs/server.key",
    monitor_script="scripts/monitor-tls-certs.sh",
    rotate_script="scripts/rotate-api-key.sh",
    api_key_secret="stack_api_key",
    api_service="aidb",
    exporter="node-exporter",
    prometheus="prometheus",
)

# tests/stacks/northwind: another house style (see its README.md)
NORTHWIND = Layout(
    name="northwind",
    compose="deploy/compose.yaml",
    pool_config="config/app.yml",
    prometheus_config="observability/prometheus.yml",
    rules="observability/rules/northwind.rules.yml",
    secrets_dir="secrets",
    api_key="secrets/api_token",
    db_password="secrets/db_password",
    tls_cert="tls/api.northwind.internal.crt",
    tls_key="tls/api.northwind.internal.key",
    monitor_script="bin/certwatch",
    rotate_script="bin/rotate-token",
    api_key_secret="api_token",
    api_service="catalog",
    exporter="hostmetrics",
    prometheus="tsdb",
)

LAYOUTS = {layout.name: layout for layout in (REFERENCE, NORTHWIND)}

# A defect for each stack: inject(stack_dir, layout) breaks the copy.
LayoutInjector = Callable[[Path, Layout], None]


def chmod_file(field: str, mode: int) -> LayoutInjector:
    """chmod the layout's file (`field`: api_key, tls_key, secrets_dir...)."""
    return lambda stack, layout: os.chmod(stack / getattr(layout, field), mode)


def edit_yaml(field: str, dotted: str, value) -> LayoutInjector:
    """Set a value in one of the layout's YAML files (a defect that does not depend on its layout)."""
    import yaml

    def inject(stack: Path, layout: Layout) -> None:
        path = stack / getattr(layout, field)
        doc = yaml.safe_load(path.read_text())
        node = doc
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    return inject


def per_stack(**edits: tuple[str, str, str]) -> LayoutInjector:
    """A text edit written for each stack: name=(layout field, old text, new text)."""

    def inject(stack: Path, layout: Layout) -> None:
        field, old, new = edits[layout.name]
        replace(getattr(layout, field), old, new)(stack)

    return inject


def replace_in(field: str, old: str, new: str) -> LayoutInjector:
    """The same text edit in the layout's file of each stack (the text must be in both)."""
    return lambda stack, layout: replace(getattr(layout, field), old, new)(stack)


def remove_file(field: str) -> LayoutInjector:
    return lambda stack, layout: (stack / getattr(layout, field)).unlink()


def write_certificate(days: int, with_key: bool = True) -> LayoutInjector:
    """A new certificate with `days` left in the layout's certificate file (and its key, unless not)."""

    def inject(stack: Path, layout: Layout) -> None:
        cert, pem_key = certificate_pair(days)
        (stack / layout.tls_cert).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if with_key:
            (stack / layout.tls_key).write_bytes(pem_key)

    return inject


def write_key(content: bytes) -> LayoutInjector:
    """Replace the API key file (owner-only, as the stack keeps it) with `content`."""

    def inject(stack: Path, layout: Layout) -> None:
        path = stack / layout.api_key
        path.unlink()
        path.write_bytes(content)
        os.chmod(path, 0o400)

    return inject


@dataclass(frozen=True)
class Defect:
    """One defect, injectable into each stack it applies to; `fragments` are Layout.fill templates."""

    id: str
    inject: LayoutInjector
    fragments: tuple[str, ...]
    stacks: tuple[str, ...] = ("reference", "northwind")
    args: tuple[str, ...] = ()


def cases(defects: list[Defect]) -> list:
    """pytest params (layout_copy indirect, defect), id `<stack>-<defect>`."""
    import pytest

    return [pytest.param(name, defect, id=f"{name}-{defect.id}") for defect in defects for name in defect.stacks]


def certificate_on_disk(days: int) -> Injector:
    """nginx's certificate and key files replaced by a valid localhost pair with `days` left (in place:
    owner and mode stay). Recreating nginx makes it serve them (10 days: a near-expiry certificate);
    not recreating it is a certificate renewed on disk that nginx never loaded, which only the TLS
    control can name: the other controls' HTTPS checks are then not proven, not failed."""
    return lambda stack: write_certificate(days)(stack, REFERENCE)


