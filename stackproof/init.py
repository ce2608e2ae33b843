"""`stackproof init`: inspect a stack and write its profile, saying how each entry was found.

    python -m stackproof.init --stack-dir DIR [--force]

Reads the stack's files (the compose model, configs, the scripts' usage text, cron files);
the stack's code runs only to prove the interface read from a script's usage text: once, in
the sandbox the suite runs scripts in (stackproof/io/sandbox.py), on copies (a certificate
made for it, a canary in place of the key). Every entry of the written `stackproof.yml` has a
comment saying how it was found; whatever could not be decided is listed as TODO at the top
and left to the defaults. An existing profile is never overwritten without --force.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stackproof.io.pysource import parse_python
from stackproof.io.files import read_stack_file, walk_files
from stackproof.io.sandbox import SandboxUnavailable
from stackproof.io.yamlio import parse_yaml
from stackproof.resources.breaker_code import read_breaker_code
from stackproof.resources.pool_code import code_pool_of
from stackproof.resources.certs import server_blocks
from stackproof.resources.scripts import (MEASURED_MAX_DAYS, THRESHOLD_STATUSES, Rotator, help_text, measured_thresholds,
                                         monitor_trial, where_used)
from stackproof.target.dockerfile import copied_into_image
from stackproof.target.compose import COMPOSE_FILE_NAMES, compose_environment, read_env_file
from .errors import NOT_PROVEN_PREFIX, StackError
from stackproof.target.profile import DEFAULTS, PROFILE_FILE, Profile, inside
from stackproof.target.pool_libraries import config_argument, pool_library_of, url_pool_of
from .redact import Redactor
from stackproof.target.roles import SKIP_DIRS, Roles
from stackproof.target.service_config import POOL_VARIABLES, holds, pool_not_found
from stackproof.target.stack import Stack

MAX_SCAN_BYTES = 256 * 1024
MAX_FILES = 5000
ROLE_KEYS = ("prometheus", "alertmanager", "node_exporter", "postgres", "tls_terminator")
# the steps that read the compose model: skipped, as one TODO, when it cannot be read
COMPOSE_STEPS = ("compose_profiles", "roles", "api_key", "pool_config", "breaker_code", "prometheus", "tls_monitor")
REQUIRED_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?\?)")


@dataclass
class Entry:
    """One value of the profile and the comment that says how it was found."""

    section: str
    key: str
    value: object
    how: str


@dataclass
class Findings:
    entries: list[Entry] = field(default_factory=list)
    todos: list[str] = field(default_factory=list)
    pinned: set[tuple[str, str]] = field(default_factory=set)  # set by the user in the profile init rewrites

    def pin(self, entry: Entry) -> None:
        """An entry the user set: kept as it is, never overwritten by discovery, and no TODO about it."""
        self.set(entry.section, entry.key, entry.value, entry.how)
        self.pinned.add((entry.section, entry.key))

    def set(self, section: str, key: str, value: object, how: str) -> None:
        if (section, key) in self.pinned:
            return
        self.entries = [e for e in self.entries if (e.section, e.key) != (section, key)]
        self.entries.append(Entry(section, key, value, how))

    def get(self, section: str, key: str):
        found = [e.value for e in self.entries if (e.section, e.key) == (section, key)]
        return found[0] if found else DEFAULTS[section][key]

    def todo(self, text: str) -> None:
        if any(text.startswith((f"{section}.{key}:", f"{section}.{key} ")) for section, key in self.pinned):
            return  # the user answered it
        self.todos.append(text)

    def profile_data(self) -> dict:
        data = copy.deepcopy(DEFAULTS)
        for entry in self.entries:
            data[entry.section][entry.key] = entry.value
        return data


def repository_files(root: Path) -> list[Path]:
    """The repository's regular files (no symlinks, no VCS or tool dirs), bounded."""
    listed = walk_files(root, "the repository", 4 * MAX_FILES, SKIP_DIRS, truncate=True)
    return [path for path in listed if path.is_file() and not path.is_symlink()][:MAX_FILES]


def read_text(path: Path) -> str:
    """A file's text for inspection, or "" for one that cannot tell us anything: larger than MAX_SCAN_BYTES,
    or not a regular file (a FIFO would block init, /dev/zero would never end)."""
    try:
        return read_stack_file(path, str(path), MAX_SCAN_BYTES).decode("utf-8", errors="replace")
    except StackError:
        return ""


