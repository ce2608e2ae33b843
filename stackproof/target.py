"""The target: one stack directory, its profile, and how its files are read."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from . import proc
from .backends import local_host
from .compose import ComposeModel, compose_files, load_compose
from .credentials import SecretValue, is_credential_name, stack_secrets
from .errors import Blocked, RequiredVariablesMissing, StackError
from .profile import Profile
from .redact import Redactor


class Stack:
    """A stack under test. Cheap to build; each part is read (and cached) on first use,
    so a broken file fails only the checks that need it."""

    def __init__(self, root: Path, timeout: float, redactor: Redactor, env_files: list[Path] | None = None):
        self.root = root
        self.timeout = timeout
        self.redactor = redactor
        self.cli_env_files = list(env_files or [])  # --env-file, on top of the profile's compose.env_files
        self.current_check = ""  # set by the plugin before each check: who first hit a broken input
        self._inputs: dict[str, tuple[bool, Any, str]] = {}  # key -> (ok, value or error, first check)
        self.target_errors: list[str] = []  # problems of the whole target, reported once at the top

    def needs(self, key: str, load: Callable[[], Any]) -> Any:
        """An input of the checks, loaded once. When loading it failed, the check that hit it first
        fails with the error; any later check that needs it raises Blocked ('blocked by <check>')."""
        if key not in self._inputs:
            try:
                self._inputs[key] = (True, load(), self.current_check)
            except RequiredVariablesMissing as exc:
                self._inputs[key] = (False, exc, "target error")
                if str(exc) not in self.target_errors:
                    self.target_errors.append(str(exc))
            except Blocked:
                raise
            except StackError as exc:
                self._inputs[key] = (False, exc, self.current_check)
        ok, value, first = self._inputs[key]
        if ok:
            return value
        if first == self.current_check:
            raise value
        raise Blocked(f"blocked by {first}: {value}")

    def require(self) -> None:
        if not self.root.is_dir():
            raise StackError(f"{self.root}: stack dir not found")

    @cached_property
    def profile(self) -> Profile:
        self.require()
        return Profile.load(self.root)

    def path(self, key: str) -> Path:
        return self.profile.path(key)

    def rel(self, path: Path | str) -> str:
        """A path as messages show it: relative to the stack dir when inside it."""
        path = Path(path)
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    @property
    def compose(self) -> ComposeModel:
        """The compose model with the active profiles (COMPOSE_PROFILES and the profile's compose.profiles)."""
        return self.needs("compose model", lambda: self._load_compose(self.profile["compose"]["profiles"]))

    def compose_all_profiles(self) -> ComposeModel | None:
        """The model with every compose profile active, to name a service's inactive profile; None if unreadable."""
        try:
            return self.needs("compose model, all profiles", lambda: self._load_compose(["*"]))
        except StackError:
            return None

    def compose_env_files(self) -> list[Path]:
        return [self.profile.stack_path(p) for p in self.profile["compose"]["env_files"]] + self.cli_env_files

    def _load_compose(self, profiles: list[str]) -> ComposeModel:
        self.require()
        overrides = [self.profile.stack_path(p) for p in self.profile["paths"]["compose_overrides"]]
        return load_compose(self.path("compose"), overrides, self.timeout,
                            env_files=self.compose_env_files(), profiles=profiles)

    @cached_property
    def roles(self):
        """The services (or cron file) that play each role the checks need (see stackproof/roles.py)."""
        from .roles import Roles

        return Roles(self)

    @cached_property
    def host(self):
        """testinfra host for the stack's own files (the static backend)."""
        return local_host(self.timeout)

    def read_secret(self, path: Path) -> bytes:
        """Read a secret file; its value is registered for redaction before it is returned."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StackError(f"{self.rel(path)}: cannot read ({exc.strerror})") from None
        self.redactor.add(data)
        return data

    def secret_values(self) -> list[SecretValue]:
        """Every secret value written in the stack: secret files, credentials of the .env files and of
        the compose files' environments, URL passwords (see credentials.py)."""
        try:
            secrets_dir, compose = self.path("secrets_dir"), self.path("compose")
            overrides = [self.profile.stack_path(p) for p in self.profile["paths"]["compose_overrides"]]
        except Exception:  # an unusable profile fails the checks that read it; the default layout is still scanned
            secrets_dir, compose, overrides = self.root / "ai-stack/compose/secrets", self.root / "ai-stack/compose/docker-compose.yml", []
        try:
            extra = self.compose_env_files()
        except Exception:
            extra = list(self.cli_env_files)
        return stack_secrets(self.root, secrets_dir, compose_files(compose, overrides),
                             [self.root / ".env", compose.parent / ".env", *extra])

    def register_secrets(self) -> None:
        """Before any check runs: teach the redactor every secret of the stack, and the secret-looking
        values of the suite's own STACK* environment variables."""
        if not self.root.is_dir():
            return
        for secret in self.secret_values():
            self.redactor.add(secret.value)
        for name, value in os.environ.items():
            if name.startswith("STACK") and is_credential_name(name):
                self.redactor.add(value)

    def git(self, *args: str) -> str | None:
        """Run git in the stack dir; None when git or a work tree is not there."""
        try:
            done = proc.run(["git", "-C", str(self.root), *args], timeout=self.timeout, where=f"git {args[0]}")
        except StackError:
            return None
        return done.stdout.decode(errors="replace").strip() if done.returncode == 0 else None

    def git_commit(self) -> str | None:
        return self.git("rev-parse", "--short=12", "HEAD")

    def git_tracked(self, path: Path) -> bool | None:
        """True if git tracks `path`, False if not, None if the stack dir is not a git checkout."""
        if self.git("rev-parse", "--is-inside-work-tree") != "true":
            return None
        return bool(self.git("ls-files", "--", str(path)))
