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
