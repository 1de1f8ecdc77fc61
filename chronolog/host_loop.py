"""How the facade shares the host's event loop: bursts are admitted in turns, answers
coming back from the scheduler's threads wake the loop once per batch, and calls in flight
cost the host's cyclic garbage collector as little as possible.

**Admission.**

``asyncio.gather`` over 10,000 ``schedule_event`` calls queues 10,000 first steps in one
loop iteration; each validates its input and posts a message, and nothing else on the
loop (a web server's other requests, a timer) runs until all of them are done: seconds.
Every facade call therefore passes :meth:`LoopAdmission.admit` first. At most
``per_turn`` calls go straight through per loop turn; the rest wait in line and are let
in ``per_turn`` at a time, each batch from a callback that the loop runs in its turn,
after the timers and I/O callbacks that became due. A lone call pays one comparison.
Reads the in-memory task board answers cost a few microseconds, not tens, and have a line
of their own that lets :data:`BOARD_READS_PER_TURN` in per turn.

**Answers.** Job actors answer from their shard threads, a round of up to 32 answers at a
time. ``loop.call_soon_threadsafe`` per answer writes to the loop's wake-up socket each
time, a system call that also gives up the GIL; :class:`LoopInbox` queues the answers and
wakes the loop once for all that arrive before it gets to them.

**Calls in flight.** The host's cyclic GC pauses the loop for a time proportional to the
number of objects it tracks, and 10,000 calls in flight are most of them. So a call waiting
for an answer holds one future in a :class:`ReplyBox` (a dictionary entry under an integer
token) and hands the scheduler a :class:`Reply`, a two-field struct the GC does not track:
no closure, no coroutine of its own, and no timer. A command is one coroutine besides:
the facade's command methods are plain functions that validate and send, and the wrapper
that makes them facade calls awaits the answer with only the future and the value to
return in its frame (a coroutine method would add a second coroutine, its frame holding
every argument, for each GC pass to walk). Timeouts are kept by
:class:`PendingFutures` for all its futures at once: one deadline per slice of a quarter
second (the futures added meanwhile share it, so a call may time out up to that much
late) and one timer per loop, armed while anything is pending. Facade reads that must
wait for the projector to apply what the facade wrote wait on the loop too, in a
:class:`PositionWaiter` that the projector's thread wakes through the inbox.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from chronolog.errors import RequestTimeoutError

#: Calls admitted per loop turn (each costs tens of microseconds on the loop).
PER_TURN = 32
#: Reads answered from the in-memory task board per loop turn (~8 microseconds each, with
#: the caller's own step). With 10,000 readers kept busy the host's other coroutines wait
#: 0.6 ms at p99 with 32 a turn, 1.1 ms with 64 and 4-5 ms with 128, for about as many
#: reads a second (110,000-130,000 in each case: a shorter turn comes round sooner); in a
#: burst of 10,000 reads the typical wait drops from 1.5 ms to 0.45 ms going from 64 to 32.
#: 16 a turn halves the sustained figure again but makes a burst twice as many turns long
#: on a loop whose other work makes turns slow.
BOARD_READS_PER_TURN = 32
#: The same on the scheduler process's loop (``engine="process"``), which runs nothing but
#: the facade: 32 there cut the reads a host's loop gets through it from ~55,000 to
#: ~38,000 a second, and made the host's own p99 no better (1.0-1.1 ms against 0.7-0.8).
PROCESS_BOARD_READS_PER_TURN = 64
#: Answers delivered, and waiting callers woken, per loop turn: each wakes a coroutine that
#: then finishes its call (several microseconds), so 10,000 at once would hold the loop for
#: tens of milliseconds.
WAKEUPS_PER_TURN = 128

#: Futures added within this many seconds share one deadline (see :class:`PendingFutures`).
DEADLINE_SLICE = 0.25


class _LoopState:
    __slots__ = ("admitted", "per_turn", "release_armed", "waiting")

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
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

    def admit(self) -> asyncio.Future[None] | None:
        """None while this turn has room (go ahead), else a future to await: it is done
        when the line reaches the caller. Call it on the running loop.

        A plain function rather than a coroutine: a call waiting in line then holds one
        future, not a coroutine as well.
        """
        loop = asyncio.get_running_loop()
        state = self._state(loop)
        if state.admitted < state.per_turn and not state.waiting:
            state.admitted += 1
            self._arm(loop, state)
            return None
        future: asyncio.Future[None] = loop.create_future()
        state.waiting.append(future)
        self._arm(loop, state)
        return future

    def set_per_turn(self, loop: asyncio.AbstractEventLoop, per_turn: int) -> None:
        """Let ``per_turn`` calls in per turn of ``loop`` instead of the line's default (a
        loop that runs nothing but the facade can take more)."""
        if per_turn < 1:
            raise ValueError(f"per_turn must be at least 1, not {per_turn}")
        self._state(loop).per_turn = per_turn

    def _state(self, loop: asyncio.AbstractEventLoop) -> _LoopState:
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState(self.per_turn)
        return state

    async def enter(self) -> None:
        """Return at once while this turn has room, else when the line reaches the caller."""
        future = self.admit()
        if future is not None:
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
        while state.waiting and state.admitted < state.per_turn:
            future = state.waiting.popleft()
            if not future.done():  # a caller that was cancelled meanwhile is skipped
                future.set_result(None)
                state.admitted += 1
        if state.waiting or state.admitted:
            self._arm(loop, state)


class LoopInbox:
    """Runs callbacks on one event loop, posted from any thread, with one wake-up per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # A weak reference: the inbox is kept per loop in a weak dictionary, which a strong
        # one would keep from ever dropping the loop.
        self._loop = weakref.ref(loop)
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
        loop = self._loop()
        if loop is None:
            return
        # A closed loop raises RuntimeError: nobody is waiting for these answers any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items = self._items[:WAKEUPS_PER_TURN]
            del self._items[:WAKEUPS_PER_TURN]
            more = bool(self._items)
            # Still armed while more wait: the next turn's drain takes them, and posts
            # meanwhile need no wake-up of their own.
            self._armed = more
        if more:
            loop = self._loop()
            if loop is not None:
                # call_later(0), not call_soon: runs after the callbacks already due.
                loop.call_later(0, self._drain)
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


