"""The report is inert and bounded whatever the stack puts in it."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from harness import without_own_links

from stackproof.redact import MAX_TEXT, Redactor
from stackproof.report.render import render_all
from stackproof.report.collector import TargetInfo, ValidationReport
from stackproof.report.rows import CheckRow

HOSTILE = [
    "<script>alert('x')</script>",
    '"><img src=x onerror=alert(1)>',
    "\x1b[31mred\x1b[0m \x1b]0;title\x07 \x00nul",
    "x" * 1_000_000,
    b"\xff\xfe not utf-8 \xc3\x28".decode("latin-1"),
    "| pipe | `code` [link](javascript:alert(1))",
]
TEMPLATE_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "footer", "section", "h1", "h2", "div",
                 "table", "thead", "tbody", "tr", "th", "td", "code", "p", "span", "b", "a", "details", "summary", "wbr",
                 "label", "input"}  # the severity checkboxes (no form, no script)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs = set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += attrs


def _report(values, redactor=None) -> dict:
    report = ValidationReport(None, Path("/nonexistent"), lambda: TargetInfo(values[0], values[1], values[2], None),
                              redactor or Redactor())
    for number, value in enumerate(values):
        row = CheckRow("alert_rules", f"suites/x.py::t{number}", value, "static", "FAIL",
                       test=value, result=value, expected=value, reason=value, notes=(value,))
        report.rows[row.nodeid] = row
        report.finished.add(row.nodeid)
    return render_all(report.build_summary())


def test_hostile_values_yield_an_inert_bounded_report():
    outputs = _report(HOSTILE)
    html, md = outputs["html"], outputs["md"]
    json.loads(outputs["json"])
    for text in outputs.values():
        assert "\x1b" not in text and "\x00" not in text and "\x07" not in text
        assert len(text) < 20 * (MAX_TEXT + 200) * len(HOSTILE)
        text.encode("utf-8")
    assert "<script" not in html.lower() and "<img" not in html.lower()
    parser = _Tags()
    parser.feed(html)
    assert parser.tags <= TEMPLATE_TAGS, parser.tags - TEMPLATE_TAGS
    assert not [name for name, _ in parser.attrs if name.startswith("on")]
    outside_code = without_own_links(re.sub(r"(`+) .*? \1(?!`)", "", md))  # inside a code span, markup is text
    assert "<script" not in outside_code and "<img" not in outside_code
    assert "[cut: 998000 more characters]" in html


def test_known_secret_is_replaced_by_its_fingerprint():
    secret = "s3cr3t-value-0123456789abcdef"
    redactor = Redactor()
    redactor.add(secret + "\n")
    outputs = _report([f"key={secret}", "b", "c"], redactor)
    for text in outputs.values():
        assert secret not in text
    assert redactor.fingerprint(secret).split()[0] in outputs["json"]


@pytest.mark.parametrize("value", ["", "short"])
def test_redactor_ignores_values_too_short_to_be_secrets(value):
    redactor = Redactor()
    redactor.add(value)
    assert not redactor


MARKDOWN_ATTACKS = ["![x](https://evil.example/x.png)", "[a](https://evil.example)", "<https://evil.example>",
                    "www.evil.example", "<img src=x onerror=alert(1)>", "``` fence `` ticks ` |", "*bold* _em_ # head"]


def test_markdown_neutralises_links_images_autolinks_and_html():
    """Every value from the stack is a code span: nothing outside one is markup it supplied."""
    md = _report(MARKDOWN_ATTACKS)["md"]
    outside_code = without_own_links(re.sub(r"(`+) .*? \1(?!`)", "", md))
    for markup in ("](", "<http", "<img", "www.evil", "*bold*"):
        assert markup not in outside_code, markup
    assert "evil.example" in md


def test_blocked_and_unproven_are_shown_as_such():
    """A skip never counts as a pass: a control with only skips is NOT PROVEN (NO-GO), a blocked skip
    shows as BLOCKED."""
    report = ValidationReport(None, Path("/nonexistent"), lambda: TargetInfo("s", None, None, None), Redactor())
    for number, (kind, reason) in enumerate([("blocked", "blocked by test_pool_size: no pool"),
                                             ("live_only", "live check not run: no engine")]):
        row = CheckRow("connection_pool", f"suites/x.py::t{number}", f"check {number}", "static", "SKIPPED", reason=reason,
                       not_run=kind)
        report.rows[row.nodeid] = row
        report.finished.add(row.nodeid)
    summary = report.build_summary()
    pool = next(c for c in summary["controls"] if c["id"] == "connection_pool")
    assert pool["status"] == "NOT PROVEN" and summary["verdict"]["decision"] == "STATIC FAIL"
    assert summary["totals"]["blocked"] == 1 and [row["blocked"] for row in pool["checks"]] == [True, False]
    outputs = render_all(summary)
    assert re.search(r"\| BLOCKED \| [^|]+ \| ` check 0 ` \| ` t0 ` \| ` blocked by test_pool_size", outputs["md"]), outputs["md"]
    assert '<span class="skip">BLOCKED</span>' in outputs["html"] and "NOT PROVEN" in outputs["html"]
