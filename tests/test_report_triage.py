"""A report on-call can triage in five seconds: failures first with their reasons in the summary, a
failing control's section opening with its failing checks (the passing ones folded, no script), the
run's and each check's duration, the engine and the tools' versions (secret-free), print CSS, a
skipped-live NO-GO that shows no green PASS, and pytest-html's report showing the summary once, with
links that lead somewhere. The same reports are opened in a real browser in test_report_browser.py."""

from __future__ import annotations

import html
import json
import platform
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from report_samples import sample_summary

from stackproof.controls import CONTROLS
from stackproof.report.environment import engine_host
from stackproof.report.render import render_all

STATUS_RANK = {"FAIL": 0, "NOT PROVEN": 1, "PASS": 2}


class _Outline(HTMLParser):
    """The parts of the HTML report a reader meets, in document order."""

    def __init__(self):
        super().__init__()
        self.sections: list[str] = []  # control ids, in order
        self.summary_statuses: list[str] = []
        self.summary_headers: list[str] = []
        self.section_rows: dict[str, list[tuple[str, bool]]] = {}  # control -> [(status, inside <details>)]
        self.hrefs: list[str] = []
        self._in = {"summary": False, "details": 0, "th": False, "status": False}
        self._section = None
        self._row_status_next = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and attrs.get("id") == "summary":
            self._in["summary"] = True
        elif tag == "section" and "control" in (attrs.get("class") or ""):
            self._in["summary"] = False
            self._section = attrs["id"]
            self.sections.append(self._section)
            self.section_rows[self._section] = []
        elif tag == "section":
            self._in["summary"], self._section = False, None
        elif tag == "details":
            self._in["details"] += 1
        elif tag == "th" and self._in["summary"]:
            self._in["th"] = True
        elif tag == "td" and "col-status" in (attrs.get("class") or ""):
            self._in["status"] = True
        elif tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "details":
            self._in["details"] -= 1
        elif tag in ("th", "td"):
            self._in["th"] = self._in["status"] = False

    def handle_data(self, data):
        if self._in["th"] and data.strip():
            self.summary_headers.append(data.strip())
        elif self._in["status"] and data.strip():
            if self._in["summary"]:
                self.summary_statuses.append(data.strip())
            elif self._section:
                self.section_rows[self._section].append((data.strip(), self._in["details"] > 0))


def outline(text: str) -> _Outline:
    parser = _Outline()
    parser.feed(text)
    return parser


def test_failures_come_first_with_their_reasons_in_every_format():
    """FAIL, then NOT PROVEN, then PASS in the summary and the sections (HTML and Markdown alike); the
    summary's reason column names why; a failing section opens with its failing and unproven checks,
    its passing checks folded in <details>; every in-page link has its target."""
    summary = sample_summary("no-go")
    outputs = render_all(summary)
    page = outline(outputs["html"])
    assert page.summary_headers[:3] == ["Control", "Status", "Reason"], page.summary_headers
    ranks = [STATUS_RANK[status] for status in page.summary_statuses]
    assert ranks == sorted(ranks) and ranks[0] == 0 and ranks[-1] == 2, page.summary_statuses
    by_id = {c["id"]: c for c in summary["controls"]}
    assert [STATUS_RANK[by_id[cid]["status"]] for cid in page.sections] == sorted(ranks)
    text = outputs["html"].replace("<wbr>", "")  # break opportunities inside long paths
    for control in summary["controls"]:
        if control["reason"]:
            assert html.escape(control["reason"], quote=False) in text
    failing = page.sections[0]
    rows = page.section_rows[failing]
    assert rows[0] == ("FAIL", False), rows
    open_part = [status for status, folded in rows if not folded]
    assert "PASS" not in open_part and all(folded for status, folded in rows if status == "PASS"), rows
    assert any(folded for _, folded in rows), "the failing control's passing checks are not folded"
    assert "<details open" not in outputs["html"] and "<script" not in outputs["html"]
    assert {href[1:] for href in page.hrefs if href.startswith("#")} <= set(page.sections)

    md_sections = re.findall(r"^## \d+\. (.+): (FAIL|NOT PROVEN|PASS)$", outputs["md"], re.M)
    assert [status for _, status in md_sections] == [by_id[cid]["status"] for cid in page.sections]
    md_summary = re.findall(r"^\| (.+?) \| (FAIL|NOT PROVEN|PASS) \| (.+?) \|", outputs["md"], re.M)
    assert [status for _, status, _ in md_summary] == page.summary_statuses
    assert "| Control | Status | Reason |" in outputs["md"]