class Inspector:
    """Finds what the profile needs, step by step; each step may use what the earlier ones found."""

    def __init__(self, root: Path, timeout: float = 20.0, compose: tuple[str, str] | None = None):
        self.root = root
        self.timeout = timeout
        self.chosen_compose = compose  # (path, why): the user's choice, kept as it is
        self.files = repository_files(root)
        self.found = Findings()

    def rel(self, path: Path | str) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def stack(self) -> Stack:
        """A Stack over what has been found so far (the suite's own readers, not a copy of them)."""
        stack = Stack(self.root, self.timeout, Redactor())
        stack.__dict__["profile"] = Profile(self.root, self.found.profile_data(), None)
        return stack

    # --- the steps ---------------------------------------------------------------------

    def inspect(self) -> Findings:
        """Every step, in order (each may use what the ones before found); a root cause that stops several (no
        readable compose model, above all) is one TODO naming the steps it blocks, never one TODO per step."""
        causes: dict[str, list[str]] = {}
        for step in (self.compose_file, self.env_files):
            self._step(step, causes)
        try:
            self.stack().compose  # noqa: B018 -- loads the model once: unreadable, it is the one root cause
            unreadable = None
        except StackError as exc:
            no_file = next((cause for cause, steps in causes.items() if "compose_file" in steps), None)
            unreadable = no_file or f"the compose model cannot be read: {exc}"
        for step in (self.compose_profiles, self.tls_pair, self.roles, self.api_key, self.pool_config, self.breaker_code,
                     self.prometheus, self.scripts, self.tls_monitor, self.disclosure):
            answered = STEP_ANSWERS.get(step.__name__, ())
            if answered and set(answered) <= self.found.pinned:  # the user set what the step would find
                continue
            if unreadable is not None and step.__name__ in COMPOSE_STEPS:
                causes.setdefault(unreadable, []).append(step.__name__)
            else:
                self._step(step, causes)
        for cause, steps in causes.items():
            self.found.todo(f"{cause} (blocks: {', '.join(steps)})")
        return self.found

    def _step(self, step, causes: dict[str, list[str]]) -> None:
        try:
            step()
        except StackError as exc:
            causes.setdefault(str(exc), []).append(step.__name__)

    def compose_file(self) -> None:
        """The deployed compose file set: the one the user chose (--compose, or paths.compose of the profile
        being rewritten), else COMPOSE_FILE of the root .env, else the -f set of the repository's own wrapper
        scripts or Makefile, else the best of the files whose content is a compose file (prod over dev)."""
        chosen = self.chosen_compose
        if chosen:
            self.found.set("paths", "compose", chosen[0], chosen[1])
            return
        candidates = [p for p in self.files if is_compose_file(p)]
        listed = self._compose_file_variable()
        if listed:
            self.found.set("paths", "compose", listed[0], f"the first file of COMPOSE_FILE in the root .env "
                           f"({', '.join(listed)})"
                           + self._others(candidates, [self.root / name for name in listed]))
            if listed[1:]:
                self.found.set("paths", "compose_overrides", listed[1:], "the other files of COMPOSE_FILE in .env")
            return
        for wrapper, files, flagged in wrapper_compose_sets(self.files, self.root):
            if files and all(f in candidates for f in files):
                runs = f"runs docker compose with -f {' -f '.join(map(self.rel, files))}" if flagged else \
                    f"runs `docker compose up` in its own dir, with no -f: Compose reads {self.rel(files[0])}"
                self.found.set("paths", "compose", self.rel(files[0]), f"{self.rel(wrapper)} {runs}"
                               + self._others(candidates, files))
                if files[1:]:
                    self.found.set("paths", "compose_overrides", [self.rel(f) for f in files[1:]],
                                   f"the other -f files of {self.rel(wrapper)}")
                return
        if not candidates:
            raise StackError("no compose file in the repository (no YAML file with a top-level services: mapping): "
                             "set paths.compose, or run init with --compose FILE")
        def rank(path: Path) -> tuple:
            return (deployment_rank(path, self.root), len(path.relative_to(self.root).parts),
                    path.name not in COMPOSE_FILE_NAMES)

        ranked = sorted(candidates, key=lambda p: (*rank(p), str(p)))
        best = ranked[0]
        if len(ranked) == 1:
            how = "the only compose file of the repository (a top-level services: mapping)"
        else:
            why = deployment_reason(best, self.root)
            if rank(best)[:2] == rank(ranked[1])[:2] and rank(best) < rank(ranked[1]):
                why = "Compose's default name (the file `docker compose` reads without -f), the least nested"
            how = f"{why}, of {len(ranked)} compose files; the others: {', '.join(self.rel(p) for p in ranked[1:])}"
        self.found.set("paths", "compose", self.rel(best), how)
        if len(ranked) > 1 and rank(best) == rank(ranked[1]):
            self.found.todo(f"paths.compose: {self.rel(best)} chosen among {len(ranked)} compose files; check it is the "
                            "deployed one (or run init with --compose FILE)")

    def _others(self, candidates: list[Path], chosen: list[Path]) -> str:
        others = [self.rel(p) for p in candidates if p not in chosen]
        return f"; other compose files: {', '.join(others)}" if others else ""

    def _compose_file_variable(self) -> list[str]:
        env = self.root / ".env"
        values = read_env_file(env) if env.is_file() and not env.is_symlink() else {}
        sep = values.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
        return [name for name in values.get("COMPOSE_FILE", "").split(sep) if name and (self.root / name).is_file()]

    def env_files(self) -> None:
        if self.found.get("compose", "env_files"):  # kept from the profile being rewritten
            return
        compose = self.root / self.found.get("paths", "compose")
        required = sorted({name for name, _ in REQUIRED_VARIABLE.findall(read_text(compose))})
        have = compose_environment(compose.parent, [], {})
        missing = [name for name in required if not have.get(name)]
        if not missing:
            return
        chosen = []
        for path in self.files:
            if not (path.name.endswith(".env") or path.name.startswith(".env")) or "example" in path.name \
                    or "sample" in path.name or "template" in path.name:
                continue
            values = read_env_file(path)
            if any(values.get(name) for name in missing):
                chosen.append(path)
                missing = [name for name in missing if not values.get(name)]
        if chosen:
            defined = sorted(set(required) - set(missing))
            self.found.set("compose", "env_files", [self.rel(p) for p in chosen],
                           f"define {', '.join(defined)}, which {self.rel(compose)} requires (${{X:?}})")
        if missing:
            self.found.todo(f"compose.env_files: no env file of the repository sets {', '.join(missing)} "
                            f"(required by {self.rel(compose)}): generate it (set-up script?) and list it, or use --env-file")

    def compose_profiles(self) -> None:
        stack = self.stack()
        active = stack.compose
        everything = stack.compose_all_profiles()
        if everything is None:
            return
        hidden = {name: svc for name, svc in everything.services.items() if name not in active.services}
        if not hidden:
            return
        needed: dict[str, list[str]] = {}
        roles = Roles(stack)
        for role in ROLE_KEYS:
            try:
                roles.find(role)
            except StackError:
                spec_hits = [svc for svc in hidden.values() if role_fits(stack, role, svc)]
                for svc in spec_hits[:1]:
                    needed.setdefault(svc.profiles[0], []).append(f"{role} ({svc.name})")
        if needed:
            self.found.set("compose", "profiles", sorted(needed),
                           "; ".join(f"profile {p} holds {', '.join(r)}" for p, r in sorted(needed.items())))

    def roles(self) -> None:
        stack = self.stack()
        roles = Roles(stack)
        for role in ROLE_KEYS:
            try:
                found = roles.find(role)
            except StackError as exc:
                self.found.todo(f"roles.{role}: {exc}")
                continue
            self.found.set("roles", role, found.service.name, found.how)

    def api_key(self) -> None:
        stack = self.stack()
        compose = stack.compose
        postgres = self.found.get("roles", "postgres")
        db_secrets = {ref.source for ref in compose.services[postgres].secrets} if postgres in compose.services else set()
        users: dict[str, list[str]] = {}
        for svc in compose.services.values():
            if svc.name == postgres:
                continue
            for ref in svc.secrets:
                if ref.source not in db_secrets and compose.secrets.get(ref.source) is not None:
                    users.setdefault(ref.source, []).append(svc.name)
        if not users:
            self.found.todo("api_key.secret: no file secret is mounted by services other than the database")
            self.proxied_api_services(stack)
            return
        name = max(users, key=lambda s: (api_key_name_rank(s), len(users[s])))
        how = (f"the file secret mounted by {', '.join(users[name])} (and not by the database)"
               + (f"; others: {', '.join(s for s in users if s != name)}" if len(users) > 1 else ""))
        self.found.set("api_key", "secret", name, how)
        if len(users) > 1:
            self.found.todo(f"api_key.secret: {name} chosen among {', '.join(users)}; check it is the API key")
        self.found.set("roles", "api_services", users[name], f"they mount the {name} secret")
        key_file = compose.secrets[name]
        assert key_file is not None  # `users` holds file secrets only
        self.found.set("paths", "secrets_dir", self.rel(key_file.parent), f"the directory of the {name} secret file")

    def mounted_files(self, services) -> dict[Path, str]:
        """Each file of the repository bind-mounted into a service (a mounted dir's files too) -> the services'
        names, comma-separated."""
        mounted: dict[Path, list[str]] = {}
        for svc in services:
            for m in svc.volumes:
                if m.type == "bind" and str(m.source).startswith(str(self.root)):
                    mounted.setdefault(Path(m.source), []).append(svc.name)
        files: dict[Path, str] = {}
        for source, names in mounted.items():
            try:
                listed = [source] if source.is_file() else walk_files(source, str(source)) if source.is_dir() else []
            except StackError:  # a mounted dir of more entries than a certificate's: not searched
                listed = []
            for path in listed:
                files[path] = ", ".join(sorted(set(names) | set(files.get(path, "").split(", ")) - {""}))
        return files

    def proxied_api_services(self, stack) -> None:
        """Without an API key secret to tell them by, the API services are those the TLS terminator (else the one
        reverse proxy of a stack served over plain HTTP; else, with neither, database_clients_serving) proxies to
        (nginx's `proxy_pass` and `upstream` servers in a config mounted into it, `${VAR}` read from its
        environment) that use the database (depend on it, or name it in their environment)."""
        compose = stack.compose
        proxies = [svc for svc in compose.services.values() if PROXY_IMAGE.search(svc.image or "")]
        terminator = compose.services.get(self.found.get("roles", "tls_terminator")) or \
            (proxies[0] if len(proxies) == 1 else None)  # served over plain HTTP: the one reverse proxy
        postgres = self.found.get("roles", "postgres")
        if postgres not in compose.services:
            return
        if terminator is None:
            self.database_clients_serving(stack, postgres)
            return
        hosts: set[str] = set()
        for config in self.mounted_files([terminator]):
            text = read_text(config)
            upstreams = {name: set(UPSTREAM_SERVER.findall(body)) for name, body in UPSTREAM_BLOCK.findall(text)}
            for host in PROXY_PASS.findall(text):
                hosts |= upstreams.get(host, {host})
        expanded = {re.sub(r"\$\{?(\w+)\}?", lambda m: str(terminator.environment.get(m.group(1), "")), host)
                    for host in hosts}
        found = [name for name, svc in compose.services.items()
                 if name in expanded and name != terminator.name and
                 (postgres in svc.depends_on or any(postgres in str(v) for v in svc.environment.values()))]
        if found:
            self.found.set("roles", "api_services", found, f"{terminator.name} proxies to them (proxy_pass, upstream "
                           f"servers of its mounted config) and they use the database ({postgres})")

    def database_clients_serving(self, stack, postgres: str) -> None:
        """With no API key secret and no reverse proxy to tell them by, the API services are taken to be the
        services that use the database and serve a port: written with a TODO to check, since nothing the stack
        declares says so."""
        found = [name for name, svc in stack.compose.services.items() if name != postgres and svc.ports
                 and (postgres in svc.depends_on or any(postgres in str(v) for v in svc.environment.values()))]
        if found:
            self.found.set("roles", "api_services", found, f"they use the database ({postgres}) and serve a port; no "
                           "API key secret and no reverse proxy tell the API services apart")
            self.found.todo(f"roles.api_services: {', '.join(found)} taken as the API services (they use the database "
                            "and serve a port); check it")

    def tls_pair(self) -> None:
        stack = self.stack()
        try:
            services = list(stack.compose.services.values())
        except StackError:  # no compose model: the certificate is still looked for among the repository's files
            services = []
        files = self.mounted_files(services)
        if self.served_pair(services, files):
            return
        where = "mounted into {}"
        if not files:
            files, where = dict.fromkeys(self.files, ""), "in the repository"
        certs, keys = {}, {}
        for path in files:
            kind, public = pem_public_key(path)
            if kind == "cert":
                certs[path] = public
            elif kind == "key":
                keys[path] = public
        pairs = [(c, k) for c, cpub in certs.items() for k, kpub in keys.items() if cpub == kpub]
        if not pairs:
            services_seen = sorted({name for names in files.values() for name in names.split(", ") if name})
            looked = f"among the files bind-mounted into {', '.join(services_seen)}" if services_seen else where
            raise StackError(f"no certificate with its private key {looked}: set paths.tls_cert and paths.tls_key "
                             "(run the stack's set-up script first if it generates them)")
        cert, key = pairs[0]
        where = where.format(files[cert])
        self.found.set("paths", "tls_cert", self.rel(cert), f"PEM certificate {where}")
        self.found.set("paths", "tls_key", self.rel(key), f"its private key (same public key), {where}")
        if len(pairs) > 1:
            self.found.todo(f"paths.tls_cert: {len(pairs)} certificate/key pairs found; check {self.rel(cert)} is the served one")

    def served_pair(self, services, files: dict[Path, str]) -> bool:
        """The certificate and key the TLS terminator's own config names (nginx's `ssl_certificate` and
        `ssl_certificate_key` in a config file mounted into it), through its bind mounts, kept as the config
        names them: certbot's live/<domain>/ symlinks, which a renewal moves, not the archive file they point
        to today. False when no mounted config names a pair of the repository."""
        for svc in services:
            for config, names in files.items():
                if svc.name not in names.split(", ") or config.suffix != ".conf":
                    continue
                text = read_text(config)
                named = [(SERVED_CERT.search(block), SERVED_KEY.search(block)) for block in server_blocks(text) or [text]]
                for cert_match, key_match in named:
                    if cert_match is None or key_match is None:
                        continue
                    cert, key = svc.host_path_for(cert_match.group(1)), svc.host_path_for(key_match.group(1))
                    if cert is None or key is None or not (inside(cert, self.root) and inside(key, self.root)):
                        continue
                    (cert_kind, cert_public), (key_kind, key_public) = pem_public_key(cert), pem_public_key(key)
                    if (cert_kind, key_kind) != ("cert", "key") or cert_public != key_public:
                        continue
                    how = f"{svc.name} serves it: ssl_certificate {cert_match.group(1)} in {self.rel(config)}"
                    self.found.set("paths", "tls_cert", self.rel(cert), how)
                    self.found.set("paths", "tls_key", self.rel(key), f"its private key: ssl_certificate_key "
                                   f"{key_match.group(1)} in {self.rel(config)}")
                    return True
        return False

    def pool_variables(self, stack) -> dict[str, tuple[str, str]]:
        """pool.*_env key -> (the variable an API service sets for it, that service), told by the variable's
        name (DB_POOL_SIZE, SQLALCHEMY_POOL_SIZE, DB_POOL_OVERFLOW, ..._POOL_TIMEOUT, ..._PRE_PING)."""
        found: dict[str, tuple[str, str]] = {}
        for name in self.found.get("roles", "api_services") or []:
            svc = stack.compose.services.get(name)
            for var in sorted(svc.environment if svc else {}):
                key = next((key for key, pattern in POOL_VARIABLES if pattern.search(var)), None)
                if key is not None and key not in found:
                    found[key] = (var, name)
        return found

    def pool_code_variables(self, stack) -> dict[str, tuple[str, str]]:
        """pool.*_env key -> (the variable, how it was found), read from the code of an API service that builds its
        pool from the environment (`pool_size=int(os.getenv("SHOP_POOL_SIZE", "5"))`): the code says which
        variable is which setting, whatever its name, and the run takes the code's default for one left unset."""
        found: dict[str, tuple[str, str]] = {}
        for name in self.found.get("roles", "api_services") or []:
            svc = stack.compose.services.get(name)
            pool = code_pool_of(stack, svc) if svc is not None else None
            for setting, given in (pool.settings.items() if pool is not None else ()):
                key = CODE_SETTING_VARIABLES.get(setting)
                if key is not None and given.variable and key not in found:
                    found[key] = (given.variable, f"{pool.where} reads it: {pool.call} {given.keyword} "  # type: ignore[union-attr]
                                                  f"from {given.variable}")
        return found

    def pool_config(self) -> None:
        stack = self.stack()
        if self.pool_of_application(stack):
            return
        key = self.found.get("pool", "config_key").split(".")
        variables = self.pool_code_variables(stack) or {key: (var, f"{name} sets it in its environment")
                                                         for key, (var, name) in self.pool_variables(stack).items()}
        for profile_key, (var, how) in variables.items():
            self.found.set("pool", profile_key, var, how)
        for name in self.found.get("roles", "api_services") or []:
            svc = stack.compose.services.get(name)
            for var, value in sorted((svc.environment if svc else {}).items()):
                host = svc.host_path_for(value) if svc and value and value.startswith("/") else None
                if host is not None and host.is_file() and holds(host, key):
                    self.found.set("paths", "pool_config", self.rel(host),
                                   f"{name} reads it through {var}={value} (a bind mount of {self.rel(host)})")
                    return
            for mount in svc.volumes if svc else []:
                source = Path(mount.source)
                if mount.type == "bind" and source.is_file() and holds(source, key):
                    self.found.set("paths", "pool_config", self.rel(source), f"mounted into {name} at {mount.target}")
                    return
        for path in self.files:
            if path.suffix in (".yml", ".yaml") and holds(path, key):
                baked = [f"the image of {svc.name} at {found[0]} ({found[1]})" for svc in stack.compose.services.values()
                         if (found := copied_into_image(stack, svc, path)) is not None]
                self.found.set("paths", "pool_config", self.rel(path),
                               f"the repository's file holding {'.'.join(key)}, copied into " + "; ".join(baked)
                               if baked else f"the repository's file holding {'.'.join(key)} (no volume mounts it and "
                               "no Dockerfile copies it: check which service reads it)")
                return
        if self.pool_in_vocabulary(stack):
            return
        if "size_env" in variables and "overflow_env" in variables:  # the pool set only in the environment
            var, how = variables["size_env"]
            self.found.set("pool", "size_env", var, f"{how}; no config file holds {'.'.join(key)}: the pool is set "
                           "only in the environment (paths.pool_config left out)")
            return
        if any(url_pool_of(svc) or code_pool_of(stack, svc) for svc in stack.roles.api_services()):
            return  # a pool in the database URL or built in the code: read from the stack at each run
        raise StackError(f"{pool_not_found(stack, 'paths.pool_config')}: set paths.pool_config and pool.config_key, "
                         "or pool.size_env and pool.overflow_env")

    def pool_of_application(self, stack) -> bool:
        """An API service that runs an application whose pool the suite knows (target/pool_libraries: LiteLLM's
        proxy), with its config file bind-mounted: that file is the pool config, read in the application's keys
        (the run finds the application again in the compose model; nothing else to declare)."""
        for name in self.found.get("roles", "api_services") or []:
            svc = stack.compose.services.get(name)
            found = pool_library_of(svc) if svc is not None else None
            if found is None or not stack.inside(found[1]) or not found[1].is_file():
                continue
            library, path = found
            self.found.set("paths", "pool_config", self.rel(path),
                           f"{name} runs {library.name} ({svc.image}) with {library.config_flag} "
                           f"{config_argument([*svc.entrypoint, *svc.command], library.config_flag)}, a bind mount of "
                           f"{self.rel(path)}: its pool is {library.config_key}."
                           f"{library.keys['size']}, {library.name}'s default {library.defaults['size']} when not set")
            return True
        return False

    def pool_in_vocabulary(self, stack) -> bool:
        """A config file bind-mounted into an API service whose pool mapping uses a library's own keys
        (POOL_VOCABULARIES): its file, key path and key names; a breaker kept in the same mapping in that
        library's keys (BREAKER_VOCABULARIES) too."""
        for name in self.found.get("roles", "api_services") or []:
            svc = stack.compose.services.get(name)
            for mount in svc.volumes if svc else []:
                source = Path(mount.source)
                if mount.type != "bind" or source.suffix not in (".yml", ".yaml") or not source.is_file() \
                        or not stack.inside(source):
                    continue
                try:
                    doc = parse_yaml(read_text(source), self.rel(source))
                except StackError:
                    continue
                for library, settings in POOL_VOCABULARIES:
                    found = mapping_with(doc, [settings["size"], settings["max_overflow"] or settings["max_connections"]])
                    if found is None:
                        continue
                    keys, mapping = found
                    where = f"{self.rel(source)}, mounted into {name} at {mount.target}"
                    self.found.set("paths", "pool_config", self.rel(source), f"{where}: its pool in {library} keys")
                    self.found.set("pool", "config_key", ".".join(keys), f"the mapping with {library} pool keys")
                    self.found.set("pool", "settings", settings, f"{library} pool keys")
                    self.breaker_in_vocabulary(keys, mapping)
                    return True
        return False

    def breaker_in_vocabulary(self, keys: list[str], mapping: dict) -> None:
        for library, settings in BREAKER_VOCABULARIES:
            if all(key in mapping for key in settings.values()) and len(keys) > 1:
                self.found.set("breakers", "config_key", ".".join(keys[:-1]),
                               f"the database's breaker is in its pool mapping, in {library} keys")
                self.found.set("breakers", "config_entry", keys[-1], "the database's entry")
                self.found.set("breakers", "settings", settings, f"{library} breaker keys")
                return

    def breaker_code(self) -> None:
        """Without a pool config file, each API service's breaker is the one its code builds: where that code
        is (its build context, else the build context another compose file of the repository gives the same
        service, the image the deployed file pulls) and the breaker-state encoding the code states."""
        if self.found.get("paths", "pool_config"):
            return
        stack = self.stack()
        dependency, states = self.found.get("breakers", "dependency"), None
        for name in self.found.get("roles", "api_services") or []:
            svc = stack.compose.services.get(name)
            if svc is None:
                continue
            directory, how = svc.build_context, "its build context"
            if directory is None:
                directory, how = self.built_elsewhere(name)
            if directory is None or not stack.inside(directory) or not directory.is_dir():
                continue
            code = read_breaker_code(stack, directory)
            breaker = next((b for b in code.breakers if b.name == dependency), None)
            if breaker is None:
                continue
            found = f"CircuitBreaker({dependency!r}) at {breaker.file}:{breaker.line}"
            if how != "its build context":
                self.found.set("breakers", "code", {**self.found.get("breakers", "code"), name: self.rel(directory)},
                               f"the code of {name}, {how}: it builds {found}")
            states = states or (code.states and (code.states, found))
        if states:
            self.found.set("breakers", "states", states[0], f"the encoding the code of {states[1]} states (the "
                           "gauge's HELP text or the breaker class's constants)")

    def built_elsewhere(self, service: str) -> tuple[Path | None, str]:
        """The build context another compose file of the repository gives `service` (the deployed file pulls
        the image it builds), and which file."""
        for path in self.files:
            if not is_compose_file(path):
                continue
            build = ((parse_yaml(read_text(path), path.name).get("services") or {}).get(service) or {}).get("build")
            context = build.get("context") if isinstance(build, dict) else build
            if isinstance(context, str) and not re.match(r"^[a-z]+://", context):
                return (path.parent / context).resolve(), f"the build context of {service} in {self.rel(path)}"
        return None, ""

    def prometheus(self) -> None:
        stack = self.stack()
        svc = stack.compose.services.get(self.found.get("roles", "prometheus"))
        if svc is None:
            return
        args = [*svc.entrypoint, *svc.command]
        flag = next((a.split("=", 1)[1] for a in args if a.startswith("--config.file=")), None)
        if flag is None and "--config.file" in args[:-1]:
            flag = args[args.index("--config.file") + 1]
        container = flag or "/etc/prometheus/prometheus.yml"
        host = svc.host_path_for(posixpath_join("/prometheus", container))
        if host is None or not host.is_file():
            raise StackError(f"{svc.name} reads {container}, which no bind mount brings from the repository: "
                             "set paths.prometheus_config")
        self.found.set("paths", "prometheus_config", self.rel(host), f"{svc.name} --config.file {container}, bind-mounted")
        tests = sorted({p.parent for p in self.files if p.suffix in (".yml", ".yaml") and is_rule_test(p)})
        if tests:
            self.found.set("paths", "prometheus_rule_tests", self.rel(tests[0]),
                           "promtool rule unit tests (files with rule_files and tests)")
        else:
            self.found.todo("paths.prometheus_rule_tests: no promtool rule unit tests found (that check is skipped)")

    def scripts(self) -> None:
        """Each script role by behaviour: the repository's scripts that read like it, best first, each called as
        its usage text says in a trial run in the sandbox. The first whose run does what the role does (a
        monitor writes expiry metrics for a certificate, a rotation replaces the key) is the one; a candidate
        that fails its trial is passed over, named in the TODO when no candidate passes (the first is kept)."""
        for key, path_key, hints, what, read, trial in (
                ("monitor", "monitor_script", MONITOR_HINTS, "the TLS monitor", monitor_interface, self.monitor_trial),
                ("rotate", "rotate_script", ROTATE_HINTS, "the key rotation", rotate_interface, self.rotate_trial)):
            candidates = self._candidates(hints, what)
            if not candidates:
                near = "; ".join(f"{self.rel(path)} {lacks}" for path, lacks in self._near_misses(hints))
                self.found.todo(f"paths.{path_key}: no script of the repository looks like {what} ({hints.looks})"
                                + (f"; close, but not it: {near}" if near else ""))
                continue
            if "scripts" not in DEFAULTS:
                self._choose(path_key, candidates[0], what)
                continue
            failed: list[tuple[Path, str, dict | None, str]] = []  # (script, why, interface read, how it was read)
            for script in candidates[:SCRIPT_TRIALS]:
                self._choose(path_key, script, what)
                interface, notes = read(read_text(script), script.name)
                if notes == UNREAD:  # its source says nothing: what its --help prints, in the sandbox
                    interface, notes = self._read_help(script, read)
                if notes == UNREAD:  # nothing in the usage text says how to call it: not discovery, a guess
                    failed.append((script, f"the usage text of {self.rel(script)} names no argument or variable this "
                                           "init understands: declare how to call it (until then its checks are not proven)",
                                   None, ""))
                    continue
                how = f"read from the usage text of {self.rel(script)}: {notes}"
                self.found.set("scripts", key, interface, how)
                try:
                    proven = trial(interface)
                except (StackError, SandboxUnavailable) as exc:
                    failed.append((script, f"not proven by a trial run of {self.rel(script)} in the sandbox: "
                                           f"{str(exc).removeprefix(NOT_PROVEN_PREFIX)}", interface, how))
                    continue
                self.found.set("scripts", key, interface, f"{how}; {proven}")
                if failed:
                    self.found.set("paths", path_key, self.rel(script),
                                   f"an executable script that reads like {what}, and the first whose trial run "
                                   f"did its work (passed over: {', '.join(self.rel(f[0]) for f in failed)})")
                break
            else:
                script, why, first_read, how = failed[0]
                self._choose(path_key, script, what)
                if first_read is None:  # called with no command: its checks are NOT PROVEN, never run our way
                    unread = {**copy.deepcopy(DEFAULTS["scripts"][key]), "command": []}
                    self.found.set("scripts", key, unread, "not read from its usage text: see the TODO")
                else:
                    self.found.set("scripts", key, first_read, how)
                others = "; ".join(f"{self.rel(f[0])}: {f[1]}" for f in failed[1:])
                self.found.todo(f"scripts.{key}: {why}" + (f" (also tried: {others})" if others else ""))

    def monitor_trial(self, interface: dict) -> str:
        """The monitor called as read, once, in the sandbox on a valid certificate made for it; then the
        thresholds it fixes inside (no flag or variable of the interface passes them), measured."""
        problem = monitor_trial(self.stack())
        if problem:
            raise StackError(problem)
        fixed = [key for key in THRESHOLD_STATUSES if where_used(key, interface["command"], interface["env"], "monitor") is None]
        measured = measured_thresholds(self.stack(), fixed) if fixed else {}
        for key in fixed:
            what = THRESHOLD_STATUSES[key][0]
            if key not in measured:
                self.found.todo(f"tls.{key}: the monitor fixes its own {what} threshold (no flag or variable passes "
                                "it) and its runs did not tell it (statuses by exit code or status line, from 0 to "
                                f"{MEASURED_MAX_DAYS} days left): declare tls.{key}")
            elif measured[key] != DEFAULTS["tls"][key]:
                self.found.set("tls", key, measured[key],
                               f"measured: the monitor reports {what} below {measured[key]} days left, a threshold "
                               "it fixes inside (no flag or variable passes one); runs on certificates made at "
                               "whole days left, in the sandbox")
        return "proven by a trial run in the sandbox on a valid certificate" + (
            f"; its fixed thresholds measured ({', '.join(f'{k} {v}' for k, v in measured.items())})" if measured else "")

    def rotate_trial(self, interface: dict) -> str:
        """The rotation called as read, once, in the sandbox on a canary in place of the key: where it really
        writes its audit log and its backup of the old key (what the usage text cannot prove) is learned there."""
        stack = self.stack()
        name = self.found.get("api_key", "secret")
        key = stack.compose.secrets.get(name) if name else None
        if key is None or not key.is_file():
            raise StackError(f"no file of the API key secret {name!r} to rotate a copy of (run the stack's set-up first)")
        with Rotator(stack, key) as rotator:
            run, logs, backups = rotator.trial(f"{self.rel(self.found.get('paths', 'rotate_script'))}: trial run")
        if run.error:
            raise StackError(run.error)
        passed = where_used("audit_log", interface["command"], interface["env"], "rotate") is not None
        notes = ["proven by a trial run in the sandbox on a canary key"]
        if not passed:
            if len(logs) != 1:
                raise StackError("the script is given no audit log path, and the run appended a line to "
                                 + (f"{len(logs)} files ({', '.join(logs)})" if logs else "no file")
                                 + ": declare scripts.rotate.audit_log")
            interface["audit_log"] = logs[0]
            notes.append(f"it logs to {logs[0]}")
        if len(backups) == 1:
            interface["backup_dir"] = backups[0]
            notes.append(f"backs up the old key in {backups[0]}")
        return ", ".join(notes)

    def _read_help(self, script: Path, read) -> tuple[dict, str]:
        """The interface read from what `script --help` prints (run once in the sandbox), or UNREAD."""
        try:
            text = help_text(self.stack(), script)
        except (StackError, SandboxUnavailable):
            return {}, UNREAD
        interface, notes = read("#!\n" + "\n".join(f"# {line}" for line in text.splitlines()), script.name)
        return interface, notes if notes == UNREAD else f"{notes} (from its --help, run in the sandbox)"

    def _candidates(self, hints: ScriptHints, what: str) -> list[Path]:
        """The repository's executable scripts that read like the role, best first: the role's required
        signs all present, then the most other signs; a script with a sign that it does something else
        instead (makes certificates and never reads an expiry date) is not one."""
        scored = []
        for path in self.files:
            if not os.access(path, os.X_OK) or path.suffix in (".yml", ".yaml", ".json", ".md"):
                continue
            text = read_text(path)
            if not text.startswith("#!") or not all(sign.search(text) for sign in hints.required):
                continue
            if hints.other_work(text):
                continue
            score = sum(bool(sign.search(text)) for sign in hints.more)
            if len(hints.required) + score >= 2:
                scored.append((score, path))
        scored.sort(key=lambda item: (-item[0], str(item[1])))
        return [path for _, path in scored]

    def _near_misses(self, hints: ScriptHints) -> list[tuple[Path, str]]:
        """The executable scripts that show the role's first required sign (what it reads) and all but one of the
        others, with what they lack, those named for the role first, then those that read the most: a TODO that names them tells the operator where the role's work is half
        done (an expiry check that only logs)."""
        found = []
        for path in self.files:
            if not os.access(path, os.X_OK) or path.suffix in (".yml", ".yaml", ".json", ".md"):
                continue
            text = read_text(path)
            if not text.startswith("#!") or hints.other_work(text):
                continue
            lacking = [lacks for sign, lacks in zip(hints.required, hints.lacks, strict=True) if not sign.search(text)]
            if len(lacking) == 1 and len(hints.required) > 1 and hints.required[0].search(text):
                named = bool(hints.named and hints.named.search(path.name))
                found.append(((named, len(hints.required[0].findall(text))), path, lacking[0]))
        found.sort(key=lambda item: (-item[0][0], -item[0][1], str(item[1])))
        return [(path, lacks) for _, path, lacks in found[:NEAR_MISSES_NAMED]]

    def _choose(self, key: str, path: Path, what: str) -> None:
        self.found.set("paths", key, self.rel(path), f"an executable script that reads like {what}")

    def tls_monitor(self) -> None:
        if not self.found.get("paths", "monitor_script"):  # no monitor script: its TODO says so, once
            return
        stack = self.stack()
        try:
            monitor = Roles(stack).tls_monitor()
        except StackError as exc:
            self.found.todo(f"roles.tls_monitor: {exc}")
            return
        value = monitor.service.name if monitor.service else f"cron:{self.rel(monitor.cron.path)}" if monitor.cron else ""
        self.found.set("roles", "tls_monitor", value, monitor.how)
        if monitor.cron is not None:
            env = monitor.cron.env
            interface = self.found.get("scripts", "monitor") if "scripts" in DEFAULTS else {}
            var = next((k for k, v in interface.get("env", {}).items() if v == "{metrics_file}"), None)
            if var and var not in env:
                self.found.todo(f"roles.tls_monitor: the cron line sets no {var} (where the metrics go)")

    def full_docs(self, responses: list[Path]) -> None:
        """The full docs the recorded responses spare an agent: a document in the folder that holds them, larger
        than every one of them (what an agent reads without progressive disclosure is the whole reference), the
        largest such, whatever its name; none larger is a TODO, never a file of another folder."""
        folders = {path.parent for path in responses}
        largest_response = max(path.stat().st_size for path in responses)
        documents = sorted((path.stat().st_size, str(path), path) for path in self.files
                           if path.parent in folders and path.suffix.lower() in DOC_SUFFIXES and path not in responses
                           and path.is_file())
        if not documents or documents[-1][0] <= largest_response:
            self.found.todo("disclosure.full_docs: no document beside the recorded responses is larger than they are "
                            f"(looked in {', '.join(sorted(self.rel(folder) for folder in folders))}): name the full "
                            "docs an agent would read without them")
            return
        size, _, docs = documents[-1]
        self.found.set("disclosure", "full_docs", self.rel(docs),
                       f"the largest document beside the recorded responses ({size} bytes; the largest response "
                       f"{largest_response})")

    def disclosure(self) -> None:
        levels = list(DEFAULTS["disclosure"]["endpoints"])
        found = {}
        for level in levels:
            match = next((p for p in self.files if p.stem.lower().startswith(level) and p.suffix == ".json"), None)
            if match:
                found[level] = self.rel(match)
        if len(found) == len(levels):
            self.found.set("disclosure", "responses", found, "recorded responses named after their level")
            self.full_docs([self.root / path for path in found.values()])
            return
        self.found.set("disclosure", "responses", {},
                       "no recorded disclosure responses in the repository: the static token checks are skipped, "
                       "the live ones judge the endpoints")


