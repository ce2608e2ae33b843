"""The SARIF report (validation-report.sarif) is valid SARIF 2.1.0 and tells what the JSON report tells.

Valid: checked against the official schema, vendored as tests/sarif-schema-2.1.0.json (the OASIS SARIF TC's
`sarif-2.1/schema/sarif-schema-2.1.0.json`, errata01; check-jsonschema bundles no SARIF schema). The same:
one rule per check function of the run, one result per check that failed or left its control unproven,
at the files and lines its evidence located (relative to the stack dir), and the run's verdict, the
JSON report's own. A real static run of a broken copy shows the locations end to end (the YAML line of
the key a fix goes to)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
from harness import REPO
from report_samples import SAMPLES, sample_summary

from stackproof.controls import check_anchor
from stackproof.report.outcome import Status, unproving
from stackproof.io.yamlio import key_position
from stackproof.report.sarif import SOURCE_ROOT, sarif_log

SARIF_SCHEMA = json.loads((REPO / "tests/sarif-schema-2.1.0.json").read_text())
SARIF_VALIDATOR = jsonschema.Draft4Validator(SARIF_SCHEMA)


def sarif_errors(log: dict) -> list[str]:
    """Where `log` departs from the SARIF 2.1.0 schema, one line per error (none: valid)."""
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message[:300]}"
            for error in SARIF_VALIDATOR.iter_errors(log)]


def waived_summary() -> dict:
    """The NO-GO sample with its failures waived (a GO whose SARIF holds suppressed results)."""
    summary = sample_summary("no-go")
    report_rows = [row for control in summary["controls"] for row in control["checks"]]
    for row in report_rows:
        if row["status"] == Status.FAIL:
            row["waived"] = True
            row["waiver"] = {"justification": "accepted until the migration", "owner": "ops", "expires": "2099-01-01"}
    return summary


def is_absolute_uri(text: str) -> bool:
    parts = urlsplit(text)
    return bool(parts.scheme) and (bool(parts.netloc) or parts.scheme == "file" or bool(parts.path))


@pytest.mark.parametrize("summary", [*(sample_summary(kind) for kind in SAMPLES), waived_summary()],
                         ids=[*SAMPLES, "waived"])
def test_sarif_is_valid_and_tells_the_json_reports_verdict(summary):
    """Schema-valid; a rule per check function, each with its fix, severity and doc link; a result per failing
    or unproven check with the check's locations (relative, under %SRCROOT%: the stack dir); the verdict is the
    JSON report's."""
    log = sarif_log(summary)
    assert sarif_errors(log) == []
    (run,) = log["runs"]
    rows = [row for control in summary["controls"] for row in control["checks"]]
    rules = run["tool"]["driver"]["rules"]
    assert [rule["id"] for rule in rules] == list(dict.fromkeys(f"{r['control']}/{check_anchor(r['nodeid'])}" for r in rows))
    for rule in rules:
        assert rule["help"]["text"] and is_absolute_uri(rule["helpUri"]) and "#" in rule["helpUri"], rule
        assert rule["properties"]["severity"] in ("critical", "high", "medium")
    expected = [row for row in rows if row["status"] == Status.FAIL or unproving(row)]
    assert [result["properties"]["check"] for result in run["results"]] == [row["nodeid"] for row in expected]
    for result, row in zip(run["results"], expected, strict=True):
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert (result["kind"], result["level"] == "none") == (("fail", False) if row["status"] == Status.FAIL
                                                               else ("open", True))
        assert row["reason"] in result["message"]["text"]
        files = [place["physicalLocation"]["artifactLocation"] for place in result["locations"]]
        assert files and all(f["uriBaseId"] == SOURCE_ROOT and not f["uri"].startswith("/") for f in files)
        located = [place["path"] for place in row["locations"]] or summary["target"]["compose_files"][:1]
        assert [f["uri"] for f in files] == located
        assert ("suppressions" in result) == bool(row.get("waived"))
    assert run["properties"]["verdict"] == summary["verdict"]
    assert run["originalUriBaseIds"][SOURCE_ROOT]["uri"] == Path(summary["target"]["stack_dir"]).as_uri() + "/"


