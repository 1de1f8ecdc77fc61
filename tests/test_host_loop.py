"""Sharing the host's loop: admission of bursts, answers posted from other threads, their
timeouts, and waiting for a position another thread publishes."""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chronolog.actors.messages import TaskCommand
from chronolog.domain import commands as cmd
from chronolog.errors import RequestTimeoutError, StorageError, projections_failing
from chronolog.events import Cause
from chronolog.host_loop import (
    WAKEUPS_PER_TURN,
    LoopAdmission,
    PositionWaiter,
    Reply,
    ReplyBox,
    inbox_of,
    replies_of,
)


def test_a_burst_is_admitted_in_turns_and_timers_run_between() -> None:
    """1,000 simultaneous callers enter 32 per turn; a timer due meanwhile is not held up."""

    async def main() -> tuple[list[int], list[int]]:
        admission = LoopAdmission(per_turn=32)
        entered: list[int] = []
        timer_saw: list[int] = []

        async def caller(i: int) -> None:
            await admission.enter()
            entered.append(i)

        loop = asyncio.get_running_loop()
        loop.call_later(0, lambda: timer_saw.append(len(entered)))
        await asyncio.gather(*(caller(i) for i in range(1000)))
        return entered, timer_saw

    entered, timer_saw = asyncio.run(main())
    assert entered == list(range(1000))  # first come, first served
    assert timer_saw and timer_saw[0] <= 64  # the timer ran after at most two turns


def test_a_loop_may_take_more_per_turn_than_the_default() -> None:
    """``set_per_turn`` changes one loop's allowance only; nonsense is refused."""
    admission = LoopAdmission(per_turn=4)

    async def first_turn(per_turn: int | None) -> int:
        loop = asyncio.get_running_loop()
        if per_turn is not None:
            admission.set_per_turn(loop, per_turn)
        waiting = [admission.admit() for _ in range(20)]
        return sum(1 for future in waiting if future is None)

    assert asyncio.run(first_turn(8)) == 8
    assert asyncio.run(first_turn(None)) == 4  # another loop: the default
    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(first_turn(0))


def test_a_cancelled_waiter_is_skipped() -> None:
    """A caller cancelled while waiting in line does not take a place in a turn."""

    async def main() -> list[int]:
        admission = LoopAdmission(per_turn=1)
        entered: list[int] = []

        async def caller(i: int) -> None:
            await admission.enter()
            entered.append(i)

        first = asyncio.ensure_future(caller(0))
        second = asyncio.ensure_future(caller(1))
        third = asyncio.ensure_future(caller(2))
        await asyncio.sleep(0)
        second.cancel()
        await asyncio.gather(first, third, return_exceptions=True)
        return entered

    assert asyncio.run(main()) == [0, 2]


def test_each_event_loop_has_its_own_line() -> None:
    """Two loops (the host's and the sync facade's, say) do not wait on each other."""
    admission = LoopAdmission(per_turn=1)

    async def burst() -> int:
        await asyncio.gather(*(admission.enter() for _ in range(10)))
        return 10

    assert asyncio.run(burst()) == 10
    assert asyncio.run(burst()) == 10


def test_answers_from_many_threads_arrive_in_order_with_few_wake_ups() -> None:
    """4 threads post 2,000 answers each; all arrive, each thread's in its order, and the
    loop is woken far fewer times than there are answers."""

    async def main() -> tuple[dict[int, list[int]], int]:
        loop = asyncio.get_running_loop()
        inbox = inbox_of(loop)
        wakes = 0
        original = loop.call_soon_threadsafe

        def counting(*args: object) -> object:
            nonlocal wakes
            wakes += 1
            return original(*args)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        got: dict[int, list[int]] = {k: [] for k in range(4)}
        done = asyncio.Event()

        def record(item: tuple[int, int]) -> None:
            got[item[0]].append(item[1])
            if sum(len(v) for v in got.values()) == 8000:
                done.set()

        def produce(k: int) -> None:
            for i in range(2000):
                inbox.post(record, (k, i))

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        await asyncio.wait_for(done.wait(), 10)
        for thread in threads:
            thread.join()
        return got, wakes

    got, wakes = asyncio.run(main())
    assert all(values == list(range(2000)) for values in got.values())
    assert wakes < 8000


