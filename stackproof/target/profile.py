"""The stack profile: where each file of the stack is and what each control demands.

Defaults are thresholds and the names of well-known interfaces; they name no file: where a stack
keeps its files is its own word (`stackproof.yml` at its root, which `stackproof init` writes; the
reference stack's is `stack/stackproof.yml`), or found at run time where that needs no guess. A stack
overrides any default in `stackproof.yml`, with the same nesting as DEFAULTS; an operator can
add a profile of their own from outside the stack dir (`--profile`), which wins.

The stack is untrusted, and so is its profile: every value is type-checked (with a model
derived from DEFAULTS, so a key added there is checked too), every path it names must stay
inside the stack dir, and every threshold it makes weaker than the default is reported
(THRESHOLDS says what "weaker" means for each). `--strict-profile` keeps of the stack's own profile
only what says where its files are (`points_at_files`): its thresholds, and its interface keys that
decide what is checked (which config mapping, which variable, which alert, which rule tests), are
ignored, so only the defaults and the operator's profile set the bar.
"""

from __future__ import annotations

import copy
import difflib
import functools
import types
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import ErrorDetails

from stackproof.errors import StackError
from stackproof.io.yamlio import load_yaml

PROFILE_FILE = "stackproof.yml"

DEFAULTS: dict[str, Any] = {
    # which service plays each role the checks need; "" / []: discovered from the compose model
    # (by image, command, entrypoint, ports and mounts, never by name; see stackproof/roles.py)
    "roles": {
        "prometheus": "",
        "alertmanager": "",
        "node_exporter": "",  # the exporter with the textfile collector
        "postgres": "",
        "tls_terminator": "",
        "api_services": [],  # services that mount the API key
        "metrics_service": "",  # API service whose /metrics exports the pool gauges
        "tls_monitor": "",  # a service name, or "cron:<path of a cron file in the repo>"
    },
    # how the compose model is read, as `docker compose --env-file F --profile P config` would
    "compose": {
        "env_files": [],  # relative to the stack dir; default: the compose dir's .env (also --env-file)
        "profiles": [],  # compose profiles to activate, besides COMPOSE_PROFILES
    },
    # where the stack's files are; "": not declared (stack/stackproof.yml names the reference stack's),
    # then found at run time where that can be done without guessing (Stack.path), else not proven
    "paths": {
        "compose": "",  # "": compose's own default names at the stack dir's root, or COMPOSE_FILE of its .env
        "compose_overrides": [],  # extra -f files; docker-compose.override.yml is picked up as Compose does
        "secrets_dir": "",  # "": the directory of the API key's compose secret file
        "pool_config": "",
        "prometheus_config": "",
        "prometheus_rule_tests": "",
        "tls_cert": "",
        "tls_key": "",
        "monitor_script": "",
        "rotate_script": "",
    },
    "api_key": {
        "secret": "",  # the compose secret holding the API key: the stack's own word ("": not declared)
        "min_random_bytes": 32,
        "rotation_runs": 3,
        "file_modes": [0o400, 0o600],  # allowed modes of every secret source file
        "secrets_dir_mode": 0o700,
        "min_entropy_bits": 4.0,  # empirical Shannon entropy per decoded byte
        "rotation_uid": 65534,  # who runs the stack's scripts when the suite runs as root (never 0)
    },
    "secrets": {"mode": 0o400},
    "pool": {
        "config_key": "database.postgres.pool",
        "min_size": 20,
        "min_overflow": 30,
        "min_total": 50,
        # variables of a service's environment: size and overflow override the config file's pool; with no
        # pool config file (paths.pool_config), all four are the pool, set only in the environment
        "size_env": "DB_POOL_SIZE",
        "overflow_env": "DB_POOL_MAX_OVERFLOW",
        "timeout_env": "DB_POOL_TIMEOUT",
        "pre_ping_env": "DB_POOL_PRE_PING",
        "default_max_connections": 100,
        "default_reserved_connections": 3,
        # live: gauges the metrics_service role's /metrics (live.metrics_url) exports for its pool
        "size_metric": "aidb_db_pool_size",
        "overflow_metric": "aidb_db_pool_max_overflow",
        "checked_out_metric": "aidb_db_pool_checked_out",
        # the pool mapping's key for each setting; max_connections: a cap on size + overflow (asyncpg-style, with
        # min_connections the size), whose overflow is the cap less the size; empty: the mapping has no cap key
        "settings": {"size": "size", "max_overflow": "max_overflow", "max_connections": "", "timeout": "timeout",
                     "pre_ping": "pre_ping"},
    },
    "alerts": {
        "min_rules": 10,
        "required": [
            "DatabasePoolExhausted",
            "TLSCertificateExpiringSoon",
            "CircuitBreakerOpen",
            "ServiceHealthCheckFailing",
        ],
        "tls_alert_prefix": "TLS",
    },
    "tls": {
        "min_days_left": 30,
        "warn_days": 30,
        "crit_days": 7,
    },
    "disclosure": {
        "encoding": "cl100k_base",
        "max_tokens": 750,
        "min_savings": 0.60,
        "responses": {},  # level -> recorded response file; {}: none recorded (the static token checks skip)
        "full_docs": "",
        "endpoints": {
            "health": "/health",
            "discovery": "/discovery/info",
            "quickstart": "/discovery/quickstart",
        },
        "full_docs_endpoint": "/discovery/docs",
    },
    "engine": {
        # swarm: node hostname -> DOCKER_HOST of that node's engine (ssh://user@host in real use); a task on
        # a node not listed here (other than the manager's own) is reported as not proven
        "nodes": {},
    },
    "breakers": {
        # API services that must wrap their dependency calls in a breaker; empty: roles.api_services
        "services": [],
        # each service's breaker is read from the config file it reads its database settings from (else paths.pool_config)
        "config_key": "circuit_breaker",  # mapping of that config: one entry per dependency
        "config_entry": "",  # the dependency's entry there; empty: the dependency's name (breakers.dependency)
        # without a config file, the breaker is read from the service's code (its build context, else the dir
        # named here: service -> dir of the stack, for an image another compose file builds)
        "code": {},
        "dependency": "postgres",  # the database (roles.postgres, which the fault injection takes down): the state label's value
        "settings": {"threshold": "failure_threshold", "recovery": "reset_timeout", "half_open": "half_open_max_calls"},
        "min_threshold": 1,
        "max_threshold": 50,  # at most the concurrent clients of the load check, or the breaker never opens under it
        "max_recovery_seconds": 300,
        "max_half_open_calls": 10,
        "alert": "CircuitBreakerOpen",
        "max_alert_for": "1m",
        # gauge each service exports, one series per breaker; empty: the one metric the alert selects
        "state_metric": "",
        "breaker_label": "breaker",  # its label naming the dependency
        "states": {"closed": 0, "open": 1, "half_open": 2},
        # fault injection: per breaker service, a request that needs the dependency, e.g.
        # {aidb: {path: /db/hold, via: nginx}}: "nginx" sends it through the TLS terminator (concurrently,
        # like the pool load check), "container" from inside the service's own container (to its scrape port)
        "requests": {},
        "fault": "pause",  # how the dependency fails: pause (hangs: the case breakers exist for) or stop
        "fault_clients": 50,  # concurrent requests through nginx
        "container_clients": 10,  # concurrent requests from inside a service's container
        "open_body_marker": "circuit breaker open",  # what a refusal's body says
        # p95 of the requests refused while open, above that of requests needing no dependency
        # (sent the same way just before: the client's and the proxy's own cost, which load inflates)
        "max_fail_fast_seconds": 1.0,
        "alert_wait_seconds": 90,  # longest wait for the alert to fire in Prometheus and reach Alertmanager
        "alertmanager_port": 9093,  # roles.alertmanager's container port (published for the suite)
    },
    # How the stack's scripts are called (stackproof/scripts.py); this is the reference stack's interface.
    # Placeholders: monitor {script} {cert} {metrics_file} {warn_days} {crit_days} {workdir};
    # rotate {script} {secrets_dir} {key_file} {key_name} {audit_log} {workdir}.
    "scripts": {
        "monitor": {
            "command": ["{script}", "--warn-days", "{warn_days}", "--crit-days", "{crit_days}",
                        "--metrics-file", "{metrics_file}", "{cert}"],
            "env": {},  # extra environment (values may use placeholders); everything else is cleared
            "stdin": None,  # None: closed; a string: fed to stdin (the answer to a prompt)
            "exit_codes": {"ok": 0, "warning": 1, "critical": 2, "error": 3},  # None: no exit code of its own
            "status_line": "{cert}: status={status}",  # None: no machine-readable line
            "metrics": {
                "expiry": "tls_cert_expiry_timestamp_seconds",
                "days_left": "tls_cert_days_left",
                "status": "tls_cert_status",
                "success": "tls_cert_check_success",
            },
            "labels": {"cert": "path", "cn": "cn", "issuer": "issuer"},
        },
        "rotate": {
            "command": ["{script}", "--secrets-dir", "{secrets_dir}", "--audit-log", "{audit_log}", "--yes",
                        "{key_name}"],
            "env": {},
            "stdin": None,
            "audit_log": "{audit_log}",  # where the audit line goes (placeholders {secrets_dir}, {workdir})
            "backup_dir": "{secrets_dir}",  # searched (recursively) for the backup of the old key
        },
    },
    "live": {
        "nginx_port": 443,  # the TLS terminator's container port
        "api_key_header": "X-API-Key",
        "prometheus_port": 9090,
        "metrics_url": "http://127.0.0.1:8000/metrics",  # inside the metrics_service container
        "load_endpoint": "/db/hold?seconds=0.5",
        "load_clients": 50,
    },
}