def test_the_schema_check_can_fail():
    """A log the schema refuses (a level SARIF does not know, a location line 0) is reported as such."""
    log = sarif_log(sample_summary("no-go"))
    broken = copy.deepcopy(log)
    broken["runs"][0]["results"][0]["level"] = "critical"
    broken["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"] = {"startLine": 0}
    errors = sarif_errors(broken)
    assert any("level" in error for error in errors) and any("startLine" in error for error in errors), errors


def test_a_run_writes_sarif_with_the_lines_a_fix_goes_to(stack_copy, run_static, tmp_path):
    """A static run of a copy with two defects (a secret file at 0644; the pool's size too small in its config
    file) writes validation-report.sarif beside the JSON: valid, the same verdict, each failure at its file
    (and, for the YAML key, its line), as the JSON report's rows locate them. `--sarif PATH` writes the same
    log there too, replacing a link at PATH rather than writing through it."""
    secret = stack_copy / "ai-stack/compose/secrets/stack_api_key"
    os.chmod(secret, 0o644)
    pool = stack_copy / "ai-stack/mcp-servers/config/config.yaml"
    lines = pool.read_text().splitlines()
    size_line = next(number for number, line in enumerate(lines, 1) if line.strip().startswith("size:"))
    lines[size_line - 1] = lines[size_line - 1].split("size:")[0] + "size: 5"
    pool.write_text("\n".join(lines) + "\n")
    upload, elsewhere = tmp_path / "upload/results.sarif", tmp_path / "elsewhere.txt"
    upload.parent.mkdir()
    elsewhere.write_text("not the report's")
    upload.symlink_to(elsewhere)
    run = run_static(stack_copy, "--sarif", str(upload))
    assert run.failed_gate
    log = json.loads((run.report_dir / "validation-report.sarif").read_text())
    assert not upload.is_symlink() and upload.read_text() == (run.report_dir / "validation-report.sarif").read_text()
    assert elsewhere.read_text() == "not the report's"
    assert sarif_errors(log) == [] and log["runs"][0]["properties"]["verdict"] == run.report["verdict"]
    rows = {row["nodeid"].partition("::")[2]: row for control in run.report["controls"] for row in control["checks"]}
    assert rows["test_secret_files_owner_only"]["locations"] == [
        {"path": "ai-stack/compose/secrets/stack_api_key", "line": None, "key": None}]
    assert rows["test_pool_config_setting[size]"]["locations"] == [
        {"path": "ai-stack/mcp-servers/config/config.yaml", "line": size_line, "key": "database.postgres.pool.size"}]
    results = {result["properties"]["check"].partition("::")[2]: result for result in log["runs"][0]["results"]}
    size = results["test_pool_config_setting[size]"]["locations"][0]["physicalLocation"]
    assert size == {"artifactLocation": {"uri": "ai-stack/mcp-servers/config/config.yaml", "uriBaseId": SOURCE_ROOT},
                    "region": {"startLine": size_line}}
    assert results["test_secret_files_owner_only"]["level"] == "error"


LOCATED = """\
services:
  aidb:
    image: aidb
    secrets:
      - stack_api_key
      - source: postgres_password
        mode: 0444
"""


@pytest.mark.parametrize("keys, position", [
    (("services", "aidb", "secrets", 1, "mode"), (5, 7)),
    (("services", "aidb", "secrets"), (3, 4)),
    (("services", "aidb", "environment", "DB_PASSWORD"), (2, 2)),  # missing: its parent's line
    (("services", "aidb", "secrets", 5), (3, 4)),
    (("volumes",), (0, None)),
])
def test_a_key_path_is_found_at_its_line(keys, position):
    """A finding's line: the deepest key of its path the file has (a missing key points at its parent)."""
    assert key_position(LOCATED, keys) == position


def test_a_hostile_file_gives_no_line():
    """Invalid YAML, or a file past the loader's bounds (an alias bomb), gives no line, and no error."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))
    assert key_position("services: [unclosed", ("services",)) == (0, None)
    assert key_position(bomb, ("a",)) == (0, None)
