"""The HTML report checked in a real browser: headless Chromium (Debian's `chromium`, driven by
Playwright through `executable_path`; Playwright's own browser download is not used) opens the GO,
NO-GO and INCOMPLETE reports at 1366x768 and checks, for each: no console error, no request but the
report file itself, the verdict above the fold, reasons wrapped between words, failures first, the
passing checks folded on screen and printed, the print rules in effect (a failing control starts a
page, a passing one follows on, the trend strip is never split) and the PDF's page count. On a phone
(390 px wide) each report fits the screen (no horizontal scrolling), its verdict inside its banner and
its reasons as wide as the screen. A GO the size of a real one (74 checks, a history) prints on at
most MAX_GO_PAGES pages. The severity checkboxes hide and show checks without a script. One browser
serves all. A doctored report (a request out, a script, a column
that breaks words, a page wider than the screen, a verdict that cannot wrap) shows that each detector
can fail.

Screenshots (PNG, full page) and the PDFs are kept in reports/selftest-screenshots/ of the checkout
(gitignored), for CI to publish as artifacts.

Without chromium or Playwright the test is skipped, saying so, except in a full run (`bin/stackproof
selftest`, which installs chromium), where that is a failure (harness.unavailable).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from harness import REPO, require_tool, unavailable
from report_samples import SAMPLES, full_go_summary, sample_summary

from stackproof.report.render import render_html

SCREENSHOTS = REPO / "reports" / "selftest-screenshots"
VIEWPORT = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}  # a phone held upright (CSS pixels)
READABLE_REASON_PX = 200  # the narrowest a reason column may be at 1366 px
PHONE_READABLE_REASON_PX = 300  # ... and on a phone, where a reason gets the screen's width
MAX_GO_PAGES = 6  # A4 landscape: a GO the size of a real one (issue 16: it printed on 16)
PAGES_PER_ATTENTION_CONTROL = 2  # a failing or unproven control starts a page and may take one more
WORD = re.compile(r"\b[A-Za-z]{2,}\b")  # a plain word: never split across lines (paths and URLs may break)

# Per reason cell: the plain words the browser split across two lines (a word's range has two boxes).
SPLIT_WORDS_JS = """(pattern) => {
  const word = new RegExp(pattern, "g"), split = [];
  for (const cell of document.querySelectorAll("td.col-reason")) {
    if (!cell.getClientRects().length) continue;  // folded: not laid out
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const m of node.data.matchAll(word)) {
        const range = document.createRange();
        range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
        const lines = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
        if (lines.size > 1) split.push(m[0]);
      }
    }
  }
  return split;
}"""
PAGE_WIDTH_JS = "() => document.documentElement.scrollWidth"
VERDICT_FITS_JS = """() => { const v = document.querySelector("#verdict"); return v.scrollWidth <= v.clientWidth; }"""
# the width of every reason cell that is laid out (folded ones are not)
REASON_WIDTHS_JS = """() => [...document.querySelectorAll("td.col-reason")]
  .filter(cell => cell.getClientRects().length).map(cell => cell.getBoundingClientRect().width)"""
PRINT_RULES_JS = """() => {
  const style = (selector) => { const e = document.querySelector(selector); return e && getComputedStyle(e); };
  const attention = style("section.control.attention"), passing = style("section.control:not(.attention)");
  const trend = style("#trend");
  return {
    thead: style("table.checks thead").display,
    row: style("table.checks tbody tr").breakInside,
    failing_section: attention ? attention.breakBefore : "page",
    passing_section: passing ? passing.breakBefore : "auto",
    trend: trend ? trend.breakInside : "avoid",
    folded_row_shown: document.querySelector("details.passing tbody tr").getClientRects().length > 0,
    folded_row_one_line: document.querySelector("details.passing tbody td.col-evidence").getClientRects().length == 1,
  };
}"""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright not installed (the [test] extra: bin/stackproof installs it into .venv)")
    executable = chromium_path() or require_tool("chromium", "Debian package 'chromium': bin/stackproof selftest installs it")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


class Visit:
    """One report opened in a fresh page: what it logged and requested."""

    def __init__(self, browser, path: Path, viewport: dict = VIEWPORT):
        self.url = path.as_uri()
        self.context = browser.new_context(viewport=viewport)
        self.context.set_default_timeout(30_000)
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: request.url != self.url and self.outside.append(request.url))
        self.page.goto(self.url, wait_until="load")

    def _route(self, route) -> None:
        if route.request.url == self.url:
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def close(self) -> None:
        self.context.close()


def write_report(summary: dict, directory: Path, extra: tuple[str, str] | None = None) -> Path:
    text = render_html(summary)
    if extra:
        text = text.replace(*extra)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "validation-report.html"
    path.write_text(text, encoding="utf-8")
    return path


def pdf_pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf))


def print_pdf(page, name: str) -> tuple[dict, int]:
    """The report printed as A4 landscape (kept as `name`.pdf): the print rules in effect, and its page count."""
    page.emulate_media(media="print")
    rules = page.evaluate(PRINT_RULES_JS)
    pdf = page.pdf(format="A4", landscape=True, print_background=True)
    (SCREENSHOTS / f"{name}.pdf").write_bytes(pdf)
    assert pdf.startswith(b"%PDF-"), name
    return rules, pdf_pages(pdf)


PRINT_RULES = {"thead": "table-header-group", "row": "avoid", "failing_section": "page", "passing_section": "auto",
               "trend": "avoid", "folded_row_shown": True, "folded_row_one_line": True}


def test_reports_open_cleanly_read_at_a_glance_and_print(browser, tmp_path):
    """GO, NO-GO and INCOMPLETE: no console error, no request but the file, the verdict within the first
    1366x768 screen, reasons wrapped between words in a readable column, failures first, passing checks
    folded (and printed), print rules in effect, a PDF with a page per control; a screenshot of each."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for kind in SAMPLES:
        summary = sample_summary(kind)
        visit = Visit(browser, write_report(summary, tmp_path / kind))
        page = visit.page
        try:
            assert visit.errors == [], (kind, visit.errors)
            assert visit.outside == [], (kind, visit.outside)

            verdict = page.locator("#verdict")
            assert verdict.inner_text().strip() == summary["verdict"]["line"], kind
            box = verdict.bounding_box()
            assert box and box["x"] >= 0 and box["y"] >= 0, (kind, box)
            assert box["x"] + box["width"] <= VIEWPORT["width"] and box["y"] + box["height"] <= VIEWPORT["height"], (kind, box)

            assert page.evaluate(SPLIT_WORDS_JS, WORD.pattern) == [], kind
            assert page.evaluate(PAGE_WIDTH_JS) <= VIEWPORT["width"], (kind, "wider than the screen")
            assert min(page.evaluate(REASON_WIDTHS_JS), default=READABLE_REASON_PX) >= READABLE_REASON_PX, kind

            statuses = page.locator("table.summary td.col-status").all_inner_texts()
            ranks = [{"FAIL": 0, "NOT PROVEN": 1, "PASS": 2}[status.strip()] for status in statuses]
            assert ranks == sorted(ranks), (kind, statuses)
            first_section = page.locator("section.control h2").first.inner_text()
            assert first_section.endswith(statuses[0].strip()), (kind, first_section)
            assert not page.locator("details.passing tbody tr").first.is_visible(), kind  # folded on screen

            page.screenshot(path=str(SCREENSHOTS / f"{kind}.png"), full_page=True)

            rules, pages = print_pdf(page, kind)
            assert rules == PRINT_RULES, (kind, rules)
            attention = sum(c["status"] not in ("PASS", "LIVE ONLY") for c in summary["controls"])
            assert 1 <= pages <= MAX_GO_PAGES + PAGES_PER_ATTENTION_CONTROL * attention, (kind, pages)
        finally:
            visit.close()
    assert {p.name for p in SCREENSHOTS.glob("*.png")} >= {f"{kind}.png" for kind in SAMPLES}