# a pool setting the code reads from a variable -> the profile key that names that variable
CODE_SETTING_VARIABLES = {"size": "size_env", "max_overflow": "overflow_env", "timeout": "timeout_env",
                          "pre_ping": "pre_ping_env"}
DOC_SUFFIXES = (".md", ".markdown", ".txt", ".rst", ".html", ".json", ".yaml", ".yml")


COMPOSE_TOP_LEVEL = re.compile(r"^services:[ \t]*(#.*)?$", re.M)
COMPOSE_F_FLAG = re.compile(r"(?:^|\s)(?:-f|--file)[ =]+[\"']?([\w./${}-]+\.ya?ml)")
COMPOSE_COMMAND = re.compile(r"docker[ -]compose\b[^\n]*", re.I)
COMPOSE_UP = re.compile(r"\bup\b")
# words of a compose file's name or folder that say where it runs: deployed (lower rank) or not
DEPLOYED_WORDS = ("prod", "production", "deploy", "release", "live")
NOT_DEPLOYED_WORDS = ("dev", "develop", "development", "local", "test", "tests", "ci", "example", "sample", "debug",
                      "override", "e2e", "staging", "demo")


def is_compose_file(path: Path) -> bool:
    """A YAML file whose content is a compose file: a top-level `services:` mapping (any name, any folder)."""
    if path.suffix not in (".yml", ".yaml") or "override" in path.name:
        return False
    text = read_text(path)
    if not COMPOSE_TOP_LEVEL.search(text):
        return False
    try:
        doc = parse_yaml(text, path.name)
    except StackError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("services"), dict)


