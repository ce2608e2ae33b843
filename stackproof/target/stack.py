"""The target: one stack directory, its profile, and how its files are read."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from dulwich.errors import NotGitRepository
from dulwich.repo import Repo

from stackproof.io.local import local_host
from stackproof.target.compose import (COMPOSE_FILE_NAMES, ComposeModel, compose_files, load_compose,
                                       passed_environment, read_env_file)
from stackproof.target.credentials import SecretValue, is_credential_name, stack_secrets
from stackproof.errors import Blocked, InputUnreadable, NotDeclared, StackError
from stackproof.target.profile import Profile, inside
from stackproof.target.service_config import pool_not_found
from stackproof.redact import MAX_WINDOWS, RedactionBudgetExceeded, Redactor
from stackproof.evidence import Location
from stackproof.io.files import read_stack_file, require_readable_git
from stackproof.io.yamlio import MAX_YAML_BYTES, key_path_text, key_position, load_yaml
from stackproof.io.sandbox import Sandbox

MAX_SECRET_BYTES = 64 * 1024
COMPOSE_MODEL = "the compose model"

# What a stack lacks when its profile names no such file and nothing finds it without a guess
# (paths.<key>: what it is, where the suite looked). Never a file of the reference stack.
UNDECLARED_PATHS = {
    "compose": ("no compose file", f"paths.compose, COMPOSE_FILE in the stack dir's .env, {', '.join(COMPOSE_FILE_NAMES)} "
                "at the stack dir's root"),
    "secrets_dir": ("no secrets dir", "paths.secrets_dir, the file of the compose secret api_key.secret names"),
    "pool_config": ("no pool config file", "paths.pool_config (stackproof init: the config file a service reads its "
                    "pool settings from)"),
    "prometheus_config": ("no Prometheus config", "paths.prometheus_config (stackproof init: the file the Prometheus "
                          "service's --config.file bind-mounts)"),
    "prometheus_rule_tests": ("no promtool rule unit tests", "paths.prometheus_rule_tests (stackproof init: files "
                              "with rule_files and tests)"),
    "tls_cert": ("no TLS certificate in the repository, so none is judged statically (one kept only on the host, "
                 "such as Let's Encrypt's, is read live from the TLS terminator)", "paths.tls_cert (stackproof init: a "
                 "PEM certificate with its key, mounted into a service)"),
    "tls_key": ("no TLS private key in the repository", "paths.tls_key (stackproof init: the key of the certificate)"),
    "monitor_script": ("no TLS monitor script", "paths.monitor_script (stackproof init: an executable script that "
                       "reads certificates and writes expiry metrics)"),
    "rotate_script": ("no API key rotation script", "paths.rotate_script (stackproof init: an executable script that "
                      "replaces a key file and keeps a backup)"),
}


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
        self.strict = strict  # --strict-profile: of the stack's own profile only its file paths apply
        self.trust_stack_code = trust_stack_code
        self.cli_env_files = list(env_files or [])  # --env-file, on top of the profile's compose.env_files
        self.passed_env = passed_environment(env_names)  # --env NAME: all Compose sees of the runner's environment
        self.current_check = ""  # set by the plugin before each check: who first hit a broken input
        self._inputs: dict[str, tuple[bool, Any, str]] = {}  # key -> (ok, value or error, first check)
        self._declared_paths: dict[str, Path] = {}  # paths.<key> as the profile names it, checked inside the stack
        self._raw_yaml: dict[Path, Any] = {}  # file -> its YAML as written, for the readers that only read it
        self.target_errors: list[str] = []  # problems of the whole target, reported once at the top

    def needs(self, key: str, load: Callable[[], Any]) -> Any:
        """An input of the checks, loaded once. When loading it failed, the check that hit it first
        fails with the error; any later check that needs it raises Blocked ('blocked by <check>')."""
        if key not in self._inputs:
            try:
                self._inputs[key] = (True, load(), self.current_check)
            except InputUnreadable as exc:
                self._inputs[key] = (False, exc, COMPOSE_MODEL)
                error = f"{COMPOSE_MODEL} cannot be read: {exc}"
                if error not in self.target_errors:
                    self.target_errors.append(error)
            except Blocked:
                raise
            except StackError as exc:
                self._inputs[key] = (False, exc, self.current_check)
        ok, value, first = self._inputs[key]
        if ok:
            return value
        if first == self.current_check or isinstance(value, NotDeclared):
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
        """The stack file `paths.<key>`: as the profile names it, else found without a guess (the compose file
        where Compose looks, the secrets dir the API key's compose secret names). NotDeclared otherwise."""
        if self.profile["paths"][key]:  # checked inside the stack dir once per run (a check per service asks it)
            if key not in self._declared_paths:
                self._declared_paths[key] = self.profile.path(key)
            return self._declared_paths[key]
        found = {"compose": self._default_compose_file, "secrets_dir": self._api_key_secret_dir}.get(key, lambda: None)()
        if found is not None:
            return found
        lacks, looked = UNDECLARED_PATHS[key]
        if key == "pool_config":  # said of the services whose pool it is: where they could set one and do not
            raise NotDeclared(pool_not_found(self, looked))
        raise NotDeclared(f"{lacks}: looked for {looked}")

    def _compose_file_variable(self) -> list[str]:
        """COMPOSE_FILE of the stack dir's .env, split as Compose splits it: the files Compose reads there."""
        env = self.root / ".env"
        values = read_env_file(env) if env.is_file() and self.inside(env) else {}
        listed = values.get("COMPOSE_FILE", "")
        return [name for name in listed.split(values.get("COMPOSE_PATH_SEPARATOR") or os.pathsep) if name]

    def _default_compose_file(self) -> Path | None:
        """The compose file Compose itself would read in the stack dir: the first of COMPOSE_FILE in its .env,
        else the first of its default names at the root."""
        listed = self._compose_file_variable()
        if listed:
            return self.profile.stack_path(listed[0], "COMPOSE_FILE in .env")
        return next((self.root / name for name in COMPOSE_FILE_NAMES if (self.root / name).is_file()), None)

    def compose_overrides(self) -> list[Path]:
        """The -f files after the main one: the profile's, else the rest of COMPOSE_FILE in the .env."""
        declared = self.profile["paths"]["compose_overrides"]
        if declared or self.profile["paths"]["compose"]:
            return [self.profile.stack_path(p, "paths.compose_overrides") for p in declared]
        return [self.profile.stack_path(p, "COMPOSE_FILE in .env") for p in self._compose_file_variable()[1:]]

    def api_key_secret(self) -> str:
        """The compose secret that holds the API key (api_key.secret): the stack's own word, never guessed
        (the most-mounted secret of a stack may be a Redis password)."""
        name = self.profile["api_key"]["secret"]
        if not name:
            raise NotDeclared("no API key secret declared: looked for api_key.secret (stackproof init: the file "
                              "secret the API services mount and the database does not)")
        return name

    def _api_key_secret_dir(self) -> Path | None:
        """The directory of the file behind the compose secret that api_key.secret names."""
        name = self.profile["api_key"]["secret"]
        source = self.compose.secrets.get(name) if name else None
        return Path(source).parent if source is not None and self.inside(Path(source).parent) else None

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

    def locate(self, path: Path | str, *keys: str | int) -> Location:
        """Where a finding is: `path` relative to the stack dir and, for a YAML key path, the line of its deepest
        key the file has (a file that cannot be read or parsed: no line; the finding is reported all the same)."""
        return Location(self.rel(path), self._key_position(Path(path), keys)[1], key_path_text(keys) if keys else None)

    def _key_position(self, path: Path, keys: tuple[str | int, ...]) -> tuple[int, int | None]:
        if not keys or not self.inside(path):
            return 0, None
        try:
            return key_position(read_stack_file(path, self.rel(path), MAX_YAML_BYTES).decode("utf-8"), keys)
        except (StackError, OSError, UnicodeDecodeError):
            return 0, None

    def locate_compose(self, *keys: str | int) -> Location:
        """A key path of the compose model, in the compose file that has most of it (the first of equals: an
        override that only adds to a service loses to the file that declares the key)."""
        files = self.compose.files
        best = max(files, key=lambda file: self._key_position(file, keys)[0])  # max keeps the first of equals
        return self.locate(best, *keys)

    def locate_secret_reference(self, service: str, source: str) -> Location:
        """Where a service's reference to a secret is written: the last compose file that lists it, as Compose
        merges a secret's entry by its source, an override's replacing the base file's (its `mode` with it)."""
        found: Location | None = None
        for file in self.compose.files:
            try:
                doc = load_yaml(file, self.rel(file)) if self.inside(file) else None
            except StackError:
                continue
            services = doc.get("services") if isinstance(doc, dict) else None
            svc = services.get(service) if isinstance(services, dict) else None
            entries = svc.get("secrets") if isinstance(svc, dict) else None
            for index, entry in enumerate(entries if isinstance(entries, list) else []):
                if source in (entry, entry.get("source") if isinstance(entry, dict) else None):
                    found = self.locate(file, "services", service, "secrets", index)
        return found or self.locate_compose("services", service, "secrets")

    def raw_yaml(self, path: Path) -> Any:
        """A stack file's YAML as written, parsed once per run for the readers that only look at it (the secrets,
        open credentials, where a variable is set): a large compose file costs 0.15 s a parse. Its callers never
        change what it returns. A file that does not parse raises each time, and is not kept."""
        if path not in self._raw_yaml:
            self._raw_yaml[path] = load_yaml(path, self.rel(path))
        return self._raw_yaml[path]

    def environment_source(self, service: str, variable: str) -> Path:
        """The file that sets `variable` for `service`, as Compose merges it: the last compose file whose
        `environment:` sets it (it wins over every env_file), else the last `env_file` of the service that
        sets it; the first compose file when none of them can be read."""
        from_environment, from_env_file = None, None
        for file, svc in self._service_entries(service):
            environment = svc.get("environment")
            if (isinstance(environment, dict) and variable in environment) or (isinstance(environment, list) and any(
                    isinstance(item, str) and item.split("=", 1)[0] == variable for item in environment)):
                from_environment = file
        for env_file in self.env_files_of(service):
            if variable in read_env_file(env_file):
                from_env_file = env_file
        return from_environment or from_env_file or self.compose.files[0]

    def env_files_of(self, service: str) -> list[Path]:
        """The `env_file` entries of a service that exist inside the stack dir, in the order Compose reads them."""
        found = []
        for file, svc in self._service_entries(service):
            entries = svc.get("env_file")
            for entry in [entries] if isinstance(entries, (str, dict)) else entries if isinstance(entries, list) else []:
                name = entry.get("path") if isinstance(entry, dict) else entry
                env_file = file.parent / name if isinstance(name, str) else None
                if env_file is not None and self.inside(env_file) and env_file.is_file():
                    found.append(env_file)
        return found

    def _service_entries(self, service: str):
        """(compose file, the service's mapping in it) for each compose file that can be read and lists it."""
        for file in self.compose.files:
            try:
                doc = self.raw_yaml(file) if self.inside(file) else None
            except StackError:
                continue
            services = doc.get("services") if isinstance(doc, dict) else None
            svc = services.get(service) if isinstance(services, dict) else None
            if isinstance(svc, dict):
                yield file, svc

    @property
    def compose(self) -> ComposeModel:
        """The compose model with the active profiles (COMPOSE_PROFILES and the profile's compose.profiles).
        Every control needs it, so when it cannot be read that is the run's one root cause (a target error,
        named first) and every check that needs it is blocked by the compose model, not by another check."""
        return self.needs("compose model", self._load_active_compose)

    def _load_active_compose(self) -> ComposeModel:
        try:
            return self._load_compose(self.profile["compose"]["profiles"])
        except StackError as exc:
            raise InputUnreadable(str(exc)) from None

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
        overrides = self.compose_overrides()
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
        try:
            self.redactor.add(data)
        except RedactionBudgetExceeded as exc:
            raise RedactionBudgetExceeded(f"{self.rel(path)}: {exc}") from None
        return data

    def secret_values(self) -> list[SecretValue]:
        """Every secret value written in the stack: secret files, credentials of the .env files and of
        the compose files' environments, URL passwords (see credentials.py). Read once per run."""
        return self.needs("secret values", self._secret_values)

    def _secret_values(self) -> list[SecretValue]:
        files: list[Path] = []
        try:
            compose = self.path("compose")
            files = compose_files(compose, self.compose_overrides())
        except StackError:  # no or an unusable compose file: its checks say so; the .env files are still read
            compose = None
        try:
            secrets_dir = self.path("secrets_dir") if self.profile["paths"]["secrets_dir"] else None
        except StackError:  # an unusable profile fails the checks that read it; compose's secret files are still read
            secrets_dir = None
        try:
            extra = self.compose_env_files()
        except StackError:
            extra = list(self.cli_env_files)
        env_files = [self.root / ".env"] + ([compose.parent / ".env"] if compose is not None else [])
        return stack_secrets(self.root, secrets_dir, files, [*env_files, *extra], self.raw_yaml)

    def register_secrets(self) -> None:
        """Before any check runs: teach the redactor every secret of the stack, the secret-looking
        values of the suite's own STACK* environment variables, and every value the operator hands
        Compose (--env, --env-file): the stack's files choose where an interpolated value is quoted.
        Secrets past the redaction budget are named in one RedactionBudgetExceeded once the others are learned."""
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
        unlearned = []
        for secret in self.secret_values():
            try:
                self.redactor.add(secret.value)
            except RedactionBudgetExceeded:
                unlearned.append(secret.origin)
        if unlearned:
            raise RedactionBudgetExceeded(
                f"{len(unlearned)} too large to scrub from the outputs (the run's redaction budget: {MAX_WINDOWS:,} "
                f"windows, about {MAX_WINDOWS // 8:,} characters): {', '.join(unlearned[:3])}"
                f"{f' and {len(unlearned) - 3} more' if len(unlearned) > 3 else ''}")

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
