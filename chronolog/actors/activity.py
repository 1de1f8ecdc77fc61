"""Counts work in flight across actors, the timer and the executor.

Production code only increments and decrements; tests (and orderly shutdown) wait for the
count to reach zero, which is how a fake-clock test knows the system has settled without
sleeping.
"""

from __future__ import annotations

import threading


class ActivityCounter:
    """A thread-safe counter with a wait-for-zero."""

    def __init__(self) -> None:
        self._count = 0
        self._zero = threading.Condition()

    def begin(self, n: int = 1) -> None:
        """Record ``n`` new units of work."""
        with self._zero:
            self._count += n

    def end(self, n: int = 1) -> None:
        """Record ``n`` finished units of work."""
        with self._zero:
            self._count -= n
            if self._count <= 0:
                self._count = 0
                self._zero.notify_all()

    @property
    def count(self) -> int:
        """Units of work in flight now."""
        with self._zero:
            return self._count

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is in flight; False on timeout."""
        with self._zero:
            return self._zero.wait_for(lambda: self._count == 0, timeout)