def wrapper_compose_sets(files: list[Path], root: Path) -> list[tuple[Path, list[Path], bool]]:
    """The -f sets the repository's own wrapper scripts, Makefile and docs pass to docker compose, the deploying
    one first: (the file that names them, the compose files resolved from the repository root, whether by -f;
    docs that run `docker compose up` with no -f name the default file of their own dir)."""
    wrappers = []
    for path in files:
        kind = 0 if path.name in ("Makefile", "justfile", "Taskfile.yml") or path.suffix == ".sh" or \
            (os.access(path, os.X_OK) and read_text(path).startswith("#!")) else 1 if path.suffix == ".md" else None
        if kind is not None:
            wrappers.append((kind, str(path), path))
    found = []
    for kind, _, path in wrappers:
        text = read_text(path).replace("\\\n", " ")  # a command continued over several lines
        for command in COMPOSE_COMMAND.findall(text):
            named = [Path(os.path.normpath(path.parent / name if (path.parent / name).is_file() else root / name))
                     for name in COMPOSE_F_FLAG.findall(command)]
            flagged = bool(named)
            if not named and path.suffix == ".md" and COMPOSE_UP.search(command):
                # the docs run `docker compose up` with no -f: the file Compose reads in the docs' own dir
                named = [default for name in COMPOSE_FILE_NAMES if (default := path.parent / name).is_file()][:1]
            if named and all(p.is_file() for p in named):
                found.append(((not flagged, max(deployment_rank(p, root) for p in named), kind,
                               deployment_rank(path, root), str(path)), path, named, flagged))
    # the set that deploys first: one named with -f (over a dir's default file), no file of it named for
    # development, a wrapper (over the docs) named for deploying
    return [(path, named, flagged) for _, path, named, flagged in sorted(found, key=lambda item: item[0])]


