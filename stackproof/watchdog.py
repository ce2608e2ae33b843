"""`--run-timeout`, enforced: the run ends at its deadline whatever it is doing.

At the deadline SIGALRM raises `RunTimeout` (a KeyboardInterrupt, so pytest stops the
session the way it does on Ctrl-C) in the main thread, even inside a blocked read, wait
or sleep; the report is then written as INCOMPLETE and NO-GO. Should the run still not
end (a check that swallows the interruption, a teardown that hangs), a timer thread
writes that report itself after a grace period and ends the process with exit code 1 (NO-GO).

Why a signal and a thread, not a library: pytest-timeout bounds single tests and
ends the process without our report; the run needs one bound over the whole session
and a report in every case.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, Iterator, NoReturn

import pytest

from stackproof.report.rows import suite_control

HARD_STOP_EXIT = 1  # NO-GO, as the verdict of an interrupted run (exit code 2 is a usage error)


class RunTimeout(KeyboardInterrupt):
    """The run reached its time limit."""


class RunWatchdog:
    def __init__(self, seconds: float, grace: float, hard_stop: Callable[[str], None], started: float):
        self.seconds = seconds
        self.grace = grace
        self.hard_stop = hard_stop  # writes the INCOMPLETE report from the timer thread
        self.message = f"run time limit of {seconds:g}s reached"
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None
        self._timer: threading.Timer | None = None
        self._started = started  # when configuration began: reading a hostile stack's secrets counts too

    def _on_alarm(self, signum, frame) -> None:
        raise RunTimeout(self.message)

    def _on_hard_stop(self) -> None:
        try:
            self.hard_stop(f"{self.message}, and the run did not stop within {self.grace:g}s more")
        finally:
            sys.stderr.write(f"stackproof: {self.message}; the run did not stop: ended\n")
            sys.stderr.flush()
            os._exit(HARD_STOP_EXIT)

    @contextmanager
    def bounded(self) -> Iterator[None]:
        """The run's deadline over a step of configuration (reading the stack's secrets), before the run
        is known to execute checks: RunTimeout is raised in it at the deadline, and the alarm is off again
        after it (`arm` sets it for the checks). Only the main thread receives signals."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(self._started + self.seconds - time.monotonic(), 0.001))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    @pytest.hookimpl(trylast=True)  # after the report has recorded the checks: an alarm due now finds them
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if any(item.get_closest_marker("control") for item in session.items):
            self.arm()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        if any(suite_control(nodeid) for nodeid in ids):  # the controller: a worker collected checks
            self.arm()

    def arm(self) -> None:
        """Once the run is known to execute checks (a session of other tests is not bounded), with the
        time since the session started already counted."""
        if self._timer is not None:
            return
        left = max(self._started + self.seconds - time.monotonic(), 0.001)  # 0 would disarm the alarm
        self._timer = threading.Timer(left + self.grace, self._on_hard_stop)
        self._timer.daemon = True
        self._timer.start()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, left)

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session):
        """No interruption while the reports are written; the hard stop guards until the session has
        finished (session fixtures torn down, every report file written)."""
        self.disarm_alarm()
        try:
            return (yield)
        finally:
            self.cancel()

    def expire(self) -> NoReturn:
        """Stop the run now, as the alarm does: a check is due to start past the deadline (the alarm was
        lost in a finalizer). The alarm is disarmed first: fired during pytest's handling of this
        interruption, it would escape the session."""
        self.disarm_alarm()
        raise RunTimeout(self.message)

    def disarm_alarm(self) -> None:
        if self._previous is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
            self._previous = None

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.disarm_alarm()
        self.cancel()