def turns_seen_by_a_timer(
    loop: asyncio.AbstractEventLoop, progress: Callable[[], int]
) -> list[int]:
    """``progress()`` as seen at each loop turn (a timer re-armed with ``call_later(0)``,
    so it runs once per turn, after the callbacks already due)."""
    seen: list[int] = []

    def tick() -> None:
        seen.append(progress())
        loop.call_later(0, tick)

    loop.call_later(0, tick)
    return seen


def assert_a_slice_per_turn(seen: list[int], total: int) -> None:
    """Between two turns at most WAKEUPS_PER_TURN more were woken, so ``total`` took at
    least ``total / WAKEUPS_PER_TURN`` turns."""
    steps = [b - a for a, b in itertools.pairwise(seen)]
    assert max(steps) <= WAKEUPS_PER_TURN
    assert len([s for s in steps if s]) >= total // WAKEUPS_PER_TURN


def test_a_flood_of_answers_is_delivered_a_slice_per_turn() -> None:
    """10,000 answers posted at once reach the loop WAKEUPS_PER_TURN per turn, in order,
    with one wake-up: a timer runs between the slices."""

    async def main() -> tuple[list[int], list[int], int]:
        loop = asyncio.get_running_loop()
        inbox = inbox_of(loop)
        got: list[int] = []
        seen = turns_seen_by_a_timer(loop, lambda: len(got))
        wakes = counting_wakeups(loop)
        done = asyncio.Event()

        def record(i: int) -> None:
            got.append(i)
            if len(got) == 10_000:
                done.set()

        in_thread(lambda: [inbox.post(record, i) for i in range(10_000)])
        await asyncio.wait_for(done.wait(), 10)
        return got, seen, wakes[0]

    got, seen, wakes = asyncio.run(main())
    assert got == list(range(10_000))
    assert wakes == 1
    assert_a_slice_per_turn(seen, 10_000)


# --- replies ---------------------------------------------------------------------------------


def fake_clock(loop: asyncio.AbstractEventLoop) -> Callable[[float], None]:
    """Make ``loop.time`` movable; returns ``advance(seconds)``. Timers follow it."""
    offset = 0.0
    real = loop.time

    def now() -> float:
        return real() + offset

    def advance(seconds: float) -> None:
        nonlocal offset
        offset += seconds

    loop.time = now  # type: ignore[method-assign]
    return advance


