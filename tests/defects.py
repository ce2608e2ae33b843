"""Defect primitives: small functions that break one file of a stack dir.

Each returns an injector `inject(stack_dir)`; the defect tables of tests/ are built from them.
"""

from __future__ import annotations

import datetime as dt
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
