"""Each defect of the API key permissions control fails that control, and only it,
and no run ever shows a key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import random
import tempfile
import time
from pathlib import Path

import pytest
from defects import Defect, cases, chmod_file, per_stack
from defects import write_key as write_layout_key
from harness import assert_only_control_fails, merge_into_profile

from stackproof.resources.keys import key_strength, leaks, strength_problem
from stackproof.redact import Redactor

KEY = "ai-stack/compose/secrets/stack_api_key"
PASSWORD = "ai-stack/compose/secrets/postgres_password"
SECRETS = "ai-stack/compose/secrets"
SCRIPT = "scripts/rotate-api-key.sh"
CONTROL = "api_key_permissions"


# --- injectors: each takes (stack dir, scratch dir) and returns extra pytest args ------


def chmod(rel: str, mode: int):
    def inject(stack: Path, scratch: Path):
        os.chmod(stack / rel, mode)
    return inject


def write_key(content: bytes):
    def inject(stack: Path, scratch: Path):
        (stack / KEY).unlink()
        (stack / KEY).write_bytes(content)
        os.chmod(stack / KEY, 0o400)
    return inject


def remove(rel: str):
    def inject(stack: Path, scratch: Path):
        (stack / rel).unlink()
    return inject


def key_is_directory(stack: Path, scratch: Path):
    (stack / KEY).unlink()
    (stack / KEY).mkdir(mode=0o700)


def symlink_key_outside(stack: Path, scratch: Path):
    outside = scratch / "outside"
    outside.mkdir()
    shutil.move(stack / KEY, outside / "stack_api_key")
    (stack / KEY).symlink_to(outside / "stack_api_key")


def tracked_by_git(stack: Path, scratch: Path):
    for cmd in (["git", "init", "-q"], ["git", "add", "-f", KEY]):
        subprocess.run(cmd, cwd=stack, check=True, timeout=30, capture_output=True)


def profile_names_unknown_secret(stack: Path, scratch: Path):
    merge_into_profile(stack, "api_key:\n  secret: no_such_secret\n")


def edit_script(*replacements: tuple[str, str], args: tuple[str, ...] = ()):
    """Replace pieces of the reference rotate script (which must still contain each exactly once)."""
    def inject(stack: Path, scratch: Path):
        script = stack / SCRIPT
        text = script.read_text()
        for old, new in replacements:
            assert text.count(old) == 1, f"the reference {SCRIPT} changed: update this defect ({old!r})"
            text = text.replace(old, new)
        script.write_text(text)
        return args
    return inject


def garbage_script(stack: Path, scratch: Path):
    (stack / SCRIPT).write_bytes(b"\x7fELF\x00\x01garbage\xff" * 20)


REPLACE_KEY = 'mv -f -- "$tmpk" "$key" || die "could not replace $key"'
BACKUP = ('cat -- "$key" >"$tmpb" && chmod 0400 "$tmpb" && mv -f -- "$tmpb" "$backup" \\\n'
          '  || { rm -f -- "$tmpb"; die "backup failed"; }')
AUDIT_ARGS = '"$old_fp" "$new_fp" "$backup" >>"$audit_log"'
HANG = edit_script(("umask 077\n", "umask 077\nsleep 300\n"), args=("--stack-timeout", "5"))

# (id, injector, fragments the failure reason must name)
DEFECTS = [
    ("key-0640", chmod(KEY, 0o640), [f"{KEY} 0640"]),
    ("password-0444", chmod(PASSWORD, 0o444), [f"{PASSWORD} 0444"]),
    ("secret-missing", remove(PASSWORD), [f"{PASSWORD} missing"]),
    ("secret-symlink-outside", symlink_key_outside, [f"{KEY} symlink to", "outside the stack dir"]),
    ("key-zeros", write_key(b"0" * 64), [f"{KEY}: low-entropy key"]),
    ("key-repeated-base64", write_key(b"QUFB" * 16), [f"{KEY}: low-entropy key"]),
    ("key-empty", write_key(b""), [f"{KEY}: 0 random bytes"]),
    ("key-is-directory", key_is_directory, [f"{KEY} not a regular file"]),
    ("secret-tracked-by-git", tracked_by_git, [f"secret file tracked by git: {KEY}"]),
    ("profile-unknown-secret", profile_names_unknown_secret, ["no top-level secret 'no_such_secret'"]),
    ("rotate-not-atomic",
     edit_script((REPLACE_KEY, 'chmod u+w -- "$key"; : >"$key"; sleep 0.2; cat -- "$tmpk" >"$key"; '
                               'chmod "$new_mode" "$key"; rm -f -- "$tmpk"')),
     [SCRIPT, "run 1 of 3", "empty or partial"]),
    ("rotate-backup-0600", edit_script(('chmod 0400 "$tmpb"', 'chmod 0600 "$tmpb"')),
     [SCRIPT, "backup of the old key is not 0400"]),
    ("rotate-key-0644", edit_script(('chmod "$new_mode" "$tmpk"', 'chmod 0644 "$tmpk"')),
     [SCRIPT, "key left with mode 0644"]),
    ("rotate-logs-key", edit_script((AUDIT_ARGS, '"$old_fp" "$new_fp" "$backup key=$(cat "$key")" >>"$audit_log"')),
     [SCRIPT, "audit log holds key material"]),
    ("rotate-prints-key", edit_script(("trap - EXIT\n", 'trap - EXIT\necho "new key: $(cat "$key")"\n')),
     [SCRIPT, "printed key material"]),
    ("rotate-same-key", edit_script(("od -An -vtx1 -N32 /dev/urandom |", 'cat -- "$key" |'),
                                    ('cmp -s -- "$tmpk" "$key" && die "could not generate a different key"\n', "")),
     [SCRIPT, "the new key equals the old one"]),
    ("rotate-not-executable", chmod(SCRIPT, 0o644), [f"{SCRIPT}: rotate script is not executable (mode 0644)"]),
    ("rotate-hangs", HANG, [f"{SCRIPT}: run 1 of 3: did not finish within 5s"]),
    ("rotate-missing", remove(SCRIPT), [f"{SCRIPT}: rotate script not found"]),
    ("rotate-garbage", garbage_script, [SCRIPT, "run 1 of 3"]),
]


def outputs(run) -> str:
    """Everything a run showed: terminal output and every report file."""
    files = [path.read_text(errors="replace") for path in run.report_dir.glob("*") if path.is_file()]
    return "\n".join([run.stdout, run.stderr, *files])


def assert_no_key_shown(run, keys: list[bytes]) -> None:
    """No known key, and nothing shaped like a generated key (64 hex), in any output of the control."""
    text = outputs(run)
    for key in keys:
        shown = key.strip().decode(errors="replace")
        assert len(shown) < 8 or shown not in text, f"a key ({len(shown)} chars) appears in the run's output"
    control = next(c for c in run.report["controls"] if c["id"] == CONTROL)
    assert not re.search(r"[0-9a-f]{64}", json.dumps(control)), "a 64-hex value appears in the control's report rows"


@pytest.mark.parametrize("inject, fragments", [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_defect_fails_api_key_permissions(stack_copy, tmp_path, run_static, inject, fragments):
    original = (stack_copy / KEY).read_bytes()
    args = inject(stack_copy, tmp_path) or ()
    injected = (stack_copy / KEY).read_bytes() if (stack_copy / KEY).is_file() else b""
    run = run_static(stack_copy, *args)
    assert_only_control_fails(run, CONTROL, *fragments)
    assert_no_key_shown(run, [original, injected])


def tree_state(root: Path) -> dict[Path, tuple]:
    """Content and mode of every file under `root`, and every directory's mode."""
    return {path: (path.read_bytes() if path.is_file() else None, path.lstat().st_mode, path.lstat().st_mtime_ns)
            for path in root.rglob("*")}


