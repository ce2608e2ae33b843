"""Which values of a stack are secrets, wherever they are written.

A secret is the content of a secret file; a `.env` value or a compose `environment:`
value whose name says it is a credential (a broad list: password, token, key,
secret, credential, auth, DSN...); and the password of any URL (`scheme://user:pw@host`),
whatever its name. The redactor learns them before any check runs, and the
key-strength check judges each (`redact.weakness`).

Files are read as the untrusted input they are: regular files only, opened
non-blocking, at most SECRET_FILE_CAP bytes.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

from stackproof.target.compose import read_env_file
from stackproof.io.yamlio import load_yaml

SECRET_FILE_CAP = 65536
# a name holding one of these anywhere (PGPASS, DBPASSWORD) is a credential's
_CREDENTIAL_PARTS = ("PASSWORD", "PASSWD", "PASSPHRASE", "PASS", "PWD", "SECRET", "TOKEN", "APIKEY", "API_KEY",
                     "CREDENTIAL", "CREDS", "PRIVATE")
# ... and so is a name with one of these as a word of its own (not MONKEY, AUTHOR)
_CREDENTIAL_WORDS = {"KEY", "PW", "AUTH", "DSN", "SALT", "PEPPER", "COOKIE", "JWT", "BEARER", "SIGNATURE"}
# a name ending in one of these names a reference to a secret, not the secret itself
_REFERENCE_WORDS = {"FILE", "PATH", "DIR", "NAME", "ID", "HEADER", "USER", "USERNAME", "TYPE", "URL", "URI",
                    "HOST", "PORT", "ENABLED", "METHOD", "ALGORITHM", "LENGTH", "TTL", "EXPIRY", "MODE"}
_NOT_A_VALUE = {"", "true", "false", "yes", "no", "on", "off", "null", "none"}  # and numbers: flags, ports, sizes
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?+-][^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class SecretValue:
    origin: str  # where it is written, for messages: "ai-stack/compose/.env: DB_PASSWORD"
    value: str


def is_credential_name(name: str) -> bool:
    upper = name.upper()
    words = [word for word in re.split(r"[^A-Z0-9]+", upper) if word]
    if not words or words[-1] in _REFERENCE_WORDS:
        return False
    return any(part in upper for part in _CREDENTIAL_PARTS) or any(word in _CREDENTIAL_WORDS for word in words)


def url_passwords(text: str) -> list[str]:
    """The passwords of every URL in `text` (percent-decoded, as the client sends them)."""
    found = []
    for match in _URL.finditer(text):
        try:
            password = urlsplit(match.group()).password
        except ValueError:
            continue
        if password:
            found.append(unquote(password))
    return found


def credential_values(origin: str, name: str, value: object, env: dict[str, str] | None = None) -> list[SecretValue]:
    """The secrets one `NAME=value` setting holds: URL passwords, and the value itself for a credential name.
    `${VAR}` references are first replaced by the values of `env` (the .env files)."""
    if value is None or isinstance(value, (dict, list)):
        return []
    text = str(value).strip()
    if env:
        text = _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), m.group()), text)
    found = [SecretValue(f"{origin}: password in {name}", pw) for pw in url_passwords(text)]
    is_reference = (text.lower() in _NOT_A_VALUE or text.isdigit() or text.startswith(("/", "${"))
                    or _URL.fullmatch(text))
    if is_credential_name(name) and not is_reference:
        found.append(SecretValue(f"{origin}: {name}", text))
    return found


def read_small_file(path: Path, cap: int = SECRET_FILE_CAP) -> bytes | None:
    """A regular file's content, at most `cap` bytes; None for anything else (FIFO, device, missing).
    Opened non-blocking and without following a final symlink, so no special file can block."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(cap)
    except OSError:
        return None
    finally:
        os.close(fd)


def _environment_items(environment: object) -> Iterator[tuple[str, object]]:
    if isinstance(environment, dict):
        yield from ((str(k), v) for k, v in environment.items())
    elif isinstance(environment, list):
        for entry in environment:
            name, _, value = str(entry).partition("=")
            yield name, value or None


def stack_secrets(root: Path, secrets_dir: Path, compose_files: list[Path], env_files: list[Path]) -> list[SecretValue]:
    """Every secret value written in the stack's secret files, .env files and compose files (raw YAML,
    so a file Compose itself rejects is still read; `${VAR}` values come from the .env files)."""

    def rel(path: Path) -> str:
        try:
            return str(path.relative_to(root))
        except ValueError:
            return str(path)

    found: list[SecretValue] = []
    if secrets_dir.is_dir() and not secrets_dir.is_symlink():
        for path in sorted(secrets_dir.rglob("*")):
            data = None if path.name.startswith(".") else read_small_file(path)
            if data and data.strip():
                found.append(SecretValue(rel(path), data.decode("utf-8", errors="replace").strip()))
    env: dict[str, str] = {}
    for env_file in env_files:
        if read_small_file(env_file) is None:
            continue
        values = read_env_file(env_file)
        env.update(values)
        for name, value in values.items():
            found += credential_values(rel(env_file), name, value)
    for compose_file in compose_files:
        if read_small_file(compose_file, 1) is None:
            continue
        try:
            doc = load_yaml(compose_file, compose_file.name)
        except Exception:  # a broken compose file fails the checks that read it; here it only holds no secret
            continue
        services = doc.get("services") if isinstance(doc, dict) else None
        for service, body in (services or {}).items() if isinstance(services, dict) else ():
            if isinstance(body, dict):
                for variable, written in _environment_items(body.get("environment")):
                    found += credential_values(f"{rel(compose_file)}: service {service}", variable, written, env)
    return found
