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

import base64
import binascii
import hashlib
import math
import os
import re
import shutil
import tempfile
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex

import pytest

from stackproof import proc, redact
from stackproof.errors import StackError

pytestmark = pytest.mark.control("api_key_permissions")

LEAK_WINDOW = 8  # this many consecutive characters of a key in a log or output count as key material
STDERR_LIMIT = 200  # characters of the rotate script's last error line shown in a failure


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
    name = stack.profile["api_key"]["secret"]
    compose_file = stack.rel(stack.compose.files[0])
    if name not in stack.compose.secrets:
        raise StackError(f"{compose_file}: no top-level secret {name!r} (profile api_key.secret)")
    path = stack.compose.secrets[name]
    if path is None:
        raise StackError(f"{compose_file}: secret {name!r} has no file (external or environment secret)")
    return path


@dataclass(frozen=True)
class KeyStrength:
    """What the evidence may say about a key: never its value."""

    fingerprint: str
    encoding: str
    random_bytes: int
    entropy: float

    def describe(self) -> str:
        return (f"{self.fingerprint}, {self.encoding}, {self.random_bytes} bytes decoded, "
                f"entropy {self.entropy:.2f} bits/byte")


def decode_key(data: bytes) -> tuple[str, bytes]:
    """The key's random bytes: hex, else base64/base64url if it decodes cleanly, else the raw bytes."""
    text = data.strip()
    if text and len(text) % 2 == 0 and re.fullmatch(rb"[0-9a-fA-F]+", text):
        return "hex", bytes.fromhex(text.decode())
    padded = text + b"=" * (-len(text) % 4)
    for encoding, altchars in (("base64", None), ("base64url", b"-_")):
        try:
            decoded = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if decoded:
            return encoding, decoded
    return "raw", data


def shannon_entropy(data: bytes) -> float:
    """Empirical Shannon entropy of the byte distribution, in bits per byte."""
    if not data:
        return 0.0
    return sum(n / len(data) * math.log2(len(data) / n) for n in Counter(data).values())


def key_strength(data: bytes, redactor: redact.Redactor) -> KeyStrength:
    encoding, decoded = decode_key(data)
    return KeyStrength(redactor.fingerprint(data), encoding, len(decoded), shannon_entropy(decoded))


def strength_problem(strength: KeyStrength, cfg: dict) -> str | None:
    if strength.random_bytes < cfg["min_random_bytes"]:
        return f"{strength.random_bytes} random bytes ({strength.encoding}), need >= {cfg['min_random_bytes']}"
    if strength.entropy < cfg["min_entropy_bits"]:
        return (f"low-entropy key: {strength.entropy:.2f} bits/byte over {strength.random_bytes} bytes, "
                f"need >= {cfg['min_entropy_bits']}")
    return None


def leaks(text: bytes, secret: bytes) -> bool:
    """Whether `text` holds key material: any LEAK_WINDOW consecutive bytes of the (stripped) secret.
    A key shorter than that cannot be told from ordinary text (and fails the randomness check)."""
    secret = secret.strip()
    return any(secret[i:i + LEAK_WINDOW] in text for i in range(len(secret) - LEAK_WINDOW + 1))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def modes_text(modes) -> str:
    return "/".join(f"{m:04o}" for m in modes)


# --- the rotate script, run on a temp copy of the secrets ---------------------------