def _words(path: Path, root: Path) -> set[str]:
    """The words that say where a compose file runs: its name's, else (when they say nothing) its folders'."""
    said = set(DEPLOYED_WORDS) | set(NOT_DEPLOYED_WORDS)
    name = set(re.split(r"[^a-z0-9]+", path.name.lower()))
    if name & said:
        return name
    return set(re.split(r"[^a-z0-9]+", str(path.parent.relative_to(root)).lower()))


def deployment_rank(path: Path, root: Path) -> int:
    """0: its name (else folder) says it is deployed (prod); 1: says nothing; 2: says it is not (dev, test...)."""
    words = _words(path, root)
    if words & set(NOT_DEPLOYED_WORDS):
        return 2
    return 0 if words & set(DEPLOYED_WORDS) else 1


def deployment_reason(path: Path, root: Path) -> str:
    rank = deployment_rank(path, root)
    if rank == 0:
        word = next(w for w in DEPLOYED_WORDS if w in _words(path, root))
        return f"named for deployment ({word})"
    return "the least nested" if rank == 1 else "the least nested, though named for development"


SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
def api_key_name_rank(secret: str) -> int:
    """How much a secret's name says it is an API key: 2 an API or master key, a token; 1 any key; 0 nothing;
    -1 a password, DSN or URL (a database's or a service's own credential, never the API's key)."""
    words = set(re.split(r"[^a-z0-9]+", secret.lower()))
    if words & {"password", "passwd", "pass", "pw", "dsn", "url", "webhook"}:
        return -1
    if {"api", "master"} & words and "key" in words or words & {"token", "apikey"}:
        return 2
    return 1 if "key" in words else 0


