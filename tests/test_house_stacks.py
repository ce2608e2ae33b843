"""Three stacks in house styles seen in real repositories (tests/house_stacks.py), judged on their own
terms: each, set up by its own script in a git checkout and given the profile `stackproof init` writes
(never edited by hand), has no failing check; each defect fails its control and no other.

Where the suite still reads a stack through the reference stack's conventions, the test is a strict
xfail whose reason names the artifact (house_stacks.py; every row in tests/stacks/ARTIFACTS.md).
The first tests need no suite run: the stacks are right by their own tools (promtool, their monitor),
their set-up commits no secret, and every defect still fits the files it breaks."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import set_up_copy
from harness import REFERENCE_NAMES, STACKS, assert_only_control_fails, rows_texts
from house_stacks import DEFECTS, HOUSE_STACKS, edit
from stackproof.init import write_profile
from stackproof.resources.scripts import make_certificate

NAMES = list(HOUSE_STACKS)


def git(stack: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "core.hooksPath=/dev/null", *args],
                          cwd=stack, check=True, capture_output=True, text=True, timeout=60)
    return done.stdout


@pytest.fixture(scope="session")
def house_stack(tmp_path_factory):
    """name -> the stack as a user has it: a clone (a git checkout of the repository's files), set up by
    its own script (what .gitignore leaves out stays untracked), with the profile `stackproof init` wrote,
    committed. Made once per session (per xdist worker), on first use."""
    made: dict[str, Path] = {}

    def prepare(name: str) -> Path:
        if name not in made:
            target = tmp_path_factory.mktemp("house") / name
            set_up_copy(STACKS / name, target, HOUSE_STACKS[name].setup)
            write_profile(target, force=True)
            git(target, "init", "-q")
            git(target, "add", "-A")
            git(target, "commit", "-qm", name)
            made[name] = target
        return made[name]

    return prepare


@pytest.fixture
def house_copy(house_stack, tmp_path):
    """name -> a private copy of the prepared stack (modes, symlinks and .git kept) to break."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(house_stack(name), target, symlinks=True)
        return target

    return copy


def xfail_for(artifact: str | None) -> list:
    """A strict xfail for a known artifact of the suite: only a failed assertion counts as it (a defect
    that no longer fits its stack raises InjectionError and fails)."""
    return [pytest.mark.xfail(reason=artifact, strict=True, raises=AssertionError)] if artifact else []


# --- judged by their own tools (no suite run) ------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_setup_generates_secrets_and_commits_none(name, house_stack):
    stack, spec = house_stack(name), HOUSE_STACKS[name]
    tracked = set(git(stack, "ls-files").splitlines())
    assert (stack / spec.secrets_dir).stat().st_mode & 0o777 == 0o700
    for secret in spec.secrets:
        mode = (stack / secret).stat().st_mode & 0o777
        assert mode in (0o400, 0o600), f"{name}: {secret} mode {mode:04o}"
        assert (stack / secret).stat().st_size > 0 and secret not in tracked, f"{name}: {secret}"
    assert not [path for path in tracked if path.startswith(f"{spec.secrets_dir}/")
                and not path.endswith((".gitkeep", "README.md", ".example"))], tracked


@pytest.mark.parametrize("name", NAMES)
def test_own_alert_unit_tests_pass(name, house_stack):
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package 'prometheus')")
    test_file = house_stack(name) / HOUSE_STACKS[name].rule_tests
    done = subprocess.run(["promtool", "test", "rules", test_file.name], cwd=test_file.parent,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", NAMES)
def test_own_monitor_exit_codes(name, house_stack, tmp_path):
    """The stack's TLS monitor, called its own way, exits 0/1/2/3 (ok, warning, critical, unreadable) and
    writes its metrics file, on certificates with 365, 20 and 3 days left and a missing file."""
    spec, stack = HOUSE_STACKS[name], house_stack(name)
    codes = {}
    for label, days in (("365", 365), ("20", 20), ("3", 3), ("missing", None)):
        cert, out = tmp_path / f"{label}.pem", tmp_path / f"{label}.prom"
        if days is not None:
            make_certificate(cert, days)
        command = [part.format(cert=cert, out=out) for part in spec.monitor]
        done = subprocess.run([str(stack / command[0]), *command[1:]], capture_output=True, timeout=60,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        codes[label] = (done.returncode, out.is_file())
    assert codes == {"365": (0, True), "20": (1, True), "3": (2, True), "missing": (3, True)}, codes


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if ".git" not in p.relative_to(root).parts):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes() + oct(path.stat().st_mode).encode())
        else:
            digest.update(oct(path.stat().st_mode).encode())
    return digest.hexdigest()


@pytest.mark.parametrize("defect", DEFECTS, ids=[f"{d.stack}-{d.id}" for d in DEFECTS])
def test_defect_fits_its_stack(defect, house_copy):
    """Each injector still finds what it breaks (else InjectionError) and changes the stack."""
    stack = house_copy(defect.stack)
    before = tree_digest(stack)
    defect.inject(stack)
    assert tree_digest(stack) != before


# --- judged by the suite -----------------------------------------------------------------------


def failing_rows(run) -> list[tuple[str, str]]:
    return [(control["id"], row["reason"]) for control in run.report["controls"] for row in control["checks"]
            if row["status"] == "FAIL"]


def of_real_defect(name: str, control: str, reason: str) -> bool:
    return any(control == where and fragment in reason for where, fragment in HOUSE_STACKS[name].real_defects)


