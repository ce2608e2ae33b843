"""Every check says what to do when it fails: a severity and a fix text (its `remediation` marker) and a
section on its control's page, docs/controls/<control>.md, saying why it matters, when it fails and how to
fix it. A check added without them fails here, naming it; a section whose check is gone does too. The
links the reports carry lead to those sections."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from harness import PRISTINE_STACK, SUITES

from stackproof.controls import CONTROLS, check_anchor, default_docs_base, doc_url, remedy_of
from stackproof.report.rows import control_of

DOCS = SUITES.parent / "docs/controls"
SECTION = re.compile(r"^### `(test_\w+)`\n(.*?)(?=^### |\Z)", re.M | re.S)
PARTS = ("**Why:**", "**Fails when:**", "**Fix:**")
MIN_FIX = 20  # characters: a fix says what to change, not "fix it"


def sections(control: str) -> dict[str, str]:
    """The check sections of a control's page: function name -> its text."""
    page = DOCS / f"{control}.md"
    return {name: body for name, body in SECTION.findall(page.read_text())} if page.is_file() else {}


def missing_remedies(items: list[pytest.Item]) -> list[str]:
    """The checks whose remediation marker is missing or says too little (one line each)."""
    problems = []
    for item in items:
        remedy = remedy_of(item)
        if remedy is None:
            problems.append(f"{item.nodeid}: no @pytest.mark.remediation(severity, fix)")
        elif len(remedy.fix) < MIN_FIX:
            problems.append(f"{item.nodeid}: fix text too short: {remedy.fix!r}")
    return problems


def missing_sections(items: list[pytest.Item]) -> list[str]:
    """The checks without a complete section on their control's page (one line each)."""
    problems = []
    for item in items:
        control, name = control_of(item), check_anchor(item.nodeid)
        body = sections(control or "").get(name)
        if body is None:
            problems.append(f"{item.nodeid}: no section ### `{name}` in docs/controls/{control}.md")
        elif not all(part in body for part in PARTS):
            problems.append(f"{item.nodeid}: its section lacks one of {', '.join(PARTS)}")
    return problems


def collect(pytester: pytest.Pytester, *paths: Path) -> list[pytest.Item]:
    """The checks at `paths` as pytest collects them against the reference stack (those that change the stack
    included), in-process."""
    items, _ = pytester.inline_genitems(*map(str, paths), "--stack-dir", str(PRISTINE_STACK), "--allow-changes",
                                        "--no-history", "--report-dir", str(pytester.path / "reports"))
    return [item for item in items if control_of(item)]


def test_every_check_says_what_to_do_and_links_to_its_section(pytester):
    """Each check of suites/ has a severity, a fix text and a complete section on its control's page, and the
    URL the reports give it leads to that page and section; no section describes a check that is gone."""
    checks = collect(pytester, SUITES)
    assert len(checks) > 40, len(checks)
    assert missing_remedies(checks) == []
    assert missing_sections(checks) == []
    for item in checks:
        url = urlsplit(doc_url(default_docs_base(), control_of(item), item.nodeid))
        assert Path(unquote(url.path)).is_file() and url.fragment in sections(control_of(item)), url
    names = {check_anchor(item.nodeid) for item in checks}
    for control in CONTROLS:
        assert (DOCS / f"{control.id}.md").is_file(), control.id
        assert set(sections(control.id)) <= names, f"{control.id}.md describes a check that is gone"


NEW_CHECK = '''import pytest

pytestmark = pytest.mark.control("docker_secrets_mode")


@pytest.mark.static
def test_brand_new_check():
    pass
'''


def test_a_check_without_its_fix_or_section_is_named(pytester):
    """The detectors are real: a new check with no remediation marker and no section is reported by both."""
    suite = pytester.path / "test_docker_secrets_mode.py"  # a suite file of an existing control, outside suites/
    suite.write_text(NEW_CHECK)
    (new,) = collect(pytester, suite)
    assert missing_remedies([new]) == [f"{new.nodeid}: no @pytest.mark.remediation(severity, fix)"]
    assert missing_sections([new]) == [
        f"{new.nodeid}: no section ### `test_brand_new_check` in docs/controls/docker_secrets_mode.md"]