# Where a key's default alone does not say its type (fnmatch patterns on dotted keys).
# Mappings named here are replaced as a whole by a profile, not merged key by key.
TYPES: dict[str, tuple[Any, str]] = {
    "disclosure.responses": (dict[str, str], "a mapping of names to file paths"),
    "disclosure.endpoints": (dict[str, str], "a mapping of names to URL paths"),
    "api_key.file_modes": (list[int], "a list of modes written in YAML octal (such as [0400, 0600])"),
    "api_key.secrets_dir_mode": (int, "a mode written in YAML octal (such as 0700)"),
    "secrets.mode": (int, "a mode written in YAML octal (such as 0400)"),
    # the scripts' interfaces (stackproof/scripts.py): null where a script has no such thing
    "scripts.*.stdin": (str | None, "a string or null"),
    "scripts.*.status_line": (str | None, "a string or null"),
    "scripts.*.exit_codes.*": (int | None, "an integer or null"),
    "scripts.*.metrics.*": (str | None, "a metric name or null (not written by the script: not checked)"),
    "scripts.*.labels.*": (str | None, "a label name or null (not written by the script: not checked)"),
    "breakers.requests": (dict[str, dict[str, str]], "a mapping of service names to {path: ..., via: nginx|container}"),
}

# --- thresholds: what makes each one weaker than its default ---------------------


