"""The reference services' circuit breaker (stack/ai-stack/mcp-servers/common/aistack_common.py),
unit-tested with a fake dependency: thresholds, half-open trials, call timeouts, concurrency."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import PRISTINE_STACK

sys.path.insert(0, str(PRISTINE_STACK / "ai-stack/mcp-servers/common"))
import aistack_common as common  # noqa: E402

from prometheus_client import generate_latest  # noqa: E402


def breaker_config(**overrides) -> dict:
    settings = {"failure_threshold": 3, "reset_timeout": 0.3, "half_open_max_calls": 1, "call_timeout": 0.2}
    return {"circuit_breaker": {"postgres": {**settings, **overrides}}}


class FakeDependency:
    """Stands in for Database._execute: fails, hangs or answers; counts the calls that reached it."""

    def __init__(self):
        self.mode = "ok"
        self.calls = 0
        self.lock = threading.Lock()
        self.release = threading.Event()

    def __call__(self, sql, params):
        with self.lock:
            self.calls += 1
        if self.mode == "fail":
            raise common.SQLAlchemyError("connection refused")
        if self.mode == "hang":
            self.release.wait(5)
        return 1


@pytest.fixture
def db(monkeypatch):
    """A Database with the reference breaker in front of a fake dependency."""
    settings = common.BreakerSettings.from_config(breaker_config(), "postgres")
    database = common.Database(common.DbSettings.from_config({}), common.CircuitBreaker("postgres", settings), "test")
    fake = FakeDependency()
    monkeypatch.setattr(database, "_execute", fake)
    yield database, fake
    fake.release.set()


def test_opens_after_threshold_and_refuses_without_calling(db):
    database, fake = db
    fake.mode = "fail"
    for _ in range(3):
        with pytest.raises(common.SQLAlchemyError):
            database.run("SELECT 1")
    assert database.breaker.state == common.CircuitBreaker.OPEN
    with pytest.raises(common.CircuitOpenError):
        database.run("SELECT 1")
    assert fake.calls == 3


def test_half_open_trial_closes_or_reopens(db):
    database, fake = db
    fake.mode = "fail"
    for _ in range(3):
        with pytest.raises(common.SQLAlchemyError):
            database.run("SELECT 1")
    time.sleep(0.35)
    assert database.breaker.state == common.CircuitBreaker.HALF_OPEN
    with pytest.raises(common.SQLAlchemyError):  # the trial fails: open again at once
        database.run("SELECT 1")
    assert database.breaker.state == common.CircuitBreaker.OPEN
    time.sleep(0.35)
    fake.mode = "ok"
    assert database.run("SELECT 1") == 1
    assert database.breaker.state == common.CircuitBreaker.CLOSED


def test_hung_call_counts_as_failure_within_call_timeout(db):
    database, fake = db
    fake.mode = "hang"
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(common.CallTimeout):
            database.run("SELECT 1")
    assert time.monotonic() - started < 3 * 0.2 + 0.5
    assert database.breaker.state == common.CircuitBreaker.OPEN


def test_concurrent_callers_never_pass_an_open_breaker(db):
    """50 threads hammer a failing dependency: once the breaker has opened, no call reaches it."""
    database, fake = db
    database.breaker.reset_timeout = 60  # no half-open trial during the test
    fake.mode = "fail"
    opened = threading.Event()
    outcomes = []

    def caller():
        for _ in range(20):
            try:
                database.run("SELECT 1")
                outcomes.append("ok")
            except common.CircuitOpenError:
                outcomes.append("refused")
            except common.SQLAlchemyError:
                outcomes.append("failed")
            if database.breaker.state == common.CircuitBreaker.OPEN:
                opened.set()

    with ThreadPoolExecutor(max_workers=50) as pool:
        for future in [pool.submit(caller) for _ in range(50)]:
            future.result()
    assert opened.is_set()
    assert outcomes.count("failed") == fake.calls
    assert 3 <= fake.calls < 3 + 50, fake.calls  # callers admitted while closed, none after it opened
    assert outcomes.count("refused") == 50 * 20 - fake.calls


def test_no_section_no_breaker_and_state_gauge(monkeypatch):
    assert common.BreakerSettings.from_config({}, "postgres") is None
    database = common.Database(common.DbSettings.from_config({}), None, "test")
    text = generate_latest(common.Metrics(database).registry).decode()
    assert "aidb_circuit_breaker_state" not in text
    settings = common.BreakerSettings.from_config(breaker_config(), "postgres")
    database = common.Database(common.DbSettings.from_config({}), common.CircuitBreaker("postgres", settings), "test")
    text = generate_latest(common.Metrics(database).registry).decode()
    assert 'aidb_circuit_breaker_state{breaker="postgres"} 0.0' in text


@pytest.mark.parametrize("key, value", [("failure_threshold", 0), ("reset_timeout", 0), ("half_open_max_calls", 0),
                                        ("call_timeout", -1)])
def test_absurd_settings_refused(key, value):
    with pytest.raises(ValueError):
        common.BreakerSettings.from_config(breaker_config(**{key: value}), "postgres")