@pytest.mark.parametrize("name", [pytest.param(name, marks=xfail_for(spec.artifact)) for name, spec in HOUSE_STACKS.items()])
def test_correct_stack_has_no_failing_check(name, house_stack, run_static):
    """After `stackproof init` alone, no check fails (a control may be NOT PROVEN by design, never FAIL) but
    one for each real defect of the stack as written (HouseStack.real_defects), which the suite must report."""
    stack = house_stack(name)
    run = run_static(stack)
    assert run.report is not None, run.stdout[-3000:]
    own = "".join(path.read_text(errors="replace") for path in stack.rglob("*")
                  if path.is_file() and ".git" not in path.parts and path.name != "stackproof.yml")
    # a dotted key path is the stack's own when its YAML has each of its keys (meridian's database.postgres.pool)
    foreign = [term for term in REFERENCE_NAMES if term in rows_texts(run) and term not in own
               and not ("." in term and all(f"{part}:" in own for part in term.split(".")))]
    assert not foreign, f"the report names the reference stack's {foreign}, which {name} does not have"
    failing = failing_rows(run)
    assert not [row for row in failing if not of_real_defect(name, *row)], "\n".join(map(": ".join, failing))
    for control, fragment in HOUSE_STACKS[name].real_defects:
        assert [reason for where, reason in failing if where == control and fragment in reason], \
            (f"real defect not reported: {control}: {fragment}", failing)


@pytest.mark.parametrize("defect", [pytest.param(d, marks=xfail_for(d.expected_failure), id=f"{d.stack}-{d.id}")
                                    for d in DEFECTS])
def test_defect_fails_only_its_control(defect, house_copy, run_static):
    """The defect fails its control, and no other but those the stack's own real defects fail, with a reason
    naming it (a reason of the stack's real defect does not count)."""
    stack = house_copy(defect.stack)
    defect.inject(stack)
    run = run_static(stack)
    real = {control for control, _ in HOUSE_STACKS[defect.stack].real_defects}
    if not real:
        assert_only_control_fails(run, defect.control, *defect.fragments)
        return
    assert run.report is not None, run.stdout[-3000:]
    assert run.failed_controls == {defect.control} | real, {c: run.reasons(c) for c in run.failed_controls}
    reasons = " | ".join(reason for control, reason in failing_rows(run)
                         if control == defect.control and not of_real_defect(defect.stack, control, reason))
    for fragment in defect.fragments:
        assert fragment in reasons, f"{fragment!r} not in the failure reasons of {defect.control}: {reasons}"
    assert run.failed_gate and run.ret == 1


# --- read in the stack's own words, once its profile says them ---------------------------------

# where each stack's monitor service runs it from a `sh -c` loop, with its own metrics-file flag
MONITOR_LOOP = {
    "harbor": ("compose/base.yml", "cert-expiry.sh -o /textfile/cert_expiry.prom", "/textfile/cert_expiry.prom"),
    "lighthouse": ("docker-compose.prod.yml", "certcheck.py --textfile /textfile/certcheck.prom", "/textfile/certcheck.prom"),
    "meridian": ("compose.yaml", "certmon --output /textfile/certmon.prom", "/textfile/certmon.prom"),
}


def forget_monitor_interface(stack: Path) -> None:
    """The profile init wrote, less the monitor's interface (the defaults, the reference stack's flags, stand)."""
    profile = yaml.safe_load((stack / "stackproof.yml").read_text())
    del profile["scripts"]["monitor"]
    (stack / "stackproof.yml").write_text(yaml.safe_dump(profile))


def check_rows(run) -> dict[str, dict]:
    return {row["nodeid"]: row for control in run.report["controls"] for row in control["checks"]}


@pytest.mark.parametrize("name", NAMES)
def test_metrics_file_inside_sh_c_found_by_the_declared_flag(name, house_copy, run_static):
    """The monitor's metrics file is read out of its service's `sh -c` string with the flag the profile
    declares for {metrics_file} (-o, --textfile, --output: init reads it from the monitor's usage text, short
    flags and argparse usage included, and proves it by a trial run in the sandbox): the textfile check passes
    naming that file; moved off the shared volume, that check and no other starts failing, naming the file.
    Without the monitor's interface in the profile, where the monitor writes is not known: NOT PROVEN, never a
    guessed path."""
    stack = house_copy(name)
    compose, call, metrics_file = MONITOR_LOOP[name]
    textfile = "suites/test_alert_rules.py::test_tls_textfile_is_scraped"
    command = yaml.safe_load((stack / "stackproof.yml").read_text())["scripts"]["monitor"]["command"]
    flag = HOUSE_STACKS[name].monitor[1]
    assert [flag, "{metrics_file}"] in [command[i:i + 2] for i in range(len(command))], command
    before = check_rows(run_static(stack))
    assert before[textfile]["status"] == "PASS", before[textfile]["reason"]
    assert f"writes {metrics_file} → volume textfile" in before[textfile]["result"], before[textfile]["result"]
    edit(compose, call, call.replace(metrics_file, "/tmp/tls.prom"))(stack)
    after = check_rows(run_static(stack))
    newly_failing = [nodeid for nodeid, row in after.items() if row["status"] == "FAIL" and before[nodeid]["status"] != "FAIL"]
    assert newly_failing == [textfile], newly_failing
    assert f"{compose}: service " in after[textfile]["reason"] and "writes /tmp/tls.prom (on no shared mount)" in \
        after[textfile]["reason"], after[textfile]["reason"]
    forget_monitor_interface(stack)
    undeclared = check_rows(run_static(stack))[textfile]
    assert undeclared["status"] == "SKIPPED" and "writes its metrics is not known" in undeclared["reason"], undeclared