PROXY_IMAGE = re.compile(r"(?:^|/)(?:nginx|openresty|traefik|caddy|haproxy|envoy)[\w.-]*(?::|$)", re.I)
PROXY_PASS = re.compile(r"(?<![\w.])proxy_pass\s+https?://([^/:;\s]+)")
UPSTREAM_BLOCK = re.compile(r"\bupstream\s+([\w.-]+)\s*\{([^}]*)\}")
UPSTREAM_SERVER = re.compile(r"^[ \t]*server[ \t]+([^:;\s]+)", re.M)  # within one line (linear on blank lines)
SERVED_CERT = re.compile(r"(?<![\w.])ssl_certificate\s+[\"']?([^;\s\"']+)")
SERVED_KEY = re.compile(r"(?<![\w.])ssl_certificate_key\s+[\"']?([^;\s\"']+)")


def pem_public_key(path: Path) -> tuple[str, bytes]:
    """("cert", its public key) of a PEM certificate (the first of the file), ("key", ...) of an unencrypted PEM
    private key, ("", b"") for anything else."""
    try:
        data = read_stack_file(path, str(path), MAX_SCAN_BYTES)
    except StackError:
        return "", b""
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return "cert", x509.load_pem_x509_certificates(data)[0].public_key().public_bytes(*SPKI)
        if b"PRIVATE KEY-----" in data:
            return "key", serialization.load_pem_private_key(data, None).public_key().public_bytes(*SPKI)
    except (ValueError, TypeError):
        pass
    return "", b""
@dataclass(frozen=True)
class ScriptHints:
    """What makes a script a candidate for a role: every `required` sign, at least two signs in all (with
    `more`), and no sign that it does something else `instead`, `unless` it also does the role's work."""

    looks: str  # what such a script does, as a TODO says it
    required: tuple[re.Pattern, ...]
    lacks: tuple[str, ...]  # for each required sign, what a script without it does not do
    more: tuple[re.Pattern, ...]
    instead: re.Pattern | None = None
    unless: re.Pattern | None = None
    named: re.Pattern | None = None  # a file name that speaks of the role: ranks a near miss, never makes a candidate

    def other_work(self, text: str) -> bool:
        return bool(self.instead and self.instead.search(text) and not (self.unless and self.unless.search(text)))


# A TLS monitor reads a certificate's expiry and writes metrics for it; a script that makes certificates and never
# reads an expiry (a self-signed generator, a Let's Encrypt bootstrap) is a certificate maker, not a monitor.
MONITOR_HINTS = ScriptHints(
    looks="one that reads a certificate's expiry and writes Prometheus text: '# TYPE', a .prom file, a textfile dir",
    required=(re.compile(r"x509|BEGIN CERTIFICATE|enddate|not_?after|checkend", re.I),
              re.compile(r"# TYPE|# HELP|\.prom\b|textfile", re.I)),  # Prometheus text it writes, not the word
    lacks=("reads no certificate", "writes no Prometheus text"),
    more=(re.compile(r"days", re.I),),
    instead=re.compile(r"\breq\s+-(?:new|x509)|\bgenrsa\b|\bgenpkey\b|-newkey\b|certbot\s+certonly", re.I),
    unless=re.compile(r"enddate|checkend|not_?after", re.I),
    named=re.compile(r"monitor|expir|cert.?check|ssl.?check", re.I))
ROTATE_HINTS = ScriptHints(
    looks="one that makes a new random secret and keeps a backup or an audit line",
    required=(),
    lacks=(),
    more=(re.compile(r"rotat", re.I), re.compile(r"urandom|rand -|token_|secrets\.", re.I),
          re.compile(r"backup|archive|\.bak|audit", re.I)))
NEAR_MISSES_NAMED = 3  # scripts a TODO names as close to a role but not it
SCRIPT_TRIALS = 3  # candidates tried per role, best first: each trial is a sandboxed run (a timeout at worst)


def posixpath_join(base: str, path: str) -> str:
    return str(PurePosixPath(base) / path)


POOL_VOCABULARIES = [  # (library, pool.settings: its pool keys in a YAML config)
    ("SQLAlchemy", {"size": "pool_size", "max_overflow": "max_overflow", "max_connections": "", "timeout": "pool_timeout",
                    "pre_ping": "pool_pre_ping"}),
    # asyncpg's min_size/max_size as a gateway's config names them (not LiteLLM's own pool: pool_libraries.py)
    ("asyncpg-style", {"size": "min_connections", "max_overflow": "", "max_connections": "max_connections",
                 "timeout": "pool_timeout", "pre_ping": "pool_pre_ping"}),
]
BREAKER_VOCABULARIES = [  # (library, breakers.settings: its keys for a breaker beside the pool)
    # LiteLLM's router cooldown keys, applied by a gateway's config to its database
    ("LiteLLM-router-style", {"threshold": "allowed_fails", "recovery": "cooldown_time", "half_open": "cooldown_probe_requests"}),
]


def mapping_with(doc, wanted: list[str], keys: tuple[str, ...] = ()) -> tuple[list[str], dict] | None:
    """(key path, mapping) of the first mapping of a YAML document, depth first, that has every key of `wanted`."""
    if not isinstance(doc, dict):
        return None
    if keys and all(key in doc for key in wanted):
        return list(keys), doc
    for key, value in doc.items():
        found = mapping_with(value, wanted, (*keys, str(key)))
        if found is not None:
            return found
    return None




def is_rule_test(path: Path) -> bool:
    text = read_text(path)
    return "rule_files" in text and re.search(r"^tests:", text, re.M) is not None


def role_fits(stack, role: str, svc) -> bool:
    from stackproof.target.roles import _specs

    spec = _specs(stack)[role]
    return sum(s.weight for s in spec.signals if s.test(svc)) >= spec.minimum


