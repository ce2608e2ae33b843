"""Rendering the report summary (a JSON-able dict) as JSON, Markdown and HTML.

The summary's strings are already cleaned and scrubbed (see redact.Redactor.clean);
every renderer still escapes for its own format, so a value from the stack is always
inert: HTML-escaped in the HTML, a code span in the Markdown (where no link, image,
autolink or HTML is recognised).
"""

from __future__ import annotations

import json
import re
from html import escape

from . import render_trend

STATUS_CLASS = {"PASS": "pass", "FAIL": "fail", "SKIPPED": "skip", "NOT PROVEN": "skip", "BLOCKED": "skip",
                "WAIVED": "waived"}


def check_status(row: dict) -> str:
    """A check's status as shown: a skip caused by an earlier failing check shows as BLOCKED, a waived
    failure as WAIVED."""
    return "BLOCKED" if row.get("blocked") else "WAIVED" if row.get("waived") else row["status"]


def control_status(control: dict) -> str:
    """A control's status as shown: a FAIL whose every failure is waived shows as WAIVED."""
    return "WAIVED" if control.get("waived") else control["status"]


def run_label(summary: dict) -> str:
    run = summary["run"]
    kind = "static + live" if run["live"] else "static"
    return f"{kind} run" + ("" if run["status"] == "COMPLETE" else f", {run['status']}")


def render_all(summary: dict) -> dict[str, str]:
    return {"json": render_json(summary), "md": render_markdown(summary), "html": render_html(summary)}


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


def render_markdown(summary: dict) -> str:
    verdict, totals, target = summary["verdict"], summary["totals"], summary["target"]
    out = [
        "# Validation report",
        "",
        f"**Verdict: {verdict['decision']}**" + (f": {_md(verdict['reason'])}" if verdict["reason"] else ""),
        "",
        *[f"**Target error:** {_md(error)}\n" for error in summary.get("target_errors", [])],
        "| | |",
        "|---|---|",
        f"| Stack | {_md(target['stack_dir'])} |",
        f"| Git commit | {_md(target['git_commit'])} |",
        f"| Compose project | {_md(target['compose_project'])} |",
        f"| Profile | {_md(target['profile'])} |",
        f"| Compose model | {_md(target.get('compose_loader'))} |",
        *_profile_rows_md(summary.get("profile") or {}),
        f"| Date | {summary['generated']} |",
        f"| Suite | stackproof {summary['tool']['version']} ({run_label(summary)}) |",
        "",
        "## Summary",
        "",
        "| Control | Status | Validated | Impact |",
        "|---|---|---|---|",
    ]
    for control in summary["controls"]:
        out.append(f"| {control['title']} | {control_status(control)} | {control['validated']} | {control['impact']} |")
    out += [
        "",
        f"Passed: {totals['passed']}, failed: {totals['failed']}, skipped: {totals['skipped']} "
        f"(blocked: {totals['blocked']}), success rate: {totals['success_rate']} %",
        "",
        *render_trend.markdown_sections(summary, _md),
    ]
    if summary["run"]["status"] != "COMPLETE":
        out[4:4] = [f"**Run {summary['run']['status']}**: {_md(summary['run']['reason'])}", ""]
    for number, control in enumerate(summary["controls"], 1):
        out += [f"## {number}. {control['title']}: {control_status(control)}", ""]
        if control["warning"]:
            out += [f"> Warning: {control['warning']}", ""]
        out += ["| Check | Mode | Test | Result | Expected | Status |", "|---|---|---|---|---|---|"]
        for row in control["checks"]:
            status = check_status(row) + (f": {_md(row['reason'])}" if row["reason"] else "")
            out.append(
                f"| {_md(row['name'])} | {row['mode']} | {_md(row['test'])} | {_md(row['result'])} "
                f"| {_md(row['expected'])} | {status} |"
            )
        out.append("")
    out += [f"**Verdict: {verdict['decision']}**" + (f": {_md(verdict['reason'])}" if verdict["reason"] else ""), ""]
    return "\n".join(out)