def _lower(value, default) -> bool:
    return value < default


def _higher(value, default) -> bool:
    return value > default


def _wider_mode(value, default) -> bool:
    """A mode (or any mode of a list of allowed modes) grants a permission bit no default mode grants."""
    allowed = 0
    for mode in default if isinstance(default, list) else [default]:
        allowed |= mode
    return any(mode & ~allowed for mode in (value if isinstance(value, list) else [value]))


def _fewer_items(value, default) -> bool:
    return bool(set(default) - set(value))


def _root_uid(value, default) -> bool:
    return value == 0


def _changed(value, default) -> bool:
    return value != default


MODE_KEYS = ("api_key.file_modes", "api_key.secrets_dir_mode", "secrets.mode")

# Every key of DEFAULTS is either a threshold (here, with what makes it weaker) or an
# interface of the stack (INTERFACES: where its files are, what its services, metrics and
# endpoints are called). A key in neither counts as a threshold that any change weakens;
# tests/test_profile.py keeps both tables complete.
THRESHOLDS: dict[str, Callable[[Any, Any], bool]] = {
    "api_key.min_random_bytes": _lower,
    "api_key.rotation_runs": _lower,
    "api_key.file_modes": _wider_mode,
    "api_key.secrets_dir_mode": _wider_mode,
    "api_key.min_entropy_bits": _lower,
    "api_key.rotation_uid": _root_uid,
    "secrets.mode": _wider_mode,
    "pool.min_size": _lower,
    "pool.min_overflow": _lower,
    "pool.min_total": _lower,
    "pool.default_max_connections": _higher,
    "pool.default_reserved_connections": _lower,
    "alerts.min_rules": _lower,
    "alerts.required": _fewer_items,
    "tls.min_days_left": _lower,
    "tls.warn_days": _lower,
    "tls.crit_days": _lower,
    "disclosure.encoding": _changed,
    "disclosure.max_tokens": _higher,
    "disclosure.min_savings": _lower,
    "live.load_clients": _lower,
    "breakers.min_threshold": _lower,
    "breakers.max_threshold": _higher,
    "breakers.max_recovery_seconds": _higher,
    "breakers.max_half_open_calls": _higher,
    "breakers.max_alert_for": _changed,
    "breakers.fault_clients": _lower,
    "breakers.container_clients": _lower,
    "breakers.max_fail_fast_seconds": _higher,
    "breakers.alert_wait_seconds": _higher,
    "breakers.fault": _changed,
}
INTERFACES = (
    "paths.*", "roles.*", "compose.*", "scripts.*", "engine.*",
    "api_key.secret",
    "pool.config_key", "pool.settings.*", "pool.size_env", "pool.overflow_env", "pool.timeout_env", "pool.pre_ping_env", "pool.*_metric",
    "alerts.tls_alert_prefix",
    "disclosure.responses", "disclosure.full_docs", "disclosure.endpoints", "disclosure.full_docs_endpoint",
    "live.*",
    "breakers.services", "breakers.code", "breakers.config_key", "breakers.config_entry", "breakers.dependency", "breakers.settings.*", "breakers.alert",
    "breakers.state_metric", "breakers.breaker_label", "breakers.states.*", "breakers.requests",
    "breakers.open_body_marker", "breakers.alertmanager_port",
)


