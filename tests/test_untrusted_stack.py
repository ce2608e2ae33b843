"""The stack is untrusted, round 2 (issue 17): per class of leak, escape, crash and bypass, several
forms a pull request can use, each run on a copy of the reference stack with a stale GO report set
planted first. Every run must show: no secret or outside content in any output (terminal, the three
reports, JUnit), nothing written outside the report dir, a peak memory under 512 MB, a complete fresh
report set, and the right verdict."""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import time
from pathlib import Path

import pytest
from harness import assert_no_secret_in, assert_only_control_fails, merge_into_profile, operator_interface, stack_secrets

from stackproof.errors import StackError
from stackproof.io.yamlio import load_yaml
from stackproof.target.compose import _load_real_on_copies, compose_binary, refuse_outside_inputs
from stackproof.target.stack import Stack
from stackproof.watchdog import RunWatchdog

COMPOSE = "ai-stack/compose/docker-compose.yml"
REPORTS = ("validation-report.html", "validation-report.md", "validation-report.json")
MEMORY_CAP_KB = 512 * 1024
CI_SECRET = "ci-" + "5e0f1c9a7b3d2e4f6a8b0c1d3e5f7a9b"  # stands for a CI job's token; never in an output


def snapshot(*dirs: Path) -> dict[str, tuple]:
    """Every entry under `dirs` (symlinks not followed): its type, size, mode and mtime."""
    found = {}
    for top in dirs:
        for directory, subdirs, files in os.walk(top):
            for name in [*subdirs, *files]:
                st = os.lstat(os.path.join(directory, name))
                found[os.path.join(directory, name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A dir beside the stack: the run must neither print what it holds nor change it."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


@pytest.fixture
def hostile_run(run_static, stack_copy, outside, tmp_path):
    """Run the static checks on the (changed) stack copy with a stale GO report set in the report dir;
    assert the run stayed contained and its static gate `passes` (STATIC PASS) or not (STATIC FAIL).
    Returns the SuiteRun."""

    def run(*args: str, secrets: tuple[bytes, ...] = (), passes: bool = False, report_dir: Path | None = None):
        report_dir = report_dir or tmp_path / "reports"
        report_dir.mkdir(exist_ok=True)
        for name in REPORTS:  # a previous run's GO, which must not survive this one
            (report_dir / name).write_text('{"verdict": {"decision": "GO"}} stale GO')
            os.utime(report_dir / name, (0, 0))
        before = snapshot(outside)
        values = [*stack_secrets(stack_copy), CI_SECRET.encode(), *secrets]
        suite_run = run_static(stack_copy, "--junitxml", str(report_dir / "junit.xml"), *args, report_dir=report_dir)
        assert suite_run.report is not None, suite_run.stdout[-3000:]
        assert "INTERNALERROR" not in suite_run.stdout + suite_run.stderr
        for name in REPORTS:
            assert (report_dir / name).stat().st_mtime > 0, f"{name}: the stale report was left in place"
        assert (suite_run.passed, suite_run.failed_gate) == (passes, not passes), suite_run.report["verdict"]
        assert suite_run.ret == (0 if passes else 1)
        assert_no_secret_in(suite_run, [*values, *(v[i:i + 12] for v in values for i in (0, len(v) // 2))])
        assert snapshot(outside) == before, "the run changed files outside the stack and report dirs"
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        assert peak_kb < MEMORY_CAP_KB, f"a child of the run peaked at {peak_kb // 1024} MB"
        return suite_run

    return run


def edit(stack: Path, relative: str, old: str, new: str) -> None:
    path = stack / relative
    text = path.read_text()
    assert old in text, (relative, old)
    path.write_text(text.replace(old, new, 1))


# --- A: the runner's environment never reaches the model, nor the report -------------------------------

AIDB_ENV = "      SERVICE_NAME: aidb\n"
ENVIRONMENT_FORMS = {
    # a pool setting built from a CI variable, written inside a longer value
    "pool-overflow-suffix": (AIDB_ENV, AIDB_ENV + "      DB_POOL_MAX_OVERFLOW: \"4${CI_CLOUD_KEY}\"\n"),
    # the non-colon required form, whose message is built from the variable
    "required-message": ("${STACK_IMAGE_TAG:-local}", "${NOT_SET_ANYWHERE?missing ${CI_CLOUD_KEY}}"),
    # an alternative value that only exists when the variable is set
    "alternative-value": (AIDB_ENV, AIDB_ENV + "      DB_POOL_SIZE: \"${CI_CLOUD_KEY:+${CI_CLOUD_KEY}}\"\n"),
}


@pytest.mark.parametrize("form", ENVIRONMENT_FORMS)
def test_the_runners_environment_is_not_interpolated(hostile_run, stack_copy, monkeypatch, form):
    """A CI variable the stack's compose file references is empty for the model: the runner's token
    cannot become a value a check quotes. A required variable built from it reads 'is not set'."""
    monkeypatch.setenv("CI_CLOUD_KEY", CI_SECRET)
    edit(stack_copy, COMPOSE, *ENVIRONMENT_FORMS[form])
    run = hostile_run(passes=form == "alternative-value")
    if form == "required-message":
        assert run.report["target_errors"] == [
            "the compose model cannot be read: docker-compose.yml: required variable(s) without a value: NOT_SET_ANYWHERE (missing ) (set them in "
            "an --env-file, or pass them from the environment with --env NAME)"]
    if form == "pool-overflow-suffix":  # "4" and nothing else: below the bar, named without a secret
        assert_only_control_fails(run, "connection_pool", "DB_POOL_MAX_OVERFLOW")


def test_a_variable_passed_with_env_is_interpolated_and_redacted(hostile_run, stack_copy, monkeypatch):
    """The operator passes the variable (--env): Compose interpolates it, and its value is redacted
    wherever the stack makes a check quote it."""
    monkeypatch.setenv("CI_CLOUD_KEY", CI_SECRET)
    edit(stack_copy, COMPOSE, *ENVIRONMENT_FORMS["alternative-value"])
    run = hostile_run("--env", "CI_CLOUD_KEY")
    assert_only_control_fails(run, "connection_pool", "DB_POOL_SIZE: '[redacted hmac:")


# --- C and issue 15.4: the stack's code gets a canary, and what it writes is scanned ---------------------

ROTATE = "scripts/rotate-api-key.sh"
KEY_LINE = 'key="$secrets_dir/$name"\n'
BACKUP_LINE = 'backup="$backups/$name.$stamp"\n'
# (what the rotate script does with the key it is given, what the failure names)
EXFILTRATIONS = {
    "base64-backup-name": (BACKUP_LINE, BACKUP_LINE + 'backup="$backups/$(base64 -w0 <"$key" | tr "/+" "_-")"\n',
                           "into a file name: (copy)/ai-stack/compose/secrets/backups/("),
    "hex-in-audit-log": (KEY_LINE, KEY_LINE + 'mkdir -p "$(dirname "$audit_log")"; '
                                              'od -An -tx1 "$key" | tr -d " \\n" >>"$audit_log"; echo >>"$audit_log"\n',
                         "the audit log holds key material (hex"),
    "pieces-in-a-metrics-file": (KEY_LINE, KEY_LINE + 'fold -w4 "$key" | sed "s/^/piece /" >"$secrets_dir/../rotation.prom"\n',
                                 "(copy)/ai-stack/compose/rotation.prom holds key material (as is, split into pieces)"),
    "base32-in-audit-log": (KEY_LINE, KEY_LINE + 'mkdir -p "$(dirname "$audit_log")"; base32 -w0 "$key" >>"$audit_log"\n',
                            "the audit log holds key material (base32)"),
    # the bytes a hex key stands for (`xxd -r -p`, here sed and printf), encoded again or written raw
    "decoded-bytes-as-base64": (KEY_LINE, KEY_LINE + 'mkdir -p "$(dirname "$audit_log")"; '
                                                    'printf "$(sed \'s/../\\\\x&/g\' "$key")" | base64 -w0 >>"$audit_log"\n',
                                "the audit log holds key material (base64 of the hex-decoded value)"),
    "decoded-bytes-raw": (KEY_LINE, KEY_LINE + 'printf "$(sed \'s/../\\\\x&/g\' "$key")" >"$secrets_dir/../rotation.bin"\n',
                          "(copy)/ai-stack/compose/rotation.bin holds key material (the hex-decoded key's bytes)"),
    "reversed-chunks-in-an-error": (KEY_LINE, KEY_LINE + 'echo "bad key $(rev "$key" | fold -w5 | paste -sd:)" >&2; '
                                                        'exit 7\n',
                                    "exited 7; the script printed key material (reversed, split into pieces) to its stderr"),
}


@pytest.mark.parametrize("form", EXFILTRATIONS)
def test_stack_code_never_holds_the_key_and_its_outputs_are_scanned(hostile_run, stack_copy, form):
    """The rotate script runs on a synthetic key of the same shape; whatever it does with it (a backup named
    after it, an encoded copy in the audit log or a metrics file, an error line of pieces) fails the API key
    control naming the file and the form, never the value (neither the canary nor the stack's key)."""
    old, new, fragment = EXFILTRATIONS[form]
    edit(stack_copy, ROTATE, old, new)
    run = hostile_run()
    assert_only_control_fails(run, "api_key_permissions", f"{ROTATE}: run 1 of 3", fragment)
    reason = " ".join(run.reasons("api_key_permissions"))
    assert not re.search(r"[0-9a-f]{8,}", re.sub(r"hmac:[0-9a-f]{12}", "", reason)), reason


def test_a_key_linked_to_the_checkouts_git_config_is_not_handed_to_the_script(hostile_run, stack_copy):
    """The key file is a symlink to a file inside the checkout that is not a key (.git/config, holding a CI
    token): the script gets a canary of its shape, and prints it (hex-encoded) in vain: no token shows."""
    git = stack_copy / ".git"
    git.mkdir()
    (git / "config").write_text(f'[http]\n\textraheader = AUTHORIZATION: basic {CI_SECRET}\n')
    key = stack_copy / "ai-stack/compose/secrets/stack_api_key"
    key.chmod(0o600)
    key.unlink()
    key.symlink_to("../../../.git/config")
    edit(stack_copy, ROTATE, KEY_LINE, KEY_LINE + 'od -An -tx1 "$key" >&2\n')
    run = hostile_run()
    assert "api_key_permissions" in run.failed_controls
    assert CI_SECRET.encode().hex().encode() not in (run.report_dir / "validation-report.json").read_bytes()


# --- E: what breaks configuration or report building still ends in a fresh, complete report set --------


def nested_dirs(top: Path, depth: int) -> None:
    """`depth` nested dirs under `top`, made without recursion (os.makedirs recurses per level)."""
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def git_dir(stack: Path) -> Path:
    git = stack / ".git"
    (git / "refs/heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    return git


BREAKERS = {
    # an .env of many short lines past the reader's cap, read while the redactor learns the secrets
    "env-many-lines": lambda s: (s / "ai-stack/compose/.env").open("a").write("# pad\n" * 200_000),
    # the branch HEAD names is a 3 GB sparse file
    "git-head-huge": lambda s: (git_dir(s) / "HEAD").open("wb").truncate(3 * 1024**3),
    # the branch HEAD names is a FIFO: reading the commit for the report would block forever
    "git-ref-fifo": lambda s: os.mkfifo(git_dir(s) / "refs/heads/main"),
    # the index links to /dev/zero: reading it whole would never end
    "git-index-dev-zero": lambda s: (git_dir(s) / "index").symlink_to("/dev/zero"),
}


@pytest.mark.parametrize("form", BREAKERS)
def test_a_stack_that_breaks_configuration_or_reporting_gets_a_fresh_report(hostile_run, stack_copy, form):
    """No INTERNALERROR, no hang, no stale GO left: the cause is named in the fresh report set, NO-GO."""
    BREAKERS[form](stack_copy)
    run = hostile_run("--run-timeout", "120")
    reasons = [run.report["verdict"]["reason"], *run.report.get("session_errors", []),
               *(r for c in run.failed_controls for r in run.reasons(c))]
    expected = {"env-many-lines": ".env: larger than the", "git-head-huge": ".git/HEAD: larger than the 1048576-byte",
                "git-ref-fifo": ".git/refs/heads/main: a FIFO", "git-index-dev-zero": ".git/index: a symlink"}[form]
    assert any(expected in reason for reason in reasons), reasons


def test_a_secrets_dir_nested_past_the_recursion_limit_is_walked(hostile_run, stack_copy, request):
    """The secrets dir nested 1,100 deep (past Python's recursion limit, where Path.rglob raised
    RecursionError): walked without recursion, its secrets learned, and the otherwise correct stack passes."""
    secrets = stack_copy / "ai-stack/compose/secrets"
    # pytest's own clean-up of old temp dirs (shutil.rmtree) recurses per level: the tree goes now, with rm
    request.addfinalizer(lambda: subprocess.run(["rm", "-rf", "--", str(secrets / "d")], timeout=120, check=False))
    nested_dirs(secrets, 1100)
    hostile_run("--run-timeout", "120", passes=True)


# --- G: the CI template's layout: the report dir inside the checkout, committed as links ----------------


def links_in_reports(stack: Path, outside: Path) -> Path:
    """reports/ is real, but its history and JUnit files are committed as links to files outside."""
    reports = stack / "reports"
    reports.mkdir()
    for name in ("history.jsonl", "junit.xml"):
        (outside / name).write_text("outside\n")
        (reports / name).symlink_to(outside / name)
    return reports


def linked_parent(stack: Path, outside: Path) -> Path:
    """The report dir's parent inside the checkout is a link to a dir outside it."""
    (outside / "out").mkdir()
    (stack / "out").symlink_to(outside / "out")
    return stack / "out/reports"


@pytest.mark.parametrize("layout", [links_in_reports, linked_parent], ids=["links-in-reports", "linked-parent"])
def test_a_report_dir_inside_the_checkout_is_written_only_there(hostile_run, stack_copy, outside, layout):
    """The CI template's old layout with what a pull request can commit there: the run writes and deletes only
    in a real report dir inside the stack dir (links replaced, never followed), and passes twice in a row
    (its own report dir, history and JUnit are not changes to the stack)."""
    report_dir = layout(stack_copy, outside)
    first = hostile_run(passes=True, report_dir=report_dir)
    second = hostile_run(passes=True, report_dir=stack_copy / "reports" if layout is links_in_reports else report_dir)
    for run in (first, second):
        assert not run.report_dir.is_symlink() and not run.report_dir.parent.is_symlink()
        assert not (run.report_dir / "junit.xml").is_symlink()
    if layout is links_in_reports:  # the linked history is neither read nor appended: a note says so
        assert "history.jsonl not read" in second.stdout


# --- I: invisible and control characters never reach an output -----------------------------------------

MONITOR = "scripts/monitor-tls-certs.sh"
INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\U000e0000-\U000e007f]")
ERROR_LINES = {
    # a right-to-left isolate and a zero-width joiner make the reason read backwards; a BOM inside a word
    "isolate-and-joiner": r"echo $'cert \u2067ok\u2069 status=\u200derror \ufeffdone' >&2; exit 9",
    # an OSC 8 hyperlink, a C1 CSI written as UTF-8 and tag characters, on stdout with nothing on stderr
    "osc-link-c1-tags": r"echo $'\e]8;;http://x.invalid\e\\click\e]8;;\e\\ \u009b31mred \U000E0041\U000E0042'; exit 9",
}


@pytest.mark.parametrize("form", ERROR_LINES)
def test_format_and_control_characters_are_removed_from_every_output(hostile_run, stack_copy, form):
    """The monitor fails with an error line full of bidi, zero-width, tag and C1 characters: its control fails,
    the checks blocked by it skip, and neither the reasons nor the skip messages (terminal, reports, JUnit)
    hold any of those characters."""
    edit(stack_copy, MONITOR, "set -", ERROR_LINES[form] + "\nset -")
    run = hostile_run()
    assert_only_control_fails(run, "tls_monitoring", "exit 9")
    outputs = {"terminal": run.stdout + run.stderr,
               **{path.name: path.read_text(errors="replace") for path in run.report_dir.iterdir() if path.is_file()}}
    for name, text in outputs.items():
        found = {f"U+{ord(ch):04X}" for ch in INVISIBLE.findall(text.replace("\n", "").replace("\t", ""))}
        assert not found, f"{name} holds {sorted(found)}"
    skipped = [row for c in run.report["controls"] for row in c["checks"] if row["status"] == "SKIPPED"]
    assert any("blocked by" in row["reason"] for row in skipped)


# --- B: nothing outside the stack dir is read in its name -----------------------------------------------

OUTSIDE_TEXT = "outside-" + "9d2c7e4a1f3b5d6e8a0c"


def env_file_climbing_out(stack: Path, outside: Path) -> None:
    """A relative env_file that climbs out of the stack dir with `..`."""
    (outside / "ci.env").write_text(f"DB_POOL_SIZE={OUTSIDE_TEXT}\n")
    edit(stack, COMPOSE, "    environment:\n      AI_STACK_CONFIG", "    env_file: [../../../outside/ci.env]\n"
                                                               "    environment:\n      AI_STACK_CONFIG")


def extends_through_a_link(stack: Path, outside: Path) -> None:
    """`extends.file` names a file of the stack that is a symlink to a compose file outside."""
    (outside / "base.yml").write_text(f"services:\n  base:\n    environment:\n      DB_POOL_SIZE: {OUTSIDE_TEXT}\n")
    (stack / "ai-stack/compose/base.yml").symlink_to(outside / "base.yml")
    edit(stack, COMPOSE, "    environment:\n      AI_STACK_CONFIG", "    extends: {file: base.yml, service: base}\n"
                                                               "    environment:\n      AI_STACK_CONFIG")


def alertmanager_mounted_from_outside(stack: Path, outside: Path) -> None:
    """Alertmanager's config comes through a bind mount of a dir outside the stack dir."""
    (outside / "alertmanager.yml").write_text(f"route: {{receiver: {OUTSIDE_TEXT}}}\nreceivers: [{{name: {OUTSIDE_TEXT}}}]\n")
    edit(stack, COMPOSE, "      - ./alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro",
         f"      - {outside}:/etc/alertmanager:ro")


def env_file_of_an_included_file(stack: Path, outside: Path) -> None:
    """A file the compose file includes (inside the stack dir) names an env_file outside by its absolute path."""
    (outside / "ci.env").write_text(f"EXTRA={OUTSIDE_TEXT}\n")
    (stack / "ai-stack/compose/extra.yml").write_text(
        f"services:\n  extra:\n    image: busybox\n    env_file: [{outside / 'ci.env'}]\n")
    edit(stack, COMPOSE, "services:\n", "include: [extra.yml]\n\nservices:\n")


OUTSIDE_READS = {
    "env-file-of-an-included-file": (env_file_of_an_included_file, "extra.yml: service 'extra' env_file"),
    "env-file-climbing-out": (env_file_climbing_out, "env_file '../../../outside/ci.env' leads outside"),
    "extends-through-a-link": (extends_through_a_link, "extends.file 'base.yml' leads outside"),
    "alertmanager-mounted-from-outside": (alertmanager_mounted_from_outside, "outside the stack dir: not read"),
}


@pytest.mark.parametrize("form", OUTSIDE_READS)
def test_an_outside_reference_is_a_finding_never_a_read(hostile_run, stack_copy, outside, form):
    """What the stack's compose file names outside the stack dir (climbing out, through a link, a bind mount
    of an outside dir) is named as the defect; its content shows nowhere."""
    plant, fragment = OUTSIDE_READS[form]
    plant(stack_copy, outside)
    run = hostile_run(secrets=(OUTSIDE_TEXT.encode(),))
    # a compose input outside is the compose model's root cause (a target error); a bind mount, a failing check
    reasons = " | ".join([r for c in run.failed_controls for r in run.reasons(c)] + run.report["target_errors"])
    assert fragment in reasons, reasons
    assert run.failed_gate


def test_compose_reads_copies_of_the_checked_inputs_only(stack_copy):
    """Compose runs on copies of what was checked, in a dir named like the stack dir: a file the check did not
    pass (here the project's .env, left out) is not there for it to read, whatever the stack dir holds; the
    model and Compose's errors name the stack's paths, never the copies'."""
    compose_dir = stack_copy / "ai-stack/compose"
    main = compose_dir / "docker-compose.yml"
    inputs = refuse_outside_inputs(stack_copy, [main], [load_yaml(main, "compose")], {})
    assert set(inputs) == {main, compose_dir / ".env"}
    model = _load_real_on_copies(compose_binary(), stack_copy, inputs, [main], 60, [], [], {})
    assert model.name == "ai-stack" and model.services["nginx"].volumes[0].source.startswith(str(compose_dir))
    with pytest.raises(StackError) as failed:  # without its .env, STACK_UID and STACK_GID are unset: Compose's
        _load_real_on_copies(compose_binary(), stack_copy, {main: inputs[main]}, [main], 60, [], [], {})
    # error names one of them (which one varies: Go's map order), with our paths, not the copies'
    assert re.search(r"required variable STACK_[UG]ID is missing", str(failed.value)), failed.value
    assert "stackproof-compose-" not in str(failed.value)


# --- F: what the stack makes the suite read or run is bounded in memory and time -------------------------

GIB = 1024**3
RULE_TESTS = "ai-stack/compose/prometheus/tests/ai-stack-alerts.test.yml"
RULE_FILES = "rule_files: [../alerts/ai-stack-alerts.yml]\n"
RULE_BOMBS = {
    # one series expanded to 5*10^7 samples: 4.6 GB and 48 s of promtool without a limit
    "one-series-expanded": "tests:\n  - interval: 1s\n    input_series:\n      - series: 'up{job=\"a\"}'\n"
                           "        values: '0+1x50000000'\n",
    # forty series of 200,000 samples each
    "forty-series": "tests:\n  - interval: 1m\n    input_series:\n" + "".join(
        f"      - {{series: 'm{{i=\"{i}\"}}', values: '0+1x200000'}}\n" for i in range(40)),
    # 36 million rule evaluations, one per millisecond of ten hours: time, not memory
    "millisecond-steps": "evaluation_interval: 1ms\ntests:\n  - interval: 1ms\n    input_series:\n"
                         "      - {series: 'up{job=\"a\"}', values: '1x100'}\n"
                         "    alert_rule_test:\n      - {eval_time: 10h, alertname: X}\n",
}


@pytest.mark.parametrize("form", RULE_BOMBS)
def test_a_rule_test_that_asks_for_gigabytes_stops_at_the_limit(hostile_run, stack_copy, form):
    """A few hundred bytes of promtool rule test that would take gigabytes or hours: promtool stops at its heap
    cap or its time, the alert rules control fails naming the file and the limit, no other control fails."""
    (stack_copy / RULE_TESTS).write_text(RULE_FILES + RULE_BOMBS[form])
    started = time.monotonic()
    run = hostile_run("--stack-timeout", "5")
    assert time.monotonic() - started < 90
    if form == "millisecond-steps":  # its wall clock or its CPU time, whichever ends first (a loaded machine: the clock)
        reason = next(iter(run.reasons("alert_rules")), "")
        stopped = "did not finish within 5s" if "did not finish" in reason else "stopped at its CPU time limit (5 s)"
    else:
        stopped = "stopped at its memory limit (256 MiB"
    assert_only_control_fails(run, "alert_rules", f"promtool rules {RULE_TESTS}: {stopped}")


def special_file(kind: str, path: Path) -> None:
    """`path` made a file that is no regular file within a cap: a FIFO, a link to /dev/zero, a socket, a
    directory, a 3 GB sparse file, a link to such a sparse file."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "socket":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.close()
    elif kind == "directory":
        path.mkdir()
    else:
        target = path.with_name("huge.bin") if kind == "link-to-huge" else path
        with target.open("wb") as handle:
            handle.truncate(3 * GIB)
        if target != path:
            path.symlink_to(target.name)


SPECIAL_KINDS = {"fifo": ": a FIFO, not a regular file", "dev-zero": " leads outside the stack dir: not read",
                 "socket": ": a socket, not a regular file", "directory": ": a directory, not a regular file",
                 "huge-sparse": ": larger than the 1048576-byte limit",
                 "link-to-huge": ": larger than the 1048576-byte limit"}
AIDB_ENVIRONMENT = "    environment:\n      AI_STACK_CONFIG"


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_a_compose_input_is_a_bounded_regular_file_before_compose_reads_it(hostile_run, stack_copy, kind):
    """A service's env_file, which `docker compose config` reads whole (a 3 GB sparse one took 5 GB and 42 s)
    or blocks on (a FIFO), is checked first: every kind of file that is not a regular file within the cap is
    the compose model's one target error, naming the service, the key and the file."""
    special_file(kind, stack_copy / "ai-stack/compose/extra.env")
    edit(stack_copy, COMPOSE, AIDB_ENVIRONMENT, "    env_file: [extra.env]\n" + AIDB_ENVIRONMENT)
    started = time.monotonic()
    run = hostile_run("--stack-timeout", "5")
    assert time.monotonic() - started < 60
    [error] = run.report["target_errors"]
    assert f"service 'aidb' env_file 'extra.env'{SPECIAL_KINDS[kind]}" in error, error


@pytest.mark.parametrize("key, line", [
    ("label_file", "    label_file: extra.labels\n"),
    ("include", None),
], ids=["label-file-fifo", "include-huge"])
def test_every_file_compose_reads_is_checked_first(hostile_run, stack_copy, key, line):
    """The other files Compose reads for the model (a label_file, an included compose file) are held to the
    same check: a FIFO label file, a 3 GB included file."""
    compose_dir = stack_copy / "ai-stack/compose"
    if key == "label_file":
        special_file("fifo", compose_dir / "extra.labels")
        edit(stack_copy, COMPOSE, AIDB_ENVIRONMENT, line + AIDB_ENVIRONMENT)
        fragment = "service 'aidb' label_file 'extra.labels': a FIFO, not a regular file"
    else:
        special_file("huge-sparse", compose_dir / "more.yml")
        edit(stack_copy, COMPOSE, "\nservices:\n", "\ninclude: [more.yml]\n\nservices:\n")
        fragment = "include 'more.yml': larger than the 4194304-byte limit"
    run = hostile_run("--stack-timeout", "5")
    [error] = run.report["target_errors"]
    assert fragment in error, error


DOCKERFILE = "ai-stack/compose/postgres/Dockerfile"


@pytest.mark.parametrize("kind", ["huge-sparse", "link-to-huge", "fifo", "dev-zero"])
def test_a_dockerfile_that_never_ends_is_not_read_whole(hostile_run, stack_copy, kind):
    """The roles' search reads the start of each service's Dockerfile (which one copies the TLS monitor);
    a 3 GB one was read whole (3.3 GB, MemoryError). Now only its start, and never a special file: the run
    passes, since the stack is otherwise correct."""
    (stack_copy / DOCKERFILE).unlink()
    special_file(kind, stack_copy / DOCKERFILE)
    hostile_run(passes=True)


def many_secret_files(stack: Path) -> None:
    """40 secret files of 64 KB in the secrets dir (2.6 MB): 1.7 GB and 28 s before any check, once."""
    for n in range(40):
        (stack / f"ai-stack/compose/secrets/blob{n:02}").write_text(os.urandom(48 * 1024).hex()[:65000])


def many_env_tokens(stack: Path) -> None:
    """2,000 credential-named values of 64 characters in the compose .env."""
    with (stack / "ai-stack/compose/.env").open("a") as handle:
        handle.writelines(f"SERVICE_{n}_TOKEN={os.urandom(32).hex()}\n" for n in range(2000))


def one_large_compose_secret(stack: Path) -> None:
    """One compose secret of 60 KB, kept outside the secrets dir."""
    (stack / "ai-stack/compose/big_secret").write_text(os.urandom(45 * 1024).hex()[:60000])
    edit(stack, COMPOSE, "\nsecrets:\n", "\nsecrets:\n  big_secret:\n    file: ./big_secret\n")


SECRET_FLOODS = {"many-secret-files": (many_secret_files, "40 too large to scrub"),
                 "many-env-tokens": (many_env_tokens, "too large to scrub"),
                 "one-large-compose-secret": (one_large_compose_secret, "1 too large to scrub")}


@pytest.mark.parametrize("form", SECRET_FLOODS)
def test_more_secrets_than_the_redactor_can_learn_is_a_run_error(hostile_run, stack_copy, form):
    """The redactor learns within a budget of scrub windows: secrets past it are a run error naming them
    (STATIC FAIL: nothing could keep them out of the outputs), in bounded memory and time, with the run's
    other checks run and reported."""
    plant, fragment = SECRET_FLOODS[form]
    plant(stack_copy)
    started = time.monotonic()
    run = hostile_run("--run-timeout", "60")
    assert time.monotonic() - started < 60
    [error] = run.report["session_errors"]
    assert "the stack's secrets could not all be read before the checks: " in error and fragment in error, error
    assert "redaction budget" in error
    assert run.report["run"]["status"] == "COMPLETE"


def test_the_run_clock_bounds_reading_the_secrets(hostile_run, monkeypatch):
    """Reading the stack's secrets happens before any check, within the run's deadline: past --run-timeout
    the run error says so, and the report set is written, INCOMPLETE."""
    # Secrets that take longer to read than the run may last. Patched for this test only: the run is in-process
    # and Stack outlives it (a plugin's patch stayed for every later run in the worker: 30 s each).
    monkeypatch.setattr(Stack, "register_secrets", lambda self: time.sleep(30))
    started = time.monotonic()
    run = hostile_run("--run-timeout", "2")
    assert time.monotonic() - started < 20
    assert run.report["session_errors"] == [
        "the stack's secrets could not all be read before the checks: run time limit of 2s reached"]
    assert run.report["run"]["status"] == "INCOMPLETE"


def test_a_lost_alarm_still_stops_the_run_at_the_first_check_past_the_deadline(hostile_run, monkeypatch):
    """The watchdog's alarm raises in whatever the main thread runs; in a finalizer Python reports that as
    unraisable and goes on (seen once in a loaded self-test run: every check then failed "in setup"). A
    check due to start past the deadline stops the run instead: INCOMPLETE, no check failed."""
    monkeypatch.setattr(Stack, "register_secrets", lambda self: time.sleep(30))
    monkeypatch.setattr(RunWatchdog, "arm", lambda self: None)  # the alarm that was lost
    run = hostile_run("--run-timeout", "2")
    assert run.report["run"]["status"] == "INCOMPLETE"
    assert run.report["run"]["reason"].startswith("run time limit of 2s reached"), run.report["run"]
    statuses = {row["status"] for control in run.report["controls"] for row in control["checks"]}
    assert "FAIL" not in statuses, statuses


# --- H: under --strict-profile the stack's own profile only says where its files are -------------------

POOL_CONFIG = "ai-stack/mcp-servers/config/config.yaml"
POOL = "    pool:\n      size: 20\n"
BREAKER = "    failure_threshold: 5 "


def decoy_pool_mapping(stack: Path) -> str:
    """A pool of size 1, and a decoy mapping of good values the stack's profile names as pool.config_key."""
    edit(stack, POOL_CONFIG, POOL, "    replica_pool: {size: 40, max_overflow: 40, timeout: 30, recycle: 1800, pre_ping: true}\n    pool:\n      size: 1\n")
    return "pool: {config_key: database.postgres.replica_pool}\n"


def unused_size_variable(stack: Path) -> str:
    """aidb's environment sets DB_POOL_SIZE to 1; the stack's profile says the size comes from a variable no
    service sets."""
    edit(stack, COMPOSE, AIDB_ENV, AIDB_ENV + "      DB_POOL_SIZE: \"1\"\n")
    return "pool: {size_env: REPLICA_POOL_SIZE}\n"


def rule_tests_of_nothing(stack: Path) -> str:
    """The stack's rule test no longer fires its alert (1 connection of 50 checked out); its profile points
    paths.prometheus_rule_tests at a dir of no tests."""
    edit(stack, RULE_TESTS, "values: '48x10'", "values: '1x10'")
    (stack / "ai-stack/compose/prometheus/no-tests").mkdir()
    return "paths: {prometheus_rule_tests: ai-stack/compose/prometheus/no-tests}\n"


def decoy_breaker_mapping(stack: Path) -> str:
    """A breaker that never opens (threshold 0), and a decoy breaker mapping the profile names instead."""
    edit(stack, POOL_CONFIG, BREAKER, "    failure_threshold: 0 ")
    edit(stack, POOL_CONFIG, "\ncircuit_breaker:\n", "\nbreaker_v2:\n  postgres: {failure_threshold: 5, reset_timeout: 60, "
                                                     "half_open_max_calls: 1}\n\ncircuit_breaker:\n")
    return "breakers: {config_key: breaker_v2}\n"


BAR_LOWERINGS = {"decoy-pool-mapping": (decoy_pool_mapping, "connection_pool", "pool.config_key"),
                 "unused-size-variable": (unused_size_variable, "connection_pool", "pool.size_env"),
                 "rule-tests-of-nothing": (rule_tests_of_nothing, "alert_rules", "paths.prometheus_rule_tests"),
                 "decoy-breaker-mapping": (decoy_breaker_mapping, "circuit_breakers", "breakers.config_key")}


@pytest.mark.parametrize("form", BAR_LOWERINGS)
def test_strict_profile_keeps_only_the_stacks_file_paths(hostile_run, stack_copy, tmp_path, form):
    """A defect hidden by a profile key that decides what is checked (a decoy config mapping, a variable no
    service sets, a rule tests dir of nothing): without --strict-profile the control is not failed, with it (the
    operator's profile giving the interface) the stack's key is ignored and listed as it set it, and only the
    defect's control fails."""
    plant, control, key = BAR_LOWERINGS[form]
    merge_into_profile(stack_copy, plant(stack_copy))
    lenient = hostile_run(passes=form != "rule-tests-of-nothing")
    assert control not in lenient.failed_controls  # the bypass, as it works without --strict-profile
    if form == "rule-tests-of-nothing":  # a declared dir of no tests proves nothing: NOT PROVEN, never a pass
        assert lenient.statuses[control] == "NOT PROVEN"
    strict = hostile_run("--strict-profile", "--profile", str(operator_interface(tmp_path)))
    assert_only_control_fails(strict, control)
    assert f"ignored (--strict-profile): {key} = " in strict.stdout
