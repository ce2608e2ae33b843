"""What the suite's own tests share: the outcome of a `pytest suites/` run and the
assertion that a defect fails exactly one control."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import jsonschema
import pytest
import yaml

from stackproof.controls import default_docs_base

REPO = Path(__file__).resolve().parent.parent
REFERENCE_STACK = REPO / "stack"  # the running reference stack's files: the live self-tests break them in place
# What the copy-based self-tests copy and read: the reference stack as set up. `bin/stackproof selftest` runs the
# copy-based tier beside the live one, from a snapshot taken before, so no copy catches a live defect half-made.
PRISTINE_STACK = Path(os.environ.get("STACKPROOF_PRISTINE_STACK") or REFERENCE_STACK)
SUITES = REPO / "suites"
STACKS = REPO / "tests/stacks"  # other complete stacks, in other house styles
PROJECT = "ai-stack"  # the reference stack's compose project
REPORT_SCHEMA = json.loads((REPO / "docs/report.schema.json").read_text())
_REPORT_VALIDATOR = jsonschema.Draft202012Validator(REPORT_SCHEMA)


def report_schema_errors(report: dict) -> list[str]:
    """Where `report` departs from docs/report.schema.json, one line per error (none: valid)."""
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message[:300]}"
        for error in sorted(_REPORT_VALIDATOR.iter_errors(report), key=lambda e: list(map(str, e.absolute_path)))
    ]

def without_own_links(markdown: str) -> str:
    """A Markdown report less the suite's own links to the controls' pages (`[how to fix](<...>)`), which are
    markup on purpose: what remains outside code spans must hold no markup a stack supplied."""
    return re.sub(r"\[[A-Za-z ]+\]\(<" + re.escape(default_docs_base()) + r"[^<>\s]*>\)", "", markdown)


# names and conventions of the reference stack (its files, secrets, keys, variables and flags): a report on
# another stack that holds one of them, where that stack does not, speaks of our stack instead of its own
REFERENCE_NAMES = ("ai-stack/", "stack_api_key", "monitor-tls-certs", "rotate-api-key", "mcp-servers", "aidb_", "DB_POOL_",
                   "circuit_breaker.postgres", "database.postgres.pool", "--warn-days", "X-API-Key")


def report_texts(run) -> str:
    """What a run printed and every report it wrote, as one text."""
    return run.stdout + "".join(p.read_text(errors="replace") for p in run.report_dir.glob("validation-report.*"))


def rows_texts(run) -> str:
    """What a reader sees of a run: what it printed and its Markdown, HTML and SARIF reports (the JSON report
    also records, as data, the reference stack's default of each profile entry the stack changes)."""
    return run.stdout + "".join(p.read_text(errors="replace") for p in run.report_dir.glob("validation-report.*")
                                if p.suffix != ".json")


@dataclass
class SuiteRun:
    """The outcome of one `pytest suites/` run, read from its JSON report."""

    ret: int
    stdout: str
    stderr: str
    report: dict | None
    report_dir: Path

    @property
    def statuses(self) -> dict[str, str]:
        return {c["id"]: c["status"] for c in self.report["controls"]}

    @property
    def failed_controls(self) -> set[str]:
        return {cid for cid, status in self.statuses.items() if status == "FAIL"}

    def reasons(self, control: str) -> list[str]:
        """Every failing check's one-line reason for `control`."""
        found = next(c for c in self.report["controls"] if c["id"] == control)
        return [row["reason"] for row in found["checks"] if row["status"] == "FAIL"]

    @property
    def verdict(self) -> str:
        return self.report["verdict"]["decision"]

    @property
    def passed(self) -> bool:
        """The run's gate passed: GO (a run with live checks) or STATIC PASS (a static run), exit code 0."""
        return self.report["verdict"]["passed"]

    @property
    def failed_gate(self) -> bool:
        """NO-GO, or STATIC FAIL for a static run: the decision its gate (deploy or static) calls a failure."""
        verdict = self.report["verdict"]
        return verdict["decision"] == {"deploy": "NO-GO", "static": "STATIC FAIL"}[verdict["gate"]]



def assert_only_control_fails(run: SuiteRun, control: str, *fragments: str, also: tuple[str, ...] = (),
                              not_proven: tuple[str, ...] = ()) -> None:
    """The defect failed `control`, no other control (but those in `also`, where two controls check
    the same fact by design), with a reason naming the defect; the controls in `not_proven` could not
    be checked because of it and say so (NOT PROVEN, not FAIL)."""
    assert run.report is not None, f"no report written; stdout:\n{run.stdout[-3000:]}"
    unproven = {cid: status for cid, status in run.statuses.items() if cid in not_proven}
    assert set(unproven.values()) <= {"NOT PROVEN"} and len(unproven) == len(not_proven), unproven
    assert run.failed_controls == {control, *also}, (
        f"expected only {', '.join([control, *also])} to fail, got {sorted(run.failed_controls)}: "
        + "; ".join(f"{c}: {run.reasons(c)}" for c in sorted(run.failed_controls))
    )
    reasons = " | ".join(run.reasons(control))
    for fragment in fragments:
        assert fragment in reasons, f"{fragment!r} not in the failure reasons of {control}: {reasons}"
    assert run.failed_gate
    assert run.ret == 1


def assert_no_secret_in(run: SuiteRun, secrets: list[bytes], extra_files: tuple[Path, ...] = ()) -> None:
    """No secret value appears in any byte the run produced: stdout, stderr, reports, extra files."""
    blobs = [run.stdout.encode(), run.stderr.encode()]
    for path in [*run.report_dir.glob("*"), *extra_files]:
        if path.is_file():
            blobs.append(path.read_bytes())
    output = b"\n".join(blobs)
    for value in secrets:
        assert output.count(value) == 0, f"a secret ({len(value)} bytes) appears in the run's output"


def stack_secrets(stack: Path) -> list[bytes]:
    """The values of every secret file of a stack (stripped), to search outputs for."""
    secrets_dir = stack / "ai-stack/compose/secrets"
    return [path.read_bytes().strip() for path in secrets_dir.glob("*") if path.is_file()]


def run_own(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Run one of our own set-up commands (the reference stack's up.sh, docker, mmdebstrap) and
    return its stdout; a non-zero exit fails the test with the output's tail.

    Not stackproof.io.proc.run: that one is for the stack's code and kills everything the command
    started once it ends, and up.sh --engine podman must leave `podman system service` and the
    healthcheck loop running (as `stackproof up` does). Output goes to files, not pipes, so a
    daemon that keeps them open cannot hold the call; on timeout the process group is killed."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 start_new_session=True, env={**os.environ, **(env or {})})
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    assert child.returncode == 0, f"{cmd[0]} exited with {child.returncode}: " + (stdout + stderr)[-3000:]
    return stdout


# A full run (`bin/stackproof selftest`, not --fast) proves everything the README claims: there, a
# self-test that cannot run because the machine lacks a tool, an engine or the running reference stack
# fails, naming the step that installs or starts it, instead of skipping.
FULL_RUN = "STACKPROOF_SELFTEST_FULL"


def unavailable(reason: str) -> NoReturn:
    """This self-test cannot run here; `reason` names what is missing and how to get it. A skip, or a
    failure in a full run (STACKPROOF_SELFTEST_FULL=1)."""
    if os.environ.get(FULL_RUN) == "1":
        pytest.fail(f"{reason} [{FULL_RUN}=1: a full self-test run may not skip]", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, install_hint: str) -> str:
    """The path of the program `name`: beside this interpreter (a venv's bin/, also when the venv is not
    on PATH), else on PATH. Missing: `unavailable`, naming `install_hint`."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() and os.access(beside, os.X_OK) else shutil.which(name)
    if found is None:
        unavailable(f"{name} not installed ({install_hint})")
    return found


def merge_into_profile(stack: Path, text: str) -> None:
    """Merge YAML `text` into the stack's stackproof.yml, section by section (the reference stack's profile
    already has `paths`, `api_key`, `scripts`..., which a plain append would repeat as duplicate keys)."""
    def merge(base: dict, override: dict) -> dict:
        for key, value in override.items():
            base[key] = merge(base.get(key) or {}, value) if isinstance(value, dict) and key != "env" else value
        return base

    path = stack / "stackproof.yml"
    current = yaml.safe_load(path.read_text()) if path.exists() else None
    path.write_text(yaml.safe_dump(merge(current or {}, yaml.safe_load(text))))


def operator_interface(where: Path) -> Path:
    """An operator's profile giving the reference stack's interface (what --strict-profile no longer takes from
    the stack's own profile): its API key's secret, its rule tests, its breaker gauge."""
    path = where / "operator-interface.yml"
    path.write_text("paths: {prometheus_rule_tests: ai-stack/compose/prometheus/tests}\napi_key: {secret: stack_api_key}\n"
                    "breakers: {state_metric: aidb_circuit_breaker_state}\n")
    return path