# What the stack's own profile may still set under --strict-profile: where its files are and how its engine
# is reached. Every other key decides what is checked or how strictly: a pool.config_key naming a decoy
# mapping, a pool.size_env no service sets, a breakers.alert that is not the breaker's, a rule tests dir of
# no tests passed a pool of size 1 or an untested alert under --strict-profile. The rule tests' path is such
# a key though it names files: which tests are run decides what the unit-test check proves.
FILE_POINTERS = ("paths.*", "compose.*", "engine.*", "breakers.code", "disclosure.responses", "disclosure.full_docs")
DECIDING_PATHS = ("paths.prometheus_rule_tests",)


def points_at_files(key: str) -> bool:
    """Whether `key` only says where the stack's files are (kept from the stack's profile under --strict-profile)."""
    return key not in DECIDING_PATHS and any(fnmatchcase(key, pattern) for pattern in FILE_POINTERS)


def is_threshold(key: str) -> bool:
    return key in THRESHOLDS or not any(fnmatchcase(key, pattern) for pattern in INTERFACES)


def weakens(key: str, value: Any, default: Any) -> bool:
    if not is_threshold(key):
        return False
    try:
        return THRESHOLDS.get(key, _changed)(value, default)
    except TypeError:  # a value of another shape than the default's (e.g. null): not comparable
        return True


def show(key: str, value: Any) -> str:
    """A profile value as the report shows it (modes in octal)."""
    if key in MODE_KEYS:
        if isinstance(value, list):
            return "[" + ", ".join(f"{mode:04o}" for mode in value) + "]"
        return f"{value:04o}"
    return repr(value) if isinstance(value, str) else str(value)


# --- the model, derived from DEFAULTS ------------------------------------------------

_SCALARS: dict[type, tuple[type, str]] = {
    bool: (bool, "true or false"),
    int: (int, "an integer"),
    float: (float, "a number"),
    str: (str, "a string"),
}


def _field_type(key: str, default: Any, sections: set[str], expected: dict[str, str]) -> Any:
    """The type a profile value must have, from its default; records what to say when it has not."""
    for pattern, (kind, text) in TYPES.items():
        if fnmatchcase(key, pattern):
            expected[key] = text
            return kind
    if isinstance(default, dict) and default:
        sections.add(key)
        return _section_model(key, default, sections, expected)
    if isinstance(default, dict):
        kind, text = dict[str, str], "a mapping of strings"
    elif isinstance(default, list):
        item = type(default[0]) if default else str
        kind, text = types.GenericAlias(list, _SCALARS[item][0]), f"a list of {_SCALARS[item][1].removeprefix('an ').removeprefix('a ')}s"
    elif default is None:
        kind, text = str | list[str] | None, "a string, a list of strings or null"
    else:
        kind, text = _SCALARS[type(default)]
    expected[key] = text
    return kind


