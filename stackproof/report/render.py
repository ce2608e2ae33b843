"""Rendering the report summary (a JSON-able dict) as JSON, Markdown and HTML.

The summary's strings are already cleaned and scrubbed (see redact.Redactor.clean);
every renderer still escapes for its own format, so a value from the stack is always
inert: HTML-escaped in the HTML, a code span in the Markdown (where no link, image,
autolink or HTML is recognised).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from stackproof.controls import Severity
from stackproof.report import render_trend, sarif
from stackproof.report.outcome import Decision, Status, check_status, control_status
from stackproof.report.waivers import check_id

CONTROL_ORDER = {Status.FAIL: 0, Status.NOT_PROVEN: 1, Status.SKIPPED: 1, Status.WAIVED: 2, Status.LIVE_ONLY: 3,
                 Status.PASS: 4}
CHECK_ORDER = {Status.FAIL: 0, Status.SKIPPED: 1, Status.BLOCKED: 2, Status.WAIVED: 3, Status.PASS: 4}


def triage_order(controls: list[dict]) -> list[dict]:
    """Failures first: FAIL, then NOT PROVEN, then WAIVED, then PASS (the controls' own order within
    each); in each control its failing checks, then the skipped, blocked and waived ones, then the
    passing ones."""
    ordered = sorted(controls, key=lambda c: CONTROL_ORDER.get(control_status(c), 1))
    return [{**c, "checks": sorted(c["checks"], key=lambda row: CHECK_ORDER.get(check_status(row), 1))} for c in ordered]


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.01:
        return "<0.01 s"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def check_counts(rows: list[dict]) -> str:
    """'3 passed, 1 failed, 2 not run': what a control's checks did."""
    passed = sum(row["status"] == Status.PASS for row in rows)
    failed = sum(row["status"] == Status.FAIL for row in rows)
    skipped = len(rows) - passed - failed
    parts = [f"{passed} passed"] + ([f"{failed} failed"] if failed else []) + ([f"{skipped} not run"] if skipped else [])
    return ", ".join(parts)


def totals_line(totals: dict) -> str:
    """The checks' totals. No success rate: out of the checks that ran it reads 100 % on a run whose
    live checks were all skipped; what matters is how many of the checks proved something."""
    return (f"{totals['passed']} of {totals['total']} checks passed, {totals['failed']} failed, "
            f"{totals['skipped']} not run ({totals.get('blocked', 0)} blocked by a failure).")


def run_line(summary: dict) -> str:
    run = summary["run"]
    parts = [run_label(summary), f"{summary['totals']['total']} checks"]
    if run.get("duration_s") is not None:
        parts.append(f"in {format_duration(run['duration_s'])}")
    return " · ".join([" ".join(parts[:1]), " ".join(parts[1:]), summary["generated"]])


def run_label(summary: dict) -> str:
    run = summary["run"]
    kind = "static + live" if run["live"] else "static"
    return f"{kind} run" + ("" if run["status"] == "COMPLETE" else f", {run['status']}")


PROVEN_BY = {"both": "static and live checks", "static": "static checks", "live": "live checks"}


def proven_by(validated: str) -> str:
    """A control's `validated` (both, static, live, -) in plain words."""
    return PROVEN_BY.get(validated, "not proven")


def target_facts(summary: dict) -> list[tuple[str, str]]:
    """What was validated, for the report's header: the stack dir, the compose project, the engine and the git
    commit (each named, "-" when unknown)."""
    target = summary["target"]
    engine = (summary.get("environment") or {}).get("engine") or {}
    kind = engine.get("kind") or summary["run"].get("engine")
    engine_text = f"{kind} ({engine['host']})" if kind and engine.get("host") else kind or "none reached (static run)"
    if summary["run"]["live"] and not kind:
        engine_text = "not reached"
    return [("Stack", target.get("stack_dir") or "-"), ("Compose project", target.get("compose_project") or "-"),
            ("Engine", engine_text), ("Commit", target.get("git_commit") or "not a git checkout")]


def render_all(summary: dict) -> dict[str, str]:
    return {"json": render_json(summary), "md": render_markdown(summary), "html": render_html(summary),
            "sarif": sarif.render_sarif(summary)}


def render_json(summary: dict) -> str:
    return json.dumps(summary, indent=2, ensure_ascii=True) + "\n"


# --- Markdown -------------------------------------------------------------------


def _md(value: object) -> str:
    """A value from the stack as a Markdown code span: no link, image, autolink, HTML or emphasis is
    recognised inside one. The fence is longer than any run of backticks in the value; pipes are
    escaped for the table cell."""
    text = " ".join(str(value if value is not None else "").split())
    if not text:
        return "-"
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text.replace('|', chr(92) + '|')} {fence}"