def test_styles_wrap_reasons_at_words_print_cleanly_and_allow_no_script():
    """Word-boundary wrapping (overflow-wrap: anywhere and word-break: break-all/break-word shrink a
    column to one character and break words), print rules, a strict CSP; durations and tool versions shown."""
    summary = sample_summary("no-go")
    text = render_all(summary)["html"]
    style = re.search(r"<style>(.*?)</style>", text, re.S).group(1)
    assert not re.search(r"overflow-wrap\s*:\s*anywhere|word-break\s*:\s*break-(all|word)", style)
    assert re.search(r"\.col-reason\{[^}]*min-width:\s*\d+em", style)
    print_css = style[style.index("@media print"):]
    for rule in (r"thead\{display:table-header-group", r"tr[^{]*\{break-inside:avoid",
                 r"section\.control\.attention\{break-before:page"):
        assert re.search(rule, print_css), rule
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert "default-src 'none'" in csp and "script-src" not in csp
    check = summary["controls"][0]["checks"][0]
    assert f"{check['duration_s']:.2f} s" in text and "Duration" in text
    tools = summary["environment"]["tools"]
    assert {"promtool", "openssl", "docker-compose", "python", "pytest", "stackproof"} <= set(tools)
    for name, version in tools.items():
        assert f"<th>{name}</th><td>{html.escape(version)}</td>" in text


@pytest.mark.parametrize("docker_host, shown", [
    ("", "local (default socket)"),
    ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
    ("ssh://oncall@staging.example:2222", "ssh://staging.example:2222"),
    ("ssh://oncall:hunter2pass@staging.example", "ssh://staging.example"),
    ("tcp://oncall:hunter2%40pass@10.0.0.5:2376/hunter2path?token=hunter2tok#frag", "tcp://10.0.0.5:2376"),
    ("ssh://oncall@[2001:db8::1]:22", "ssh://[2001:db8::1]:22"),
    ("oncall:hunter2pass@staging", "DOCKER_HOST (unparsable, not shown)"),
    ("tcp://oncall:hunter2pass@host:notaport", "tcp://host"),
])
def test_engine_host_never_shows_credentials(docker_host, shown):
    """Every place a DOCKER_HOST can carry a secret (user, password, encoded password, query, fragment)."""
    assert engine_host(docker_host) == shown
    assert not re.search("oncall|hunter2", engine_host(docker_host))


def test_skipped_live_no_go_shows_no_green_pass_and_pytest_html_shows_the_summary_once(stack_copy, run_suite,
                                                                                      monkeypatch, tmp_path):
    """A live run without a reachable engine (DOCKER_HOST with credentials, refused): no control whose live
    checks were skipped is PASS, no '100 %', the engine named without its credentials. pytest-html's report
    (--html) shows the verdict and the summary once under its own heading, with pytest-html's status colours,
    links to the report's sections that exist, and the target in its Environment table."""
    monkeypatch.setenv("DOCKER_HOST", "tcp://oncall:hunter2pass@127.0.0.1:9")
    pytest_html = tmp_path / "pytest-html" / "index.html"
    run = run_suite(stack_copy, "--html", str(pytest_html), "--self-contained-html")
    assert run.report is not None and run.failed_gate and run.ret == 1, run.stdout[-3000:]
    controls = run.report["controls"]
    with_live = [c for c in controls if any(row["mode"] == "live" for row in c["checks"])]
    assert len(with_live) >= 6
    for control in with_live:
        assert control["status"] == "NOT PROVEN", (control["id"], control["status"])
        assert "live check not run" in control["reason"]
    report_html = (run.report_dir / "validation-report.html").read_text()
    assert "100 %" not in report_html and "success rate" not in report_html
    assert run.report["environment"]["engine"]["host"] == "tcp://127.0.0.1:9"
    for path in [*run.report_dir.iterdir(), pytest_html]:
        assert "hunter2pass" not in path.read_text(errors="replace"), path

    text = pytest_html.read_text()
    assert text.count('class="stackproof-verdict"') == 1 and text.count('<table class="summary">') == 1
    assert text.count("<h2>Summary</h2>") <= 1
    assert f'<span class="failed"><b>stackproof: {run.report["verdict"]["line"]}</b></span>' in html.unescape(text)
    assert '<span class="skipped">NOT PROVEN</span>' in text
    links = re.findall(r'<a href="([^"]+)"', text[text.index("stackproof-verdict"):])
    assert len(links) == len(CONTROLS) + 1
    for link in links:
        parts = urlsplit(html.unescape(link))
        target = (pytest_html.parent / parts.path).resolve()
        assert target.is_file(), link
        if parts.fragment:
            assert f'id="{parts.fragment}"' in target.read_text(), link
    blob = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', text).group(1)))
    environment = blob["environment"]
    assert environment["stackproof target"] == str(stack_copy.resolve())
    assert environment["stackproof verdict"].startswith("NO-GO")