def _section_model(key: str, section: dict, sections: set[str], expected: dict[str, str]) -> type[BaseModel]:
    """A closed section: unknown keys refused, scalars strictly typed ("30" is not an integer)."""
    fields: dict[str, Any] = {}
    for index, (name, default) in enumerate(section.items()):
        dotted = f"{key}.{name}" if key else name
        kind = _field_type(dotted, default, sections, expected)
        fields[f"f{index}"] = (kind, Field(default=None, alias=name))
    return create_model(f"Profile_{key or 'root'}".replace(".", "_"),
                        __config__=ConfigDict(strict=True, extra="forbid"), **fields)


@dataclass(frozen=True)
class _Schema:
    model: type[BaseModel]
    sections: set[str]  # dotted keys merged key by key (every other value is replaced whole)
    expected: dict[str, str]  # dotted key -> what its value must be


@functools.cache
def _schema() -> _Schema:
    """The model of DEFAULTS, built once per process (a profile that fails to load is loaded again by each check)."""
    sections: set[str] = set()
    expected: dict[str, str] = {}
    model = _section_model("", DEFAULTS, sections, expected)
    return _Schema(model, sections, expected)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:40] + '…'}"


def _known(key: str) -> list[str]:
    """The keys a section (dotted) of the profile knows."""
    node = DEFAULTS
    for part in key.split(".") if key else []:
        node = node[part]
    return list(node)


class ProfileError(StackError):
    """A profile with one or more mistakes: `problems` lists every one, one line each, so that a run
    names them all at once; the message is the first (and how many more there are)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)


def _did_you_mean(name: str, known) -> str:
    """'did you mean X? ' for the closest of `known` to a misspelt `name`, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def validate(override: Any, where: str, schema: _Schema) -> dict:
    """The profile's values, type-checked; only the keys it sets. Every problem is one line naming
    the key (an unknown key with the closest known one); all of them are raised at once (ProfileError)."""
    if not isinstance(override, dict):
        raise ProfileError([f"{where}: must be a mapping"])
    try:
        return schema.model.model_validate(override).model_dump(by_alias=True, exclude_unset=True)
    except ValidationError as exc:
        problems = [_problem(error, override, where, schema) for error in exc.errors(include_url=False)]
    raise ProfileError(list(dict.fromkeys(problems)))


def _problem(error: ErrorDetails, override: dict, where: str, schema: _Schema) -> str:
    """One validation error of pydantic as the line a person reads: the dotted key and what is wrong."""
    path: list[str] = []
    value: Any = override
    for part in error["loc"]:
        dotted = ".".join(path)
        if dotted and dotted not in schema.sections:
            break
        if error["type"] == "extra_forbidden" and part == error["loc"][-1]:
            key = ".".join([*path, str(part)])
            known = _known(dotted)
            return (f"{where}: unknown key {key!r} ({_did_you_mean(str(part), known)}"
                    f"known in {dotted or 'the profile'}: {', '.join(known)})")
        path.append(str(part))
        value = value[part] if isinstance(value, dict) else value
    key = ".".join(path)
    if key in schema.sections:
        return f"{where}: {key} must be a mapping, got {_describe(value)}"
    return f"{where}: {key} must be {schema.expected.get(key, 'of another type')}, got {_describe(value)}"


def _merge(base: dict, override: dict, sections: set[str], prefix: str = "") -> dict:
    merged = copy.deepcopy(base)
    for name, value in override.items():
        key = f"{prefix}{name}"
        merged[name] = _merge(base[name], value, sections, key + ".") if key in sections else copy.deepcopy(value)
    return merged


def _leaves(data: dict, sections: set[str], prefix: str = ""):
    for name, value in data.items():
        key = f"{prefix}{name}"
        if key in sections:
            yield from _leaves(value, sections, key + ".")
        else:
            yield key, value


# --- the profile ----------------------------------------------------------------------


@dataclass
class Change:
    """One value that differs from the default, and which profile set it."""

    key: str
    value: Any
    default: Any
    source: str
    weakened: bool
    ignored: bool = False  # set by the stack's own profile and not a file path, under --strict-profile

    def line(self) -> str:
        return f"{self.key} = {show(self.key, self.value)} (default {show(self.key, self.default)}; {self.source})"