# --- scripts' usage text ---------------------------------------------------------------

# each line pattern starts `^[ \t]*(?:#[ \t]*)?`: within one line, and no two blank runs side by side to backtrack
# between (a hostile script's line of blanks made `^[ \t]*#?[ \t]*` quadratic: tests/test_linear_readers.py)
ENV_LINE = re.compile(r"^[ \t]*(?:#[ \t]*)?([A-Z][A-Z0-9_]{2,})[ \t]{2,}(.+)$", re.M)
FLAG = r"(?:--[a-z][a-z0-9-]*|-[a-zA-Z](?![\w-]))"  # a long option, or a short one (getopts, argparse)
# an option's line: its names (`-o, --output`, `-o|--output`), the value it takes, what it is
FLAG_LINE = re.compile(rf"^[ \t]*(?:#[ \t]*)?({FLAG}(?:[ \t]*[,|][ \t]*{FLAG})*)(?:[ =]([A-Z][A-Z_]*))?[ \t]+(.+)$", re.M)
SYNOPSIS_FLAG = re.compile(rf"({FLAG}(?:\|{FLAG})*)[ =]([A-Z][A-Z_]*)")  # `[-o|--output FILE]`, `[--textfile PATH]`
EXIT_LINE = re.compile(r"^[ \t]*(?:#[ \t]*)?(\d{1,3})\s+(?:[-:=]\s*)?(?:all\s+|worst is\s+|certificate\s+)?"
                       r"(ok|warning|critical|error|unknown)\b", re.I | re.M)
EXIT_INLINE = re.compile(r"(\d{1,3})\s+(?:all\s+|worst is\s+|any\s+)?(ok|warning|critical|error|unknown)\b", re.I)
METRIC_LINE = re.compile(r"^[ \t]*(?:#[ \t]*)?(?:metrics:\s*)?([a-z_][a-z0-9_]*)\{([a-z_, ]*)\}", re.I | re.M)
EXIT_STATUS = {"unknown": "error"}  # Nagios' word for the status the suite calls error

MONITOR_PLACEHOLDERS = [  # (placeholder, words of a description that mean it)
    ("{metrics_file}", ("metrics", ".prom", "textfile")),
    ("{warn_days}", ("warn",)),
    ("{crit_days}", ("crit",)),
    ("{cert}", ("certificate", "cert")),
]
ROTATE_PLACEHOLDERS = [
    ("{audit_log}", ("audit",)),
    ("{secrets_dir}", ("directory", "dir", "secrets")),
    ("{key_file}", ("file",)),
]
METRIC_ROLES = [("expiry", ("not_after", "expiry", "expires", "notafter")), ("days_left", ("days",)),
                ("status", ("status", "state")), ("success", ("success", "probe_ok", "_ok", "up"))]
LABEL_ROLES = [("cert", ("path", "file", "cert")), ("cn", ("cn", "common", "domain")), ("issuer", ("issuer",))]


UNREAD = "nothing read from the usage text"


def usage_text(source: str) -> str:
    """The script's usage text: its header comments (blank lines among them too), any here-document of its
    usage function, the usage lines it echoes and, for a Python script, its module docstring (read with
    `ast`, never run)."""
    lines = source.splitlines()
    docstring = ""
    if lines and "python" in lines[0]:
        module = parse_python(source)
        docstring = (ast.get_docstring(module) or "") if module is not None else ""
    header = []
    for line in lines[1:]:
        if line.strip() and not line.startswith("#"):
            break
        header.append(line[1:])
    docs = re.findall(r"<<-?\s*'?\"?(\w+)'?\"?\n(.*?)\n\s*\1\b", source, re.S)
    echoed = re.findall(r"^\s*(?:echo|printf)\s+(?:-e\s+)?[\"']((?:usage|Usage|USAGE):[^\"'\n]*)", source, re.M)
    return "\n".join(header + [body for _, body in docs] + echoed + [docstring])


def _placeholder(description: str, table) -> str | None:
    low = description.lower()
    return next((ph for ph, words in table if any(word in low for word in words)), None)


def synopsis(text: str) -> str:
    """The usage synopsis lines ("Usage: prog [--flag ARG] NAME"), each with the indented lines that continue
    it (argparse wraps a long synopsis)."""
    found: list[str] = []
    aligned = None  # the indent of a continuation: at least where the program's name starts
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if "usage:" in line.lower():
            found.append(line)
            aligned = line.lower().index("usage:") + len("usage: ")
        elif aligned is not None and line.strip() and indent >= aligned:
            found[-1] += " " + line.strip()
        else:
            aligned = None
    return "\n".join(found)


