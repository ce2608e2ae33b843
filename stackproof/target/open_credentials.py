"""Credentials handed to a container in the open: a literal value in its environment where a secret
file would do.

A value in `environment:` or an `env_file` is in the container's environment: `docker inspect`,
`/proc/<pid>/environ`, every child process and every crash dump show it; written in a compose file or
a committed `.env` it is also in every clone. It is a finding where the stack could have used a
secret instead: the image reads a `NAME_FILE` (or `NAME__FILE`) variant, or the stack already has a
secret for it (a compose secret of the same name, or a secret file holding the same value).

What is a literal: the text as written, not a `${VAR}` reference (Compose takes that from the
environment it runs in, which is not in the repository), but a default inside one
(`${DB_PASSWORD:-changeme}`) is written in the file. A `.env` counts when git tracks it; one that
is generated and ignored is the uncommitted environment a reference points to.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from stackproof.errors import StackError
from stackproof.io.files import read_stack_file, walk_files
from stackproof.target.compose import read_env_file
from stackproof.target.credentials import _NOT_A_VALUE, is_credential_name, read_small_file

# images that read NAME_FILE for their credential variables (their docker-entrypoint's file_env), by the
# last part of the repository name, with the prefix of the variables they read so
FILE_VARIANT_IMAGES = {
    "postgres": ("POSTGRES_",), "postgresql": ("POSTGRESQL_",), "mysql": ("MYSQL_",), "mariadb": ("MARIADB_", "MYSQL_"),
    "mongo": ("MONGO_INITDB_",), "wordpress": ("WORDPRESS_",), "nextcloud": ("NEXTCLOUD_", "POSTGRES_", "MYSQL_"),
    "redmine": ("REDMINE_",), "grafana": ("GF_",), "minio": ("MINIO_",), "keycloak": ("KEYCLOAK_", "KC_"),
}
BUILD_CONTEXT_FILES = 400  # files of a build context searched for a NAME_FILE variant
BUILD_FILE_CAP = 256 * 1024
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)|\$\$")


@dataclass(frozen=True)
class OpenCredential:
    """A credential-named variable with a literal value, where it is written, and why a secret would do."""

    where: str  # "ai-stack/compose/docker-compose.yml: service aidb environment"
    name: str
    because: str  # "the image reads POSTGRES_PASSWORD_FILE", "secret postgres_password holds the same value"

    def describe(self) -> str:
        return f"{self.where}: {self.name} is a literal ({self.because})"

    @property
    def file(self) -> str:
        """The file it is written in, relative to the stack dir (`where` up to its first ': ')."""
        return self.where.partition(": ")[0]


def literal_part(value: str) -> str:
    """What of a compose value is written in the file: the text around `${...}` references and their
    defaults (`${X:-lit}`, `${X-lit}`); a required-variable message (`${X:?msg}`) is not a value."""
    parts, last = [], 0
    for match in _REFERENCE.finditer(value):
        parts.append(value[last:match.start()])
        if match.group(2) in (":-", "-"):
            parts.append(match.group(3) or "")
        last = match.end()
    parts.append(value[last:])
    return "".join(parts).strip()


def is_literal(value: object) -> bool:
    """Whether a value, as written, is a credential (not a flag, number, path or empty)."""
    if value is None or isinstance(value, (dict, list, bool)):
        return False
    text = str(value).strip()
    return not (text.lower() in _NOT_A_VALUE or text.isdigit() or text.startswith("/"))


def environment_items(environment: object) -> Iterator[tuple[str, object]]:
    if isinstance(environment, dict):
        yield from ((str(k), v) for k, v in environment.items())
    elif isinstance(environment, list):
        for entry in environment:
            name, sep, value = str(entry).partition("=")
            yield name.strip(), value if sep else None


def env_file_paths(body: dict, base: Path) -> list[Path]:
    """A service's `env_file:` (a path, a list of paths, or of {path, required}), relative to its compose file."""
    entries = body.get("env_file")
    entries = entries if isinstance(entries, list) else [entries] if entries else []
    paths = [entry.get("path") if isinstance(entry, dict) else entry for entry in entries]
    return [base / str(path) for path in paths if isinstance(path, str) and path]