class Profile:
    """Paths and thresholds for one stack: DEFAULTS overridden by the stack's stackproof.yml,
    then by the operator's profile."""

    def __init__(self, root: Path, data: dict[str, Any], sources: list[str] | None = None,
                 changes: list[Change] | None = None, set_by: dict[str, str] | None = None, strict: bool = False):
        self.root = root
        self.data = data
        self.sources = sources or []
        self.changes = changes or []
        self.set_by = set_by or {}
        self.strict = strict

    @property
    def source(self) -> str:
        """Where the values come from, as the report's target says."""
        text = " + ".join(self.sources) or "defaults"
        return text + (" (--strict-profile: of the stack's own profile only its file paths kept)" if self.strict else "")

    @property
    def weakened(self) -> list[Change]:
        return [change for change in self.changes if change.weakened and not change.ignored]

    @classmethod
    def load(cls, root: Path, operator: Path | None = None, strict: bool = False) -> "Profile":
        """The stack's profile (if any), then the operator's; under `strict`, every key of the stack's own that does
        not only point at files is dropped (and listed as ignored)."""
        schema = _schema()
        layers, problems = [], []

        def read(path: Path, label: str, where: str, own_layer: bool) -> None:
            try:
                layers.append((label, validate(load_yaml(path, where) or {}, where, schema), own_layer))
            except ProfileError as exc:
                problems.extend(exc.problems)
            except StackError as exc:
                problems.append(str(exc))

        own = root / PROFILE_FILE
        if own.exists() or own.is_symlink():
            read(own, PROFILE_FILE, PROFILE_FILE, True)
        if operator is not None:
            label = f"{operator} (--profile)"
            if operator.resolve().is_relative_to(root.resolve()):
                problems.append(f"{label}: inside the stack dir, so the stack could write it: "
                                "an operator's profile lives outside")
            else:
                read(operator, label, str(operator), False)
        if problems:  # every mistake of both files at once
            raise ProfileError(problems)
        data, set_by, ignored = copy.deepcopy(DEFAULTS), {}, {}
        for label, values, own_layer in layers:
            for key, value in _leaves(values, schema.sections):
                if strict and own_layer and not points_at_files(key):
                    ignored[key] = (value, label)
                    continue
                set_by[key] = label
            kept = _drop(values, set(ignored) if strict and own_layer else set(), schema.sections)
            data = _merge(data, kept, schema.sections)
        defaults = dict(_leaves(DEFAULTS, schema.sections))
        changes = [Change(key, value, defaults[key], set_by[key], weakens(key, value, defaults[key]))
                   for key, value in _leaves(data, schema.sections) if key in set_by and value != defaults[key]]
        changes += [Change(key, value, defaults[key], label, weakens(key, value, defaults[key]), ignored=True)
                    for key, (value, label) in ignored.items() if value != defaults[key]]
        return cls(root, data, [label for label, _, _ in layers], changes, set_by, strict)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.data[section]

    def path(self, key: str) -> Path:
        """Absolute path of one of the stack's files named in `paths`."""
        return self.stack_path(self.data["paths"][key], f"paths.{key}")

    def stack_path(self, relative: str, key: str) -> Path:
        """A path the profile names (at `key`), inside the stack dir: an absolute path, `..` or a
        symlink that leads out is refused, so no outside file is read in the stack's name."""
        path = self.root / relative
        if not inside(path, self.root):
            where = self.set_by.get(key, "profile defaults")
            raise StackError(f"{where}: {key} ({relative}) leads outside the stack dir (or into a symlink loop)")
        return path

    def summary(self) -> dict[str, Any]:
        """What the report says about the profile: where it comes from, what it changes, what it weakens."""
        return {
            "source": self.source,
            "strict": self.strict,
            "changed": [{"key": c.key, "value": show(c.key, c.value), "default": show(c.key, c.default),
                         "source": c.source, "weakened": c.weakened, "ignored": c.ignored,
                         "threshold": is_threshold(c.key)} for c in self.changes],
            "weakened": [change.line() for change in self.weakened],
            "ignored": [change.line() for change in self.changes if change.ignored],
        }


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, its symlinks followed, is inside `root` (a symlink loop is not)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False


def _drop(values: dict, keys: set[str], sections: set[str], prefix: str = "") -> dict:
    """`values` without the dotted leaf `keys`."""
    kept = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if key in sections:
            kept[name] = _drop(value, keys, sections, key + ".")
        elif key not in keys:
            kept[name] = value
    return kept
