"""The report's history and waiver sections, in Markdown and HTML (the summary's `history` and `waivers`).

Kept apart from render.py's layout: render.py places these sections after the totals and passes its
escapers (`code`: a value as an inert Markdown code span; `escape`: HTML-escaped), so this module does
not import it. The strip of each
control's status across the last runs is text in Markdown (one symbol per run) and a row of coloured
cells in HTML, each cell carrying its symbol and a title (time, commit, status): no script, so the
report's CSP stays `default-src 'none'`.
"""

from __future__ import annotations

from stackproof.report.outcome import Status


SYMBOL = {Status.PASS: "✓", Status.FAIL: "✗", Status.WAIVED: "~", Status.NOT_PROVEN: "?", Status.SKIPPED: "?",
          Status.LIVE_ONLY: "-", None: "·"}
CELL_CLASS = {Status.PASS: "pass", Status.FAIL: "fail", Status.WAIVED: "waived", Status.NOT_PROVEN: "skip",
              Status.SKIPPED: "skip", Status.LIVE_ONLY: "skip", None: "none"}
LEGEND = "✓ pass, ✗ fail, ~ waived, ? not proven, · not in that run"
STATE_TEXT = {"applied": "applied", "expired": "EXPIRED", "unused": "unused (its checks passed)",
              "unmatched": "UNMATCHED (no check of this run)"}

CSS = """
.waived{color:#8a5a00;font-weight:600}
.cells{white-space:nowrap} .cell{display:inline-block;width:1.1em;margin-right:1px;text-align:center;border-radius:2px;
font-size:.8em;line-height:1.5em;color:#fff;-webkit-print-color-adjust:exact;print-color-adjust:exact}
.cell.pass{background:#2e8b4e} .cell.fail{background:#c13535} .cell.waived{background:#b07800}
.cell.skip{background:#8c8c8c} .cell.none{background:#e4e6ea;color:#777}
"""


def _since_words(history: dict) -> str:
    previous = history["previous"]
    if previous["source"] == "baseline":
        return "the baseline"
    return "the last run"


def _compared_with(history: dict, escape) -> str:
    """What the run is compared with; `escape` makes each value inert for the format."""
    previous = history["previous"]
    what = "baseline report" if previous["source"] == "baseline" else "previous run of this target"
    commit = f", commit {escape(previous['commit'])}" if previous.get("commit") else ""
    verdict = f", {escape(previous['verdict'])}" if previous.get("verdict") else ""
    return f"the {what} ({escape(previous['time'])}{commit}{verdict})"


def _titles(summary: dict) -> dict[str, str]:
    return {control["id"]: control["title"] for control in summary["controls"]}


def _change_lists(history: dict) -> list[tuple[str, list[dict], str]]:
    since = _since_words(history)
    return [
        (f"New failures since {since}", history["new_failures"], ""),
        (f"Fixed since {since}", history["fixed"], ""),
        ("Still failing", history["still_failing"], "since"),
        (f"Flapping (pass/fail changed at least twice in the last {len(history['runs'])} runs)",
         history["flapping"], "changes"),
    ]


# --- Markdown -------------------------------------------------------------------


def markdown_sections(summary: dict, code) -> list[str]:
    return [*_history_md(summary.get("history"), code), *_trend_md(summary), *_waivers_md(summary.get("waivers"), code)]


def _history_md(history: dict | None, code) -> list[str]:
    if not history:
        return []
    out = ["## Since the last run", ""]
    if history["previous"] is None:
        out += ["No earlier run of this target in the history.", ""]
    else:
        out += [f"Compared with {_compared_with(history, code)}.", ""]
        for title, checks, extra in _change_lists(history):
            if not checks:
                continue
            out.append(f"**{title}** ({len(checks)}):")
            out.append("")
            for check in checks:
                detail = (f", failing since {code(check['since'])}" if extra == "since" and check["since"] else
                          f", {check['changes']} changes" if extra == "changes" else "")
                out.append(f"- {code(check['name'])} ({code(check['nodeid'])}){detail}")
            out.append("")
        if not any(checks for _, checks, _ in _change_lists(history)):
            out += ["No check changed.", ""]
    out += [f"_{code(note)}_\n" for note in history.get("notes", [])]
    return out


def _trend_md(summary: dict) -> list[str]:
    history = summary.get("history")
    if not history:
        return []
    titles = _titles(summary)
    out = [f"## Trend (last {len(history['runs'])} run(s), oldest first)", "", f"{LEGEND}", "",
           "| Control | Runs |", "|---|---|"]
    for line in history["trend"]:
        strip = "".join(SYMBOL.get(status, "?") for status in line["statuses"])
        out.append(f"| {titles.get(line['control'], line['control'])} | {strip} |")
    return [*out, ""]


