"""The live Prometheus queries wait until every target was scraped after the project's newest
container was ready (started, and its healthcheck passed) (stackproof/engine/live.py `Prometheus.settled`): a stack validated right after its deploy
is not failed for series its first scrape has not collected yet, and a stack that never catches up
is not waited on for ever."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from stackproof.engine import live as live_module
from stackproof.engine.live import Prometheus, _duration, _rfc3339


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e9):09d}Z"


class _Prometheus:
    """Targets whose last scrape moves to `scraped_at` from the `after`-th call on."""

    def __init__(self, before: float, scraped_at: float, after: int):
        self.before, self.scraped_at, self.after, self.calls = before, scraped_at, after, 0

    def __call__(self, api_path, params=None):
        assert api_path == "/api/v1/targets"
        self.calls += 1
        last = self.scraped_at if self.calls >= self.after else self.before
        return {"activeTargets": [{"health": "unknown" if not last else "up", "scrapeInterval": "1s",
                                   "lastScrape": _stamp(last) if last else "0001-01-01T00:00:00Z"}]}


def _live(started: float, prometheus: _Prometheus, healthy: float | None = None) -> Prometheus:
    """The Prometheus facet of a live stack with one container, its API answered by `prometheus`."""
    health = {"Health": {"Log": [{"End": _stamp(healthy), "ExitCode": 0}]}} if healthy else {}
    container = SimpleNamespace(attrs={"State": {"StartedAt": _stamp(started), **health}})
    facet = Prometheus(SimpleNamespace(containers=[container]))
    facet._api = prometheus
    return facet


@pytest.mark.parametrize("case, before, after_calls, waits", [
    ("scraped long after the start: no wait", -3600, 1, False),
    ("never scraped yet, then scraped", 0, 3, True),
    ("last scraped before the monitor wrote, then again", -10, 3, True),
])
def test_queries_wait_for_a_scrape_after_the_newest_start(monkeypatch, case, before, after_calls, waits):
    monkeypatch.setattr(live_module.time, "sleep", lambda seconds: None)
    now = time.time()
    started = now - 2 if waits else now - 7200
    prometheus = _Prometheus(now + before if before else 0, now + 1, after_calls)
    _live(started, prometheus).settled  # noqa: B018 -- reading the cached property is the wait under test
    assert prometheus.calls == (after_calls if waits else 1), case


def test_queries_wait_for_a_scrape_after_the_first_passing_healthcheck(monkeypatch):
    """The monitor started long enough ago, but became healthy (its textfile written) only now: a
    scrape from before that moment is not enough."""
    monkeypatch.setattr(live_module.time, "sleep", lambda seconds: None)
    now = time.time()
    prometheus = _Prometheus(now - 2, now + 1, 3)
    _live(now - 30, prometheus, healthy=now - 1).settled  # noqa: B018 -- reading the cached property is the wait under test
    assert prometheus.calls == 3


@pytest.mark.parametrize("log, ready_after_start", [
    ([], 5.0),  # no healthcheck: the grace after the start
    ([{"End": 12.0, "ExitCode": 1}, {"End": 20.0, "ExitCode": 0}, {"End": 50.0, "ExitCode": 0}], 20.0),
    ([{"End": -100.0, "ExitCode": 0}], 5.0),  # a pass from before this start (a restart) does not count
    ([{"End": 2.0, "ExitCode": 0}], 5.0),  # healthy within the grace: the grace
    (["garbage", {"ExitCode": 0}], 5.0),
])
def test_ready_at(log, ready_after_start):
    started = 1_795_000_000.0
    entries = [{**e, "End": _stamp(started + e["End"])} if isinstance(e, dict) and "End" in e else e for e in log]
    container = SimpleNamespace(attrs={"State": {"StartedAt": _stamp(started), "Health": {"Log": entries}}})
    assert live_module._ready_at(container) == pytest.approx(started + ready_after_start, abs=1e-3)
    assert live_module._ready_at(SimpleNamespace(attrs={})) == 0.0


def test_a_target_that_never_catches_up_is_waited_on_boundedly(monkeypatch):
    clock = iter(range(0, 10_000, 1))
    monkeypatch.setattr(live_module.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(live_module.time, "sleep", lambda seconds: None)
    prometheus = _Prometheus(0, 0, 10**9)
    _live(time.time() - 1, prometheus).settled  # noqa: B018 -- reading the cached property is the wait under test
    assert prometheus.calls <= 2 * 1 + 1 + 2  # twice the 1 s interval plus one, in fake seconds


@pytest.mark.parametrize("stamp, epoch", [
    ("2026-11-26T02:50:01.123456789Z", 1795661401.1234567),
    ("2026-11-26T03:50:01+01:00", 1795661401.0),
    ("0001-01-01T00:00:00Z", 0.0),
    ("", 0.0), ("yesterday", 0.0), ("2026-13-45T99:99:99Z", 0.0),
])
def test_rfc3339(stamp, epoch):
    assert _rfc3339(stamp) == pytest.approx(epoch)


@pytest.mark.parametrize("text, seconds", [("15s", 15), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("", 15), ("x", 15)])
def test_duration(text, seconds):
    assert _duration(text) == seconds