def _environment_rows_md(environment: dict | None) -> list[str]:
    if not environment:
        return []
    engine = environment["engine"]
    version = f", {_md(engine['version'])}" if engine.get("version") else ""
    rows = [f"| Engine | {engine.get('kind') or 'not used (no live check reached one)'}{version}; {_md(engine['host'])} |"]
    return rows + [f"| {name} | {_md(version)} |" for name, version in environment["tools"].items()]


def _profile_rows_md(profile: dict) -> list[str]:
    """The profile's changes beside the target: weakened thresholds first, so they cannot go unseen."""
    rows = [f"| Profile weakens | **{_md(line)}** |" for line in profile.get("weakened", [])]
    rows += [f"| Ignored (--strict-profile) | {_md(line)} |" for line in profile.get("ignored", [])]
    # a threshold's default is the bar it moves; an interface's (a path, a name, a call) is the reference
    # stack's, which says nothing about this stack: only where the value comes from is shown
    rows += [f"| Profile changes | {_md(c['key'])} = {_md(c['value'])} "
             f"({'default ' + _md(c['default']) + '; ' if c.get('threshold', True) else ''}{_md(c['source'])}) |"
             for c in profile.get("changed", []) if not c["weakened"] and not c["ignored"]]
    if profile.get("error"):
        rows.append(f"| Profile error | {_md(profile['error'])} |")
    return rows


def _md_link(text: str, url: str | None) -> str:
    """A Markdown link to one of the suite's own URLs (the controls' pages), or nothing for a URL that would not
    stay one link (whitespace, angle brackets)."""
    if not url or any(char.isspace() or char in "<>" for char in url):
        return ""
    return f"[{text}](<{url}>)"


def _location_md(place: dict) -> str:
    line = f":{place['line']}" if place.get("line") else ""
    return _md(f"{place['path']}{line}") + (f" ({_md(place['key'])})" if place.get("key") else "")


def _what_to_do_md(row: dict) -> str:
    """A check's fix, its doc link and where its finding is; nothing for a passing check."""
    if check_status(row) == Status.PASS:
        return "-"
    where = "; ".join(_location_md(place) for place in row.get("locations", []))
    parts = [_md(row["fix"]) if row.get("fix") else "", _md_link("how to fix", row.get("doc")),
             f"where: {where}" if where else ""]
    return " ".join(part for part in parts if part) or "-"