class KeyWatcher(threading.Thread):
    """Reads the key file in a loop while the rotate script runs and keeps the sha256 of
    every content it saw (never the content): an atomic rename shows only old and new."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path = path
        self.seen: set[str] = set()
        self.reads = 0
        self.failed = 0  # missing or unreadable
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                self.seen.add(sha256(self.path.read_bytes()))
            except OSError:
                self.failed += 1
            self.reads += 1
            self._done.wait(0.001)

    def __enter__(self) -> "KeyWatcher":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self.join()


@dataclass(frozen=True)
class Sandbox:
    root: Path
    script: Path
    key: Path
    audit_log: Path


def relative_inside(stack, path: Path, fallback: str) -> Path:
    """`path` relative to the stack dir, or `fallback` when it lies outside (never an absolute path)."""
    try:
        return path.relative_to(stack.root)
    except ValueError:
        return Path(fallback)


@contextmanager
def rotation_sandbox(stack, key: Path, script: Path, uid: int | None):
    """A temp copy of the key's dir and the script, laid out as in the stack and owned by `uid`
    (None: by us); removed afterwards. The real stack dir is never written."""
    root = Path(tempfile.mkdtemp(prefix="stackproof-rotate-"))
    try:
        secrets_copy = root / relative_inside(stack, key.parent, "secrets")
        copy = root / relative_inside(stack, script, "scripts/rotate")
        try:
            shutil.copytree(key.parent, secrets_copy, symlinks=True)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(script, copy)
        except (OSError, shutil.Error):
            raise StackError(f"{stack.rel(key.parent)}: cannot copy it and {stack.rel(script)} to a temp dir "
                             "to test the rotation") from None
        if uid is not None:
            for path in [root, *root.rglob("*")]:
                os.chown(path, uid, uid, follow_symlinks=False)
        yield Sandbox(root, copy, secrets_copy / key.name, root / "logs/key-rotation.log")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def files_by_hash(root: Path) -> dict[Path, str]:
    """sha256 of every readable regular file under `root`."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                found[path] = sha256(path.read_bytes())
            except OSError:
                continue
    return found


def read_or_empty(path: Path) -> bytes:
    return path.read_bytes() if path.is_file() else b""


@dataclass
class Rotation:
    """What one run of the rotate script did, as facts about hashes, modes and counts (no key)."""

    error: str = ""  # did not run to exit 0
    old: str = ""  # fingerprints
    new: str = ""
    changed: bool = False
    new_strength: KeyStrength | None = None
    backups: dict[str, int] | None = None  # backup file of the old key -> mode
    key_mode: int = 0
    audit_lines: int = 0
    audit_leak: bool = False
    output_leak: bool = False
    torn_reads: int = 0  # reads that were neither the old nor the new key
    failed_reads: int = 0
    reads: int = 0

    def summary(self) -> str:
        if self.error:
            return self.error
        backups = ", ".join(f"{name} {mode:04o}" for name, mode in self.backups.items()) or "none"
        return (f"exit 0, {self.old} → {self.new}, backup {backups}, key {self.key_mode:04o}, "
                f"audit +{self.audit_lines} line(s), {self.reads} reads of the key during the run")


def rotate_once(stack, box: Sandbox, uid: int | None, where: str) -> Rotation:
    """Run the script once on the sandbox while a watcher reads the key; collect what it did."""
    old = stack.read_secret(box.key)
    before = files_by_hash(box.root)
    audit_before = read_or_empty(box.audit_log)
    cmd = [str(box.script), "--secrets-dir", str(box.key.parent), "--audit-log", str(box.audit_log),
           "--yes", box.key.name]
    if uid is not None:
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(box.root), "LC_ALL": "C"}
    with KeyWatcher(box.key) as watcher:
        try:
            done = proc.run(cmd, timeout=stack.timeout, where=where, env=env, cwd=box.root)
        except StackError as exc:
            return Rotation(error=str(exc).removeprefix(f"{where}: "))
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).decode(errors="replace").replace(f"{box.root}/", "(copy)/").splitlines()
        last = redact.clean(lines[-1], limit=STDERR_LIMIT) if lines else "no output"
        return Rotation(error=f"exited {done.returncode}: {last}")
    if not box.key.is_file():
        return Rotation(error="the key file is gone after the run")
    new = stack.read_secret(box.key)
    old_hash, new_hash = sha256(old), sha256(new)
    audit = read_or_empty(box.audit_log)
    output = done.stdout + done.stderr
    return Rotation(
        old=stack.redactor.fingerprint(old),
        new=stack.redactor.fingerprint(new),
        changed=new_hash != old_hash,
        new_strength=key_strength(new, stack.redactor),
        backups={str(path.relative_to(box.root)): path.stat().st_mode & 0o7777
                 for path, digest in files_by_hash(box.root).items()
                 if digest == old_hash and path not in before and path != box.key},
        key_mode=box.key.stat().st_mode & 0o7777,
        audit_lines=audit.count(b"\n") - audit_before.count(b"\n") if audit.startswith(audit_before) else 0,
        audit_leak=leaks(audit, old) or leaks(audit, new),
        output_leak=leaks(output, old) or leaks(output, new),
        torn_reads=len(watcher.seen - {old_hash, new_hash}),
        failed_reads=watcher.failed,
        reads=watcher.reads,
    )


