"""The load check's runner (stackproof/load.py `run_load`): every client's outcome is counted, and a
client that stops the check (NotProven: nginx serves a certificate the stack's file does not verify)
ends the run with that reason instead of leaving the pool's sampler running for ever."""

from __future__ import annotations

import threading
import time

import pytest

from stackproof.errors import StackError
from stackproof.engine.live import NotProven
from stackproof.resources.load import run_load


def test_outcomes_are_counted_and_errors_become_outcomes():
    calls = iter(range(100))
    lock = threading.Lock()

    def send():
        with lock:
            n = next(calls)
        if n % 2:
            raise StackError("service nginx: GET /health: connection refused")
        return "200", float(n)

    result = run_load(6, send, timeout=5, sample=lambda: 42.0)
    assert sum(result.statuses.values()) == 6
    assert result.statuses["200"] == 3 and len(result.statuses) == 2
    assert result.peak == 42.0


def test_a_client_that_stops_the_check_ends_the_run():
    def send():
        raise NotProven("not proven: service nginx serves a certificate the file does not verify")

    finished = threading.Event()
    deadline = time.monotonic() + 15

    def sample():
        if time.monotonic() > deadline:  # bounds this test if the runner regresses: ends its sampler thread
            raise RuntimeError("the sampler outlived the run")
        return 0.0

    def run():
        with pytest.raises(NotProven):
            run_load(4, send, timeout=5, sample=sample)
        finished.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert finished.wait(10), "run_load did not return: its sampler outlived the clients"