def counting_wakeups(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count ``call_soon_threadsafe`` calls on ``loop`` (the wake-ups from other threads)."""
    wakes = [0]
    original = loop.call_soon_threadsafe

    def counting(*args: Any) -> Any:
        wakes[0] += 1
        return original(*args)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    return wakes


def in_thread(work: Callable[[], object]) -> None:
    """Run ``work`` on another thread and wait for it (blocking the loop meanwhile)."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def ask_many(box: ReplyBox, count: int) -> tuple[list[asyncio.Future[Any]], list[Reply]]:
    replies: list[Reply] = []
    futures = [box.ask(replies.append) for _ in range(count)]
    return futures, replies


class TestReplies:
    def test_answers_from_another_thread_settle_the_right_futures_with_one_wakeup(
        self,
    ) -> None:
        """100 answers posted in reverse order from another thread, while the loop is busy,
        reach their own callers, and wake the loop once."""

        async def main() -> tuple[list[Any], int, int]:
            loop = asyncio.get_running_loop()
            box = replies_of(loop, 30.0, "the scheduler")
            futures, replies = ask_many(box, 100)
            wakes = counting_wakeups(loop)
            in_thread(lambda: [reply(f"answer {reply.token}") for reply in reversed(replies)])
            answers = await asyncio.gather(*futures)
            return [(r.token, a) for r, a in zip(replies, answers, strict=True)], wakes[0], len(box)

        answers, wakes, pending = asyncio.run(main())
        assert all(answer == f"answer {token}" for token, answer in answers)
        assert wakes == 1
        assert pending == 0

    def test_each_timeout_has_its_own_box(self) -> None:
        """Boxes with different timeouts keep their deadlines apart."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            assert replies_of(loop, 30.0, "a") is replies_of(loop, 30.0, "a")
            assert replies_of(loop, 30.0, "a") is not replies_of(loop, 300.0, "a")

        asyncio.run(main())

    def test_unanswered_requests_time_out_with_one_timer_for_all(self) -> None:
        """1,000 requests pending keep one timer on the loop; those asked 31 s ago fail with
        the usual message, those asked later (a later deadline) keep waiting."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            advance = fake_clock(loop)
            box = ReplyBox(loop, 30.0, "the scheduler")
            early, _ = ask_many(box, 1000)
            assert len(loop._scheduled) <= 1  # type: ignore[attr-defined]
            advance(10)
            late, late_replies = ask_many(box, 10)
            assert len(loop._scheduled) <= 1  # type: ignore[attr-defined]
            advance(21)
            outcomes = await asyncio.wait_for(
                asyncio.gather(*early, return_exceptions=True), timeout=5
            )
            assert all(isinstance(o, RequestTimeoutError) for o in outcomes)
            assert str(outcomes[0]) == "the scheduler did not answer within 30 s"
            assert not any(f.done() for f in late)
            assert len(box) == 10  # the timed-out ones are gone
            in_thread(lambda: [reply("ok") for reply in late_replies])
            assert await asyncio.gather(*late) == ["ok"] * 10
            assert len(box) == 0

        asyncio.run(main())

    def test_a_cancelled_caller_leaves_the_others_their_answers(self) -> None:
        async def main() -> list[Any]:
            loop = asyncio.get_running_loop()
            box = ReplyBox(loop, 30.0, "the scheduler")
            futures, replies = ask_many(box, 3)
            callers = [asyncio.ensure_future(future) for future in futures]
            await asyncio.sleep(0)
            callers[1].cancel()
            in_thread(lambda: [reply(reply.token) for reply in replies])
            outcomes = await asyncio.gather(*callers, return_exceptions=True)
            assert len(box) == 0
            return outcomes

        first, second, third = asyncio.run(main())
        assert isinstance(second, asyncio.CancelledError)
        assert (first, third) == (0, 2)

    def test_answered_futures_are_released(self) -> None:
        """Nothing keeps an answered future alive until its deadline."""

        async def main() -> weakref.ref[asyncio.Future[Any]]:
            loop = asyncio.get_running_loop()
            box = ReplyBox(loop, 30.0, "the scheduler")
            futures, replies = ask_many(box, 1)
            ref = weakref.ref(futures[0])
            in_thread(lambda: replies[0]("done"))
            assert await futures.pop() == "done"
            return ref

        assert asyncio.run(main())() is None

    def test_a_send_that_fails_leaves_nothing_pending(self) -> None:
        def refuse(reply: Reply) -> None:
            raise RuntimeError("not running")

        async def main() -> int:
            box = ReplyBox(asyncio.get_running_loop(), 30.0, "the scheduler")
            with pytest.raises(RuntimeError):
                box.ask(refuse)
            return len(box)

        assert asyncio.run(main()) == 0

    def test_a_reply_and_its_command_stay_out_of_the_cyclic_gc(self) -> None:
        """A command in a shard's mailbox costs the GC's full passes nothing."""

        async def main() -> None:
            box = ReplyBox(asyncio.get_running_loop(), 30.0, "the scheduler")
            future, replies = ask_many(box, 1)
            command = TaskCommand(
                task_id="t", command=cmd.Resume(cause=Cause(kind="host")), reply=replies[0]
            )
            assert not gc.is_tracked(replies[0])
            assert not gc.is_tracked(command)
            replies[0](None)
            await future[0]

        asyncio.run(main())


# --- waiting for a position ----------------------------------------------------------------


class Source:
    """A position published from other threads (as the projector does)."""

    def __init__(self) -> None:
        self.position = 0
        self.failure: str | None = None
        self.failures = 0
        self.listeners: list[Callable[[int], object]] = []
        self.requested: list[int] = []

    def add_position_listener(self, listener: Callable[[int], object]) -> None:
        self.listeners.append(listener)

    def remove_position_listener(self, listener: Callable[[int], object]) -> None:
        self.listeners.remove(listener)

    def request(self, position: int) -> None:
        self.requested.append(position)

    def publish(self, position: int) -> None:
        self.position = position
        for listener in list(self.listeners):
            listener(position)

    def fail(self, reason: str) -> None:
        """As the projector's note_failure: the reason, then the position published again."""
        self.failure = reason
        self.failures += 1
        self.publish(self.position)


def late() -> RequestTimeoutError:
    return RequestTimeoutError("the projections did not catch up in time")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


class TestPositionWaiter:
    def test_a_position_published_from_another_thread_releases_its_waiters(
        self, loop: asyncio.AbstractEventLoop
    ) -> None:
        source = Source()

        async def main() -> None:
            waiter = PositionWaiter(loop, source, 30.0, late, projections_failing)
            assert waiter.wait(0) is None  # there already
            five, seven = waiter.wait(5), waiter.wait(7)
            assert five is not None and seven is not None
            assert source.requested == [5, 7]  # the source is asked to hurry
            wakes = counting_wakeups(loop)
            in_thread(lambda: source.publish(3))
            assert wakes[0] == 0  # nobody waits for 3: the loop is not woken
            in_thread(lambda: source.publish(5))
            await asyncio.wait_for(five, timeout=5)
            assert not seven.done()
            in_thread(lambda: source.publish(8))
            await asyncio.wait_for(seven, timeout=5)
            assert wakes[0] == 2
            assert source.listeners == []  # nobody waits: not listening
            assert len(waiter) == 0

        loop.run_until_complete(main())

    def test_a_position_published_while_registering_is_not_missed(
        self, loop: asyncio.AbstractEventLoop
    ) -> None:
        """The position moves after the first check but before the listener is in place."""

        class Racing(Source):
            def add_position_listener(self, listener: Callable[[int], object]) -> None:
                self.position = 10  # published to nobody
                super().add_position_listener(listener)

        source = Racing()

        async def main() -> None:
            waiter = PositionWaiter(loop, source, 30.0, late, projections_failing)
            future = waiter.wait(5)
            assert future is not None
            await asyncio.wait_for(future, timeout=5)
            assert source.listeners == []

        loop.run_until_complete(main())

    def test_cancelling_one_waiter_leaves_the_others_waiting(
        self, loop: asyncio.AbstractEventLoop
    ) -> None:
        source = Source()

        async def main() -> list[Any]:
            waiter = PositionWaiter(loop, source, 30.0, late, projections_failing)

            async def read() -> str:
                future = waiter.wait(5)
                if future is not None:
                    await future
                return "read"

            readers = [asyncio.ensure_future(read()) for _ in range(3)]
            await asyncio.sleep(0)
            readers[0].cancel()
            await asyncio.sleep(0)
            assert not readers[1].done()
            in_thread(lambda: source.publish(5))
            return await asyncio.wait_for(
                asyncio.gather(*readers, return_exceptions=True), timeout=5
            )

        outcomes = loop.run_until_complete(main())
        assert isinstance(outcomes[0], asyncio.CancelledError)
        assert outcomes[1:] == ["read", "read"]

    def test_a_crowd_waiting_for_one_position_wakes_a_slice_per_turn(
        self, loop: asyncio.AbstractEventLoop
    ) -> None:
        """10,000 readers waiting for the same position are woken WAKEUPS_PER_TURN per loop
        turn, not all in one; a later position and a cancelled reader are handled too."""
        source = Source()

        async def main() -> tuple[list[int], list[Any]]:
            waiter = PositionWaiter(loop, source, 30.0, late, projections_failing)
            woken: list[int] = []

            async def read(i: int, target: int) -> int:
                future = waiter.wait(target)
                assert future is not None
                await future
                woken.append(i)
                return i

            readers = [asyncio.ensure_future(read(i, 5)) for i in range(10_000)]
            later = asyncio.ensure_future(read(-1, 9))
            await asyncio.sleep(0)
            readers[7].cancel()
            seen = turns_seen_by_a_timer(loop, lambda: len(woken))
            in_thread(lambda: source.publish(6))
            outcomes = await asyncio.wait_for(
                asyncio.gather(*readers, return_exceptions=True), timeout=10
            )
            assert not later.done()
            assert len(waiter) == 1
            in_thread(lambda: source.publish(9))
            assert await asyncio.wait_for(later, timeout=5) == -1
            assert source.listeners == []
            return seen, outcomes

        seen, outcomes = loop.run_until_complete(main())
        assert isinstance(outcomes[7], asyncio.CancelledError)
        assert [o for i, o in enumerate(outcomes) if i != 7] == [i for i in range(10_000) if i != 7]
        assert_a_slice_per_turn(seen, 9_999)

    def test_a_failing_source_fails_its_waiters(self, loop: asyncio.AbstractEventLoop) -> None:
        """While the projector cannot apply the log (a full disk), the readers waiting for
        their writes fail with the reason when it fails, not at their 30 s timeout; a
        reader whose position was reached is released. A reader that comes while it is
        failing asks it to try again and waits for that try: failed, it fails; succeeded,
        it reads."""
        source = Source()

        async def main() -> None:
            waiter = PositionWaiter(loop, source, 30.0, late, projections_failing)
            reached, beyond = waiter.wait(3), waiter.wait(5)
            assert reached is not None and beyond is not None
            source.position = 3
            in_thread(lambda: source.fail("No space left on device"))
            await asyncio.wait_for(reached, timeout=5)
            with pytest.raises(StorageError, match=r"cannot catch up.*No space left"):
                await asyncio.wait_for(beyond, timeout=5)
            assert len(waiter) == 0 and source.listeners == []
            assert waiter.wait(3) is None  # what it has applied reads as before
            source.requested.clear()
            again = waiter.wait(6)
            assert again is not None and source.requested == [6]  # the cue to try again
            in_thread(lambda: source.publish(3))  # a publication, but no new failure
            await asyncio.sleep(0.05)
            assert not again.done()
            in_thread(lambda: source.fail("still no space"))
            with pytest.raises(StorageError, match="still no space"):
                await asyncio.wait_for(again, timeout=5)
            healed = waiter.wait(6)
            assert healed is not None
            source.failure = None  # the next try applies the log
            in_thread(lambda: source.publish(6))
            await asyncio.wait_for(healed, timeout=5)
            assert len(waiter) == 0 and source.listeners == []

        loop.run_until_complete(main())

    def test_a_position_that_never_comes_times_out(self, loop: asyncio.AbstractEventLoop) -> None:
        source = Source()

        async def main() -> None:
            advance = fake_clock(loop)
            waiter = PositionWaiter(loop, source, 30.0, late, projections_failing)
            futures = [waiter.wait(5) for _ in range(1000)]
            assert len(loop._scheduled) <= 1  # type: ignore[attr-defined]
            advance(31)
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError, match="did not catch up in time"):
                await asyncio.wait_for(asyncio.gather(*futures), timeout=5)  # type: ignore[arg-type]
            assert time.monotonic() - started < 5
            assert len(waiter) == 0

        loop.run_until_complete(main())
