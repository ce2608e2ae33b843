"""Which values of a stack are secrets, wherever they are written.

A secret is the content of a file a compose secret references (wherever it lives in the
stack dir) or of a file of the secrets dir (not its README, `*.example` or template files);
a value of a `.env` file, of a service's `env_file` or of a compose `environment:` whose name
says it is a credential (a broad list: password, token, key, secret, credential, auth,
DSN...) and which looks like one (not a URL without a password, a boolean, a number, a cookie
attribute or a host name); and the password of any URL (`scheme://user:pw@host`), whatever
its name. The redactor learns them before any check runs, and the
key-strength check judges each (`redact.weakness`).

Files are read as the untrusted input they are, through `io.files`: regular files only,
opened non-blocking, at most SECRET_FILE_CAP bytes; the secrets dir is walked without
recursion and bounded (`walk_files`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

from stackproof.errors import StackError
from stackproof.io.files import read_stack_file, walk_files
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
# flags, cookie attributes (SameSite), placeholders of nothing; and numbers, host names, URLs without a password
_NOT_A_VALUE = {"", "true", "false", "yes", "no", "on", "off", "null", "none", "nil", "lax", "strict", "enabled",
                "disabled"}
_HOST_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\.?(?::\d{1,5})?")
_DURATION = re.compile(r"\d+(?:ms|s|m|h|d|w)")
# files of a secrets dir that document or template the secrets, not hold one
_NOT_A_SECRET_FILE = re.compile(r"(?i)^(readme|license|changelog)(\..*)?$|\.(md|rst|example|sample|template|tpl|"
                                r"tmpl|dist|j2)$|^(example|sample|template)[._-]")
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
    written = str(value).strip()
    text = interpolated(written, env or {})
    defaulted = [m.group(1) for m in _REFERENCE.finditer(written) if (m.group(2) or "").endswith("-")
                 and not (env or {}).get(m.group(1))]
    where = f" (its default ${{{defaulted[0]}:-...}}, unset in the env files)" if defaulted else ""
    found = [SecretValue(f"{origin}: password in {name}{where}", pw) for pw in url_passwords(text)]
    if is_credential_name(name) and looks_like_a_credential(text):
        found.append(SecretValue(f"{origin}: {name}{where}", text))
    return found


_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolated(text: str, env: dict[str, str]) -> str:
    """`text` as Compose interpolates it with the env files' values: `${VAR}` and `$VAR` from them,
    `${VAR:-default}`/`${VAR-default}` falling back to the default, `${VAR:+alt}` to the alternative when set; a
    reference the env files cannot resolve (`${VAR}` unset, `${VAR:?message}`) stays as written: its value comes
    from the deploying shell, unknown here."""
    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(4)
        operator, word = match.group(2) or "", match.group(3) or ""
        value = env.get(name)
        is_set = value is not None and (value != "" or not operator.startswith(":"))
        if operator.endswith("-"):
            return value if is_set else word  # type: ignore[return-value]
        if operator.endswith("+"):
            return word if is_set else ""
        return value if is_set and value is not None else match.group()
    return _REFERENCE.sub(one, text)


def looks_like_a_credential(text: str) -> bool:
    """Whether the value of a credential-named variable can be a credential: not a reference (a path, an
    unresolved `${VAR}`), a URL without a password, a flag, a cookie attribute, a number, a duration or a
    host name, which such variables also hold (AUTH_URL-like names without the suffix, SESSION_COOKIE_SAMESITE)."""
    return not (text.lower() in _NOT_A_VALUE or (text.isdigit() and len(text) < 12) or text.startswith(("/", "${"))
                or _URL.fullmatch(text) or _HOST_NAME.fullmatch(text) or _DURATION.fullmatch(text))


def read_small_file(path: Path, cap: int = SECRET_FILE_CAP) -> bytes | None:
    """A regular file's first `cap` bytes, or None for anything else (a FIFO, a device, a directory,
    missing). Its symlinks are followed: every caller has checked that they stay inside the stack dir, and
    a secret kept behind a link is still a secret to learn. Read through `io.files`: never blocking."""
    try:
        return read_stack_file(path, str(path), cap, truncate=True)
    except StackError:
        return None


def _environment_items(environment: object) -> Iterator[tuple[str, object]]:
    if isinstance(environment, dict):
        yield from ((str(k), v) for k, v in environment.items())
    elif isinstance(environment, list):
        for entry in environment:
            name, _, value = str(entry).partition("=")
            yield name, value or None


def is_documentation_file(name: str) -> bool:
    """A README or a template (`*.example`, `*.sample`...) of the secrets dir: it documents the secrets, holds none."""
    return _NOT_A_SECRET_FILE.search(name) is not None


def is_secret_file_name(name: str) -> bool:
    """A file of the secrets dir whose value is learned as a secret: not hidden (.gitkeep), not documentation."""
    return not name.startswith(".") and not is_documentation_file(name)


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def _env_file_paths(value: object) -> list[str]:
    """A service's `env_file:` as paths: a string, a list of strings, or a list of {path: ...}."""
    items = value if isinstance(value, list) else [value]
    return [str(item.get("path")) if isinstance(item, dict) else str(item) for item in items
            if isinstance(item, (str, dict)) and (not isinstance(item, dict) or item.get("path"))]