def _waivers_md(waivers: dict | None, code) -> list[str]:
    if not waivers or not (waivers.get("file") or waivers.get("error")):
        return []
    where = "the stack's own file" if waivers["source"] == "stack" else "the operator's file"
    out = ["## Waivers", "", f"From {code(waivers['file'])} ({where}); {waivers['waived']} failing check(s) waived.", ""]
    if waivers.get("error"):
        out += [f"**Waiver file error:** {code(waivers['error'])}", ""]
    if waivers["entries"]:
        out += ["| Waives | Justification | Owner | Expires | State | Matched checks |", "|---|---|---|---|---|---|"]
        for entry in waivers["entries"]:
            subject = f"check {code(entry['check'])}" if entry["check"] else f"control {code(entry['control'])}"
            checks = ", ".join(code(nodeid) for nodeid in entry["checks"][:20]) or "-"
            out.append(f"| {subject} | {code(entry['justification'])} | {code(entry['owner'])} "
                       f"| {code(entry['expires'])} | {STATE_TEXT.get(entry['state'], entry['state'])} | {checks} |")
        out.append("")
    return out


# --- HTML -----------------------------------------------------------------------


def html_sections(summary: dict, escape) -> list[str]:
    return [*_history_html(summary.get("history"), escape), *_trend_html(summary, escape),
            *_waivers_html(summary.get("waivers"), escape)]


def _history_html(history: dict | None, h) -> list[str]:
    if not history:
        return []
    out = ['<section id="since-last-run"><h2>Since the last run</h2>']
    if history["previous"] is None:
        out.append("<p>No earlier run of this target in the history.</p>")
    else:
        out.append(f"<p>Compared with {_compared_with(history, h)}.</p>")
        for title, checks, extra in _change_lists(history):
            if not checks:
                continue
            items = "".join(
                f"<li>{h(check['name'])} <code>{h(check['nodeid'])}</code>"
                + (f", failing since {h(check['since'])}" if extra == "since" and check["since"] else
                   f", {h(check['changes'])} changes" if extra == "changes" else "") + "</li>"
                for check in checks)
            out.append(f"<h3>{h(title)} ({len(checks)})</h3><ul>{items}</ul>")
        if not any(checks for _, checks, _ in _change_lists(history)):
            out.append("<p>No check changed.</p>")
    out += [f'<p class="note">{h(note)}</p>' for note in history.get("notes", [])]
    out.append("</section>")
    return out


def _trend_html(summary: dict, h) -> list[str]:
    history = summary.get("history")
    if not history:
        return []
    titles = _titles(summary)
    runs = history["runs"]
    rows = []
    for line in history["trend"]:
        cells = "".join(
            f'<span class="cell {CELL_CLASS.get(status, "skip")}" title="{h(run["time"])}'
            f'{" · " + h(run["commit"]) if run.get("commit") else ""} · {h(status or "not in that run")}">'
            f"{SYMBOL.get(status, '?')}</span>"
            for status, run in zip(line["statuses"], runs, strict=True))
        rows.append(f'<tr><td>{h(titles.get(line["control"], line["control"]))}</td><td class="cells">{cells}</td></tr>')
    return [f'<section id="trend"><h2>Trend (last {len(runs)} run(s), oldest first)</h2><p class="note">{h(LEGEND)}</p>'
            f"<table><tr><th>Control</th><th>Runs</th></tr>{''.join(rows)}</table></section>"]


def _waivers_html(waivers: dict | None, h) -> list[str]:
    if not waivers or not (waivers.get("file") or waivers.get("error")):
        return []
    where = "the stack's own file" if waivers["source"] == "stack" else "the operator's file"
    out = [f'<section id="waivers"><h2>Waivers</h2><p>From <code>{h(waivers["file"])}</code> ({where}); '
           f"{h(waivers['waived'])} failing check(s) waived.</p>"]
    if waivers.get("error"):
        out.append(f'<p class="reason"><b>Waiver file error:</b> {h(waivers["error"])}</p>')
    if waivers["entries"]:
        rows = []
        for entry in waivers["entries"]:
            subject = f"check <code>{h(entry['check'])}</code>" if entry["check"] else f"control <code>{h(entry['control'])}</code>"
            state_class = "waived" if entry["state"] == "applied" else "fail" if entry["state"] in ("expired", "unmatched") else "skip"
            checks = "<br>".join(f"<code>{h(nodeid)}</code>" for nodeid in entry["checks"][:20]) or "-"
            rows.append(f"<tr><td>{subject}</td><td>{h(entry['justification'])}</td><td>{h(entry['owner'])}</td>"
                        f"<td>{h(entry['expires'])}</td><td class=\"{state_class}\">{h(STATE_TEXT.get(entry['state'], entry['state']))}</td>"
                        f"<td>{checks}</td></tr>")
        out.append("<table><tr><th>Waives</th><th>Justification</th><th>Owner</th><th>Expires</th><th>State</th>"
                   f"<th>Matched checks</th></tr>{''.join(rows)}</table>")
    out.append("</section>")
    return out
