"""How the facade shares the host's event loop: bursts are admitted in turns, and the
answers coming back from the scheduler's threads wake the loop once per batch.

**Admission.**

``asyncio.gather`` over 10,000 ``schedule_event`` calls queues 10,000 first steps in one
loop iteration; each validates its input and posts a message, and nothing else on the
loop (a web server's other requests, a timer) runs until all of them are done: seconds.
Every facade call therefore passes :meth:`LoopAdmission.enter` first. At most
``per_turn`` calls go straight through per loop turn; the rest wait in line and are let
in ``per_turn`` at a time, each batch from a callback that the loop runs in its turn,
after the timers and I/O callbacks that became due. A lone call pays one comparison.

**Answers.** Job actors answer from their shard threads, a round of up to 64 answers at a
time. ``loop.call_soon_threadsafe`` per answer writes to the loop's wake-up socket each
time, a system call that also gives up the GIL; :class:`LoopInbox` queues the answers and
wakes the loop once for all that arrive before it gets to them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import Any

#: Calls admitted per loop turn (each costs tens of microseconds on the loop).
PER_TURN = 32


class _LoopState:
    __slots__ = ("admitted", "release_armed", "waiting")

    def __init__(self) -> None:
        self.admitted = 0
        self.release_armed = False
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()


class LoopAdmission:
    """A per-event-loop admission line for facade calls."""

    def __init__(self, per_turn: int = PER_TURN) -> None:
        self.per_turn = per_turn
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    async def enter(self) -> None:
        """Return at once while this turn has room, else when the line reaches the caller."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState()
        if state.admitted < self.per_turn and not state.waiting:
            state.admitted += 1
            self._arm(loop, state)
            return
        future: asyncio.Future[None] = loop.create_future()
        state.waiting.append(future)
        self._arm(loop, state)
        await future

    def _arm(self, loop: asyncio.AbstractEventLoop, state: _LoopState) -> None:
        if not state.release_armed:
            state.release_armed = True
            # call_later(0), not call_soon: a timer handle runs after the callbacks that
            # are already due this turn, so the loop's other work goes between batches.
            loop.call_later(0, self._next_turn, loop, state)

    def _next_turn(self, loop: asyncio.AbstractEventLoop, state: _LoopState) -> None:
        state.release_armed = False
        state.admitted = 0
        while state.waiting and state.admitted < self.per_turn:
            future = state.waiting.popleft()
            if not future.done():  # a caller that was cancelled meanwhile is skipped
                future.set_result(None)
                state.admitted += 1
        if state.waiting or state.admitted:
            self._arm(loop, state)


class LoopInbox:
    """Runs callbacks on one event loop, posted from any thread, with one wake-up per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[Callable[[Any], object], Any]] = []
        self._armed = False

    def post(self, callback: Callable[[Any], object], argument: Any) -> None:
        """Call ``callback(argument)`` on the loop soon (thread-safe)."""
        with self._lock:
            self._items.append((callback, argument))
            if self._armed:
                return
            self._armed = True
        # A closed loop raises RuntimeError: nobody is waiting for these answers any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._armed = False
        for callback, argument in items:
            callback(argument)


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopInbox] = (
    weakref.WeakKeyDictionary()
)


def inbox_of(loop: asyncio.AbstractEventLoop) -> LoopInbox:
    """The inbox of ``loop`` (made on first use; call it on the loop's own thread)."""
    inbox = _inboxes.get(loop)
    if inbox is None:
        inbox = _inboxes[loop] = LoopInbox(loop)
    return inbox