def test_reports_fit_a_phone(browser, tmp_path):
    """At 390 px: the page is no wider than the screen, the verdict wraps inside its banner, every reason cell
    is nearly the screen's width and no word in it is split; a screenshot of each (`<kind>-phone.png`)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for kind in SAMPLES:
        summary = sample_summary(kind)
        visit = Visit(browser, write_report(summary, tmp_path / kind), PHONE)
        page = visit.page
        try:
            assert page.evaluate(PAGE_WIDTH_JS) <= PHONE["width"], (kind, page.evaluate(PAGE_WIDTH_JS))
            box = page.locator("#verdict").bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (kind, box)
            assert page.evaluate(VERDICT_FITS_JS), (kind, "the verdict runs out of its banner")
            widths = page.evaluate(REASON_WIDTHS_JS)
            assert widths or kind == "go", kind
            assert min(widths, default=PHONE_READABLE_REASON_PX) >= PHONE_READABLE_REASON_PX, (kind, widths)
            assert page.evaluate(SPLIT_WORDS_JS, WORD.pattern) == [], kind
            page.screenshot(path=str(SCREENSHOTS / f"{kind}-phone.png"), full_page=True)
        finally:
            visit.close()


def test_a_real_sized_go_prints_on_a_few_pages(browser, tmp_path):
    """A GO with a real run's 74 checks and a history prints on at most MAX_GO_PAGES A4 pages: passing controls
    follow on one another, their checks one line each, the trend strip in one piece (`go-full.pdf`)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    summary = full_go_summary(tmp_path)
    visit = Visit(browser, write_report(summary, tmp_path / "go-full"))
    try:
        assert visit.page.locator("#trend").count() == 1
        rules, pages = print_pdf(visit.page, "go-full")
        assert rules == PRINT_RULES, rules
        assert 1 <= pages <= MAX_GO_PAGES, pages
    finally:
        visit.close()