# --- HTML -----------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#1d2330;padding:0 1em}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #dde;padding-bottom:.2em}
table{border-collapse:collapse;width:100%;margin:.5em 0} th,td{border:1px solid #dde;padding:.35em .55em;text-align:left;vertical-align:top}
th{background:#f3f5f9} td{word-break:break-word}
.verdict{font-size:1.4em;font-weight:700;padding:.6em 1em;border-radius:6px;margin:1em 0}
.verdict.go{background:#e3f6e8;color:#12632d;border:1px solid #9fd8b0}
.verdict.nogo{background:#fde8e8;color:#8a1c1c;border:1px solid #f0a8a8}
.pass{color:#12632d;font-weight:600} .fail{color:#a11d1d;font-weight:600} .skip{color:#8a6d00;font-weight:600}
.warning{background:#fff8e1;border-left:4px solid #e0b400;padding:.5em .8em}
.reason{color:#a11d1d} .note{color:#555;font-size:.92em} code{font-size:.95em}
""" + render_trend.CSS


def _profile_rows_md(profile: dict) -> list[str]:
    """The profile's changes beside the target: weakened thresholds first, so they cannot go unseen."""
    rows = [f"| Profile weakens | **{_md(line)}** |" for line in profile.get("weakened", [])]
    rows += [f"| Ignored (--strict-profile) | {_md(line)} |" for line in profile.get("ignored", [])]
    rows += [f"| Profile changes | {_md(c['key'])} = {_md(c['value'])} (default {_md(c['default'])}; {_md(c['source'])}) |"
             for c in profile.get("changed", []) if not c["weakened"] and not c["ignored"]]
    if profile.get("error"):
        rows.append(f"| Profile error | {_md(profile['error'])} |")
    return rows


def _profile_rows_html(profile: dict) -> str:
    rows = [f'<tr><th>Profile weakens</th><td class="fail">{_h(line)}</td></tr>' for line in profile.get("weakened", [])]
    rows += [f"<tr><th>Ignored (--strict-profile)</th><td>{_h(line)}</td></tr>" for line in profile.get("ignored", [])]
    rows += [f"<tr><th>Profile changes</th><td>{_h(c['key'])} = {_h(c['value'])} (default {_h(c['default'])}; "
             f"{_h(c['source'])})</td></tr>" for c in profile.get("changed", []) if not c["weakened"] and not c["ignored"]]
    if profile.get("error"):
        rows.append(f'<tr><th>Profile error</th><td class="fail">{_h(profile["error"])}</td></tr>')
    return "".join(rows)


def _h(value: object) -> str:
    return escape("-" if value is None or value == "" else str(value), quote=True)


def _status(status: str) -> str:
    return f'<span class="{STATUS_CLASS.get(status, "skip")}">{_h(status)}</span>'


def render_html(summary: dict) -> str:
    verdict, totals, target = summary["verdict"], summary["totals"], summary["target"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>Validation report: {_h(verdict['decision'])}</title><style>{CSS}</style></head><body>",
        "<h1>Validation report</h1>",
        f'<div class="verdict {"go" if verdict["decision"] == "GO" else "nogo"}">{_h(verdict["line"])}</div>',
        *[f'<p class="reason"><b>Target error:</b> {_h(error)}</p>' for error in summary.get("target_errors", [])],
        "<table>",
        f"<tr><th>Stack</th><td><code>{_h(target['stack_dir'])}</code></td></tr>",
        f"<tr><th>Git commit</th><td><code>{_h(target['git_commit'])}</code></td></tr>",
        f"<tr><th>Compose project</th><td>{_h(target['compose_project'])}</td></tr>",
        f"<tr><th>Profile</th><td>{_h(target['profile'])}</td></tr>",
        f"<tr><th>Compose model</th><td>{_h(target.get('compose_loader'))}</td></tr>",
        _profile_rows_html(summary.get("profile") or {}),
        f"<tr><th>Date</th><td>{_h(summary['generated'])}</td></tr>",
        f"<tr><th>Suite</th><td>stackproof {_h(summary['tool']['version'])} ({_h(run_label(summary))})</td></tr>",
        "</table>",
        summary_table_html(summary),
        f"<p>Passed: <b>{totals['passed']}</b>, failed: <b>{totals['failed']}</b>, "
        f"skipped: <b>{totals['skipped']}</b> (blocked: {totals['blocked']}), success rate: <b>{totals['success_rate']} %</b></p>",
        *render_trend.html_sections(summary, _h),
    ]
    for number, control in enumerate(summary["controls"], 1):
        parts.append(f'<h2 id="{_h(control["id"])}">{number}. {_h(control["title"])}: {_status(control_status(control))}</h2>')
        parts.append(f"<p>{_h(control['impact'])}</p>")
        if control["warning"]:
            parts.append(f'<p class="warning">{_h(control["warning"])}</p>')
        parts.append("<table><tr><th>Check</th><th>Mode</th><th>Test</th><th>Result</th><th>Expected</th><th>Status</th></tr>")
        for row in control["checks"]:
            reason = f'<div class="reason">{_h(row["reason"])}</div>' if row["reason"] else ""
            notes = "".join(f'<div class="note">{_h(note)}</div>' for note in row["notes"])
            parts.append(
                f"<tr><td>{_h(row['name'])}</td><td>{_h(row['mode'])}</td><td><code>{_h(row['test'])}</code></td>"
                f"<td>{_h(row['result'])}{notes}</td><td>{_h(row['expected'])}</td><td>{_status(check_status(row))}{reason}</td></tr>"
            )
        parts.append("</table>")
    parts.append(f'<div class="verdict {"go" if verdict["decision"] == "GO" else "nogo"}">{_h(verdict["line"])}</div>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def summary_table_html(summary: dict) -> str:
    """The control summary table; also shown inside pytest-html's report."""
    rows = "".join(
        f'<tr><td><a href="#{_h(c["id"])}">{_h(c["title"])}</a></td><td>{_status(control_status(c))}</td>'
        f"<td>{_h(c['validated'])}</td><td>{_h(c['impact'])}</td></tr>"
        for c in summary["controls"]
    )
    return (
        "<h2>Summary</h2><table><tr><th>Control</th><th>Status</th><th>Validated</th><th>Impact</th></tr>"
        f"{rows}</table>"
    )