class PendingFutures:
    """Futures of one loop that fail with ``timeout_error()`` when nobody settled them
    within ``timeout`` seconds, kept without a timer per future.

    Each future gets an increasing integer token; the dictionary token -> future is
    therefore in token order. A deadline is recorded only when time has moved on: one
    ``(deadline, first token)`` entry per :data:`DEADLINE_SLICE` (or a quarter of the
    timeout, if shorter), the deadline of the slice's last possible arrival, so a future
    times out up to one slice late and never early. One ``call_at`` per loop, armed while
    anything is pending, fails the futures of every expired slice. Settled futures are
    popped by whoever settles them, so the dictionary holds only the ones still waiting.
    Use it on the loop's thread only.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        timeout_error: Callable[[], BaseException],
    ) -> None:
        self.timeout = timeout
        self._loop = weakref.ref(loop)
        self._timeout_error = timeout_error
        self._slice = min(DEADLINE_SLICE, timeout / 4)
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._next_token = 0
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._futures)

    def add(self, future: asyncio.Future[Any]) -> int:
        """Keep ``future`` until it is popped or times out; returns its token."""
        loop = future.get_loop()
        token = self._next_token
        self._next_token += 1
        self._futures[token] = future
        now = loop.time()
        # The newest slice covers arrivals until its deadline minus the timeout.
        if not self._deadlines or now >= self._deadlines[-1][0] - self.timeout:
            self._deadlines.append((now + self._slice + self.timeout, token))
        if self._sweeper is None:
            self._sweeper = loop.call_at(self._deadlines[0][0], self._sweep)
        return token

    def pop(self, token: int) -> asyncio.Future[Any] | None:
        """The future of ``token``, no longer kept; None when it timed out or was popped."""
        return self._futures.pop(token, None)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop of the futures (None once it is gone)."""
        return self._loop()

    def fail_all(self, error: Callable[[], BaseException]) -> None:
        """Fail every future still kept with ``error()`` (their answers will not come)."""
        futures, self._futures = self._futures, {}
        self._deadlines.clear()
        for future in futures.values():
            if not future.done():
                future.set_exception(error())

    def _sweep(self) -> None:
        self._sweeper = None
        loop = self._loop()
        if loop is None:
            return
        now = loop.time()
        limit = None
        while self._deadlines and self._deadlines[0][0] <= now:
            self._deadlines.popleft()
            limit = self._deadlines[0][1] if self._deadlines else self._next_token
        if limit is not None:
            expired = []
            for token in self._futures:  # oldest first
                if token >= limit:
                    break
                expired.append(token)
            for token in expired:
                future = self._futures.pop(token)
                if not future.done():  # a cancelled caller is just dropped
                    future.set_exception(self._timeout_error())
        if not self._futures:
            self._deadlines.clear()
        elif self._deadlines:
            self._sweeper = loop.call_at(self._deadlines[0][0], self._sweep)