def interface_parts(text: str, table) -> tuple[dict[str, str], dict[str, str]]:
    """(environment variable -> placeholder, flag -> placeholder) described by a usage text.
    A flag takes a value when the synopsis or its own line shows one (`--flag ARG`, `-o FILE`); of an
    option's names (`-o, --output`) the long one is passed; an upper-case name that is a positional
    argument of the synopsis is not an environment variable."""
    head = synopsis(text)
    positional = set(re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b", SYNOPSIS_FLAG.sub("", head)))
    env = {var: ph for var, desc in ENV_LINE.findall(text)
           if var not in positional and (ph := _placeholder(desc, table))}
    takes_value = {_long_name(names): arg for names, arg in SYNOPSIS_FLAG.findall(head)}
    flags: dict[str, str] = {}
    for names, arg, desc in FLAG_LINE.findall(text):
        flag = _long_name(names)
        arg = arg or takes_value.get(flag, "")
        if arg and (ph := _placeholder(f"{flag} {arg} {desc}", table)) and ph not in flags.values():
            flags[flag] = ph
    for flag, arg in takes_value.items():  # flags only the synopsis names
        if flag not in flags and (ph := _placeholder(f"{flag} {arg}", table)) and ph not in flags.values():
            flags[flag] = ph
    return env, flags


def _long_name(names: str) -> str:
    """The name to pass of an option's names (`-o, --output`, `-o|--output`): the long one, if any."""
    found = re.findall(FLAG, names)
    return next((name for name in found if name.startswith("--")), found[0])


def monitor_interface(source: str, name: str) -> tuple[dict, str]:
    text = usage_text(source)
    interface = copy.deepcopy(DEFAULTS["scripts"]["monitor"])
    notes = []
    env, flags = interface_parts(text, MONITOR_PLACEHOLDERS)
    if not env and not flags:
        return interface, UNREAD
    if env and not flags:
        interface["command"] = ["{script}"]
        interface["env"] = dict(sorted(env.items()))
        notes.append(f"paths from the environment ({', '.join(sorted(env))})")
    elif flags:  # and variables for what no flag gives (the metrics file in the environment, say)
        env = {var: ph for var, ph in sorted(env.items()) if ph not in flags.values()}
        positional = "{cert}" not in flags.values() and "{cert}" not in env.values()
        interface["command"] = ["{script}"] + [p for flag, ph in flags.items() for p in (flag, ph)] + \
            (["{cert}"] if positional else [])
        interface["env"] = env
        notes.append(f"flags {', '.join(flags)}" + (f", variables {', '.join(env)}" if env else "")
                     + (", certificates as arguments" if positional else ""))
    codes: dict[str, int] = {}
    for code, status in EXIT_LINE.findall(text) + EXIT_INLINE.findall(text):
        codes.setdefault(EXIT_STATUS.get(status.lower(), status.lower()), int(code))
    if len(codes) >= 3:
        interface["exit_codes"] = {s: codes.get(s) for s in ("ok", "warning", "critical", "error")}
        notes.append("exit codes " + ", ".join(f"{s} {c}" for s, c in interface["exit_codes"].items()))
    names, labels = {}, {}
    for metric, label_text in METRIC_LINE.findall(text):
        role = next((r for r, words in METRIC_ROLES if any(w in metric.lower() for w in words)), None)
        if role and role not in names:
            names[role] = metric
        for label in (part.strip() for part in label_text.split(",") if part.strip()):
            lrole = next((r for r, words in LABEL_ROLES if any(w in label.lower() for w in words)), None)
            if lrole and lrole not in labels:
                labels[lrole] = label
    if len(names) == 4:
        interface["metrics"] = names
        notes.append("metrics " + ", ".join(names.values()))
    if len(labels) == 3 or (len(names) == 4 and "cert" in labels):  # a label it does not write is not checked
        interface["labels"] = {role: labels.get(role) for role, _ in LABEL_ROLES}
        if len(labels) < 3:
            notes.append("no label for " + ", ".join(role for role, _ in LABEL_ROLES if role not in labels))
    if re.search(r"^\s*#?\s*(<path>|\S+):\s.*status=<status>", text, re.M) is None:
        interface["status_line"] = None
        notes.append("no machine-readable status line")
    return interface, "; ".join(notes) or UNREAD


def _takes_value(flag: str, text: str) -> bool:
    """The usage line shows the flag with a value (`[--audit-log FILE]`), though its description line does not."""
    return re.search(rf"\[{re.escape(flag)}[ =][A-Z]", text) is not None


def rotate_interface(source: str, name: str) -> tuple[dict, str]:
    text = usage_text(source)
    interface = copy.deepcopy(DEFAULTS["scripts"]["rotate"])
    notes = []
    env, flags = interface_parts(text, ROTATE_PLACEHOLDERS)
    head = synopsis(text)
    yes = next((flag for flag in ("--yes", "--force", "--assume-yes", "-y") if f"[{flag}]" in head), None)
    command = ["{script}"] + [p for flag, ph in flags.items() for p in (flag, ph)]
    if yes:
        command.append(yes)
        notes.append(f"{yes} skips the confirmation")
    elif re.search(r"\[y/N\]|confirm|answer y", text, re.I):
        interface["stdin"] = "y\n"
        notes.append("answers the confirmation prompt with y")
    # the key's name as the operand the synopsis shows (`[SECRET_NAME]`, `NAME`); without a synopsis, as the
    # usual argument. A synopsis with no operand and no flag or variable for the key cannot be told which key
    # to rotate: nothing read (a script that rotates the database's passwords by their service names, say)
    operands = re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b|<[\w-]+>", SYNOPSIS_FLAG.sub("", head))
    if operands or not head:
        command.append("{key_name}")
    elif not (env or flags):
        return interface, UNREAD
    interface["command"] = command
    interface["env"] = env
    if env:
        notes.append(f"paths from the environment ({', '.join(sorted(env))})")
    if flags:
        notes.append(f"flags {', '.join(flags)}")
    return interface, "; ".join(notes) or "the key name as its argument"


# --- writing ---------------------------------------------------------------------------


def render(findings: Findings, root: Path) -> str:
    out = [f"# stackproof profile for {root.name}, written by `stackproof init`.",
           "# Each entry says how it was found; review them, and the TODOs, before trusting the verdict.",
           "# Anything not set here keeps its default (stackproof/target/profile.py DEFAULTS: thresholds and",
           "# interface names, never a file); a file not found here is reported as missing, never guessed.",
           "# Re-running init (--force) keeps paths.compose, its overrides and env files, and every entry you",
           "# set or changed here (the last line records what init wrote); it rediscovers the rest."]
    if findings.todos:
        out.append("#")
        out += [f"# TODO: {todo}" for todo in findings.todos]
    else:
        out.append("# TODO: nothing left undecided")
    for section in DEFAULTS:
        entries = [e for e in findings.entries if e.section == section]
        if not entries:
            continue
        out += ["", f"{section}:"]
        for entry in entries:
            out.append(f"  # {entry.how}")
            out.append(f"  {entry.key}: {json.dumps(entry.value)}")
    written = {f"{e.section}.{e.key}": value_digest(e.value) for e in findings.entries
               if (e.section, e.key) not in findings.pinned}
    out += ["", WRITTEN_MARK + json.dumps(written, sort_keys=True)]
    return "\n".join(out) + "\n"


# what a re-run of init always keeps from the profile it rewrites: the user's choice of the deployed compose set
KEPT_ON_RERUN = (("paths", "compose"), ("paths", "compose_overrides"), ("compose", "env_files"))
# steps whose TODOs name no profile key: the entries that, all set by the user, answer them (the step is skipped)
STEP_ANSWERS = {"tls_pair": (("paths", "tls_cert"), ("paths", "tls_key")), "pool_config": (("paths", "pool_config"),)}
# the last line of a profile init writes: a digest of each entry's value as init wrote it, so that a re-run tells
# the entries the user changed or added (kept) from those init wrote (rediscovered)
WRITTEN_MARK = "# stackproof init wrote: "


def value_digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def kept_entries(target: Path) -> list[Entry]:
    """The entries of an existing profile that init keeps when it rewrites it: the compose set (KEPT_ON_RERUN),
    and every entry whose value is not the one init wrote there (the user set or changed it). A profile without
    init's record (written by hand, or by an older init) keeps the compose set only."""
    try:
        if not target.is_file():
            return []
        Profile.load(target.parent)  # a profile that does not load is rediscovered whole
        text = read_stack_file(target, PROFILE_FILE, MAX_SCAN_BYTES).decode("utf-8", errors="replace")
        raw = parse_yaml(text, PROFILE_FILE)
    except StackError:
        return []
    record = next((line.removeprefix(WRITTEN_MARK) for line in text.splitlines() if line.startswith(WRITTEN_MARK)), None)
    try:
        written = json.loads(record) if record is not None else None
    except ValueError:
        written = None
    kept = []
    for section, values in (raw if isinstance(raw, dict) else {}).items():
        for key, value in (values if isinstance(values, dict) and section in DEFAULTS else {}).items():
            if value in (None, "", [], {}):
                continue
            if (section, key) in KEPT_ON_RERUN:
                kept.append(Entry(section, key, value, f"kept from the previous {PROFILE_FILE} (set by you or an "
                                                       "earlier init)"))
            elif isinstance(written, dict) and written.get(f"{section}.{key}") != value_digest(value):
                kept.append(Entry(section, key, value, f"kept from the previous {PROFILE_FILE}: set by you "
                                                       "(init does not overwrite it)"))
    return kept


def write_profile(root: Path, force: bool = False, timeout: float = 20.0,
                  compose: str | None = None) -> tuple[Path, Findings]:
    """Inspect the stack and write its profile. `compose` (--compose) names the deployed compose file;
    otherwise a rewritten profile's paths.compose (and overrides, env files) are kept, the rest rediscovered."""
    target = root / PROFILE_FILE
    if target.exists() and not force:
        raise StackError(f"{target}: already exists (use --force to overwrite it)")
    kept = [e for e in kept_entries(target) if not compose or (e.section, e.key) not in KEPT_ON_RERUN]
    chosen = next(((str(e.value), e.how) for e in kept if (e.section, e.key) == ("paths", "compose")), None)
    if compose:
        if not (root / compose).is_file() or not inside(root / compose, root):
            raise StackError(f"--compose {compose}: no such file inside the stack dir")
        chosen = (compose, "chosen with --compose")
    inspector = Inspector(root, timeout, chosen)
    for entry in kept:
        if (entry.section, entry.key) in KEPT_ON_RERUN:
            if (entry.section, entry.key) != ("paths", "compose"):
                inspector.found.set(entry.section, entry.key, entry.value, entry.how)
        else:
            inspector.found.pin(entry)
    findings = inspector.inspect()
    text = render(findings, root)
    try:  # the profile in place, if any, bounded (a FIFO there must not block init); it is replaced below
        previous: bytes | None = read_stack_file(target, PROFILE_FILE, MAX_SCAN_BYTES)
    except StackError:
        previous = None
    fd, tmp = tempfile.mkstemp(prefix=f".{PROFILE_FILE}.", suffix=".tmp", dir=root)  # never through a committed link
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    try:
        Profile.load(root)  # what init writes must load as a profile
    except StackError:
        if previous is None:
            target.unlink()
        else:
            target.write_bytes(previous)
        raise
    return target, findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stackproof init", description=__doc__.splitlines()[0])
    parser.add_argument("--stack-dir", required=True, type=Path, help="root of the deployment repository")
    parser.add_argument("--force", action="store_true",
                        help=f"rewrite an existing {PROFILE_FILE}: its paths.compose, overrides and env files, and every "
                        "entry you set or changed, are kept; the rest is rediscovered")
    parser.add_argument("--compose", metavar="FILE", help="the deployed compose file (relative to the stack dir), "
                        "when init's choice among several is not it")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds for each subprocess (docker compose config)")
    args = parser.parse_args(argv)
    root = args.stack_dir.expanduser().resolve()
    if not root.is_dir():
        print(f"stackproof init: {root}: stack dir not found", file=sys.stderr)
        return 2
    try:
        path, findings = write_profile(root, args.force, args.timeout, args.compose)
    except StackError as exc:
        print(f"stackproof init: {exc}", file=sys.stderr)
        return 1
    print(f"stackproof init: wrote {path} ({len(findings.entries)} entries, {len(findings.todos)} TODO)")
    for todo in findings.todos:
        print(f"  TODO: {todo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
