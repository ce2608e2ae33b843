"""The readers of a stack's text run in time linear in what they read: a hostile file must not make a pattern
backtrack (a Go struct field, an env file's line, an image name, an instruction of a Dockerfile). Each input is
200,000 characters shaped against its pattern; a backtracking pattern takes hours on it (the Go `Timeout`
field's first pattern took 18 s on 2,000), a linear one milliseconds. The bound is far above the second."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from stackproof.resources.breaker_code import _go_breakers, _resilience4j_breakers
from stackproof.target.dockerfile import _instructions, INSTRUCTION
from stackproof.target.pgbouncer import clients_of, is_bouncer
from stackproof.target.service_config import ENV_LINE

N = 200_000
HOSTILE = {
    "go-timeout-field": lambda: _go_breakers("x.go", 'gobreaker.Settings{Name: "p", Timeout: ' + " " * N + "#}"),
    "go-unclosed-literal": lambda: _go_breakers("x.go", "gobreaker.Settings{" * (N // 20)),
    "env-line-blanks": lambda: ENV_LINE.findall(" \t" * N + "\n"),
    "env-line-hashes": lambda: ENV_LINE.findall("#" * N + "\n"),
    "image-slashes": lambda: is_bouncer(SimpleNamespace(image="a/" * N, entrypoint=[], command=[])),
    "libpq-host": lambda: clients_of(SimpleNamespace(environment={"DSN": "host=" + " " * N}), "pgbouncer"),
    "dockerfile-continuations": lambda: [INSTRUCTION.match(text) for _, text in _instructions("COPY \\\n" * (N // 8))],
    "spring-properties": lambda: _resilience4j_breakers(
        "application.properties", "resilience4j.circuitbreaker." + "a." * (N // 2) + "=1\n", ".properties"),
}


@pytest.mark.parametrize("read", HOSTILE.values(), ids=list(HOSTILE))
def test_a_reader_is_linear_on_hostile_text(read):
    started = time.monotonic()
    read()
    assert time.monotonic() - started < 5


def _init_lines(pattern):
    return lambda: [pattern.findall(filler * (N // len(filler)) + "!\n") for filler in (" ", " \t", "# ")]


def _line_patterns():
    from stackproof.init import ENV_LINE as USAGE_ENV_LINE, EXIT_LINE, FLAG_LINE, METRIC_LINE
    return {"usage-env-line": USAGE_ENV_LINE, "flag-line": FLAG_LINE, "exit-line": EXIT_LINE, "metric-line": METRIC_LINE}


@pytest.mark.parametrize("name", ["usage-env-line", "flag-line", "exit-line", "metric-line"])
def test_a_usage_text_reader_is_linear_on_a_line_of_blanks(name):
    started = time.monotonic()
    _init_lines(_line_patterns()[name])()
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("text", ["a." * (N // 2), "-a" * (N // 2), "0" * N + " open"], ids=["dots", "dashes", "digits"])
def test_scrub_and_state_text_are_linear(text):
    from stackproof.redact import _URL_CREDENTIAL
    from stackproof.resources.breaker_code import _states_in_text
    started = time.monotonic()
    _URL_CREDENTIAL.sub("", text)
    _states_in_text(text)
    assert time.monotonic() - started < 5


HUGE_NUMBERS = {
    "gauge-help": lambda: __import__("stackproof.resources.breaker_code", fromlist=["x"])._states_in_text(
        "9" * 5000 + " open, 0 closed, 1 half-open"),
    "go-max-requests": lambda: _go_breakers("x.go", 'gobreaker.Settings{Name: "p", MaxRequests: ' + "9" * 5000 + "}"),
    "go-trip": lambda: _go_breakers("x.go", 'gobreaker.Settings{Name: "p", ReadyToTrip: func(c gobreaker.Counts) bool '
                                            "{ return c.ConsecutiveFailures > " + "9" * 5000 + " }}"),
    "spring-calls": lambda: _resilience4j_breakers(
        "application.properties", "resilience4j.circuitbreaker.instances.p.minimumNumberOfCalls=" + "9" * 5000 + "\n",
        ".properties"),
}


@pytest.mark.parametrize("read", HUGE_NUMBERS.values(), ids=list(HUGE_NUMBERS))
def test_a_number_past_int_limits_is_no_setting_and_no_crash(read):
    """Python refuses int() of more than 4,300 digits (ValueError): a hostile file's huge number reads as no value."""
    read()


@pytest.mark.parametrize("name", ["rejection", "upstream-server"])
def test_a_line_pattern_is_linear_on_blank_lines(name):
    from stackproof.init import UPSTREAM_SERVER
    from stackproof.resources.scripts import REJECTION
    pattern = {"rejection": REJECTION, "upstream-server": UPSTREAM_SERVER}[name]
    started = time.monotonic()
    for filler in ("\n", " \n", "\t\n"):
        pattern.search(filler * N + "!")
    assert time.monotonic() - started < 5