# gc=False: thousands are in flight at once, each held by a message in a shard's mailbox;
# a reply refers to its box only, and the box never to a reply, so it is never in a cycle.
class Reply(msgspec.Struct, frozen=True, gc=False):
    """The answer callback of one request: call it once, from any thread, with the answer."""

    box: ReplyBox
    token: int

    def __call__(self, answer: Any) -> None:
        self.box.post(self.token, answer)


class ReplyBox:
    """Requests of one event loop whose answers come from other threads.

    :meth:`ask` hands ``send`` a :class:`Reply` and returns a future of the answer. Answers
    go through the loop's :class:`LoopInbox` (one wake-up per batch) and settle the future
    if it is still waiting. A request unanswered after ``timeout`` seconds fails with
    :class:`~chronolog.errors.RequestTimeoutError`: "``who`` did not answer within ...".
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, who: str) -> None:
        self.who = who
        self._inbox = inbox_of(loop)
        self._pending = PendingFutures(loop, timeout, self._timed_out)

    def __len__(self) -> int:
        """Requests still waiting for their answer."""
        return len(self._pending)

    def ask(self, send: Callable[[Reply], object]) -> asyncio.Future[Any]:
        """Call ``send(reply)`` now and return the future of the answer (on the loop)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        token = self._pending.add(future)
        try:
            send(Reply(self, token))
        except BaseException:
            self._pending.pop(token)  # never sent: no answer will come
            raise
        return future

    def post(self, token: int, answer: Any) -> None:
        """Deliver the answer to request ``token`` (thread-safe; :class:`Reply` calls it)."""
        self._inbox.post(self._settle, (token, answer))

    def _settle(self, item: tuple[int, Any]) -> None:
        token, answer = item
        future = self._pending.pop(token)
        if future is not None and not future.done():
            future.set_result(answer)

    def _timed_out(self) -> BaseException:
        return RequestTimeoutError(
            f"{self.who} did not answer within {self._pending.timeout:.0f} s"
        )


_reply_boxes: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[float, str], ReplyBox]
] = weakref.WeakKeyDictionary()


def replies_of(loop: asyncio.AbstractEventLoop, timeout: float, who: str) -> ReplyBox:
    """The reply box of ``loop`` for requests to ``who`` with this ``timeout`` (one box per
    timeout keeps each box's deadlines in order). Call it on the loop's own thread."""
    boxes = _reply_boxes.get(loop)
    if boxes is None:
        boxes = _reply_boxes[loop] = {}
    box = boxes.get((timeout, who))
    if box is None:
        box = boxes[timeout, who] = ReplyBox(loop, timeout, who)
    return box


class PositionSource(Protocol):
    """Something that publishes an increasing position from its own thread (the projector)."""

    @property
    def position(self) -> int:
        """The newest published position (read from any thread)."""
        ...

    def add_position_listener(self, listener: Callable[[int], object]) -> None:
        """Call ``listener(position)`` on the publishing thread after each publication."""
        ...

    def remove_position_listener(self, listener: Callable[[int], object]) -> None:
        """Stop calling ``listener``."""
        ...

    def request(self, position: int) -> None:
        """Someone waits for ``position``: publish it as soon as possible."""
        ...

    @property
    def failure(self) -> str | None:
        """Why the source cannot move on for now (None while it can). Publish the current
        position when it is set, so waiters notice."""
        ...

    @property
    def failures(self) -> int:
        """How many failures the source has reported so far (each sets :attr:`failure`)."""
        ...


