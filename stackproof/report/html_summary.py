"""Shows the validation summary inside pytest-html's report (registered only with pytest-html).

pytest-html has its own "Summary" heading, so the verdict and the control table go under it
without another; statuses use pytest-html's own colour classes; each control links to its
section in the report file (relative to pytest-html's file: an anchor of pytest-html's own
document would lead nowhere). The target goes into pytest-html's Environment table
(pytest-metadata), at the start, and the verdict and commit when the run ends.
"""

from __future__ import annotations

import os
from pathlib import Path

from markupsafe import escape

from stackproof.report.render import PYTEST_HTML_CLASSES, summary_table_html
from stackproof.report.collector import ValidationReport
from stackproof.report.outcome import Status


class HtmlSummary:
    def __init__(self, report: ValidationReport, target: str):
        self.report = report
        self.target = target

    def metadata(self) -> dict | None:
        try:
            from pytest_metadata.plugin import metadata_key
        except ImportError:  # pytest-html without pytest-metadata (older releases)
            return None
        return self.report.config.stash.get(metadata_key, None)

    def pytest_sessionstart(self, session) -> None:
        """Before pytest-html reads the Environment table (its sessionstart hook is trylast)."""
        metadata = self.metadata()
        if metadata is not None:
            metadata["stackproof target"] = self.target

    def pytest_html_results_summary(self, prefix, summary, postfix):
        if not self.report.rows:
            return
        data = self.report.summary or self.report.build_summary()
        metadata = self.metadata()
        if metadata is not None:  # the same dict pytest-html renders its Environment table from
            metadata["stackproof git commit"] = data["target"].get("git_commit") or "-"
            metadata["stackproof verdict"] = data["verdict"]["line"]
        verdict = data["verdict"]
        css = PYTEST_HTML_CLASSES[Status.PASS if verdict["passed"] else Status.FAIL]
        html_path = Path(self.report.config.option.htmlpath).resolve()
        link = Path(os.path.relpath(self.report.files.path("html"), html_path.parent)).as_posix()
        prefix.append(f'<p class="stackproof-verdict"><span class="{css}"><b>stackproof: {escape(verdict["line"])}</b></span>'
                      f' (<a href="{escape(link)}">full report</a>)</p>{summary_table_html(data, link)}')
