"""Fixtures for the suite's own tests: copy the reference stack, break it, run `pytest suites/`."""

from __future__ import annotations

import gc
import importlib
import json
import os
import pkgutil
import shutil
import sys
from pathlib import Path

import subprocess

import docker
import pytest
from hypothesis import settings
from defects import LAYOUTS, Layout
from harness import PRISTINE_STACK, PROJECT, REFERENCE_STACK, STACKS, SUITES, SuiteRun, report_schema_errors, unavailable

from stackproof.init import write_profile
from stackproof.report import environment  # noqa: F401  (its cache of tool versions)
from stackproof.resources.tokens import encoding

# pytester's in-process runs (run_suite) drop every module a run imports. The third-party libraries a
# run needs are imported here once per worker instead, the token encoding loaded once and the tools'
# versions asked once (those modules' caches then outlive the runs): ~0.3 s of every run's 1.8 s.
import dulwich.repo, jinja2, prometheus_client, promql_parser, pydantic, pytest_html, testinfra, zxcvbn.frequency_lists  # noqa: E401, F401, E402, I001
import statistics, tomllib, xml.etree.ElementTree  # noqa: E401, F401, E402, I001  (the report writers' stdlib modules)

encoding()


def _import_the_package() -> None:
    """Every module of stackproof, imported by the worker before its first in-process run, for the same
    reason: the plugin, the report writers and most resources were imported afresh by each run (70 ms of
    the run's 0.38 s of CPU), and what they keep per process was dropped with them (promtool's and amtool's
    results in io/pure.py, the HTML templates). The programs the live engine runs in containers
    (stackproof/engine/programs) are scripts, not modules of the package."""
    import stackproof

    for module in pkgutil.walk_packages(stackproof.__path__, "stackproof."):
        if ".programs" not in module.name and not module.name.endswith("__main__"):
            importlib.import_module(module.name)


_import_the_package()

# Self-tests run as `bin/stackproof selftest` runs them, also as `.venv/bin/python -m pytest`: the interpreter's
# bin/ (the venv's docker-compose and actionlint) first on PATH, for our own set-up commands (up.sh, down.sh).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"

# The property tests' examples are judged on their results, not their speed: on a loaded CI machine
# hypothesis's default 200 ms deadline failed examples that pass.
settings.register_profile("stackproof", deadline=None)
settings.load_profile("stackproof")

# The stacks in tests/stacks/ are fixtures the self-tests copy and set up: their own files (lighthouse's
# api/tests/, for one) are not tests of this repository.
collect_ignore_glob = ["stacks/*"]


@pytest.fixture(scope="session")
def reference_stack() -> Path:
    """The reference stack as set up, to copy or read (never the one the live self-tests are breaking)."""
    if not (PRISTINE_STACK / "ai-stack/compose/secrets/stack_api_key").exists():
        pytest.fail("reference stack not set up: run stack/scripts/setup.sh (the README's commands do)")
    return PRISTINE_STACK


