"""Properties of stackproof/promql.py: the metrics an expression selects, whatever the expression around them."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stackproof.resources import promql

KEYWORDS = {
    "and", "or", "unless", "atan2", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "start", "end", "inf", "nan", "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar",
    "topk", "bottomk", "count_values", "quantile", "limitk", "limit_ratio",
}

metric_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,30}", fullmatch=True).filter(
    lambda name: name.lower() not in KEYWORDS
)
label_names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,20}", fullmatch=True)
values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@st.composite
def vector_selectors(draw):
    """(PromQL text of a selector, its metric name), with label matchers of every kind."""
    name = draw(metric_names)
    matchers = draw(st.lists(st.tuples(label_names, st.sampled_from(["=", "!="]), values), max_size=3))
    regexes = draw(st.lists(st.tuples(label_names, st.sampled_from(["=~", "!~"]), st.lists(metric_names, min_size=1, max_size=3)), max_size=2))
    parts = [promql.Matcher(label, op, value).promql() for label, op, value in matchers]
    parts += [promql.Matcher(label, op, "|".join(alts)).promql() for label, op, alts in regexes]
    form = draw(st.sampled_from(["named", "__name__"]))
    if form == "named":
        return f"{name}{{{','.join(parts)}}}", name
    return "{" + ",".join([promql.Matcher("__name__", "=", name).promql(), *parts]) + "}", name


@st.composite
def leaves(draw):
    text, name = draw(vector_selectors())
    template = draw(st.sampled_from(["{}", "{} offset 5m", "rate({}[5m])", "max_over_time({}[1h:1m])", "{} @ 100"]))
    return template.format(text), [name]


def _combine(children):
    unary = st.tuples(
        st.sampled_from([
            "sum by (job) ({})", "-({})", "({})", "abs({})", 'label_replace({}, "dst", "$1", "src", "(.*)")',
            "histogram_quantile(0.9, {})", "topk(3, {})", "max_over_time(({})[1h:1m])", "({}) > bool 3",
            "time() - ({})", "absent({})",
        ]),
        children,
    ).map(lambda t: (t[0].format(t[1][0]), t[1][1]))
    binary = st.tuples(
        # operands in parentheses: precedence must not pair a modifier with a scalar (`a / on(x) time() - b`)
        st.sampled_from(["({}) + ({})", "({}) / on (job) group_left () ({})", "({}) and ({})", "({}) or ({})",
                         "({}) unless ignoring (a) ({})"]),
        children,
        children,
    ).map(lambda t: (t[0].format(t[1][0], t[2][0]), t[1][1] + t[2][1]))
    return unary | binary


expressions = st.recursive(leaves(), _combine, max_leaves=6)


@given(expressions)
@settings(max_examples=300, deadline=None)
def test_every_selector_is_found_whatever_surrounds_it(case):
    expr, names = case
    assert {s.metric for s in promql.selectors(expr) if s.metric} == set(names), expr
    assert [s.metric for s in promql.selectors(expr)] == names, expr


@given(vector_selectors())
@settings(max_examples=300, deadline=None)
def test_selector_round_trips_through_its_promql(case):
    text, name = case
    (selector,) = promql.selectors(text)
    assert selector.metric == name
    assert promql.selectors(selector.promql()) == [selector]


@given(st.lists(metric_names, min_size=1, max_size=4, unique=True), metric_names)
def test_name_regex_selects_exactly_its_alternatives(names, other):
    (selector,) = promql.selectors('{__name__=~"' + "|".join(names) + '"}')
    assert selector.metric is None
    assert all(selector.selects(name) for name in names)
    assert selector.selects(other) == (other in names)


@given(metric_names, metric_names)
def test_named_selector_selects_only_its_name(name, other):
    (selector,) = promql.selectors(f'{name}{{job="x"}}')
    assert selector.selects(name)
    assert selector.selects(other) == (other == name)


@given(st.text(max_size=60))
@settings(max_examples=500, deadline=None)
def test_any_text_gives_selectors_or_a_one_line_error(text):
    """The parser is a native extension: no input may crash it or escape as another exception."""
    try:
        found = promql.selectors(text.replace("\x00", ""))
    except promql.PromQLError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(isinstance(s, promql.Selector) for s in found)


@pytest.mark.parametrize(
    "expr, names",
    [
        ("time() - tls_cert_last_check_timestamp_seconds > 13 * 3600", {"tls_cert_last_check_timestamp_seconds"}),
        ('sum by (job) (rate(aidb_http_requests_total{status=~"5.."}[5m]))', {"aidb_http_requests_total"}),
        ('{__name__=~"tls_.*"}', set()),
        ("vector(1)", set()),
    ],
)
def test_known_expressions(expr, names):
    assert {s.metric for s in promql.selectors(expr) if s.metric} == names


def test_invalid_promql_is_a_promql_error():
    with pytest.raises(promql.PromQLError, match=re.escape("inside brackets")):
        promql.selectors("rate(foo[5m) > 1")
