"""Every condition under which a client refuses a certificate, besides its expiry and its key.

Not valid yet (a clock-skewed CA, a certificate issued for a future date), a weak key or signature
(RSA or DSA under 2048 bits, EC under 256, SHA-1 or MD5 signatures: browsers and current OpenSSL
security levels refuse them), a name the server answers to that the SAN does not list (clients
match the SAN only, the CN is ignored), and a served chain that does not lead from the leaf to a root. Shared by the
static checks (the file on disk) and the live ones (what nginx serves).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from stackproof.io.files import read_stack_text

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
WEAK_HASHES = {"sha1", "md5", "md2", "md4"}
NGINX_CONF_CAP = 1024 * 1024


def not_yet_valid(cert: x509.Certificate, now: dt.datetime | None = None) -> str | None:
    """Why the certificate is not valid yet, or None."""
    now = now or dt.datetime.now(dt.timezone.utc)
    start = cert.not_valid_before_utc
    if start > now:
        return f"not valid before {start:%Y-%m-%d %H:%M} UTC ({(start - now).days} days from now)"
    return None


def weaknesses(cert: x509.Certificate) -> list[str]:
    """The certificate's key and signature weaknesses (empty: none)."""
    found = []
    key = cert.public_key()
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)) and key.key_size < MIN_RSA_BITS:
        found.append(f"{'RSA' if isinstance(key, rsa.RSAPublicKey) else 'DSA'} key of {key.key_size} bits "
                     f"(need >= {MIN_RSA_BITS})")
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < MIN_EC_BITS:
        found.append(f"EC key on {key.curve.name} ({key.curve.key_size} bits, need >= {MIN_EC_BITS})")
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if algorithm is not None and algorithm.name.lower() in WEAK_HASHES:
        found.append(f"signed with {algorithm.name.upper()}")
    return found


def key_description(cert: x509.Certificate) -> str:
    key = cert.public_key()
    size = getattr(key, "key_size", None) or getattr(getattr(key, "curve", None), "key_size", None)
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    kind = type(key).__name__.lstrip("_").replace("PublicKey", "")
    return f"{kind} {size or '?'} bits, signature {algorithm.name.upper() if algorithm else 'without a separate hash'}"


def san_names(cert: x509.Certificate) -> tuple[list[str], list[str]] | None:
    """(DNS names, IP addresses) of the SAN extension, None when the certificate has none."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def covers(pattern: str, name: str) -> bool:
    """Whether a SAN DNS name (possibly `*.example.com`) matches a host name, as RFC 6125 clients match it."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def names_not_covered(cert: x509.Certificate, names: list[str]) -> list[str]:
    """The served names a client would refuse this certificate for."""
    found = san_names(cert)
    if found is None:
        return list(names)
    dns, ips = found
    missing = []
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            ok = any(covers(pattern, name) for pattern in dns)
        else:
            ok = name in ips
        if not ok:
            missing.append(name)
    return missing


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether `parent` names and signs `child` (a client's path building)."""
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def chain_problem(chain: list[x509.Certificate]) -> str | None:
    """Why a served chain (leaf first, the rest in any order, as clients accept it) is incomplete, or None.

    From the leaf, each certificate's issuer is looked for among the served ones (by name and
    signature). A path that reaches a self-issued certificate is complete; one that stops earlier
    is complete too when only the leaf is served (its issuer may be the client's trust anchor),
    but when the file serves a chain the missing link is its defect: the intermediates it serves
    do not connect the leaf to a root."""
    current, seen = chain[0], [chain[0]]
    while current.issuer != current.subject:
        named = [c for c in chain if c.subject == current.issuer and c not in seen]
        parent = next((c for c in named if issued_by(current, c)), None)
        if parent is None:
            if len(chain) == 1:
                return None
            subject = current.subject.rfc4514_string() or "no subject"
            if named:
                return f"{subject!r} names issuer {current.issuer.rfc4514_string()!r}, whose served certificate did not sign it"
            return (f"{subject!r} is issued by {current.issuer.rfc4514_string()!r}, which the file does not serve "
                    f"(it serves {len(chain) - 1} other certificate(s))")
        current = parent
        seen.append(current)
    return None


_SERVER_BLOCK = re.compile(r"(?<![\w.])server\s*\{")
_SERVER_NAME = re.compile(r"(?<![\w.])server_name\s+([^;]*);")


def server_blocks(text: str) -> list[str]:
    """The `server { ... }` blocks of an nginx configuration (comments removed; braces balanced)."""
    text = re.sub(r"#[^\n]*", "", text)
    blocks = []
    for match in _SERVER_BLOCK.finditer(text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        blocks.append(text[match.end():i - 1])
    return blocks


def tls_server_names(files: list[tuple[Path, str]]) -> list[str]:
    """The host names the TLS server blocks of nginx configuration files answer to (exact names and
    `*.` wildcards; `_`, regexes and `.example.com` catch-alls name no host a client would ask for)."""
    names: list[str] = []
    for path, name in files:
        for block in server_blocks(read_stack_text(path, name, NGINX_CONF_CAP)):
            if "ssl_certificate" not in block and not re.search(r"listen[^;]*\bssl\b", block):
                continue
            for match in _SERVER_NAME.finditer(block):
                for token in match.group(1).split():
                    token = token.strip("\"'")
                    if token and token != "_" and not token.startswith(("~", ".")) and token not in names:
                        names.append(token)
    return names