def rotation_problems(run: Rotation, cfg: dict) -> list[str]:
    """What is wrong with one rotation run."""
    if run.error:
        return [run.error]
    weak = strength_problem(run.new_strength, cfg)
    checks = [
        (not run.changed, "the new key equals the old one"),
        (weak is not None, f"new key: {weak}"),
        (not run.backups, "no backup of the old key"),
        (run.backups and 0o400 not in run.backups.values(),
         "backup of the old key is not 0400: " + ", ".join(f"{n} {m:04o}" for n, m in (run.backups or {}).items())),
        (run.key_mode not in cfg["file_modes"],
         f"key left with mode {run.key_mode:04o}, expected {modes_text(cfg['file_modes'])}"),
        (run.audit_lines < 1, "no line appended to the audit log"),
        (run.audit_leak, f"the audit log holds key material ({LEAK_WINDOW}+ characters of a key)"),
        (run.output_leak, "the script printed key material"),
        (run.torn_reads or run.failed_reads,
         f"the key file was seen empty or partial (not replaced atomically): {run.torn_reads} other content(s), "
         f"{run.failed_reads} failed read(s), in {run.reads} reads"),
    ]
    return [message for failed, message in checks if failed]


# --- checks ----------------------------------------------------------------------------


@pytest.mark.static
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
    assert not wrong, f"secret source file: {'; '.join(wrong)}"


@pytest.mark.static
def test_secret_files_owner_only(stack, evidence):
    """Secret files are 0400 or 0600.

    With a group/other bit, another local user or process can read the key."""
    allowed = stack.profile["api_key"]["file_modes"]
    modes = {path: file_mode(stack.host, path) for _, path in secret_sources(stack)}
    shown = {path: "missing" if mode is None else f"{mode:04o}" for path, mode in modes.items()}
    evidence.record(
        test="mode of every secret source file",
        expected=f"{modes_text(allowed)} (no group/other bits)",
        result="; ".join(f"{stack.rel(path)} {text}" for path, text in shown.items()) or "no file secrets",
    )
    wrong = [f"{stack.rel(path)} {shown[path]}" for path, mode in modes.items() if mode not in allowed]
    assert not wrong, f"secret file mode is not {modes_text(allowed)}: {', '.join(wrong)}"


@pytest.mark.static
def test_secrets_dir_mode(stack, evidence):
    """The secrets dir is 0700.

    A listable dir tells everyone which secrets exist and when they change."""
    secrets_dir = stack.path("secrets_dir")
    wanted = stack.profile["api_key"]["secrets_dir_mode"]
    directory = stack.host.file(str(secrets_dir))
    mode = directory.mode if directory.is_directory else None
    evidence.record(test=f"mode of {stack.rel(secrets_dir)}/", expected=f"{wanted:04o}",
                    result="not a directory" if mode is None else f"{mode:04o}")
    assert mode is not None, f"{stack.rel(secrets_dir)}: secrets dir not found (profile paths.secrets_dir)"
    assert mode == wanted, f"{stack.rel(secrets_dir)}: secrets dir mode {mode:04o}, expected {wanted:04o}"


