"""A controllable clock for tests: time moves only when the test says so."""

from __future__ import annotations

import threading
import weakref
from datetime import UTC, datetime, timedelta

from chronolog.clock import ensure_utc

#: Longest real time a waiter sleeps on a fake clock before re-checking (seconds).
_REAL_TIME_CAP = 0.5


class FakeClock:
    """A :class:`~chronolog.clock.Clock` whose wall and monotonic time advance on demand.

    ``advance`` moves both readings; ``jump`` moves only the wall clock (an NTP step, a
    manual change, or a machine waking from suspend), so code that compares the two can be
    tested. Threads blocked in :meth:`wait_until_changed` wake whenever time moves.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = ensure_utc(start or datetime(2026, 1, 1, tzinfo=UTC), "start")
        self._mono = 1000.0
        self._lock = threading.Lock()
        self._waiters: weakref.WeakSet[threading.Condition] = weakref.WeakSet()

    def now(self) -> datetime:
        """The fake wall time (aware UTC)."""
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        """The fake monotonic reading, in seconds."""
        with self._lock:
            return self._mono

    def advance(self, seconds: float | timedelta) -> datetime:
        """Move wall and monotonic time forward together; return the new wall time."""
        delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if delta < timedelta(0):
            raise ValueError("time only moves forward; use jump() for a wall-clock step back")
        with self._lock:
            self._now += delta
            self._mono += delta.total_seconds()
            now = self._now
        self._wake_waiters()
        return now

    def set(self, when: datetime) -> datetime:
        """Advance to ``when`` (which must not be in the past)."""
        return self.advance(ensure_utc(when, "when") - self.now())

    def jump(self, seconds: float | timedelta) -> datetime:
        """Step only the wall clock (forward or back), as an NTP correction would."""
        delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        with self._lock:
            self._now += delta
            now = self._now
        self._wake_waiters()
        return now

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        """Wait on ``condition`` until notified or until this clock is moved.

        ``timeout`` is in *fake* seconds, so it never elapses by itself: only
        :meth:`advance`, :meth:`set` or :meth:`jump` (or a notify) end the wait. A short
        real-time cap keeps a forgotten waiter from hanging a test run forever.
        """
        self._waiters.add(condition)
        condition.wait(_REAL_TIME_CAP)

    def _wake_waiters(self) -> None:
        for condition in list(self._waiters):
            with condition:
                condition.notify_all()