def stack_secrets(root: Path, secrets_dir: Path | None, compose_files: list[Path], env_files: list[Path],
                  read_yaml=None) -> list[SecretValue]:
    """Every secret value written in the stack's secret files (the secrets dir's, and every file a compose
    secret references), .env files, services' env_files and compose files (raw YAML, so a file Compose itself
    rejects is still read; `${VAR}` values come from the .env files; `read_yaml` reads them, the stack's reader
    that parses each file once by default). Nothing outside the stack dir is read."""
    read_yaml = read_yaml or (lambda path: load_yaml(path, path.name))

    def rel(path: Path) -> str:
        normal = Path(os.path.normpath(path))  # an env_file `../env/app.env` of a compose file in compose/
        try:
            return str(normal.relative_to(os.path.normpath(root)))
        except ValueError:
            return str(path)

    found: list[SecretValue] = []
    seen: set[Path] = set()

    def secret_file(path: Path) -> None:
        if path in seen or not _inside(path, root):
            return
        seen.add(path)
        data = read_small_file(path)
        if data and data.strip():
            found.append(SecretValue(rel(path), data.decode("utf-8", errors="replace").strip()))

    if secrets_dir is not None and secrets_dir.is_dir() and not secrets_dir.is_symlink() and _inside(secrets_dir, root):
        for path in walk_files(secrets_dir, rel(secrets_dir)):
            if is_secret_file_name(path.name):
                secret_file(path)
    env: dict[str, str] = {}

    def env_file(path: Path, origin: str) -> None:
        if path in seen or not _inside(path, root) or read_small_file(path, 1) is None:
            return
        seen.add(path)
        values = read_env_file(path)
        env.update(values)
        for name, value in values.items():
            found.extend(credential_values(origin, name, value))

    for path in env_files:
        env_file(path, rel(path))
    for compose_file in compose_files:
        if read_small_file(compose_file, 1) is None:
            continue
        try:
            doc = read_yaml(compose_file)
        except Exception:  # a broken compose file fails the checks that read it; here it only holds no secret
            continue
        if not isinstance(doc, dict):
            continue
        base = compose_file.parent
        secrets = doc.get("secrets")
        for body in (secrets or {}).values() if isinstance(secrets, dict) else ():
            if isinstance(body, dict) and isinstance(body.get("file"), str):
                secret_file(base / _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), body["file"]))
        services = doc.get("services")
        for service, body in (services or {}).items() if isinstance(services, dict) else ():
            if not isinstance(body, dict):
                continue
            for listed in _env_file_paths(body.get("env_file")):
                env_file(base / listed, f"{rel(base / listed)} (env_file of service {service})")
            for variable, written in _environment_items(body.get("environment")):
                found += credential_values(f"{rel(compose_file)}: service {service}", variable, written, env)
    return found
