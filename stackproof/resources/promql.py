"""The series a PromQL expression selects: its vector selectors, read from the AST.

Shared by the alert-rule checks: statically (does a scraped target produce every
metric a TLS alert selects?) and live (does every selector of every alert have a
series?). Offsets, `@` and ranges are dropped: a selector is about which series exist.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import promql_parser

NAME_LABEL = "__name__"
_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}  # MatchOp is unhashable


# Prometheus' duration syntax (model.ParseDuration): units in this order, each at most once; "0" alone too
_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")


def duration_seconds(text: str) -> float:
    """A Prometheus duration in seconds. A zero duration (`0m`, `0s`: promtool accepts it, an alert with
    `for: 0m` fires at once) is valid, though promql_parser's own parser refuses it. ValueError otherwise."""
    text = text.strip()
    zero = text == "0" or (text and (match := _DURATION.fullmatch(text)) and not any(int(g or 0) for g in match.groups()))
    if zero:
        return 0.0
    return promql_parser.parse_duration(text).total_seconds()


class PromQLError(ValueError):
    """The expression is not valid PromQL (the parser's message, one line)."""


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str

    def accepts(self, value: str) -> bool:
        if self.op in ("=", "!="):
            return (value == self.value) == (self.op == "=")
        # Prometheus regexes are fully anchored
        try:
            matched = re.fullmatch(self.value, value) is not None
        except re.error:
            matched = False
        return matched == (self.op == "=~")

    def promql(self) -> str:
        # JSON string escapes (\\ \" \n \uXXXX) are valid PromQL (Go) string escapes
        return f"{self.label}{self.op}{json.dumps(self.value, ensure_ascii=False)}"


@dataclass(frozen=True)
class Selector:
    """One vector selector: `name{matchers}`, where the matchers may be `or`-ed alternatives."""

    name: str | None
    alternatives: tuple[tuple[Matcher, ...], ...]

    @property
    def metric(self) -> str | None:
        """The metric name the selector fixes, if it fixes exactly one."""
        if self.name is not None:
            return self.name
        if len(self.alternatives) == 1:
            fixed = {m.value for m in self.alternatives[0] if m.label == NAME_LABEL and m.op == "="}
            if len(fixed) == 1:
                return fixed.pop()
        return None

    def selects(self, metric: str) -> bool:
        """Could a series of `metric` be selected (label matchers other than the name aside)?"""
        if self.name is not None:
            return metric == self.name
        return any(
            all(m.accepts(metric) for m in alternative if m.label == NAME_LABEL) for alternative in self.alternatives
        )

    def promql(self) -> str:
        """The selector as an instant-vector query, e.g. to ask Prometheus whether it has series."""
        body = " or ".join(",".join(m.promql() for m in alternative) for alternative in self.alternatives)
        return f"{self.name or ''}{{{body}}}"


def _selector(node: promql_parser.VectorSelector) -> Selector:
    groups = node.matchers.or_matchers or [node.matchers.matchers]
    alternatives = tuple(tuple(Matcher(m.name, _OPS[str(m.op)], m.value) for m in group) for group in groups)
    return Selector(node.name, tuple(alt for alt in alternatives if alt) or ((),))


def parse(expr: str) -> promql_parser.Expr:
    try:
        return promql_parser.parse(expr)
    except ValueError as exc:
        raise PromQLError(" ".join(str(exc).split()) or "invalid PromQL") from None


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of `expr` (those inside range selectors and subqueries too), in order."""
    found: list[Selector] = []

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(_selector(node))

    promql_parser.walk(parse(expr), visit, None)
    return found