@pytest.fixture
def stack_copy(reference_stack: Path, tmp_path: Path) -> Path:
    """A private copy of the reference stack (modes kept, not a git checkout) to inject a defect into."""
    target = tmp_path / "stack"
    shutil.copytree(reference_stack, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    return target


def set_up_copy(source: Path, target: Path, setup: str | None) -> Path:
    """A copy of a test stack, its generated files made by its own set-up script (as a user would)."""
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    if setup:
        subprocess.run([str(target / setup)], check=True, timeout=60, capture_output=True)
    return target


@pytest.fixture(scope="session")
def prepared_stacks(reference_stack: Path, tmp_path_factory) -> dict[str, Path]:
    """Every test stack, ready to copy: the reference stack as it is; the others set up by their
    own set-up script and given the profile `stackproof init` writes (never edited by hand)."""
    northwind = set_up_copy(STACKS / "northwind", tmp_path_factory.mktemp("prepared") / "northwind", "bin/setup")
    write_profile(northwind, force=True)
    return {"reference": reference_stack, "northwind": northwind}


@pytest.fixture
def layout_copy(request, prepared_stacks: dict[str, Path], tmp_path: Path) -> tuple[Path, Layout]:
    """(a private copy, its layout) of the test stack named by the parametrization (indirect)."""
    name = request.param
    target = tmp_path / name
    shutil.copytree(prepared_stacks[name], target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    return target, LAYOUTS[name]


@pytest.fixture
def run_suite(pytester: pytest.Pytester, tmp_path: Path):
    """Run `pytest suites/` against a stack dir; returns a SuiteRun. The JSON report, when there is
    one, must follow docs/report.schema.json.

    The run is in-process (pytester's inline run: a fresh config, plugin manager and session; the
    modules it imports are dropped afterwards), which costs about a third less than a subprocess per run:
    most self-tests are one run each. `isolated=True` runs it in a subprocess instead, for a run whose
    watchdog may end the process (`--run-timeout`: the hard stop calls os._exit)."""
    pytester.syspathinsert()  # plugins a test writes with pytester.makepyfile are importable by `-p name`

    def run(stack_dir: Path, *args: str, timeout: float = 300, report_dir: Path | None = None,
            isolated: bool = False) -> SuiteRun:
        """`report_dir`: by default a new one per run. `timeout` bounds an isolated run; an in-process
        run is bounded by the suite's own `--run-timeout` (its watchdog)."""
        report_dir = report_dir or tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}"
        argv = (str(SUITES), "--stack-dir", str(stack_dir), "--report-dir", str(report_dir), *args)
        if isolated:
            result = pytester.runpytest_subprocess(*argv, timeout=timeout)
        else:
            result = pytester.runpytest_inprocess(*argv)
        report_file = report_dir / "validation-report.json"
        report = json.loads(report_file.read_text()) if report_file.exists() else None
        if report is not None:
            errors = report_schema_errors(report)
            assert not errors, f"{report_file} does not follow docs/report.schema.json:\n" + "\n".join(errors[:20])
        return SuiteRun(int(result.ret), result.stdout.str(), result.stderr.str(), report, report_dir)

    return run


@pytest.fixture
def run_static(run_suite):
    """Run only the static checks of `pytest suites/` against a stack dir."""

    def run(stack_dir: Path, *args: str, **options) -> SuiteRun:
        return run_suite(stack_dir, "-m", "static", *args, **options)

    return run


@pytest.fixture(scope="session")
def running_reference_stack() -> Path:
    """The reference stack, up and healthy. Without it: `unavailable` (skipped, a failure in a full run)."""
    try:
        client = docker.from_env(timeout=10)
        containers = client.containers.list(filters={"label": f"com.docker.compose.project={PROJECT}"})
    except Exception as exc:
        containers, reason = [], f"no Docker engine ({type(exc).__name__})"
    else:
        reason = f"compose project {PROJECT!r} is not running (bin/stackproof up)"
    unhealthy = [c.name for c in containers if c.attrs["State"].get("Health", {}).get("Status") not in (None, "healthy")]
    if not containers or unhealthy:
        reason = f"unhealthy containers: {unhealthy}" if unhealthy else reason
        unavailable(reason)
    return REFERENCE_STACK


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engine: a copy-based self-test that needs a Docker engine (not the running "
                                       "reference stack): left out by `bin/stackproof selftest --fast`")
    config.addinivalue_line("markers", "podman: a live self-test on rootful Podman, on a copy of the reference stack "
                                       "of its own in a full run (test_podman_live.py): run beside the other live ones")
    config.addinivalue_line("markers", "swarm: a live self-test on Docker Swarm, on a copy of the reference stack of "
                                       "its own in a full run (test_engines_live.py): run beside the other live ones")


def pytest_collection_finish(session: pytest.Session) -> None:
    """What is alive once the self-tests are collected (modules, items, fixtures) lives until the end:
    frozen, the garbage collector never walks it again. Each in-process suite run ends with full
    collections (pytest's unraisable-exception plugin), which walked this whole heap every time."""
    gc.freeze()


# Modules of long copy-based self-tests (a wheel built and installed, runs left to reach their time limit: 4-10 s
# each): collected first, so that with work stealing none of them starts last and ends the tier alone.
LONG_FIRST = ("test_packaging.py", "test_report_truth.py")
# Live self-tests on other engines: collected last, in this order (below). The two-node swarm's module
# initialises a swarm of its own and may leave it to the single-node swarm module after it.
OTHER_ENGINES = ("test_podman_live.py", "test_swarm_multinode_live.py", "test_engines_live.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The live self-tests on other engines (test_engines_live.py) run last. `docker swarm init/leave`
    and rootful Podman's networks change the host's networking, and name resolution inside the running
    compose project was seen broken after them (nginx 502, aidb's breaker open) until it was recreated:
    the compose live self-tests must not depend on what those tests leave behind. The long copy-based
    ones run first (LONG_FIRST)."""
    def order(item: pytest.Item) -> tuple[int, bool]:
        name = item.path.name
        return (OTHER_ENGINES.index(name) + 1 if name in OTHER_ENGINES else 0, name not in LONG_FIRST)
    items.sort(key=order)