@pytest.mark.static
def test_secrets_not_tracked_by_git(stack, evidence):
    """No secret file is tracked by git.

    A committed secret is in every clone and in the history forever."""
    secrets_dir = stack.path("secrets_dir")
    checkout = stack.git_tracked(secrets_dir) is not None
    paths = [secrets_dir, *(path for _, path in secret_sources(stack) if is_inside(str(path), str(stack.root)))]
    tracked = sorted(set((stack.git("ls-files", "--", *map(str, paths)) or "").splitlines())) if checkout else []
    evidence.record(
        test=f"git ls-files {stack.rel(secrets_dir)}/ and every secret source",
        expected="nothing tracked",
        result=", ".join(tracked) or ("nothing tracked" if checkout else "not a git checkout"),
    )
    assert not tracked, f"secret file tracked by git: {', '.join(tracked)} (git rm --cached it and rotate the key)"


@pytest.mark.static
def test_api_key_randomness(stack, evidence):
    """The API key holds at least 32 random bytes.

    Measured on the decoded key (hex/base64), with its byte entropy, so a long but repetitive key fails."""
    cfg = stack.profile["api_key"]
    path = api_key_path(stack)
    strength = key_strength(stack.read_secret(path), stack.redactor)
    problem = strength_problem(strength, cfg)
    evidence.record(
        test=f"decoded length and byte entropy of {stack.rel(path)}",
        expected=f">= {cfg['min_random_bytes']} random bytes, >= {cfg['min_entropy_bits']} bits/byte",
        result=strength.describe(),
    )
    assert problem is None, f"{stack.rel(path)}: {problem}"


@pytest.mark.static
def test_secret_values_strength(stack, evidence):
    """Every secret value of the stack is at least 12 characters long and not a dictionary word.

    Secret files, credentials in the .env files and compose environments, passwords in URLs: a short or
    common value is guessable, and the suite could not scrub it from its output without scrubbing ordinary
    words, so such a value is a failure here instead."""
    found = stack.secret_values()
    weak = [f"{secret.origin} ({problem})" for secret in found if (problem := redact.weakness(secret.value))]
    evidence.record(
        test="secret files, credential values of .env and compose environments, URL passwords",
        expected=f">= {redact.MIN_SECRET_LEN} characters, not a dictionary word or common password",
        result=f"{len(found)} secret value(s), {len(weak)} weak",
    )
    assert not weak, f"weak secret value: {'; '.join(weak)}"


