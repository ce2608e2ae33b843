"""The target: one stack directory, its profile, and how its files are read."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from dulwich.errors import NotGitRepository
from dulwich.repo import Repo

from stackproof.io.local import local_host
from stackproof.target.compose import ComposeModel, compose_files, load_compose, passed_environment, read_env_file
from stackproof.target.credentials import SecretValue, is_credential_name, stack_secrets
from stackproof.errors import Blocked, RequiredVariablesMissing, StackError
from stackproof.target.profile import Profile, inside
from stackproof.redact import Redactor
from stackproof.io.files import read_stack_file, require_readable_git
from stackproof.io.sandbox import Sandbox

MAX_SECRET_BYTES = 64 * 1024


class Stack:
    """A stack under test. Cheap to build; each part is read (and cached) on first use,
    so a broken file fails only the checks that need it."""

    def __init__(self, root: Path, timeout: float, redactor: Redactor, env_files: list[Path] | None = None, *,
                 operator_profile: Path | None = None, strict: bool = False, trust_stack_code: bool = False,
                 env_names: list[str] | tuple = ()):
        self.root = root
        self.timeout = timeout
        self.redactor = redactor
        self.operator_profile = operator_profile  # --profile: the operator's, from outside the stack dir
        self.strict = strict  # --strict-profile: the stack's own profile sets no threshold
        self.trust_stack_code = trust_stack_code
        self.cli_env_files = list(env_files or [])  # --env-file, on top of the profile's compose.env_files
        self.passed_env = passed_environment(env_names)  # --env NAME: all Compose sees of the runner's environment
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
        raise Blocked(first, str(value))

    @cached_property
    def sandbox(self) -> Sandbox:
        """How the stack's scripts run here (bubblewrap, or trusted with --trust-stack-code)."""
        return Sandbox.detect(self.trust_stack_code, self.timeout)

    def require(self) -> None:
        if not self.root.is_dir():
            raise StackError(f"{self.root}: stack dir not found")

    @cached_property
    def profile(self) -> Profile:
        self.require()
        return Profile.load(self.root, self.operator_profile, self.strict)

    def path(self, key: str) -> Path:
        return self.profile.path(key)

    def inside(self, path: Path) -> bool:
        """Whether `path`, its symlinks followed, is inside the stack dir (a symlink loop is not)."""
        return inside(path, self.root)

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
        return [self.profile.stack_path(p, "compose.env_files") for p in self.profile["compose"]["env_files"]] + self.cli_env_files

    def _load_compose(self, profiles: list[str]) -> ComposeModel:
        self.require()
        overrides = [self.profile.stack_path(p, "paths.compose_overrides") for p in self.profile["paths"]["compose_overrides"]]
        return load_compose(self.path("compose"), overrides, self.timeout,
                            env_files=self.compose_env_files(), profiles=profiles, passed=self.passed_env,
                            root=self.root)

    @cached_property
    def roles(self):
        """The services (or cron file) that play each role the checks need (see stackproof/roles.py)."""
        from stackproof.target.roles import Roles

        return Roles(self)

    @cached_property
    def host(self):
        """testinfra host for the stack's own files (the static backend)."""
        return local_host(self.timeout)

    def read_secret(self, path: Path) -> bytes:
        """Read a secret file; its value is registered for redaction before it is returned."""
        data = read_stack_file(path, self.rel(path), MAX_SECRET_BYTES)
        self.redactor.add(data)
        return data

    def secret_values(self) -> list[SecretValue]:
        """Every secret value written in the stack: secret files, credentials of the .env files and of
        the compose files' environments, URL passwords (see credentials.py)."""
        try:
            secrets_dir, compose = self.path("secrets_dir"), self.path("compose")
            overrides = [self.profile.stack_path(p, "paths.compose_overrides") for p in self.profile["paths"]["compose_overrides"]]
        except Exception:  # an unusable profile fails the checks that read it; the default layout is still scanned
            secrets_dir, compose, overrides = self.root / "ai-stack/compose/secrets", self.root / "ai-stack/compose/docker-compose.yml", []
        try:
            extra = self.compose_env_files()
        except Exception:
            extra = list(self.cli_env_files)
        return stack_secrets(self.root, secrets_dir, compose_files(compose, overrides),
                             [self.root / ".env", compose.parent / ".env", *extra])

    def register_secrets(self) -> None:
        """Before any check runs: teach the redactor every secret of the stack, the secret-looking
        values of the suite's own STACK* environment variables, and every value the operator hands
        Compose (--env, --env-file): the stack's files choose where an interpolated value is quoted."""
        for value in self.passed_env.values():
            self.redactor.add(value)
        for env_file in self.cli_env_files:
            try:
                values = read_env_file(env_file)
            except StackError:  # the compose model reports an unreadable env file
                continue
            for value in values.values():
                self.redactor.add(value)
        for name, value in os.environ.items():
            if name.startswith("STACK") and is_credential_name(name):
                self.redactor.add(value)
        if not self.root.is_dir():
            return
        for secret in self.secret_values():
            self.redactor.add(secret.value)

    @cached_property
    def repo(self) -> Repo | None:
        """The git repository that holds the stack dir (found upwards, as git does), or None.

        Read with dulwich, not the `git` binary: git run in a hostile checkout executes what the
        repository's own config names (core.fsmonitor on every index refresh, hooks, filters,
        external diff, pager). dulwich only reads files here: HEAD, refs and the index."""
        require_readable_git(self.root)
        try:
            return Repo.discover(str(self.root))
        except NotGitRepository:
            return None
        except Exception as exc:  # a corrupt .git: its own one-line problem
            raise StackError(f"{self.rel(self.root)}: git repository unreadable ({type(exc).__name__}: {exc})") from None

    def git_commit(self) -> str | None:
        """The checked-out commit (12 hex digits), or None outside a git repository or before the first commit."""
        try:
            return self.repo.head().decode()[:12] if self.repo is not None else None
        except (StackError, KeyError, OSError, ValueError):
            return None

    def git_tracked(self, *paths: Path) -> dict[str, int | None] | None:
        """The files among `paths` (a directory stands for every file under it) that git tracks:
        {path relative to the stack dir: size of the staged file, None for a conflict}.
        None when the stack dir is not in a git repository."""
        repo = self.repo
        if repo is None:
            return None
        top = Path(repo.path).resolve()
        wanted = []
        for path in paths:
            try:
                wanted.append(path.resolve().relative_to(top).as_posix().encode())
            except (ValueError, OSError, RuntimeError):  # outside the repository: git cannot track it
                continue
        try:
            index = repo.open_index()
            tracked = {}
            for name in index:
                if any(name == w or name.startswith(w + b"/") or w == b"." for w in wanted):
                    tracked[self.rel(top / os.fsdecode(name))] = getattr(index[name], "size", None)
        except Exception as exc:
            raise StackError(f"{self.rel(self.root)}: git index unreadable ({type(exc).__name__}: {exc})") from None
        return tracked
