"""One timer for every task: a heap of due instants, woken exactly when the first is due.

Entries are fires (one per task: the task's pending next fire), retries, execution
timeouts, releases, and the scheduler's own commands sent again after a failed append.
A fire is dispatched ``lead`` before its instant: the runtime commits it then, and holds
the execution back until a release entry at the instant itself lets it run (see
``Settings.fire_lead_seconds``). Since the run waits for its release anyway,
a wake-up also hands over the fires due within the next tenth of the lead: a burst of fires
(10,000 in 2 s) then costs one wake-up per few milliseconds instead of one per fire, and
every wake-up is a wait for the GIL behind the threads that commit them.

Replacing a task's fire leaves the old heap entry behind; it is recognised as stale when
popped (lazy deletion), which keeps every update O(log n).

The wait is capped (``MAX_SLEEP``): a machine that suspends or whose wall clock is stepped
does not move the monotonic clock the same way, so the timer re-reads the wall clock at
least that often and fires whatever became due. That cap is a watchdog, not a polling
interval: with nothing due, a wake-up costs one comparison.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import msgspec

from chronolog.actors.messages import Resync, TaskCommand
from chronolog.clock import Clock

#: Longest the timer sleeps before re-reading the wall clock (seconds).
MAX_SLEEP = 5.0


class FireDue(msgspec.Struct, frozen=True, gc=False):
    """The task's pending fire is due."""

    task_id: str
    nominal_time: datetime


class RetryDue(msgspec.Struct, frozen=True, gc=False):
    """The retry of a failed execution is due."""

    task_id: str
    execution_id: str


class TimeoutDue(msgspec.Struct, frozen=True, gc=False):
    """An execution has reached its timeout."""

    task_id: str
    execution_id: str


class ReleaseDue(msgspec.Struct, frozen=True, gc=False):
    """An execution committed ahead of its fire instant may run now."""

    task_id: str
    execution_id: str


class WakeDue(msgspec.Struct, frozen=True, gc=False):
    """A periodic wake-up for housekeeping work (passivating idle actors)."""

    name: str


class RedoDue(msgspec.Struct, frozen=True, gc=False):
    """Send again a message of the scheduler's own whose events could not be appended
    (a full disk, say)."""

    task_id: str
    message: TaskCommand | Resync


Due = FireDue | RetryDue | TimeoutDue | ReleaseDue | WakeDue | RedoDue
Dispatch = Callable[[Sequence[Due]], None]


class Timer:
    """The heap and the thread that waits on it."""

    def __init__(self, clock: Clock, dispatch: Dispatch, lead: timedelta = timedelta(0)) -> None:
        self._clock = clock
        self._lead = lead
        self._fire_window = lead / 10
        self._dispatch = dispatch
        self._heap: list[tuple[datetime, int, Due]] = []
        self._seq = itertools.count()
        self._fires: dict[str, tuple[datetime, datetime]] = {}
        self._retries: dict[str, set[str]] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._releases_only = False
        self._dispatching = False
        self._thread: threading.Thread | None = None

    # --- entries --------------------------------------------------------------------------

    def sync_task(
        self,
        task_id: str,
        fire: tuple[datetime, datetime] | None,
        retries: Sequence[tuple[str, datetime]] = (),
    ) -> None:
        """Make the task's entries equal these: ``fire`` is ``(nominal, at)``, each retry
        ``(failed execution id, at)``. ``None`` and ``()`` remove them."""
        with self._cond:
            earliest_changed = False
            if fire is None:
                self._fires.pop(task_id, None)
            elif self._fires.get(task_id) != fire:
                self._fires[task_id] = fire
                self._push(fire[1] - self._lead, FireDue(task_id, fire[0]))
                earliest_changed = True
            wanted = {execution_id for execution_id, _ in retries}
            known = self._retries.get(task_id, set())
            for execution_id, at in retries:
                if execution_id not in known:
                    self._push(at, RetryDue(task_id, execution_id))
                    earliest_changed = True
            if wanted:
                self._retries[task_id] = wanted
            else:
                self._retries.pop(task_id, None)
            if earliest_changed:
                self._cond.notify()

    def add_timeout(self, task_id: str, execution_id: str, at: datetime) -> None:
        """Report ``TimeoutDue`` for the execution at ``at`` (ignored if it ended by then)."""
        self.add(at, TimeoutDue(task_id, execution_id))

    def add(self, at: datetime, due: Due) -> None:
        """Dispatch ``due`` at ``at``."""
        with self._cond:
            self._push(at, due)
            self._cond.notify()

    def _push(self, at: datetime, due: Due) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), due))

    def _is_current(self, due: Due) -> bool:
        if isinstance(due, FireDue):
            current = self._fires.get(due.task_id)
            if current is None or current[0] != due.nominal_time:
                return False
            del self._fires[due.task_id]
            return True
        if isinstance(due, RetryDue):
            pending = self._retries.get(due.task_id)
            key = due.execution_id
            if pending is None or key not in pending:
                return False
            pending.discard(key)
            if not pending:
                del self._retries[due.task_id]
            return True
        return True

    def next_due(self) -> datetime | None:
        """The instant of the earliest live task entry (fire, retry or timeout)."""
        with self._cond:
            for at, _, due in sorted(self._heap)[:64]:
                if self._peek_current(due):
                    # A fire's entry waits ``lead`` ahead of it; report the fire's instant.
                    return at + self._lead if isinstance(due, FireDue) else at
            return None

    def _peek_current(self, due: Due) -> bool:
        if isinstance(due, WakeDue):
            return False
        if isinstance(due, FireDue):
            current = self._fires.get(due.task_id)
            return current is not None and current[0] == due.nominal_time
        return True

    def __len__(self) -> int:
        with self._cond:
            return len(self._fires) + sum(len(r) for r in self._retries.values())

    # --- the thread -----------------------------------------------------------------------

    def start(self) -> None:
        """Start waiting and dispatching."""
        self._thread = threading.Thread(target=self._run, name="chronolog-timer", daemon=True)
        self._thread.start()

    def release_only(self) -> None:
        """From now on dispatch only releases (a stop lets runs committed ahead begin)."""
        with self._cond:
            self._releases_only = True

    def stop(self) -> None:
        """Stop the thread; entries are kept (they are rebuilt from the log anyway)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def is_caught_up(self, now: datetime) -> bool:
        """Whether everything due at or before ``now`` has been handed to the dispatcher."""
        with self._cond:
            if self._dispatching:
                return False
            return not self._heap or self._heap[0][0] > now

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = self._clock.now()
                batch: list[Due] = []
                fires_until = now + self._fire_window
                while self._heap and (
                    self._heap[0][0] <= now
                    or (self._heap[0][0] <= fires_until and isinstance(self._heap[0][2], FireDue))
                ):
                    _, _, due = heapq.heappop(self._heap)
                    if self._releases_only and not isinstance(due, ReleaseDue):
                        continue
                    if self._is_current(due):
                        batch.append(due)
                if not batch:
                    timeout = MAX_SLEEP
                    if self._heap:
                        timeout = min(timeout, max((self._heap[0][0] - now).total_seconds(), 0.0))
                    self._clock.wait(self._cond, timeout)
                    continue
                self._dispatching = True
            # Dispatch outside the lock: the receivers may add entries.
            try:
                self._dispatch(batch)
            finally:
                with self._cond:
                    self._dispatching = False