def test_a_run_and_its_checks_are_timed(reference_stack: Path, run_static):
    """The JSON (and from it every format) carries the run's duration, each control's and each check's,
    and the tools' versions."""
    run = run_static(reference_stack, "-k", "secret_references_declare_mode or secrets_dir_mode")
    assert run.report is not None, run.stdout[-2000:]
    rows = [row for c in run.report["controls"] for row in c["checks"]]
    assert rows and all(row["duration_s"] >= 0 for row in rows)
    assert run.report["run"]["duration_s"] >= sum(row["duration_s"] for row in rows)
    for control in run.report["controls"]:
        assert control["duration_s"] == pytest.approx(sum(row["duration_s"] for row in control["checks"]), abs=0.01)
    assert "| Duration |" in (run.report_dir / "validation-report.md").read_text()
    tools = run.report["environment"]["tools"]  # asked beside the checks (report.py), read at the end
    assert tools["python"] == platform.python_version() and tools["pytest"] == pytest.__version__
    assert {"promtool", "openssl", "docker-compose"} <= set(tools) and not tools.get("error"), tools


def test_the_header_names_what_was_validated_and_every_check_says_what_to_do():
    """The header (HTML and Markdown) names the stack dir, compose project, engine and git commit; every
    check's row shows the check id a waiver names; a check that needs attention shows its severity, its fix,
    where its finding is and a link to its section of the control's page. No jargon reaches the reader."""
    summary = sample_summary("no-go")
    outputs = render_all(summary)
    header = outputs["html"][outputs["html"].index("<header>"):outputs["html"].index("</header>")]
    target = summary["target"]
    for label, value in (("Stack", target["stack_dir"]), ("Compose project", target["compose_project"]),
                         ("Engine", "not reached"), ("Commit", target["git_commit"])):
        assert re.search(rf'<span class="label">{label}</span> {re.escape(value)}', header.replace("<wbr>", "")), label
    md_header = outputs["md"].split("## Summary")[0]
    for value in (target["stack_dir"], target["compose_project"], target["git_commit"]):
        assert f"` {value} `" in md_header, value
    text = outputs["html"].replace("<wbr>", "")
    rows = [row for control in summary["controls"] for row in control["checks"]]
    for row in rows:
        check_id = row["nodeid"].partition("::")[2]
        assert f'<code class="check-id" title="the id a waiver names">{check_id}</code>' in text
        assert f"` {check_id} `" in outputs["md"]
        if row["status"] != "PASS":
            assert html.escape(row["fix"], quote=False) in text and f'<a href="{row["doc"]}">How to fix</a>' in text
            assert f"` {row['fix']} ` [how to fix](<{row['doc']}>)" in outputs["md"]
    located = next(row for row in rows if row["locations"])
    place = located["locations"][0]
    assert f"{place['path']}:{place['line']}" in text and f"` {place['path']}:{place['line']} `" in outputs["md"]
    assert "Validated" not in outputs["md"] and ">Validated<" not in outputs["html"]
    assert "| Proven by |" in outputs["md"] and ">Proven by<" in outputs["html"]
    suites = "".join(path.read_text() for path in (Path(__file__).parent.parent / "suites").glob("test_*.py"))
    assert "judged live by" not in suites
