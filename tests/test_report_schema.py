"""The JSON report's schema (docs/report.schema.json): itself valid, and strict where it names
something. Every report the self-tests read is validated against it in tests/conftest.py
(run_suite); these tests show that validation can fail."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import jsonschema
import pytest
from harness import REPORT_SCHEMA, REPO, report_schema_errors

from stackproof.report.collector import SCHEMA_VERSION


def test_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(REPORT_SCHEMA)


def test_schema_version_is_documented() -> None:
    """The version the report writes is the changelog's latest entry."""
    changelog = (REPO / "docs/report-schema-changelog.md").read_text()
    latest = next(line[3:].strip() for line in changelog.splitlines() if line.startswith("## "))
    assert latest == SCHEMA_VERSION


def set_path(report: dict, path: tuple, value) -> dict:
    broken = copy.deepcopy(report)
    target = broken
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return broken


@pytest.fixture(scope="module")
def go_report(reference_stack, tmp_path_factory) -> dict:
    """A real report: the reference stack's static run."""
    report_dir = tmp_path_factory.mktemp("schema-report")
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "suites"), "-m", "static",
                    "--stack-dir", str(reference_stack), "--report-dir", str(report_dir)],
                   cwd=REPO, capture_output=True, timeout=300)
    report = json.loads((report_dir / "validation-report.json").read_text())
    assert report_schema_errors(report) == []
    return report


@pytest.mark.parametrize(
    "path, value",
    [
        (("schema_version",), KeyError),
        (("schema_version",), "3.0"),
        (("schema_version",), "1.5"),
        (("verdict", "gate"), "maybe"),
        (("verdict", "passed"), KeyError),
        (("verdict", "decision"), "MAYBE"),
        (("verdict",), KeyError),
        (("verdict", "reason"), ""),  # a failed gate (below) without a reason
        (("controls", 0, "status"), "WARN"),
        (("controls", 0, "checks", 0, "status"), "NOT PROVEN"),
        (("controls", 0, "checks", 0, "mode"), "remote"),
        (("controls", 0, "checks", 0, "nodeid"), KeyError),
        (("totals", "failed"), -1),
        (("totals", "total"), KeyError),
    ],
    ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple) else repr(v),
)
def test_schema_rejects(go_report: dict, path: tuple, value) -> None:
    report = set_path(go_report, ("verdict", "passed"), False) if path == ("verdict", "reason") else go_report
    assert report_schema_errors(set_path(report, path, value)), f"{path} = {value!r} passed the schema"


def test_schema_accepts_new_fields(go_report: dict) -> None:
    """Permissive where the report grows (newer minor versions, other helpers' fields)."""
    report = set_path(go_report, ("history",), {"previous": None})
    report = set_path(report, ("controls", 0, "duration_s"), 0.1)
    report = set_path(report, ("controls", 0, "checks", 0, "waiver"), None)
    report = set_path(report, ("run", "status"), "COMPLETE")
    assert report_schema_errors(report) == []