@pytest.fixture
def private_tmpdir(monkeypatch):
    """A TMPDIR of our own (reachable by the unprivileged rotation user) to see what a run leaves in it."""
    path = Path(tempfile.mkdtemp(prefix="stackproof-selftest-"))
    path.chmod(0o711)
    monkeypatch.setenv("TMPDIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("inject", [lambda stack, scratch: (), HANG], ids=["passing", "hanging"])
def test_rotation_leaves_stack_and_tmp_untouched(stack_copy, tmp_path, run_static, private_tmpdir, inject):
    """The rotation runs on a temp copy: the stack's key, secrets dir and logs are unchanged and
    the temp copy is gone afterwards, also when the script hangs."""
    before = tree_state(stack_copy / "ai-stack/compose")
    args = inject(stack_copy, tmp_path) or ()
    run = run_static(stack_copy, "-k", "test_rotate_script", *args)
    assert run.report is not None, run.stdout[-3000:]
    assert tree_state(stack_copy / "ai-stack/compose") == before
    assert list(private_tmpdir.iterdir()) == []


# --- the key-strength and leak rules, on their own ------------------------------------

RANDOM = secrets.token_bytes(48)
STRENGTH_CASES = [
    ("hex-32", RANDOM[:32].hex().encode(), True),
    ("base64-32", base64.b64encode(RANDOM[:32]), True),
    ("base64url-unpadded-32", base64.urlsafe_b64encode(RANDOM[:32]).rstrip(b"="), True),
    ("raw-48", RANDOM, True),
    ("hex-16", RANDOM[:16].hex().encode() + b"\n", False),
    ("base64-24", base64.b64encode(RANDOM[:24]), False),
    ("a-times-64", b"a" * 64, False),
    ("00-times-32", b"00" * 32, False),
    ("password-like", b"correct horse battery staple!!", False),
    ("empty", b"", False),
]


@pytest.mark.parametrize("key, ok", [c[1:] for c in STRENGTH_CASES], ids=[c[0] for c in STRENGTH_CASES])
def test_key_strength_rule(key, ok):
    cfg = {"min_random_bytes": 32, "min_entropy_bits": 4.0}
    assert (strength_problem(key_strength(key, Redactor()), cfg) is None) == ok


def test_leak_rule_needs_eight_characters_of_a_key():
    key = RANDOM.hex().encode()
    assert leaks(b"note=" + key[10:18] + b"\n", key)
    assert not leaks(b"note=" + key[10:17] + b"\n", key)
    assert not leaks(b"old_sha256=" + hashlib.sha256(key).hexdigest()[:12].encode(), key)


# Defects of both test stacks (tests/defects.py layouts)
BOTH = [
    Defect("key-0644", chmod_file("api_key", 0o644), ("{api_key} 0644",)),
    Defect("secrets-dir-0755", chmod_file("secrets_dir", 0o755), ("{secrets_dir}: secrets dir mode 0755, expected 0700",)),
    Defect("key-16-bytes", write_layout_key(secrets.token_hex(16).encode()), ("{api_key}: 16 random bytes (hex), need >= 32",)),
    Defect("rotate-no-backup", per_stack(
        reference=("rotate_script", BACKUP, 'rm -f -- "$tmpb"'),
        northwind=("rotate_script", 'cp -p -- "$token" "$dir/.archive/$name.$stamp"\nchmod 0400 "$dir/.archive/$name.$stamp"\n',
                   ": >/dev/null\n")),
        ("{rotate_script}", "no backup of the old key")),
]


@pytest.mark.parametrize("layout_copy, defect", cases(BOTH), indirect=["layout_copy"])
def test_defect_fails_api_key_permissions_in_each_stack(layout_copy, run_static, defect):
    stack, layout = layout_copy
    original = (stack / layout.api_key).read_bytes()
    defect.inject(stack, layout)
    injected = (stack / layout.api_key).read_bytes()
    run = run_static(stack, *defect.args)
    assert_only_control_fails(run, CONTROL, *map(layout.fill, defect.fragments))
    assert_no_key_shown(run, [original, injected])


# --- key quality by measure: long keys with a structure a simple generator explains ----------------------

_DRAW = random.Random(15)  # fixed: each form's random part is the same run after run


def random_hex(length: int) -> bytes:
    return _DRAW.randbytes(length // 2).hex().encode()


def structured(prefix: bytes, random_length: int) -> bytes:
    """`prefix`, then random hex: long and varied enough for the length and entropy rules."""
    return prefix + random_hex(random_length)


STRUCTURED = [
    ("counting-hex-words", structured(b"", 48) + b"".join(f"{i:04x}".encode() for i in range(0x1a00, 0x1a04)),
     "counting sequence (step 1) over 16 of 64"),
    ("counting-decimal-step-2", structured(b"", 40) + b"".join(str(i).encode() for i in range(700, 716, 2)),
     "decimal counting sequence (step 2) over 24 of 64"),
    ("alphabet-run", structured(b"abcdefghijklmnopqrst", 44), "characters stepping by 1 over 20 of 64"),
    ("repeated-block", (lambda block: block + block)(random_hex(16)) + random_hex(32),
     "a block of 16 character(s) repeated over 32 of 64"),
    ("hex-of-small-integers", structured(b"", 56) + b"000000a3000000170000004f", "hex of small integers"),
    ("nanosecond-clock", structured(str(time.time_ns()).encode(), 45), "timestamps (Unix time in nanoseconds) over 19"),
    ("iso-date-and-time", time.strftime("%Y-%m-%dT%H:%M:%S.000001", time.gmtime()).encode()
     + base64.b64encode(_DRAW.randbytes(48)),
     "timestamps (an ISO date)"),
    # typed along the keyboard: a diagonal walk, then random hex (the whole reads as base64)
    ("keyboard-walk", structured(b"1qaz2wsx3edc4rfv5tgb6yhn7ujm", 36), "a keyboard walk over 28 of 64 characters"),
    # structure the encoding hides: base64 of the bytes 0, 1, 2 ..., and hex of bytes stepping by 7
    ("base64-of-counting-bytes", base64.b64encode(bytes(range(20)) + _DRAW.randbytes(28)),
     "bytes stepping by 1 in the base64-decoded key over 20 of 48 bytes"),
    ("hex-of-bytes-stepping-by-7", bytes(7 * i for i in range(16)).hex().encode() + random_hex(32),
     "bytes stepping by 7 in the hex-decoded key over 16 of 32 bytes"),
]


@pytest.mark.parametrize("key, found", [c[1:] for c in STRUCTURED], ids=[c[0] for c in STRUCTURED])
def test_structured_key_fails_strength_rule(key, found):
    """Long enough, varied enough: only the structure gives it away, and the rule names it."""
    cfg = {"min_random_bytes": 32, "min_entropy_bits": 4.0}
    strength = key_strength(key, Redactor())
    assert strength.random_bytes >= 32 and strength.entropy >= 4.0, strength.describe()
    problem = strength_problem(strength, cfg)
    assert problem is not None and found in problem, problem
    assert key.decode() not in problem


def test_random_keys_have_no_structure():
    """Keys as the stack generates them (32 random bytes as hex) and as base64: never predictable."""
    cfg = {"min_random_bytes": 32, "min_entropy_bits": 4.0}
    for _ in range(300):
        for key in (secrets.token_hex(32).encode(), base64.b64encode(secrets.token_bytes(32)),
                    secrets.token_urlsafe(32).encode(), secrets.token_urlsafe(48).encode()):
            assert strength_problem(key_strength(key, Redactor(), time.time()), cfg) is None


def test_key_measure_is_bounded():
    """A hostile stack's 64 KB key file is measured on its first ANALYSED_LENGTH characters, in bounded time."""
    started = time.monotonic()
    strength = key_strength(random_hex(64 * 1024), Redactor())
    assert time.monotonic() - started < 5
    assert strength.structure is None and strength.random_bytes == 32 * 1024


STRUCTURED_IN_STACK = [
    Defect("key-counting-words", write_layout_key(STRUCTURED[0][1]), ("{api_key}: predictable key: ", "counting sequence")),
    Defect("key-with-clock", write_layout_key(STRUCTURED[5][1]), ("{api_key}: predictable key: timestamps",)),
    Defect("key-base64-of-counting-bytes", write_layout_key(STRUCTURED[8][1]),
           ("{api_key}: predictable key: bytes stepping by 1 in the base64-decoded key",)),
]


@pytest.mark.parametrize("layout_copy, defect", cases(STRUCTURED_IN_STACK), indirect=["layout_copy"])
def test_structured_key_fails_api_key_permissions(layout_copy, run_static, defect):
    stack, layout = layout_copy
    defect.inject(stack, layout)
    injected = (stack / layout.api_key).read_bytes()
    run = run_static(stack)
    assert_only_control_fails(run, CONTROL, *map(layout.fill, defect.fragments))
    assert_no_key_shown(run, [injected])
