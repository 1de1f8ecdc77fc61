"""A controllable clock for tests: time moves only when the test says so."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from chronolog.clock import ensure_utc


class FakeClock:
    """A :class:`~chronolog.clock.Clock` whose wall and monotonic time advance on demand.

    ``advance`` moves both readings; ``jump`` moves only the wall clock (an NTP step, a
    manual change, or a machine waking from suspend), so code that compares the two can be
    tested. Threads blocked in :meth:`wait_until_changed` wake whenever time moves.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = ensure_utc(start or datetime(2026, 1, 1, tzinfo=UTC), "start")
        self._mono = 1000.0
        self._changed = threading.Condition()

    def now(self) -> datetime:
        """The fake wall time (aware UTC)."""
        with self._changed:
            return self._now

    def monotonic(self) -> float:
        """The fake monotonic reading, in seconds."""
        with self._changed:
            return self._mono

    def advance(self, seconds: float | timedelta) -> datetime:
        """Move wall and monotonic time forward together; return the new wall time."""
        delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if delta < timedelta(0):
            raise ValueError("time only moves forward; use jump() for a wall-clock step back")
        with self._changed:
            self._now += delta
            self._mono += delta.total_seconds()
            self._changed.notify_all()
            return self._now

    def set(self, when: datetime) -> datetime:
        """Advance to ``when`` (which must not be in the past)."""
        return self.advance(ensure_utc(when, "when") - self.now())

    def jump(self, seconds: float | timedelta) -> datetime:
        """Step only the wall clock (forward or back), as an NTP correction would."""
        delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        with self._changed:
            self._now += delta
            self._changed.notify_all()
            return self._now

    def wait_until_changed(self, timeout: float) -> None:
        """Block until any reading changes or ``timeout`` real seconds pass."""
        with self._changed:
            self._changed.wait(timeout)