class PositionWaiter:
    """Callers on one event loop waiting until ``source`` publishes a position.

    Each caller awaits a future of its own (a future shared by many would be cancelled for
    all of them when one caller is cancelled), kept in a list per target position. The
    waiter listens to the source only while someone waits, and then posts to the loop's
    inbox only for a position that releases someone. A caller still waiting after
    ``timeout`` seconds fails with ``timeout_error()``. When the source reports a failure,
    the callers waiting for a position beyond its own fail with ``failure_error(reason)``;
    one that comes while the source is failing asks it to try again and waits for that try
    (it fails only at the source's next failure). Use it on the loop's thread only (the
    listener excepted).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        source: PositionSource,
        timeout: float,
        timeout_error: Callable[[], BaseException],
        failure_error: Callable[[str], BaseException],
    ) -> None:
        self.source = source
        self._failure_error = failure_error
        self._inbox = inbox_of(loop)
        self._pending = PendingFutures(loop, timeout, timeout_error)
        self._targets: dict[int, list[int]] = {}  # target position -> tokens
        # Tokens of callers that came while the source was failing -> its failure count
        # then: they wait for the next failure, not that one. (The others fail at any.)
        self._late: dict[int, int] = {}
        self._lowest: int | None = None  # the lowest target, read by the source's thread
        self._listening = False
        self._release_armed = False  # more callers to wake in the next turn

    def __len__(self) -> int:
        """Callers still waiting."""
        return len(self._pending)

    def wait(self, target: int) -> asyncio.Future[None] | None:
        """None when the source is at ``target`` already, else a future that is done when
        it gets there (or fails, if the source fails first)."""
        if self.source.position >= target:
            return None
        failing = self.source.failure is not None
        failures = self.source.failures
        self.source.request(target)  # a failing source takes it as a cue to try again
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        token = self._pending.add(future)
        self._targets.setdefault(target, []).append(token)
        if failing:
            self._late[token] = failures
        if self._lowest is None or target < self._lowest:
            self._lowest = target
        if not self._listening:
            self._listening = True
            self.source.add_position_listener(self._published)
        # Published between the check above and now, the position (or a failure) reached
        # no listener.
        position = self.source.position
        if position >= target or self.source.failures > failures:
            self._release(position)
        return future

    def _published(self, position: int) -> None:
        """The listener, on the source's thread."""
        lowest = self._lowest
        if lowest is not None and (position >= lowest or self.source.failure is not None):
            self._inbox.post(self._release, position)

    def _release_next_turn(self) -> None:
        self._release_armed = False
        self._release(self.source.position)

    def _release(self, position: int) -> None:
        """Wake the callers waiting for ``position`` or less, :data:`WAKEUPS_PER_TURN` per
        loop turn (a burst of reads all waits for the same position)."""
        if self._release_armed:
            return  # the next turn's release goes on, to the newest position
        position = max(position, self.source.position)
        failure = self.source.failure
        if failure is not None:
            self._fail_beyond(position, failure, self.source.failures)
        budget = WAKEUPS_PER_TURN
        for target in sorted(t for t in self._targets if t <= position):
            tokens = self._targets[target]
            woken, rest = tokens[:budget], tokens[budget:]
            for token in woken:
                if self._late:
                    self._late.pop(token, None)
                future = self._pending.pop(token)
                if future is not None and not future.done():
                    future.set_result(None)
            budget -= len(woken)
            if rest:
                self._targets[target] = rest
                self._release_armed = True
                asyncio.get_running_loop().call_later(0, self._release_next_turn)
                return
            del self._targets[target]
        self._lowest = min(self._targets, default=None)
        if self._lowest is None and self._listening:
            self._listening = False
            self.source.remove_position_listener(self._published)

    def _fail_beyond(self, position: int, failure: str, failures: int) -> None:
        """Fail the callers waiting for a position beyond ``position`` that have seen a
        failure since they came (the ``failures``-th): the source cannot get there for now."""
        for target in [t for t in self._targets if t > position]:
            waiting = []
            for token in self._targets.pop(target):
                if self._late.get(token, -1) >= failures:
                    waiting.append(token)  # came after this failure: waits for the next
                    continue
                self._late.pop(token, None)
                future = self._pending.pop(token)
                if future is not None and not future.done():
                    future.set_exception(self._failure_error(failure))
            if waiting:
                self._targets[target] = waiting
