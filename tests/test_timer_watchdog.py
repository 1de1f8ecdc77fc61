"""The timer against a wall clock that moves without telling it.

An NTP step or a resume from suspend moves the wall clock while the timer sleeps on the
monotonic clock, and nobody notifies it. ``FakeClock`` wakes its waiters whenever it is
moved, so these tests use a clock that does not: its steps are silent, and a wait ends only
when its timeout has run out (a thousand times faster than real time) or on a notify. The
timer must then find what became due by itself, and never run a fire before its wall-clock
instant when the clock steps back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from chronolog.actors.timer import MAX_SLEEP, Due, FireDue, Timer

#: Real seconds per clock second in :class:`SilentlySteppedClock` waits.
SPEED_UP = 1 / 1000


class SilentlySteppedClock:
    """A wall clock whose steps wake no one; its waits last ``timeout * SPEED_UP`` real
    seconds (or until notified), and each one's timeout is recorded."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._lock = threading.Lock()
        self.timeouts: list[float | None] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        self.timeouts.append(timeout)
        condition.wait(None if timeout is None else timeout * SPEED_UP)

    def step(self, seconds: float) -> None:
        """Move the wall clock, as NTP or a resume would: no one is told."""
        with self._lock:
            self._now += timedelta(seconds=seconds)


class Dispatched:
    def __init__(self) -> None:
        self.items: list[Due] = []
        self._cond = threading.Condition()

    def __call__(self, batch: Sequence[Due]) -> None:
        with self._cond:
            self.items.extend(batch)
            self._cond.notify_all()

    def wait_for(self, count: int, seconds: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.items) >= count, seconds)


T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> SilentlySteppedClock:
    return SilentlySteppedClock(T0)


@pytest.fixture
def running_timer(clock: SilentlySteppedClock) -> Iterator[tuple[Timer, Dispatched]]:
    seen = Dispatched()
    timer = Timer(clock, seen)
    timer.start()
    yield timer, seen
    timer.stop()


def test_a_silent_step_forward_is_noticed_within_the_cap(
    clock: SilentlySteppedClock, running_timer: tuple[Timer, Dispatched]
) -> None:
    """With a fire three hours away the timer still sleeps at most MAX_SLEEP at a time, so
    a resume or a step over the fire's instant is noticed without anyone waking it."""
    due = T0 + timedelta(hours=3)
    timer, seen = running_timer
    timer.sync_task("t", (due, due))
    assert not seen.wait_for(1, 0.05)
    deadline = time.monotonic() + 2.0
    while not clock.timeouts and time.monotonic() < deadline:
        time.sleep(0.001)
    assert clock.timeouts, "the timer never waited"
    assert all(t is not None and 0 <= t <= MAX_SLEEP for t in clock.timeouts), clock.timeouts
    clock.step(3 * 3600)
    # An uncapped wait of three hours would last 10.8 s here; the cap makes it 5 ms.
    assert seen.wait_for(1, 2.0)
    assert seen.items == [FireDue("t", due)]


def test_a_step_back_never_fires_early(
    clock: SilentlySteppedClock, running_timer: tuple[Timer, Dispatched]
) -> None:
    """After the wall clock steps back an hour, a fire a minute away waits for its
    wall-clock instant, however long the monotonic clock has run meanwhile."""
    due = T0 + timedelta(minutes=1)
    timer, seen = running_timer
    timer.sync_task("t", (due, due))
    clock.step(-3600)
    # Far longer than the minute the timer first meant to sleep (60 ms here).
    assert not seen.wait_for(1, 0.3)
    clock.step(3600 + 59)
    assert not seen.wait_for(1, 0.1)
    clock.step(1)
    assert seen.wait_for(1, 2.0)
    assert seen.items == [FireDue("t", due)]
