"""Control 1: API key permissions.

Every secret file Compose mounts must be a regular file inside the stack dir that
only its owner can read, in an owner-only secrets dir, out of git; the API key must
be really random; and the stack's rotate script must replace the key atomically,
keep a read-only backup of the old one and never write key material to its audit
log or its output. No check prints or records a key, or compares one in an assert:
keys are read through `stack.read_secret` (registered for redaction) and named by
`stack.redactor.fingerprint` (keyed per run).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex

import pytest

from stackproof.compare import equal, octal, one_of
from stackproof import redact
from stackproof.io import proc
from stackproof.errors import StackError, not_proven
from stackproof.target.credentials import is_documentation_file
from stackproof.resources.keys import (MIN_COMPRESSION, STRUCTURE_FRACTION, key_strength, leaks, modes_text,
                                      strength_problem)
from stackproof.resources.scripts import Rotator, script_uid

pytestmark = pytest.mark.control("api_key_permissions")


# --- what is checked (plain functions) ----------------------------------------------

def secret_sources(stack) -> list[tuple[str, Path]]:
    """Top-level compose secrets backed by a host file (external/environment ones have no file)."""
    return [(name, path) for name, path in stack.compose.secrets.items() if path is not None]


def is_inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def source_problem(host, path: Path, real_root: str) -> str | None:
    """Why a secret source is not a regular file inside the stack dir (realpaths compared), or None."""
    file = host.file(str(path))
    if not file.exists and not file.is_symlink:
        return "missing"
    real = file.linked_to
    if not is_inside(real, real_root):
        kind = "symlink to" if file.is_symlink else "resolves to"
        return f"{kind} {real}, outside the stack dir"
    if not file.is_file:
        return "not a regular file"
    return None


def file_mode(host, path: Path) -> int | None:
    """Mode of the file a path resolves to; None when it does not exist."""
    file = host.file(str(path))
    if not file.exists:
        return None
    return host.file(file.linked_to).mode


def api_key_path(stack) -> Path:
    """Host file of the API key secret (profile api_key.secret)."""
    name = stack.api_key_secret()
    compose_file = stack.rel(stack.compose.files[0])
    if name not in stack.compose.secrets:
        raise StackError(f"{compose_file}: no top-level secret {name!r} (profile api_key.secret)")
    path = stack.compose.secrets[name]
    if path is None:
        raise StackError(f"{compose_file}: secret {name!r} has no file (external or environment secret)")
    return path



# --- checks ----------------------------------------------------------------------------


@pytest.mark.static
@pytest.mark.remediation("critical",
                         "Keep every `secrets:` file of the compose file a regular file inside the stack dir (no "
                         "symlink out, no directory); generate a missing one with the stack's set-up script.")
def test_secret_sources_are_regular_files_in_stack(stack, evidence):
    """Every secret file Compose mounts is a regular file inside the stack dir.

    A symlink out of it makes the secret whatever that outside file is."""
    sources = secret_sources(stack)
    real_root = stack.host.file(str(stack.root)).linked_to
    found = {name: source_problem(stack.host, path, real_root) for name, path in sources}
    evidence.record(
        test=f"secrets.*.file in {stack.rel(stack.compose.files[0])} (realpaths)",
        expected="each exists, is a regular file, inside the stack dir",
        result="; ".join(f"{name} → {stack.rel(path)}: {found[name] or 'regular file inside'}" for name, path in sources)
        or "no file secrets",
    )
    assert sources, f"{stack.rel(stack.compose.files[0])}: no file-backed secret"
    wrong = [f"{stack.rel(path)} {found[name]}" for name, path in sources if found[name]]
    evidence.locate(*(stack.locate_compose("secrets", name, "file") for name, _ in sources if found[name]))
    assert not wrong, f"secret source file: {'; '.join(wrong)}"


@pytest.mark.static
@pytest.mark.remediation("critical",
                         "`chmod 0400` (or 0600) each secret file, owned by the user that deploys the stack.")
def test_secret_files_owner_only(stack, evidence):
    """Secret files are 0400 or 0600.

    With a group/other bit, another local user or process can read the key."""
    allowed = one_of(stack.profile["api_key"]["file_modes"], show=octal)
    paths = [path for _, path in secret_sources(stack)]
    modes = {path: file_mode(stack.host, path) for path in paths}
    evidence.locate(*(stack.locate(path) for path, mode in modes.items() if not allowed(mode)))
    evidence.expect_each("mode of every secret source file", f"secret file mode is not {allowed.expected}",
                         {stack.rel(path): mode for path, mode in modes.items()}, allowed, nothing="no file secrets")


@pytest.mark.static
@pytest.mark.remediation("critical",
                         "`chmod 0700` the secrets dir.")
def test_secrets_dir_mode(stack, evidence):
    """The secrets dir is 0700.

    A listable dir tells everyone which secrets exist and when they change."""
    secrets_dir = stack.path("secrets_dir")
    wanted = stack.profile["api_key"]["secrets_dir_mode"]
    directory = stack.host.file(str(secrets_dir))
    mode = directory.mode if directory.is_directory else None
    evidence.record(test=f"mode of {stack.rel(secrets_dir)}/", result="not a directory")
    evidence.locate(stack.locate(secrets_dir))
    assert mode is not None, f"{stack.rel(secrets_dir)}: secrets dir not found (profile paths.secrets_dir)"
    evidence.expect(f"mode of {stack.rel(secrets_dir)}/", f"{stack.rel(secrets_dir)}: secrets dir mode", mode,
                    equal(wanted, show=octal))


@pytest.mark.static
@pytest.mark.remediation("critical",
                         "`git rm --cached` the secret file, list it in `.gitignore`, and rotate the secret: anyone "
                         "with a clone has the old value.")
def test_secrets_not_tracked_by_git(stack, evidence):
    """No secret file is tracked by git.

    A committed secret is in every clone and in the history forever. An empty placeholder
    (`.gitkeep`) that keeps the secrets dir in the repository holds nothing, and neither does its README
    or an `*.example` template: those may be tracked; any other tracked file with content may not."""
    secrets_dir = stack.path("secrets_dir")
    paths = [secrets_dir, *(path for _, path in secret_sources(stack) if is_inside(str(path), str(stack.root)))]
    index = stack.git_tracked(*paths)
    sources = {stack.rel(path) for _, path in secret_sources(stack)}
    tracked = sorted(path for path, size in (index or {}).items()
                     if size != 0 and (path in sources or not is_documentation_file(Path(path).name)))
    placeholders = sorted(path for path, size in (index or {}).items() if size == 0)
    evidence.record(
        test=f"git index entries under {stack.rel(secrets_dir)}/ and for every secret source",
        expected="no tracked file with content (empty placeholders such as .gitkeep are fine)",
        result=("not a git checkout" if index is None else ", ".join(tracked) or "nothing tracked")
        + (f"; empty placeholders: {', '.join(placeholders)}" if placeholders else ""),
    )
    evidence.locate(*(stack.locate(stack.root / path) for path in tracked))
    assert not tracked, f"secret file tracked by git: {', '.join(tracked)} (git rm --cached it and rotate the key)"


@pytest.mark.static
@pytest.mark.remediation("critical",
                         "Generate the key from a cryptographic random source, e.g. `openssl rand -hex 32`, and "
                         "rotate it.")
def test_api_key_randomness(stack, evidence):
    """The API key holds at least 32 random bytes.

    Measured on the decoded key (hex/base64), with its byte entropy, so a long but repetitive key fails; and by
    what simple generators explain (a counter, a repeated block, characters stepping, hex of small integers, a
    clock reading near when the key was written, a keyboard walk; also in the decoded bytes, where base64 hides a
    counter) and what a compressor saves, so a long key with a visible
    structure fails, naming the structure (never the key)."""
    cfg = stack.profile["api_key"]
    path = api_key_path(stack)
    file = stack.host.file(str(path))
    strength = key_strength(stack.read_secret(path), stack.redactor, file.mtime.timestamp() if file.exists else None)
    problem = strength_problem(strength, cfg)
    evidence.record(
        test=f"decoded length, byte entropy, structure and compressibility of {stack.rel(path)}",
        expected=f">= {cfg['min_random_bytes']} random bytes, >= {cfg['min_entropy_bits']} bits/byte, no generator "
        f"explaining >= {STRUCTURE_FRACTION:.0%} of it, compresses to >= {MIN_COMPRESSION:.0%} of a random key's",
        result=strength.describe(),
    )
    evidence.locate(stack.locate(path))
    assert problem is None, f"{stack.rel(path)}: {problem}"


@pytest.mark.static
@pytest.mark.remediation("critical",
                         "Replace the weak secret with at least 12 random characters (e.g. `openssl rand -hex 16`) "
                         "and rotate it where it is used.")
def test_secret_values_strength(stack, evidence):
    """Every secret value of the stack is at least 12 characters long and not a guessable word or pattern.

    Secret files, credentials in the .env files and compose environments, passwords in URLs: a short or
    common value is guessable, and the suite could not scrub it from its output without scrubbing ordinary
    words, so such a value is a failure here instead."""
    found = stack.secret_values()
    weak = per_services([(secret.origin, problem) for secret in found if (problem := redact.weakness(secret.value))])
    evidence.record(
        test="secret files, credential values of .env and compose environments, URL passwords",
        expected=f">= {redact.MIN_SECRET_LEN} characters, not a dictionary word or common password, not two or "
                 f"three common words joined, not a pattern guessed in under 10^{redact.MIN_GUESSES_LOG10} tries",
        result=f"{len(found)} secret value(s), {len(weak)} weak",
    )
    assert not weak, f"weak secret value: {'; '.join(weak)}"


SERVICE_ORIGIN = re.compile(r"^(?P<file>.+?): service (?P<service>[^:]+): (?P<setting>.+)$")


def per_services(found: list[tuple[str, str]]) -> list[str]:
    """(where a weak value is written, why it is weak) as findings, one per file and setting: the same setting
    of several services of a compose file (an anchor, a shared default) is named once, with its services."""
    grouped: dict[tuple[str, str, str], list[str]] = {}  # (file, setting, problem) -> services
    for origin, problem in found:
        match = SERVICE_ORIGIN.match(origin)
        key = (match["file"], match["setting"], problem) if match else (origin, "", problem)
        grouped.setdefault(key, []).extend([match["service"]] if match else [])
    findings = []
    for (file, setting, problem), services in grouped.items():
        if len(services) < 2:
            origin = f"{file}: service {services[0]}: {setting}" if services else file
            findings.append(f"{origin} ({problem})")
            continue
        name, _, extra = setting.partition(" (")
        findings.append(f"{file}: {name} of services {', '.join(services)}{' (' + extra if extra else ''} ({problem})")
    return findings


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Make the rotate script write the new key to a temporary file and rename it into place "
                         "(0400), keep a 0400 backup of the old key, append an audit line without the key, and print "
                         "no key.")
def test_rotate_script(stack, evidence):
    """The rotate script replaces the key atomically and safely, run after run.

    Run several times, called as the profile declares (scripts.rotate), in a sandbox holding a copy of the
    key only, as its unprivileged owner (root would ignore file modes): each run must succeed, keep a 0400
    backup of the old key (under scripts.rotate.backup_dir), leave the key owner-only and write an audit
    line (scripts.rotate.audit_log) but no key material to it or to its output."""
    cfg = stack.profile["api_key"]
    script = stack.path("rotate_script")
    where = stack.rel(script)
    uid = script_uid(stack)
    runs = cfg["rotation_runs"]
    evidence.record(
        test=f"{where} called as scripts.rotate.command on a copy of the key, {runs} runs as uid {uid or os.geteuid()}",
        expected=("each run: exit 0; new key differs and is random; backup of the old key 0400; key "
                  f"{modes_text(cfg['file_modes'])}; audit line without key material; no key in the output; "
                  "key never read empty or partial"),
    )
    script_file = stack.host.file(str(script))
    assert script_file.is_file, f"{where}: rotate script not found (profile paths.rotate_script)"
    assert script_file.mode & 0o100, f"{where}: rotate script is not executable (mode {script_file.mode:04o})"
    key = api_key_path(stack)
    assert stack.host.file(str(key)).is_file, f"{stack.rel(key)}: not a regular file, nothing to rotate"
    summaries, failure = [], ""
    with Rotator(stack, key) as rotator:
        for number in range(1, runs + 1):
            run = rotator.rotate(f"{where}: run {number} of {runs}")
            summaries.append(f"run {number}: {run.summary()}")
            problems = run.problems(cfg)
            if problems:
                failure = f"run {number} of {runs}: {'; '.join(problems)}"
                break
    evidence.record(result="; ".join(summaries))
    assert not failure, f"{where}: {failure}"


# --- live checks ---------------------------------------------------------------------

DENIED = (401, 403)
RIGHT_KEY = "the key"


def key_variants(key: str) -> list[tuple[str, str | None]]:
    """(label, header value) of the requests to make: only the last one carries the right key.
    The altered key differs in its last character, to catch prefix or length-only comparisons."""
    altered = key[:-1] + ("0" if key[-1:] != "0" else "1")
    return [("no key", None), ("empty key", ""), ("wrong key", token_hex(32)),
            ("key with its last character changed", altered), (RIGHT_KEY, key)]


def key_targets(stack, live, container) -> list[str]:
    """Where a container has the API key: the targets compose declares for its service, and the
    secret mounts the engine reports for it (the host key file, or swarm's secret of that name)."""
    name, host_key = stack.api_key_secret(), str(api_key_path(stack))
    service = stack.compose.services.get(live.containers.service_of(container))
    declared = {ref.target for ref in (service.secrets if service else []) if ref.source == name}
    mounted = {m["Destination"] for m in container.attrs.get("Mounts", []) if m.get("Source") == host_key}
    engine = {mount.target for mount in live.containers.secret_mounts(container) if mount.source == name}
    return sorted(declared | mounted | engine)


def freshness_note(stack, served: str) -> str:
    """Whether the services use the host file's key: after a rotation they keep the old one until restarted."""
    path = api_key_path(stack)
    try:
        on_disk = stack.read_secret(path).strip()
    except StackError as exc:
        return f"key in the services {stack.redactor.fingerprint(served)}; {exc}"
    same = stack.redactor.fingerprint(on_disk) == stack.redactor.fingerprint(served)
    return (f"key in the services {stack.redactor.fingerprint(served)}, {stack.rel(path)} {stack.redactor.fingerprint(on_disk)}"
            + ("" if same else ": they differ, restart the services after a rotation"))


@pytest.mark.live
@pytest.mark.remediation("critical",
                         "Make the TLS terminator (or the API service) refuse requests without the right API key (401/403) "
                         "and serve them with it; check the auth configuration of the protected location.")
def test_live_endpoint_requires_the_key(stack, live, evidence):
    """Through the TLS terminator, the protected endpoint refuses a missing or wrong key and serves the right one."""
    path = stack.profile["disclosure"]["full_docs_endpoint"]
    cfg = stack.profile["live"]
    key = live.http.api_key()
    evidence.note(freshness_note(stack, key))
    statuses = {}
    for label, value in key_variants(key):
        headers = None if value is None else {cfg["api_key_header"]: value}
        statuses[label] = live.http.https(path, headers).status
    evidence.record(
        test=f"GET {path} through {stack.roles.name('tls_terminator')} with {', '.join(statuses)} ({cfg['api_key_header']})",
        expected=f"{'/'.join(map(str, DENIED))} without the right key, 200 with it",
        result="; ".join(f"{label} → HTTP {status}" for label, status in statuses.items()),
    )
    wrong = [f"{label}: HTTP {status}" for label, status in statuses.items()
             if (status != 200 if label == RIGHT_KEY else status not in DENIED)]
    assert not wrong, (f"service {stack.roles.name('tls_terminator')} GET {path}: {'; '.join(wrong)} "
                       f"(expected {'/'.join(map(str, DENIED))} without the right key, 200 with it)")


@pytest.mark.live
@pytest.mark.remediation("critical",
                         "Declare the secret with `mode: 0400` and the service user's `uid`/`gid` (swarm), or make "
                         "the host file 0400 and owned by that uid (non-swarm Compose mounts the host file as it "
                         "is).")
def test_live_key_file_in_containers(stack, live, evidence):
    """Inside every container that mounts the key, it is 0400, owned by and readable by the service's process.

    Non-swarm Compose bind-mounts the host file, so this is where the host file's mode and owner
    really show; a key the process cannot read breaks the service, one others can read leaks it."""
    wanted = stack.profile["secrets"]["mode"]
    name = stack.api_key_secret()
    seen, wrong = [], []
    for container in live.containers:
        targets = key_targets(stack, live, container)
        if not targets:
            continue
        facts = live.containers.probe(container)
        if facts.process_ids is None:
            raise StackError(f"container {container.name}: cannot read the owner of PID 1")
        uid, gid = facts.process_ids
        for target in targets:
            file = facts.file(target)
            if not file.exists:
                seen.append(f"{container.name}:{target} missing")
                wrong.append(f"{container.name}:{target} missing")
                continue
            mode, owner = file.mode, file.uid
            readable = facts.readable_by_process(target)
            seen.append(f"{container.name}:{target} {mode:04o} uid {owner}, process uid {uid}, "
                        f"{'readable' if readable else 'not readable'} by it"
                        + (f", content {stack.redactor.fingerprint_of_sha256(file.sha256)}" if file.sha256 else ""))
            problems = [text for failed, text in (
                (mode != wanted, f"mode {mode:04o}, expected {wanted:04o}"),
                (owner != uid, f"owned by uid {owner}, the service's process runs as uid {uid}"),
                (not readable, f"not readable by the service's process (uid {uid})"),
            ) if failed]
            if problems:
                wrong.append(f"{container.name}:{target} {', '.join(problems)}")
    evidence.record(
        test=f"stat and access of {name} in every container that mounts it",
        expected=f"mode {wanted:04o}, owner = the service process's uid, readable by that process",
        result="; ".join(seen) or "no container mounts it",
    )
    assert seen or live.containers.unreached, f"{live.engine.name} project {live.project}: no running container mounts {name}"
    assert not wrong, f"API key in containers: {'; '.join(wrong)}"
    live.containers.require_every(f"{name} in the containers")


# --- live rotation (opt-in: --allow-changes) ---------------------------------------------


@dataclass
class SavedKey:
    """What the live rotation changes on the host, to put back afterwards."""

    path: Path
    content: bytes
    mode: int
    owner: tuple[int, int]
    backups: set[Path]
    backups_dir_existed: bool

    @classmethod
    def take(cls, path: Path, backups_dir: Path) -> "SavedKey":
        st = path.stat()
        return cls(path, path.read_bytes(), st.st_mode & 0o777, (st.st_uid, st.st_gid), set(backups_dir.glob("*")),
                   backups_dir.is_dir())

    def restore(self, backups_dir: Path) -> None:
        """Put the old key back atomically, with its mode and owner, and drop the rotation's backups."""
        tmp = self.path.with_name(f".{self.path.name}.restore")
        tmp.write_bytes(self.content)
        tmp.chmod(self.mode)
        if os.geteuid() == 0:
            os.chown(tmp, *self.owner)
        tmp.replace(self.path)
        for backup in set(backups_dir.glob("*")) - self.backups:
            backup.unlink()
        if not self.backups_dir_existed and backups_dir.is_dir() and not any(backups_dir.iterdir()):
            backups_dir.rmdir()  # the run leaves the stack dir as it found it (plugin's read-only check)


@pytest.mark.live
@pytest.mark.changes_stack
@pytest.mark.remediation("high",
                         "Make the rotate script's `--restart` recreate the services that mount the key, so that the "
                         "new key is in effect and the old one refused.")
def test_live_key_rotation(stack, live, evidence, tmp_path):
    """Rotating the key on the running stack revokes the old key and enables the new one.

    scripts/rotate-api-key.sh --restart: the backup keeps the key's mode, the audit line holds no
    key. Opt-in (--allow-changes); the old key is put back and the services restarted afterwards.
    The script must restart the services, so it runs on the host with the engine's rights, where no
    sandbox holds it: it runs only when the operator also vouches for the stack's code
    (--trust-stack-code); else the check is skipped saying so, and the control is not proven."""
    name = stack.api_key_secret()
    key_path, script = api_key_path(stack), stack.path("rotate_script")
    if not stack.trust_stack_code:
        not_proven(f"not run: the live rotation runs {stack.rel(script)} on the host with the engine's rights "
                    "(it restarts the services), outside any sandbox; add --trust-stack-code for a stack you trust")
    backups_dir, audit = key_path.parent / "backups", tmp_path / "key-rotation.log"
    header = stack.profile["live"]["api_key_header"]
    path = stack.profile["disclosure"]["full_docs_endpoint"]
    services = sorted({live.containers.service_of(c) for c in live.containers if key_targets(stack, live, c)})
    old = live.http.api_key()
    saved = SavedKey.take(key_path, backups_dir)
    restart_timeout = max(180.0, 6 * stack.timeout)
    try:
        done = proc.run([str(script), "--yes", "--restart", "--audit-log", str(audit), name], cwd=stack.root,
                        timeout=restart_timeout, where=stack.rel(script))
        new = live.http.api_key()
        statuses = {label: live.http.https(path, {header: value}).status for label, value in (("old key", old), ("new key", new))}
        new_backups = sorted(set(backups_dir.glob("*")) - saved.backups)
        backup_modes = [stack.host.file(str(b)).mode for b in new_backups]
        backup_matches = [stack.redactor.fingerprint(b.read_bytes()) == stack.redactor.fingerprint(saved.content) for b in new_backups]
        audit_text = audit.read_text(errors="replace") if audit.exists() else ""
        leaked = any(leaks(text, key.encode()) for text in (audit_text.encode(), done.stdout, done.stderr)
                     for key in (old, new))
    finally:
        saved.restore(backups_dir)
        for service in services:
            live.containers.restart(service, timeout=restart_timeout)
    evidence.record(
        test=f"{stack.rel(script)} --yes --restart {name}, then GET {path} with the old and the new key",
        expected="exit 0; old key 401/403, new key 200; a backup of the old key with its mode; audit line without key",
        result=(f"exit {done.returncode}; {'; '.join(f'{k} → HTTP {v}' for k, v in statuses.items())}; "
                f"backups {[f'{m:04o}' for m in backup_modes]}; audit lines {len(audit_text.splitlines())}; "
                f"restored {stack.redactor.fingerprint(saved.content)} and restarted {', '.join(services)}"),
    )
    where = stack.rel(script)
    assert done.returncode == 0, f"{where}: exit {done.returncode} against the live stack"
    assert statuses["old key"] in DENIED, f"{where}: the old key still works after rotation (HTTP {statuses['old key']})"
    assert statuses["new key"] == 200, f"{where}: the new key does not work (HTTP {statuses['new key']})"
    assert len(new_backups) == 1 and all(backup_matches), f"{where}: expected one backup of the old key, found {len(new_backups)}"
    assert backup_modes == [saved.mode], f"{where}: backup mode {backup_modes[0]:04o}, the key's was {saved.mode:04o}"
    assert audit_text.strip(), f"{where}: no audit line written"
    assert not leaked, f"{where}: key material in its audit line or output"
