"""The report is inert and bounded whatever the stack puts in it."""

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from stackproof.redact import MAX_TEXT, Redactor, fingerprint
from stackproof.render import render_all
from stackproof.report import CheckRow, TargetInfo, ValidationReport

HOSTILE = [
    "<script>alert('x')</script>",
    '"><img src=x onerror=alert(1)>',
    "\x1b[31mred\x1b[0m \x1b]0;title\x07 \x00nul",
    "x" * 1_000_000,
    b"\xff\xfe not utf-8 \xc3\x28".decode("latin-1"),
    "| pipe | `code` [link](javascript:alert(1))",
]
TEMPLATE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "div", "table", "tr", "th", "td",
                 "code", "p", "span", "b", "a"}


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
    assert "<script" not in md and "<img" not in md
    assert "[cut: 998000 more characters]" in html


def test_known_secret_is_replaced_by_its_fingerprint():
    secret = "s3cr3t-value-0123456789abcdef"
    redactor = Redactor()
    redactor.add(secret + "\n")
    outputs = _report([f"key={secret}", "b", "c"], redactor)
    for text in outputs.values():
        assert secret not in text
    assert fingerprint(secret).split()[0] in outputs["json"]


@pytest.mark.parametrize("value", ["", "short"])
def test_redactor_ignores_values_too_short_to_be_secrets(value):
    redactor = Redactor()
    redactor.add(value)
    assert not redactor
