"""The terminal leads with the answer: on a failing run (a static run: STATIC FAIL) the first lines of substance after pytest's progress
are the controls, the failing one with its reason, then the verdict and the report files; no traceback of
the suite's own code, and a check that broke on it is one line naming it. `-v` or `--tb` bring pytest's
detail back, below the answer."""

from __future__ import annotations

import re

import pytest

from tests import defects

KEY = "ai-stack/compose/secrets/stack_api_key"
# a check that breaks on an exception of the suite's own code (not a finding about the stack)
BREAK_PLUGIN = '''
import pytest
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    if item.name == "test_pool_config_total":
        raise TypeError("a bug in the suite")
'''
PROGRESS = re.compile(r"^(\S+\.py )?[.sFExX]+\s*(\[\s*\d+%\])?$")
HEADER = ("platform ", "rootdir:", "configfile:", "plugins:", "collected ", "cachedir:", "created:", "bringing up",
          "initialized:", "[gw", "metadata:")
TRACEBACK = ("Traceback", "def test_", "    def ", "E   ", "_____", "= FAILURES =", "= ERRORS =", "short test summary")


def substance(stdout: str) -> list[str]:
    """The output without pytest's header and progress lines (not the answer, nor in its way)."""
    lines = []
    for line in stdout.splitlines():
        text = line.strip()
        if not text or PROGRESS.match(text) or text.startswith(HEADER) or re.fullmatch(r"=+ test session starts =+", text):
            continue
        lines.append(text)
    return lines


@pytest.fixture
def no_go(stack_copy):
    """A copy of the reference stack with one defect: the API key readable by the group."""
    defects.chmod(KEY, 0o640)(stack_copy)
    return stack_copy


def test_a_no_go_terminal_starts_with_the_controls_and_shows_no_traceback(no_go, run_static, pytester):
    pytester.makepyfile(break_plugin=BREAK_PLUGIN)
    run = run_static(no_go, "-p", "break_plugin")
    assert run.verdict == "STATIC FAIL" and run.ret == 1
    lines = substance(run.stdout)
    assert re.fullmatch(r"=+ stackproof validation report =+", lines[0]), lines[:5]
    assert lines[1].startswith("FAIL       API key permissions: ") and KEY in lines[1], lines[:5]
    assert lines[3].startswith("FAIL       Connection pool: TypeError: a bug in the suite"), lines[:8]
    broke = [line for line in lines if line.startswith("ERROR ")]
    expected = ("ERROR      suites/test_connection_pool.py::test_pool_config_total broke: TypeError: a bug in the suite "
                "(its row in the report holds the detail; -v or --tb shows the traceback)")
    assert broke == [expected], broke
    verdict = next(number for number, line in enumerate(lines) if line.startswith("STATIC FAIL: "))
    assert lines[verdict - 1] == broke[0] and all(line.startswith("report: ") for line in lines[verdict + 1:verdict + 4]), lines
    assert not [line for line in run.stdout.splitlines() if line.lstrip().startswith(TRACEBACK) or "<Stack object" in line]


@pytest.mark.parametrize("detail", [["-v"], ["--tb=short"]])
def test_detail_on_request_comes_below_the_answer(no_go, run_static, detail):
    run = run_static(no_go, *detail)
    lines = substance(run.stdout)
    answer = next(number for number, line in enumerate(lines) if "stackproof validation report" in line)
    failures = next(number for number, line in enumerate(lines) if "= FAILURES =" in line)
    assert answer < failures and "short test summary info" in run.stdout
    assert any(line.startswith("E ") for line in lines), lines
