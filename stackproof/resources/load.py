"""Concurrent load: many clients released together, each request timed and classified.

Used by the 50-client pool check and by the circuit-breaker fault injection. Hand-written
(threads, a barrier) rather than a load-testing library: the checks need each request's start
time, latency and outcome class to build their evidence, and the load generators on PyPI
(locust, ...) bring their own runners and event loops for far larger loads.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from stackproof.errors import StackError


@dataclass(frozen=True)
class Outcome:
    """One request: when it started (time.monotonic()), how long it took, its class ("200",
    "503 pool timeout", "error: ..."), and a number the response reported (e.g. checked-out connections)."""

    started: float
    latency: float
    kind: str
    value: float = 0.0


@dataclass
class LoadResult:
    outcomes: list[Outcome]
    peak: float  # highest number seen in the responses or by the sampler

    @property
    def latencies(self) -> list[float]:
        return sorted(o.latency for o in self.outcomes)

    @property
    def statuses(self) -> dict[str, int]:
        return dict(Counter(o.kind for o in self.outcomes))

    def percentile(self, q: int) -> float:
        latencies = self.latencies
        if len(latencies) > 1:
            return statistics.quantiles(latencies, n=100, method="inclusive")[q - 1]
        return (latencies or [0.0])[0]

    def describe(self) -> str:
        """'48 × 200, 2 × 503 pool timeout'"""
        return ", ".join(f"{count} × {kind}" for kind, count in sorted(self.statuses.items()))


def run_load(clients: int, send: Callable[[], tuple[str, float]], timeout: float,
             sample: Callable[[], float] | None = None) -> LoadResult:
    """`clients` concurrent calls of `send` (released together by a barrier), while `sample` (if any)
    is polled every 50 ms. `send` returns (kind, value); a StackError or ValueError it raises becomes
    an "error: ..." outcome. Every call must be bounded by `timeout` itself (the live HTTP calls are)."""
    start, done = threading.Barrier(clients), threading.Event()
    outcomes: list[Outcome] = []
    peak = [0.0]
    lock = threading.Lock()

    def client():
        try:
            start.wait(timeout=timeout)
        except threading.BrokenBarrierError:  # some client never started: go anyway, the outcome says so
            pass
        began = time.monotonic()
        try:
            kind, value = send()
        except (StackError, ValueError) as exc:
            kind, value = f"error: {str(exc)[:80]}", 0.0
        with lock:
            outcomes.append(Outcome(began, time.monotonic() - began, kind, value))
            peak[0] = max(peak[0], value)

    def sampler():
        while not done.is_set():
            try:
                value = sample()
            except StackError:
                value = 0.0
            with lock:
                peak[0] = max(peak[0], value)
            done.wait(0.05)

    with ThreadPoolExecutor(max_workers=clients + 1) as pool:
        watcher = pool.submit(sampler) if sample else None
        try:
            for future in [pool.submit(client) for _ in range(clients)]:
                future.result()  # re-raises what is not an outcome (NotProven): the check stops there
        finally:
            done.set()  # else the sampler, and the pool's exit with it, would wait for ever
        if watcher:
            watcher.result()
    return LoadResult(sorted(outcomes, key=lambda o: o.started), peak[0])