class CredentialFinder:
    """The open credentials of one stack (see the module docstring)."""

    def __init__(self, stack):
        self.stack = stack
        self.secret_names = {normal(name): name for name in stack.compose.secrets}
        self.secret_values: dict[str, str] = {}
        for name, path in stack.compose.secrets.items():
            data = read_small_file(path) if path is not None and stack.inside(path) else None
            if data and data.strip():
                self.secret_values.setdefault(data.decode("utf-8", errors="replace").strip(), name)
        self._build_texts: dict[Path, str] = {}

    def find(self) -> list[OpenCredential]:
        stack, found = self.stack, []
        references: dict[str, list[tuple[str, object]]] = {}  # .env variable -> (variable, service) using it
        for compose_file in stack.compose.files:
            doc = stack.raw_yaml(compose_file)
            services = doc.get("services") if isinstance(doc, dict) else None
            for name, body in (services or {}).items() if isinstance(services, dict) else ():
                if not isinstance(body, dict):
                    continue
                svc = stack.compose.services.get(name)
                for variable, value in environment_items(body.get("environment")):
                    for match in _REFERENCE.finditer(str(value or "")):
                        if match.group(1) or match.group(4):
                            references.setdefault(match.group(1) or match.group(4), []).append((variable, svc))
                    written = literal_part(str(value)) if value is not None else None
                    if is_credential_name(variable) and written is not None and is_literal(written):
                        found += self.judge(f"{stack.rel(compose_file)}: service {name} environment", variable,
                                            written, [(variable, svc)])
                for env_file in env_file_paths(body, compose_file.parent):
                    if not stack.inside(env_file) or read_small_file(env_file, 1) is None:
                        continue
                    for variable, value in read_env_file(env_file).items():
                        if is_credential_name(variable) and is_literal(value):
                            found += self.judge(f"{stack.rel(env_file)} (env_file of service {name})", variable,
                                                value, [(variable, svc)])
        for env_file in self.committed_env_files():
            for variable, value in read_env_file(env_file).items():
                if is_credential_name(variable) and is_literal(value):
                    found += self.judge(f"{stack.rel(env_file)} (committed)", variable, value,
                                        references.get(variable, []))
        return list(dict.fromkeys(found))

    def committed_env_files(self) -> list[Path]:
        """The project's env files (those given, else the .env next to the compose file, as Compose reads it)
        that git tracks."""
        compose = self.stack.compose
        given = compose.env_files or [compose.files[0].parent / ".env"]
        files = [path for path in given if path.is_file() and self.stack.inside(path)]
        tracked = self.stack.git_tracked(*files) or {}
        return [path for path in files if tracked.get(self.stack.rel(path))]

    def judge(self, where: str, variable: str, value: str, users: list[tuple[str, object]]) -> list[OpenCredential]:
        """The finding for one literal, if a secret would do: by value, by name, or by the image's `_FILE` support."""
        secret = self.secret_values.get(value.strip())
        if secret:
            return [OpenCredential(where, variable, f"secret {secret} holds the same value")]
        for name in (variable, *(used for used, _ in users)):
            secret = self.secret_for(name)
            if secret:
                return [OpenCredential(where, variable, f"the stack has a secret {secret} for it")]
        for used, svc in users:
            variant = self.file_variant(svc, used) if svc is not None else None
            if variant:
                return [OpenCredential(where, variable, variant)]
        return []

    def secret_for(self, variable: str) -> str | None:
        """A compose secret named after the variable (DB_PASSWORD: db_password; APP_DB_PASSWORD: db-password)."""
        wanted = normal(variable)
        for key, name in self.secret_names.items():
            if wanted == key or wanted.endswith("_" + key):
                return name
        return None

    def file_variant(self, svc, variable: str) -> str | None:
        """Why the service's image reads `variable` from a file too: a known image's entrypoint, the stack
        setting the _FILE variant elsewhere, or its build context naming it."""
        variants = (f"{variable}_FILE", f"{variable}__FILE")
        image = (svc.image or "").rsplit("/", 1)[-1].split(":")[0].split("@")[0]
        if any(variable.startswith(prefix) for prefix in FILE_VARIANT_IMAGES.get(image, ())) and not svc.build_context:
            return f"image {svc.image} reads {variants[0] if image != 'grafana' else variants[1]}"
        for other in self.stack.compose.services.values():
            for variant in variants:
                if variant in other.environment and (other.image == svc.image or other is svc):
                    return f"service {other.name} of the same image sets {variant}"
        context = svc.build_context
        if context is not None and self.stack.inside(context):
            for path, text in self.build_texts(context):
                for variant in variants:
                    if variant in text:
                        return f"its build context reads {variant} ({self.stack.rel(path)})"
        return None

    def build_texts(self, context: Path) -> Iterator[tuple[Path, str]]:
        try:  # walked without recursion and bounded (io.files); a context too large to list is not searched
            listed = walk_files(context, self.stack.rel(context))
        except StackError:
            listed = []
        paths = [path for path in listed if stat.S_ISREG(os.lstat(path).st_mode)]
        for path in paths[:BUILD_CONTEXT_FILES]:
            if path not in self._build_texts:
                try:
                    self._build_texts[path] = read_stack_file(path, self.stack.rel(path), BUILD_FILE_CAP,
                                                              truncate=True).decode("utf-8", errors="replace")
                except StackError:
                    self._build_texts[path] = ""
            yield path, self._build_texts[path]


def normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def open_credentials(stack) -> list[OpenCredential]:
    """Every credential handed to a container as a literal where a secret would do (see the module docstring)."""
    return CredentialFinder(stack).find()