def test_the_browser_checks_can_fail(browser, tmp_path):
    """A report doctored (the CSP removed, a stylesheet from elsewhere and a script added, the reason
    column squeezed to break words, the page made wider than the screen, the verdict kept on one line): each
    detector reports it, at 1366 px and on a phone."""
    summary = sample_summary("no-go")
    csp = re.search(r'<meta http-equiv="Content-Security-Policy"[^>]*>', render_html(summary)).group(0)
    doctored = ('<link rel="stylesheet" href="http://127.0.0.1:9/x.css"><script>undefined_function()</script>'
                "<style>.col-reason{min-width:0 !important;width:3em !important;overflow-wrap:anywhere}"
                ".verdict{white-space:nowrap !important}</style>"
                '</head><body><div style="width:2000px">a page wider than the screen</div>')
    path = write_report(summary, tmp_path / "doctored", (csp, ""))
    path.write_text(path.read_text().replace("</head>\n<body>", doctored, 1))
    visit = Visit(browser, path)
    try:
        assert any("undefined_function" in error for error in visit.errors), visit.errors
        assert "http://127.0.0.1:9/x.css" in visit.outside, visit.outside
        assert visit.page.evaluate(SPLIT_WORDS_JS, WORD.pattern), "no split word found in a 3em column"
        assert visit.page.evaluate(PAGE_WIDTH_JS) > VIEWPORT["width"]
    finally:
        visit.close()
    phone = Visit(browser, path, PHONE)
    try:
        assert phone.page.evaluate(PAGE_WIDTH_JS) > PHONE["width"]
        assert not phone.page.evaluate(VERDICT_FITS_JS), "a verdict that cannot wrap was not found"
        assert min(phone.page.evaluate(REASON_WIDTHS_JS)) < PHONE_READABLE_REASON_PX
    finally:
        phone.close()


def test_checks_filter_by_severity_without_script(browser, tmp_path):
    """Unticking a severity hides the checks of that severity (and only those); ticking it shows them again."""
    visit = Visit(browser, write_report(sample_summary("no-go"), tmp_path / "filter"))
    page = visit.page
    try:
        critical, high = page.locator("section.control tr.sev-critical").first, page.locator("section.control tr.sev-high").first
        assert critical.is_visible() and high.is_visible()
        page.locator("#show-critical").uncheck()
        assert not critical.is_visible() and high.is_visible()
        page.locator("#show-critical").check()
        assert critical.is_visible()
        assert visit.errors == []
    finally:
        visit.close()