def render_markdown(summary: dict) -> str:
    verdict, totals, target = summary["verdict"], summary["totals"], summary["target"]
    out = [
        "# Validation report",
        "",
        f"**Verdict: {verdict['decision']}**" + (f": {_md(verdict['reason'])}" if verdict["reason"] else ""),
        "",
        " · ".join(f"{label}: {_md(value)}" for label, value in target_facts(summary)),
        "",
        *[f"**Target error:** {_md(error)}\n" for error in summary.get("target_errors", [])],
        "| | |",
        "|---|---|",
        f"| Stack | {_md(target['stack_dir'])} |",
        f"| Git commit | {_md(target['git_commit'])} |",
        f"| Compose project | {_md(target['compose_project'])} |",
        f"| Profile | {_md(target['profile'])} |",
        f"| Compose model | {_md(target.get('compose_loader'))} |",
        f"| Compose files | {_md(', '.join(target.get('compose_files') or []))} |",
        *_profile_rows_md(summary.get("profile") or {}),
        f"| Date | {summary['generated']} |",
        f"| Duration | {format_duration(summary['run'].get('duration_s'))} |",
        f"| Suite | stackproof {summary['tool']['version']} ({run_label(summary)}) |",
        *_environment_rows_md(summary.get("environment")),
        "",
        "## Summary",
        "",
        "| Control | Status | Reason | Checks | Proven by | Time |",
        "|---|---|---|---|---|---|",
    ]
    controls = triage_order(summary["controls"])
    for control in controls:
        out.append(f"| {control['title']} | {control_status(control)} | {_md(control['reason'])} | {check_counts(control['checks'])} "
                   f"| {proven_by(control['validated'])} | {format_duration(control.get('duration_s'))} |")
    out += ["", totals_line(totals), "", *render_trend.markdown_sections(summary, _md)]
    if summary["run"]["status"] != "COMPLETE":
        out[4:4] = [f"**Run {summary['run']['status']}**: {_md(summary['run']['reason'])}", ""]
    for number, control in enumerate(controls, 1):
        out += [f"## {number}. {control['title']}: {control_status(control)}", ""]
        doc = _md_link("What this control protects and how to fix it", control.get("doc"))
        out += [f"{control['impact']}" + (f" {doc}" if doc else ""), ""]
        if control["warning"]:
            out += [f"> Warning: {control['warning']}", ""]
        out += ["| Status | Severity | Check | Check id | Reason | What to do | Result | Expected | Test | Mode | Time |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in control["checks"]:
            out.append(
                f"| {check_status(row)} | {row.get('severity') or '-'} | {_md(row['name'])} | {_md(check_id(row['nodeid']))} "
                f"| {_md(row['reason'])} | {_what_to_do_md(row)} | {_md(row['result'])} "
                f"| {_md(row['expected'])} | {_md(row['test'])} | {row['mode']} | {format_duration(row.get('duration_s'))} |"
            )
        out.append("")
    out += [f"**Verdict: {verdict['decision']}**" + (f": {_md(verdict['reason'])}" if verdict["reason"] else ""), ""]
    return "\n".join(out)


# --- HTML -----------------------------------------------------------------------

HTML_CLASSES = {Status.PASS: "pass", Status.FAIL: "fail", Status.SKIPPED: "skip", Status.NOT_PROVEN: "skip",
                Status.BLOCKED: "skip", Status.WAIVED: "waived", Status.LIVE_ONLY: "skip"}
PYTEST_HTML_CLASSES = {Status.PASS: "passed", Status.FAIL: "failed", Status.SKIPPED: "skipped",
                       Status.NOT_PROVEN: "skipped", Status.BLOCKED: "skipped", Status.WAIVED: "xfailed",
                       Status.LIVE_ONLY: "skipped"}
VERDICT_CLASSES = {Decision.GO: "go", Decision.STATIC_PASS: "static"}  # any other decision: nogo


def _h(value: object) -> str:
    """A value as HTML text ("-" when empty), for the sections render_trend.py builds."""
    return str(markupsafe.escape("-" if value is None or value == "" else str(value)))


LONG_TOKEN = 28  # characters: a longer token (a path, a URL, a digest) gets break opportunities
TOKEN_SEPARATORS = re.compile(r"(?<=[/\\,;:=&?@|.-])")  # a long token may break after these
WHITESPACE = re.compile(r"(\s+)")


def breakable(value: object) -> markupsafe.Markup:
    """The value, HTML-escaped, with a `<wbr>` (a line-break opportunity) inside each long token: after
    its separators (a path's slashes), and every LONG_TOKEN characters of a run without one. Words keep
    breaking only between words (CSS: normal wrapping), and a long path still fits its column instead
    of widening the table past the page (which `overflow-wrap: break-word` alone cannot prevent: a table
    sizes a column by its longest unbreakable token). Hand-written: no library does this for HTML."""
    text = "-" if value is None or value == "" else str(value)
    out = []
    for token in WHITESPACE.split(text):
        if len(token) <= LONG_TOKEN:
            out.append(markupsafe.escape(token))
            continue
        pieces = [piece[i:i + LONG_TOKEN] for piece in TOKEN_SEPARATORS.split(token) if piece
                  for i in range(0, len(piece), LONG_TOKEN)]
        out.append(markupsafe.Markup("<wbr>").join(markupsafe.escape(piece) for piece in pieces))
    return markupsafe.Markup("").join(out)


@functools.cache
def _templates() -> jinja2.Environment:
    """The HTML templates (stackproof/report/templates), autoescaped: every value from the stack is inert."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(duration=format_duration, counts=check_counts, check_status=check_status,
                       control_status=control_status, breakable=breakable, proven_by=proven_by, check_id=check_id)
    return env


def render_html(summary: dict) -> str:
    context = {
        **summary,
        "profile": {"weakened": [], "ignored": [], "changed": [], "error": None, **(summary.get("profile") or {})},
        "session_errors": summary.get("session_errors", []),
        "environment": summary.get("environment"),
        "target": {"compose_loader": None, "compose_files": [], **summary["target"]},
        "controls": triage_order(summary["controls"]),
        "status_class": HTML_CLASSES,
        "verdict_classes": VERDICT_CLASSES,
        "run_line": run_line(summary),
        "target_facts": target_facts(summary),
        "severities": [str(severity) for severity in Severity],
        "run_label": run_label(summary),
        "totals_line": totals_line(summary["totals"]),
        "sections_css": markupsafe.Markup(render_trend.CSS),  # render_trend.py's sections: escaped there
        "history_and_waivers": markupsafe.Markup("\n".join(render_trend.html_sections(summary, _h))),
    }
    return _templates().get_template("report.html.j2").render(context) + "\n"


def summary_table_html(summary: dict, link: str) -> str:
    """The control summary table inside pytest-html's report: its own status colours, each control
    linking to its section in the report file (`link`: that file's URL, relative to pytest-html's)."""
    macros: Any = _templates().get_template("macros.html.j2").module  # its macros are attributes made at render time
    return str(macros.summary_table(triage_order(summary["controls"]), PYTEST_HTML_CLASSES, link + "#"))