@pytest.mark.static
def test_rotate_script(stack, evidence):
    """The rotate script replaces the key atomically and safely, run after run.

    Run several times as the unprivileged owner of a temp copy of the secrets (root would ignore file
    modes): each run must succeed, keep a 0400 backup of the old key, leave the key owner-only and
    write no key material to its audit log or its output."""
    cfg = stack.profile["api_key"]
    script = stack.path("rotate_script")
    where = stack.rel(script)
    uid = cfg["rotation_uid"] if os.geteuid() == 0 else None
    runs = cfg["rotation_runs"]
    evidence.record(
        test=f"{where} --secrets-dir <copy> --audit-log <copy> --yes, {runs} runs as uid {uid or os.geteuid()}",
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
    with rotation_sandbox(stack, key, script, uid) as box:
        for number in range(1, runs + 1):
            run = rotate_once(stack, box, uid, f"{where}: run {number} of {runs}")
            summaries.append(f"run {number}: {run.summary()}")
            problems = rotation_problems(run, cfg)
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
    name, host_key = stack.profile["api_key"]["secret"], str(api_key_path(stack))
    service = stack.compose.services.get(live.service_of(container))
    declared = {ref.target for ref in (service.secrets if service else []) if ref.source == name}
    mounted = {m["Destination"] for m in container.attrs.get("Mounts", []) if m.get("Source") == host_key}
    engine = {mount.target for mount in live.secret_mounts(container) if mount.source == name}
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
def test_live_endpoint_requires_the_key(stack, live, evidence):
    """Through nginx, the protected endpoint refuses a missing or wrong key and serves the right one."""
    path = stack.profile["disclosure"]["full_docs_endpoint"]
    cfg = stack.profile["live"]
    key = live.api_key()
    evidence.note(freshness_note(stack, key))
    statuses = {}
    for label, value in key_variants(key):
        headers = None if value is None else {cfg["api_key_header"]: value}
        statuses[label] = live.https(path, headers).status
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
def test_live_key_file_in_containers(stack, live, evidence):
    """Inside every container that mounts the key, it is 0400, owned by and readable by the service's process.

    Non-swarm Compose bind-mounts the host file, so this is where the host file's mode and owner
    really show; a key the process cannot read breaks the service, one others can read leaks it."""
    wanted = stack.profile["secrets"]["mode"]
    name = stack.profile["api_key"]["secret"]
    seen, wrong = [], []
    for container in live.containers:
        targets = key_targets(stack, live, container)
        if not targets:
            continue
        facts = live.probe(container)
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
    assert seen or live.unreached, f"{live.engine.name} project {live.project}: no running container mounts {name}"
    assert not wrong, f"API key in containers: {'; '.join(wrong)}"
    live.require_every_container(f"{name} in the containers")


# --- live rotation (opt-in: --allow-changes) ---------------------------------------------


@dataclass
class SavedKey:
    """What the live rotation changes on the host, to put back afterwards."""

    path: Path
    content: bytes
    mode: int
    owner: tuple[int, int]
    backups: set[Path]

    @classmethod
    def take(cls, path: Path, backups_dir: Path) -> "SavedKey":
        st = path.stat()
        return cls(path, path.read_bytes(), st.st_mode & 0o777, (st.st_uid, st.st_gid), set(backups_dir.glob("*")))

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


@pytest.mark.live
@pytest.mark.changes_stack
def test_live_key_rotation(stack, live, evidence, tmp_path):
    """Rotating the key on the running stack revokes the old key and enables the new one.

    scripts/rotate-api-key.sh --restart: the backup keeps the key's mode, the audit line holds no
    key. Opt-in (--allow-changes); the old key is put back and the services restarted afterwards."""
    name = stack.profile["api_key"]["secret"]
    key_path, script = api_key_path(stack), stack.path("rotate_script")
    backups_dir, audit = key_path.parent / "backups", tmp_path / "key-rotation.log"
    header = stack.profile["live"]["api_key_header"]
    path = stack.profile["disclosure"]["full_docs_endpoint"]
    services = sorted({live.service_of(c) for c in live.containers if key_targets(stack, live, c)})
    old = live.api_key()
    saved = SavedKey.take(key_path, backups_dir)
    restart_timeout = max(180.0, 6 * stack.timeout)
    try:
        done = proc.run([str(script), "--yes", "--restart", "--audit-log", str(audit), name], cwd=stack.root,
                        timeout=restart_timeout, where=stack.rel(script))
        new = live.api_key()
        statuses = {label: live.https(path, {header: value}).status for label, value in (("old key", old), ("new key", new))}
        new_backups = sorted(set(backups_dir.glob("*")) - saved.backups)
        backup_modes = [stack.host.file(str(b)).mode for b in new_backups]
        backup_matches = [stack.redactor.fingerprint(b.read_bytes()) == stack.redactor.fingerprint(saved.content) for b in new_backups]
        audit_text = audit.read_text(errors="replace") if audit.exists() else ""
        leaked = any(leaks(text, key.encode()) for text in (audit_text.encode(), done.stdout, done.stderr)
                     for key in (old, new))
    finally:
        saved.restore(backups_dir)
        for service in services:
            live.restart(service, timeout=restart_timeout)
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
