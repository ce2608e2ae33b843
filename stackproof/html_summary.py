"""Shows the validation summary inside pytest-html's report (registered only with pytest-html)."""

from __future__ import annotations

from html import escape

from .render import summary_table_html
from .report import ValidationReport


class HtmlSummary:
    def __init__(self, report: ValidationReport):
        self.report = report

    def pytest_html_results_summary(self, prefix, summary, postfix):
        if not self.report.rows:
            return
        data = self.report.summary or self.report.build_summary()
        verdict = data["verdict"]["line"]
        prefix.append(f"<p><b>stackproof: {escape(verdict)}</b></p>{summary_table_html(data)}")
