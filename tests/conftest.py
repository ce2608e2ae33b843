"""Fixtures for the suite's own tests: copy the reference stack, break it, run `pytest suites/`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from harness import REFERENCE_STACK, SUITES, SuiteRun


@pytest.fixture(scope="session")
def reference_stack() -> Path:
    if not (REFERENCE_STACK / "ai-stack/compose/secrets/stack_api_key").exists():
        pytest.fail("reference stack not set up: run stack/scripts/setup.sh (the README's commands do)")
    return REFERENCE_STACK


@pytest.fixture
def stack_copy(reference_stack: Path, tmp_path: Path) -> Path:
    """A private copy of the reference stack (modes kept, not a git checkout) to inject a defect into."""
    target = tmp_path / "stack"
    shutil.copytree(reference_stack, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    return target


@pytest.fixture
def run_suite(pytester: pytest.Pytester, tmp_path: Path):
    """Run `pytest suites/` against a stack dir; returns a SuiteRun."""

    def run(stack_dir: Path, *args: str, timeout: float = 300) -> SuiteRun:
        report_dir = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}"
        result = pytester.runpytest_subprocess(
            str(SUITES), "--stack-dir", str(stack_dir), "--report-dir", str(report_dir), *args, timeout=timeout
        )
        report_file = report_dir / "validation-report.json"
        report = json.loads(report_file.read_text()) if report_file.exists() else None
        return SuiteRun(int(result.ret), result.stdout.str(), result.stderr.str(), report, report_dir)

    return run


@pytest.fixture
def run_static(run_suite):
    """Run only the static checks of `pytest suites/` against a stack dir."""

    def run(stack_dir: Path, *args: str) -> SuiteRun:
        return run_suite(stack_dir, "-m", "static", *args)

    return run
