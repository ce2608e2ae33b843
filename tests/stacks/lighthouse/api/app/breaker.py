"""A small circuit breaker (pybreaker's vocabulary: fail_max, reset_timeout).

The state is exported as the gauge lighthouse_circuit_state{breaker=NAME}, ordered by how
bad it is: 0 closed, 1 half-open, 2 open. The CircuitBreakerOpen alert fires on == 2.
"""

import threading
import time

from prometheus_client import Gauge

STATE = Gauge("lighthouse_circuit_state", "breaker state: 0 closed, 1 half-open, 2 open", ["breaker"])


class CircuitOpen(Exception):
    """Refused without calling the dependency (the API answers 503 'circuit breaker open')."""


class CircuitBreaker:
    CLOSED, HALF_OPEN, OPEN = 0, 1, 2

    def __init__(self, name, fail_max, reset_timeout, half_open_max=1, clock=time.monotonic):
        self.name, self.fail_max, self.reset_timeout, self.half_open_max = name, fail_max, reset_timeout, half_open_max
        self.clock, self.lock = clock, threading.Lock()
        self.failures, self.opened_at, self.trials = 0, 0.0, 0
        self._set(self.CLOSED)

    def _set(self, state):
        self.state = state
        STATE.labels(self.name).set(state)

    def call(self, func, *args, **kwargs):
        with self.lock:
            if self.state == self.OPEN and self.clock() - self.opened_at >= self.reset_timeout:
                self._set(self.HALF_OPEN)
                self.trials = 0
            if self.state == self.OPEN or (self.state == self.HALF_OPEN and self.trials >= self.half_open_max):
                raise CircuitOpen(f"circuit breaker open: {self.name}")
            if self.state == self.HALF_OPEN:
                self.trials += 1
        try:
            result = func(*args, **kwargs)
        except Exception:
            with self.lock:
                self.failures += 1
                if self.state == self.HALF_OPEN or self.failures >= self.fail_max:
                    self.opened_at = self.clock()
                    self._set(self.OPEN)
            raise
        with self.lock:
            self.failures = 0
            self._set(self.CLOSED)
        return result
